"""Figures for the trust checks: SBC rank histograms and the A3 sensitivity sweep.

Every function takes results (no sampling) and returns a ``matplotlib.figure.Figure`` built without
pyplot, so nothing depends on a display or a global backend; save it with ``fig.savefig(path)``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from bayes_cmma.reporting.plots._common import legend_below


def sbc_rank_histograms(ranks: pd.DataFrame, n_draws: int, bins: int = 10, band: float = 0.99) -> Figure:
    """One rank histogram per parameter with the ``band`` range expected under uniform ranks.

    Parameters
    ----------
    ranks : DataFrame
        Columns ``parameter``, ``rank`` (0..n_draws), one row per simulation and parameter.
    n_draws : int
        L, the number of posterior draws ranked against.
    bins : int
        Equal bins over 0..L.
    band : float
        Probability of the grey band: the central interval of a bin count under uniformity
        (binomial with the simulation count and 1 / bins).
    """
    params = list(dict.fromkeys(ranks["parameter"]))
    ncols = min(4, len(params))
    nrows = math.ceil(len(params) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    edges = np.linspace(0, n_draws + 1, bins + 1)
    for ax, name in zip(axes.flat, params, strict=False):
        r = ranks.loc[ranks["parameter"] == name, "rank"].to_numpy()
        n = len(r)
        lo, hi = stats.binom.interval(band, n, 1.0 / bins)
        ax.axhspan(lo, hi, color="0.85", zorder=0, label=f"{100 * band:g}% range if uniform")
        ax.axhline(n / bins, color="0.5", lw=0.8)
        ax.hist(r, bins=edges, color="C0", edgecolor="white")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"rank of the true value among {n_draws} draws", fontsize=8)
        ax.set_ylabel("simulations", fontsize=8)
    for ax in list(axes.flat)[len(params):]:
        ax.set_visible(False)
    fig.suptitle("Simulation-based calibration: ranks should be uniform")
    return fig


def sensitivity_plot(table: pd.DataFrame, tipping_point: float | None = None, kpi: str = "KPI") -> Figure:
    """Elasticity (mean and interval) and P(best) of each metric against the assumed A3 correlation rho.

    ``table`` is :attr:`bayes_cmma.checks.sensitivity.SensitivityResult.table`; the tipping point, if
    any, is marked with a dashed line on both panels.
    """
    lower = next(c for c in table.columns if c.startswith("elasticity_") and c.endswith("_lower"))
    upper = next(c for c in table.columns if c.startswith("elasticity_") and c.endswith("_upper"))
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax_el, ax_p = fig.subplots(1, 2)
    for i, (metric, g) in enumerate(table.groupby("metric", sort=False)):
        g = g.sort_values("rho")
        ax_el.plot(g["rho"], g["elasticity_mean"], marker="o", color=f"C{i}", label=metric)
        ax_el.fill_between(g["rho"], g[lower], g[upper], color=f"C{i}", alpha=0.2)
        ax_p.plot(g["rho"], g["p_best"], marker="o", color=f"C{i}", label=metric)
    for ax in (ax_el, ax_p):
        ax.axvline(0.0, color="0.6", lw=0.8)
        if tipping_point is not None:
            ax.axvline(tipping_point, color="k", ls="--", lw=1, label=f"tipping point {tipping_point:+.2f}")
        ax.set_xlabel("assumed corr(direct KPI effect, metric effect), rho")
    ax_el.set_ylabel(f"elasticity of {kpi} (band: {lower.split('_')[1].removeprefix('eti')}% interval)")
    ax_p.set_ylabel("P(best)")
    ax_p.set_ylim(-0.02, 1.02)
    legend_below(fig, [ax_el, ax_p])
    fig.suptitle("A3 sensitivity: how the answer moves if the assumption fails")
    return fig
