"""Figures of the answer: dose-response, elasticity, metric ranking, team direct effects.

Every function takes fitted results (a :class:`~bayes_cmma.fitting.bayes.CMMAResult`, a mapping
metric -> MetricFit or posterior DataTree, or one of those) and returns a
``matplotlib.figure.Figure``; nothing is sampled. Bands are equal-tailed 50% and 94% intervals of
the posterior draws; axes are in the user's units.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from bayes_cmma import dims
from bayes_cmma.decisions import derived
from bayes_cmma.errors import BayesCMMAError
from bayes_cmma.reporting.plots._common import (
    BANDS,
    as_tree,
    as_trees,
    band_quantiles,
    draw_bands,
    flat_draws,
    kpi_of,
    legend_below,
)


def _direct_effect_mean(tree) -> np.ndarray:
    """Draws of the average team direct effect: pi_mean when pooled, else the mean of pi over teams."""
    post = tree["posterior"]
    if "pi_mean" in post:
        return flat_draws(post["pi_mean"])
    return flat_draws(post["pi"]).mean(axis=-1)


def _trial_points(tree) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    obs = tree["observed_data"]
    z = obs["trial_ate"].transpose(dims.TRIAL, dims.QUANTITY).values
    S = obs["measurement_cov"].transpose(dims.TRIAL, dims.QUANTITY, dims.QUANTITY_OTHER).values
    se = np.sqrt(np.diagonal(S, axis1=-2, axis2=-1))
    return z[:, 1], z[:, 0], se[:, 1], se[:, 0]


def drf_panel(results: Any, naive: bool = True, n_grid: int = 101) -> Figure:
    """Per metric: the trials' ATEs (metric vs KPI, +-1 SE bars), the posterior DRF, a naive fit.

    The curve is mu(m) plus the average team direct effect (the DRF itself has no intercept), with
    50% and 94% credible bands, over the range of the trials' metric ATEs. For contrast, the naive
    curve is an OLS polynomial of the same degree through the points, which ignores their
    measurement error and the teams (the fit the paper warns about).
    """
    trees = as_trees(results)
    fig = Figure(figsize=(4.2 * len(trees), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(trees), squeeze=False)[0])
    for ax, (metric, tree) in zip(axes, trees.items(), strict=True):
        x, y, sx, sy = _trial_points(tree)
        both = np.isfinite(x) & np.isfinite(y)  # trials that report the KPI and the metric
        x, y, sx, sy = x[both], y[both], sx[both], sy[both]
        span = x.max() - x.min()
        grid = np.linspace(x.min() - 0.05 * span, x.max() + 0.05 * span, n_grid)
        beta = tree["posterior"]["beta"]
        degree = int(tree.attrs.get("degree", beta.sizes[dims.POWER]))
        curve = flat_draws(derived.drf(beta, grid)) + _direct_effect_mean(tree)[:, None]
        shown = "" if both.all() else f"; the {both.sum()} of {both.size} trials reporting both"
        ax.errorbar(x, y, xerr=sx, yerr=sy, fmt="o", ms=3, color="0.35", ecolor="0.75", elinewidth=0.7,
                    label="trials (ATE +- 1 SE)", zorder=1)
        draw_bands(ax, grid, curve, "C0", "posterior DRF (+ mean team effect)")
        if naive:
            coef = np.polyfit(x, y, degree)
            ax.plot(grid, np.polyval(coef, grid), color="C3", ls="--", lw=1.5,
                    label="naive OLS through the points")
        ax.set_xlabel(f"ATE on {metric}")
        ax.set_ylabel(f"ATE on {kpi_of(tree)}")
        ax.set_title(f"{metric}: dose-response (degree {degree}{shown})", fontsize=10)
    legend_below(fig, axes)
    fig.suptitle("Posterior dose-response function against the trials")
    return fig


def _at_for(at: Mapping[str, float] | None, metric: str) -> float:
    if at is None or metric not in at:
        raise BayesCMMAError(
            f"no current value for metric {metric!r}: give at={{'{metric}': VALUE}} "
            "(CLI: --at METRIC=VALUE), the metric's current per-unit level."
        )
    value = float(at[metric])
    if not np.isfinite(value) or value == 0:
        raise BayesCMMAError(f"the current value of {metric!r} must be a non-zero number, got {at[metric]!r}.")
    return value


def elasticity_panel(
    results: Any,
    at: Mapping[str, float],
    lift: float = 0.1,
    baseline: float | None = None,
    span: tuple[float, float] = (0.25, 2.0),
    n_grid: int = 60,
) -> Figure:
    """Per metric: posterior elasticity against the metric value, bands, and the current value marked.

    The grid runs from ``span[0]`` to ``span[1]`` times the current value ``at[metric]``; the
    marker shows the posterior mean and 94% interval at the current value.
    """
    trees = as_trees(results)
    kpi = kpi_of(next(iter(trees.values())))
    fig = Figure(figsize=(4.2 * len(trees), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(trees), squeeze=False)[0])
    base = "mu(m)" if baseline is None else f"{baseline:g}"
    for ax, (metric, tree) in zip(axes, trees.items(), strict=True):
        m0 = _at_for(at, metric)
        grid = np.linspace(span[0] * m0, span[1] * m0, n_grid)
        beta = tree["posterior"]["beta"]
        draws = flat_draws(derived.elasticity(beta, grid, lift=lift, baseline=baseline))
        draw_bands(ax, grid, draws, "C0", "posterior mean")
        now = flat_draws(derived.elasticity(beta, m0, lift=lift, baseline=baseline))
        lo, hi = band_quantiles(now, BANDS[-1])
        # a heavy-tailed posterior (a baseline near 0) can put the mean outside its own interval: no negative bar
        ax.errorbar([m0], [now.mean()], yerr=[[max(now.mean() - lo, 0.0)], [max(hi - now.mean(), 0.0)]], fmt="D",
                    color="k",
                    ms=6, capsize=3, label="at the current value (94% interval)")
        ax.axvline(m0, color="k", lw=0.6, ls=":")
        ax.locator_params(axis="x", nbins=5)
        ax.set_xlabel(f"{metric}, per-unit level")
        ax.set_ylabel(f"elasticity of {kpi}: gain / {base}")
        ax.set_title(f"{metric} (now {m0:.4g}): a {100 * lift:+g}% lift", fontsize=10)
    legend_below(fig, axes)
    fig.suptitle("Posterior elasticity against the metric value")
    return fig


def ranking_plot(
    results: Any, at: Mapping[str, float], lift: float = 0.1, baseline: float | None = None,
    ranking: xr.Dataset | None = None,
) -> Figure:
    """Left: each metric's elasticity posterior at its current value; right: P(rank = r) heat map.

    P(best) is given in the legend; rank 1 is the largest elasticity. ``ranking`` (e.g. the joint
    model's) replaces the one computed by pairing the separate fits' draws.
    """
    trees = as_trees(results)
    kpi = kpi_of(next(iter(trees.values())))
    parts = [derived.elasticity(t["posterior"]["beta"], _at_for(at, m), lift=lift, baseline=baseline)
             for m, t in trees.items()]
    el = derived.stack_metrics(parts, list(trees))
    ranking = derived.rank_metrics(el) if ranking is None else ranking
    fig = Figure(figsize=(10, 3.2 + 0.25 * len(trees)), layout="constrained")
    ax_d, ax_h = fig.subplots(1, 2, width_ratios=(1.4, 1))
    metrics = list(trees)
    draws = [flat_draws(el.sel({dims.METRIC: m})) for m in metrics]
    lo = min(np.quantile(d, 0.005) for d in draws)
    hi = max(np.quantile(d, 0.995) for d in draws)
    if not hi - lo > 1e-9 * max(abs(lo), abs(hi)):  # e.g. a linear DRF with baseline mu(m): every draw = lift
        pad = 1e-3 * max(abs(lo), 1e-12)
        lo, hi = lo - pad, hi + pad
    bins = np.linspace(lo, hi, 60)
    for i, (m, d) in enumerate(zip(metrics, draws, strict=True)):
        p = float(ranking["p_best"].sel({dims.METRIC: m}))
        ax_d.hist(d, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color=f"C{i}",
                  label=f"{m} (P(best) = {p:.2f})")
        ax_d.hist(d, bins=bins, density=True, histtype="step", color=f"C{i}")
    ax_d.set_xlabel(f"elasticity of {kpi} at the current value ({100 * lift:+g}% lift)")
    ax_d.set_ylabel("posterior density")
    legend_below(fig, [ax_d])
    p_rank = ranking["p_rank"].transpose(dims.METRIC, dims.RANK).values
    im = ax_h.imshow(p_rank, vmin=0, vmax=1, cmap="Blues", aspect="auto")
    for (i, j), v in np.ndenumerate(p_rank):
        ax_h.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v > 0.6 else "black")
    ax_h.set_xticks(range(p_rank.shape[1]), [str(r) for r in ranking[dims.RANK].values])
    ax_h.set_yticks(range(len(metrics)), metrics)
    ax_h.set_xlabel("rank (1 = largest elasticity)")
    ax_h.set_title("P(rank = r)", fontsize=10)
    fig.colorbar(im, ax=ax_h, shrink=0.8)
    fig.suptitle("Which metric moves the KPI most? Posterior ranking")
    return fig


def team_forest(fit: Any) -> Figure:
    """Posterior of each team's direct effect pi_g (mean, 50% and 94% intervals) and the pooled mean."""
    tree = as_tree(fit)
    post = tree["posterior"]
    pi = flat_draws(post["pi"])
    teams = [str(t) for t in post[dims.TEAM].values]
    kpi = kpi_of(tree)
    fig = Figure(figsize=(6, 1.2 + 0.4 * len(teams)), layout="constrained")
    ax = fig.subplots()
    ypos = np.arange(len(teams))[::-1]
    inner, outer = BANDS
    for y, col in zip(ypos, pi.T, strict=True):
        lo, hi = band_quantiles(col, outer)
        ax.plot([lo, hi], [y, y], color="C0", lw=1.2)
        lo, hi = band_quantiles(col, inner)
        ax.plot([lo, hi], [y, y], color="C0", lw=3.5)
        ax.plot([col.mean()], [y], "o", color="C0", ms=5)
    pooled = _direct_effect_mean(tree)
    lo, hi = band_quantiles(pooled, outer)
    label = "pooled mean pi_mean" if "pi_mean" in post else "average over teams"
    ax.axvspan(lo, hi, color="C1", alpha=0.2, label=f"{label} ({100 * outer:g}%)")
    ax.axvline(pooled.mean(), color="C1", lw=1.2)
    ax.set_yticks(ypos, teams)
    ax.set_xlabel(f"direct effect on {kpi}, not through the metric")
    ax.set_title(f"Team direct effects pi ({tree.attrs.get('metric', '')} model): "
                 f"{100 * inner:g}% and {100 * outer:g}% intervals", fontsize=10)
    legend_below(fig, [ax])
    return fig
