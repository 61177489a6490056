"""Run nutpie and hand back a posterior, or nothing.

nutpie catches Ctrl-C (KeyboardInterrupt) while it samples and returns the draws made so far, the
rest of each chain padded with NaN. Treated as a posterior, that wrote NaN summaries over a user's
previous good results. :func:`sample` waits for the sampler itself, so an interrupt cancels the
sampler and propagates (the command line then exits with status 130 and writes nothing), and
:func:`check_trace` refuses a trace that is not a complete posterior: fewer chains or draws than
asked, or NaN or infinite draws (a chain that stopped early leaves NaN), naming what is wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from bayes_cmma.errors import SamplingError
from bayes_cmma.fitting import interrupts


def sample(compiled: Any, *, draws: int, tune: int, chains: int, cores: int, seed: int | None,
           label: str = "the model", **settings: Any) -> xr.DataTree:
    """``nutpie.sample`` that never returns a partial trace.

    Parameters
    ----------
    compiled : nutpie compiled model
    draws, tune, chains, cores : int
    seed : int or None
    label : str
        Names the model in errors (e.g. the metric).
    **settings
        Passed to ``nutpie.sample`` (``target_accept``, ``adaptation``, ``progress_bar``, ...).

    Raises
    ------
    KeyboardInterrupt
        When interrupted; the sampler is cancelled first.
    SamplingError
        When the trace is not a complete posterior (see :func:`check_trace`).
    """
    import nutpie

    interrupts.check()
    sampler = nutpie.sample(compiled, draws=draws, tune=tune, chains=chains, cores=cores, seed=seed,
                            save_warmup=False, blocking=False, **settings)
    try:
        trace = sampler.wait()
    except BaseException:
        sampler.cancel()
        raise
    check_trace(trace, draws=draws, chains=chains, label=label)
    return trace


def check_trace(trace: xr.DataTree, *, draws: int, chains: int, label: str = "the model") -> None:
    """Raise :class:`SamplingError` unless every chain has ``draws`` finite draws of every variable."""
    post = trace["posterior"]
    got_chains, got_draws = post.sizes.get("chain", 0), post.sizes.get("draw", 0)
    if got_chains != chains or got_draws != draws:
        raise SamplingError(
            f"sampling {label} returned {got_chains} chain(s) x {got_draws} draw(s) instead of {chains} x {draws}; "
            "the sampler stopped early. Nothing was written; run again."
        )
    for name, var in post.data_vars.items():
        values = np.asarray(var.values, dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            per_chain = bad.reshape(values.shape[0], values.shape[1], -1).any(axis=(1, 2))
            which = ", ".join(str(c) for c in np.flatnonzero(per_chain))
            raise SamplingError(
                f"sampling {label}: {int(bad.sum())} NaN or infinite value(s) of {name!r} in chain(s) {which} "
                "(a chain that stopped early or a numerical failure); this is not a posterior. Nothing was "
                "written; run again, and if it repeats check the data."
            )


__all__ = ["check_trace", "sample"]
