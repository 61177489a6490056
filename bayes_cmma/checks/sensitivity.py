"""Sensitivity of the answer to assumption A3, which the data cannot test.

A3: within a team, a trial's direct effect on the KPI (its residual u_k) is unrelated to its effect
on the metric. If trials that move the metric more also carry a larger direct effect, the DRF
absorbs that link and beta is biased (the paper's Table 2: CMMA OLS 0.48 too high). The model can
instead be fitted with an assumed correlation rho = Corr(u_k, m_k1) (spec ``[assumptions]
direct_effect_corr``; see :func:`bayes_cmma.fitting.model.a3_terms`). :func:`a3_sensitivity` refits over a
grid of rho, sharing one compiled model (rho is data, not structure), and reports how the
elasticities and the ranking move, and the smallest |rho| on the grid at which the recommended
metric changes: the tipping point.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_cmma.errors import BayesCMMAError
from bayes_cmma.fitting.bayes import resolve_spec
from bayes_cmma.fitting.many import FitGrid, fit_many
from bayes_cmma.fitting.spec import ModelSpec, replace_spec
from bayes_cmma.inputs.data import TrialData

DEFAULT_RHOS = (-0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6)


@dataclass
class SensitivityResult:
    """One row per (rho, metric) and the tipping point.

    Attributes
    ----------
    table : DataFrame
        ``rho``, ``metric``, ``beta_1`` (posterior mean), elasticity mean and 94% interval,
        ``p_best``, ``expected_rank``, ``recommended`` (the metric with the largest P(best) at rho).
    tipping_point : float or None
        The rho of smallest |rho| on the grid whose recommended metric differs from rho = 0's
        (ties: the negative one); None when the recommendation holds over the whole grid.
    grid : FitGrid
    """

    table: pd.DataFrame
    tipping_point: float | None
    grid: FitGrid

    def summary(self) -> str:
        base = self.table[self.table["rho"] == 0.0]["recommended"].iloc[0]
        lo, hi = self.table["rho"].min(), self.table["rho"].max()
        if self.tipping_point is None:
            return (f"The recommended metric, {base}, stays the same for every assumed correlation from {lo:+.2f} "
                    f"to {hi:+.2f}: the ranking is robust to this much violation of A3.")
        other = self.table[self.table["rho"] == self.tipping_point]["recommended"].iloc[0]
        return (f"The recommendation changes from {base} to {other} at an assumed correlation of "
                f"{self.tipping_point:+.2f} between a trial's direct KPI effect and its metric effect (tipping "
                "point). Judge whether a link that strong is plausible for your experiments.")


def a3_sensitivity(
    data: TrialData,
    kpi: str,
    metrics: str | Iterable[str],
    at: Mapping[str, float],
    rhos: Sequence[float] = DEFAULT_RHOS,
    model: str | Path | ModelSpec | int | None = None,
    *,
    lift: float = 0.1,
    baseline: float | None = None,
    seed: int | None = None,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    prob: float = 0.94,
) -> SensitivityResult:
    """Refit every metric for each assumed A3 correlation rho and compare elasticities and rankings.

    ``rho = 0`` (A3 holds) is always included. Each rho must lie strictly between -1 and 1.
    """
    grid_rhos = sorted({0.0, *(float(r) for r in rhos)})
    bad = [r for r in grid_rhos if not -1.0 < r < 1.0]
    if bad:
        raise BayesCMMAError(f"rho must be strictly between -1 and 1; got {bad[0]}.")
    spec = resolve_spec(model)
    specs = [replace_spec(spec, direct_effect_corr=r, name=f"{spec.name}, rho={r:+.2f}") for r in grid_rhos]
    grid = fit_many(data, kpi, metrics, specs, seed=seed, draws=draws, tune=tune, chains=chains)
    rows = []
    q = ((1 - prob) / 2, (1 + prob) / 2)
    for r, s in zip(grid_rhos, specs, strict=True):
        res = grid.result(s.name)
        el = res.elasticity(at, lift=lift, baseline=baseline)
        ranking = res.ranking(at, lift=lift, baseline=baseline)
        p_best = ranking["p_best"].to_series()
        best = str(p_best.idxmax())
        for m in res.metrics:
            draws_m = el.sel(metric=m).values.ravel()
            rows.append({
                "rho": r, "metric": m, "beta_1": float(res[m].beta.sel(power=1).mean()),
                "elasticity_mean": float(draws_m.mean()),
                f"elasticity_eti{100 * prob:g}_lower": float(np.quantile(draws_m, q[0])),
                f"elasticity_eti{100 * prob:g}_upper": float(np.quantile(draws_m, q[1])),
                "p_best": float(p_best[m]), "expected_rank": float(ranking["expected_rank"].sel(metric=m)),
                "recommended": best,
            })
    table = pd.DataFrame(rows)
    return SensitivityResult(table=table, tipping_point=tipping_point(table), grid=grid)


def tipping_point(table: pd.DataFrame) -> float | None:
    """Smallest |rho| whose ``recommended`` metric differs from rho = 0's (ties: the negative rho)."""
    rec = table.drop_duplicates("rho").set_index("rho")["recommended"]
    changed = [r for r in rec.index if rec[r] != rec[0.0]]
    return min(changed, key=lambda r: (abs(r), r)) if changed else None
