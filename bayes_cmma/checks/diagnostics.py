"""Posterior summary and sampler diagnostics (R-hat, bulk/tail ESS, divergences)."""

from __future__ import annotations

import warnings

import arviz_stats as azs
import numpy as np
import pandas as pd
import xarray as xr

from bayes_cmma import dims
from bayes_cmma.errors import ConvergenceWarning

CI_PROB = 0.94
RHAT_MAX = 1.01


def _summary_view(posterior: xr.Dataset, degree: int | None = None) -> xr.Dataset:
    """Posterior without constant entries: only the strictly lower triangle of ``metric_corr``, and
    only beta_1..beta_degree when the data carry more metric powers than the DRF's degree (the
    others are 0 by construction; see :func:`bayes_cmma.fitting.model.build_model`)."""
    out = posterior.drop_vars("metric_corr", errors="ignore")
    if degree is not None and "beta" in posterior and dims.POWER in posterior["beta"].dims \
            and posterior.sizes[dims.POWER] > degree:
        out = out.drop_vars("beta")
        for p in range(1, degree + 1):
            out[f"beta[{p}]"] = posterior["beta"].sel({dims.POWER: p}, drop=True)
    if "metric_corr" in posterior:
        first, second = posterior["metric_corr"].dims[-2:]  # (power, power_other) or (metric, metric_other)
        labels = posterior[first].values
        for i in range(1, len(labels)):
            for j in range(i):
                key = f"{i + 1}, {j + 1}" if first == dims.POWER else f"{labels[i]}, {labels[j]}"
                out[f"metric_corr[{key}]"] = posterior["metric_corr"].isel({first: i, second: j}, drop=True)
    return out


def summary_table(tree: xr.DataTree, prob: float = CI_PROB) -> pd.DataFrame:
    """One row per parameter (original scale): mean, sd, equal-tailed interval, ESS, R-hat, MCSE.

    Row labels follow ArviZ (``beta[1]``, ``pi[team_a]``); the index is named ``parameter``.
    """
    degree = int(tree.attrs["degree"]) if "degree" in tree.attrs else None
    view = xr.DataTree.from_dict({"posterior": _summary_view(tree["posterior"].to_dataset(), degree)})
    table = azs.summary(view, ci_prob=prob, ci_kind="eti", round_to="none")
    table.index.name = "parameter"
    return table


def divergences(tree: xr.DataTree) -> int:
    """Number of divergent transitions after warm-up."""
    stats = tree["sample_stats"]
    if "diverging" not in stats:
        return 0
    return int(np.asarray(stats["diverging"].values).sum())


def problems(tree: xr.DataTree, table: pd.DataFrame | None = None) -> list[str]:
    """Plain-language descriptions of convergence problems (empty when none)."""
    table = summary_table(tree) if table is None else table
    out = []
    bad = table.index[table["r_hat"] > RHAT_MAX].tolist()
    if bad:
        worst = table.loc[bad, "r_hat"].idxmax()
        out.append(
            f"R-hat above {RHAT_MAX} for {', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''} "
            f"(worst {worst}: {table.loc[worst, 'r_hat']:.3f}); run more draws or check the model."
        )
    n_div = divergences(tree)
    if n_div:
        out.append(
            f"{n_div} divergent transition(s); the posterior may be biased. Raise target_accept "
            "(bayes-cmma fit --target-accept 0.95, or the spec's [sampler] table) or reparameterise."
        )
    used = tree.attrs.get("observational_parametrization")
    if out and used in ("non_centred", "centred"):
        other = "centred" if used == "non_centred" else "non_centred"
        out.append(
            f"the observational prior's slopes were sampled {used.replace('_', '-')}; the {other.replace('_', '-')} "
            f"form is the same model in another geometry and may sample better (centred with many trials, "
            f"non-centred with few): refit with --observational-parametrization {other} "
            f"(bc.fit_joint(..., observational_parametrization={other!r}))."
        )
    return out


def warn_on_problems(tree: xr.DataTree, label: str = "", table: pd.DataFrame | None = None) -> list[str]:
    """Emit a :class:`ConvergenceWarning` per problem and return the messages (``table``: its summary_table)."""
    msgs = problems(tree, table)
    prefix = f"{label}: " if label else ""
    for msg in msgs:
        warnings.warn(prefix + msg, ConvergenceWarning, stacklevel=3)
    return msgs


def diagnostics_table(tree: xr.DataTree) -> pd.DataFrame:
    """R-hat and bulk/tail ESS per parameter, with the divergence count in ``attrs``."""
    table = summary_table(tree)[["r_hat", "ess_bulk", "ess_tail"]].copy()
    table.attrs["divergences"] = divergences(tree)
    return table
