"""Where Dask work runs: an existing cluster, a local cluster, or one of Dask's local schedulers.

The summarizer itself only builds Dask tasks (:mod:`bayes_cmma.inputs.summarizer`); this module picks the
scheduler they run on, for the command line. In Python, open a ``distributed.Client`` yourself (or
configure ``dask.config``) and call :func:`bayes_cmma.summarize`: Dask uses the active client.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from bayes_cmma.errors import BayesCMMAError

#: How long to try to reach a ``--scheduler`` address before giving up with an error.
CONNECT_TIMEOUT = "10s"
LOCAL_SCHEDULERS = ("threads", "processes", "synchronous")


def _require_dask() -> None:
    try:
        import dask
        import dask.dataframe  # noqa: F401
    except ImportError as exc:
        raise BayesCMMAError(
            "the Dask engine needs Dask: pip install 'bayes_cmma[dask]' (dask[dataframe] and distributed)."
        ) from exc


@contextlib.contextmanager
def dask_scheduler(scheduler: str | None = None, *, workers: int | None = None) -> Iterator[str]:
    """Run the Dask computations inside the block on ``scheduler``; yields a description of it.

    Parameters
    ----------
    scheduler : str, optional
        ``None``: a ``distributed.LocalCluster`` of ``workers`` single-threaded worker processes
        (default one per core), closed on exit. ``"threads"``, ``"processes"``, ``"synchronous"``:
        Dask's local schedulers. Anything else is the address of a running scheduler
        (``tcp://HOST:8786``), connected to with a ``distributed.Client`` and left running on exit.
    workers : int, optional
        Worker processes of the local cluster (only with ``scheduler=None``).
    """
    _require_dask()
    import dask

    if scheduler in LOCAL_SCHEDULERS:
        with dask.config.set(scheduler=scheduler):
            yield f"dask {scheduler} scheduler"
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise BayesCMMAError(
            "a Dask cluster needs the distributed package: pip install 'bayes_cmma[dask]', or pass "
            "--scheduler threads|processes|synchronous."
        ) from exc
    if scheduler is None:
        n = workers or os.cpu_count() or 1
        with (
            LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                         silence_logs=logging.CRITICAL) as cluster,
            Client(cluster),
        ):
            yield f"local Dask cluster, {n} worker process(es)"
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise BayesCMMAError(
            f"could not connect to the Dask scheduler at {scheduler!r} ({exc}); check the address "
            "(tcp://HOST:PORT) or leave out --scheduler to start a local cluster."
        ) from exc
    with client:
        yield f"Dask cluster at {scheduler}"
