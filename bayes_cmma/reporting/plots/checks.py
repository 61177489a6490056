"""Figures for checking a fit: posterior predictive check, LOO Pareto k, shrinkage, trace/rank plots.

Each function takes one fitted metric (a :class:`~bayes_cmma.fitting.bayes.MetricFit` or its posterior
DataTree) and returns a ``matplotlib.figure.Figure``; the numbers come from
:mod:`bayes_cmma.checks.checking` and nothing is sampled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from scipy import stats

from bayes_cmma import dims
from bayes_cmma.checks import checking
from bayes_cmma.reporting.plots._common import as_tree, kpi_of, legend_below, metric_of

K_BAD = checking.PARETO_K_BAD


def ppc_plot(fit: Any, prob: float = 0.94) -> Figure:
    """Observed (metric ATE, KPI ATE) points over each trial's ``prob`` predictive ellipse; PIT histograms.

    The ellipse is the normal ellipse with the exact mean and covariance of the trial's posterior
    predictive law (a new measurement of the same trial). The legend gives the share of trials
    inside their own ellipse, which should be near ``prob``. The PIT values (right) should be
    roughly uniform.
    """
    tree = as_tree(fit)
    metric, kpi = metric_of(tree), kpi_of(tree)
    mom = checking.predictive_moments(tree)
    z = tree["observed_data"]["trial_ate"].transpose(dims.TRIAL, dims.QUANTITY).values
    both = np.isfinite(z[:, 0]) & np.isfinite(z[:, 1])  # trials that report the KPI and the metric
    mean = mom["mean"].values[both][:, [1, 0]]
    cov = mom["cov"].values[both][:, [1, 0]][:, :, [1, 0]]
    obs = z[both][:, [1, 0]]
    r2 = stats.chi2.ppf(prob, 2)
    resid = obs - mean
    maha = np.einsum("ki,kij,kj->k", resid, np.linalg.inv(cov), resid)
    inside = float(np.mean(maha <= r2))
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax, ax_k, ax_m = fig.subplots(1, 3, width_ratios=(1.6, 1, 1))
    for mu, c in zip(mean, cov, strict=True):
        w, v = np.linalg.eigh(c)
        angle = np.degrees(np.arctan2(v[1, 1], v[0, 1]))
        ax.add_patch(Ellipse(mu, 2 * np.sqrt(r2 * w[1]), 2 * np.sqrt(r2 * w[0]), angle=angle,
                             facecolor="none", edgecolor="C0", alpha=0.25, lw=0.6))
    ax.plot(obs[:, 0], obs[:, 1], "o", ms=3, color="k",
            label=f"observed; {100 * inside:.0f}% inside their {100 * prob:g}% ellipse")
    ax.plot([], [], color="C0", alpha=0.6, lw=1, label=f"{100 * prob:g}% predictive ellipse per trial")
    ax.autoscale_view()
    ax.set_xlabel(f"ATE on {metric}")
    ax.set_ylabel(f"ATE on {kpi}")
    ax.set_title("Posterior predictive check", fontsize=10)
    pit = checking.pit(tree)
    edges = np.linspace(0, 1, 11)
    for a, pos, name in ((ax_k, 0, kpi), (ax_m, 1, metric)):
        values = pit.isel({dims.QUANTITY: pos}).values
        values = values[np.isfinite(values)]  # the trials that report this quantity
        lo, hi = stats.binom.interval(0.99, len(values), 0.1)
        a.axhspan(lo, hi, color="0.88", zorder=0, label="99% range if uniform")
        a.hist(values, bins=edges, color="C0", edgecolor="white")
        a.set_xlabel(f"PIT of the ATE on {name}")
        a.set_ylabel("trials")
    legend_below(fig, [ax, ax_k, ax_m])
    fig.suptitle(f"Model check, {metric} model: do new measurements look like the observed ones?")
    return fig


def pareto_k_plot(fit: Any, var_name: str = "trial_ate", label_worst: int = 5, loo: Any = None) -> Figure:
    """PSIS-LOO Pareto k per trial; the ``label_worst`` largest are labelled with their trial ID.

    ``loo``: a pointwise result of :func:`bayes_cmma.checks.checking.loo` for this fit, if already computed.
    """
    tree = as_tree(fit)
    res = checking.loo(tree, var_name=var_name) if loo is None else loo
    k = res.pareto_k.values
    trials = [str(t) for t in res.pareto_k[dims.TRIAL].values]
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    ax = fig.subplots()
    bad = k > K_BAD
    ax.scatter(np.flatnonzero(~bad), k[~bad], s=10, color="C0", label=f"k <= {K_BAD}")
    ax.scatter(np.flatnonzero(bad), k[bad], s=18, color="C3", marker="x", label=f"k > {K_BAD}: PSIS unreliable")
    ax.axhline(K_BAD, color="C3", ls="--", lw=0.8)
    for i, dy in label_offsets(k, np.argsort(-k)[:label_worst]):
        ax.annotate(trials[i], (i, k[i]), xytext=(3, dy), textcoords="offset points", fontsize=7,
                    arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if dy != 3 else None)
    ax.set_xlabel("trial (table order)")
    ax.set_ylabel("Pareto k")
    ax.set_title(f"LOO Pareto k, {metric_of(tree)} model: {int(bad.sum())} of {len(k)} trials above {K_BAD} "
                 f"(ELPD {res.elpd:.1f}, SE {res.se:.1f})", fontsize=10)
    legend_below(fig, [ax])
    return fig


def label_offsets(k: np.ndarray, labelled: np.ndarray, near: float = 0.06) -> list[tuple[int, float]]:
    """Vertical label offsets (points) that keep the labels of nearby points from overlapping.

    Points are taken left to right; a point within ``near`` of the x range (and of the k range) of
    the previous labelled point gets its label 9 points above that one's, so neighbours such as
    T062 and T063 stack instead of printing over each other.
    """
    order = sorted(int(i) for i in labelled)
    span_x = max(len(k) - 1, 1)
    span_k = float(np.ptp(k[np.isfinite(k)])) if np.isfinite(k).any() else 1.0
    out: list[tuple[int, float]] = []
    for i in order:
        dy = 3.0
        if out:
            j, prev = out[-1]
            close_k = not (np.isfinite(k[i]) and np.isfinite(k[j])) or abs(k[i] - k[j]) <= near * max(span_k, 1e-12)
            if (i - j) / span_x <= near and close_k:
                dy = prev + 9.0
        out.append((i, dy))
    return out


def shrinkage_plot(fit: Any) -> Figure:
    """Observed ATE against the posterior mean of the trial's true effect, for the metric and the KPI.

    Points below the identity line's spread were pulled toward their team's mean: the noisier
    the trial, the more. Colour = team.
    """
    tree = as_tree(fit)
    metric, kpi = metric_of(tree), kpi_of(tree)
    latent = checking.latent_effects(tree)
    z = tree["observed_data"]["trial_ate"].transpose(dims.TRIAL, dims.QUANTITY).values
    teams = np.asarray(tree["constant_data"]["team"].values).astype(str)
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, pos, name in ((axes[0], 1, metric), (axes[1], 0, kpi)):
        post = latent["mean"].isel({dims.QUANTITY: pos}).values
        reported = np.isfinite(z[:, pos])  # an unreported ATE has no point to shrink
        for i, team in enumerate(dict.fromkeys(teams)):
            sel = (teams == team) & reported
            ax.scatter(z[sel, pos], post[sel], s=10, color=f"C{i % 10}", label=team)
        lims = [min(z[reported, pos].min(), post[reported].min()), max(z[reported, pos].max(), post[reported].max())]
        ax.plot(lims, lims, color="0.5", lw=0.8, ls="--", label="no shrinkage")
        ax.set_xlabel(f"observed ATE on {name}")
        ax.set_ylabel(f"true effect on {name}\n(posterior mean)")
    legend_below(fig, axes, ncol=min(len(set(teams)) + 1, 6))
    fig.suptitle(f"Shrinkage, {metric} model: measurement error pulls noisy trials toward their team")
    return fig


def _global_parameters(post: xr.Dataset) -> dict[str, np.ndarray]:
    """name -> (chain, draw) draws of the scalar global parameters."""
    out = {}
    for name in ("beta", "metric_sd"):
        for p in post[dims.POWER].values:
            out[f"{name}[{p}]"] = post[name].sel({dims.POWER: p}).transpose(*dims.SAMPLE_DIMS).values
    for name in ("residual_sd", "pi_mean", "pi_sd"):
        if name in post:
            out[name] = post[name].transpose(*dims.SAMPLE_DIMS).values
    return out


def trace_plot(fit: Any, bins: int = 20) -> Figure:
    """Trace (left) and rank histogram per chain (right) of each global parameter.

    Well-mixed chains overlap in the trace and have flat, overlapping rank histograms.
    """
    tree = as_tree(fit)
    params = _global_parameters(tree["posterior"].to_dataset())
    fig = Figure(figsize=(10, 1.6 * len(params) + 0.6), layout="constrained")
    axes = fig.subplots(len(params), 2, squeeze=False, width_ratios=(2, 1))
    for (ax_t, ax_r), (name, draws) in zip(axes, params.items(), strict=True):
        C, D = draws.shape
        ranks = stats.rankdata(draws.ravel()).reshape(C, D)
        edges = np.linspace(0, C * D, bins + 1)
        for c in range(C):
            ax_t.plot(draws[c], lw=0.5, color=f"C{c}", alpha=0.8)
            counts, _ = np.histogram(ranks[c], bins=edges)
            ax_r.step(np.arange(bins), counts, where="mid", color=f"C{c}", lw=1)
        ax_r.axhline(D / bins, color="0.5", ls="--", lw=0.8)
        ax_t.set_ylabel(name, fontsize=8)
        ax_r.set_yticks([])
    axes[-1, 0].set_xlabel("draw")
    axes[-1, 1].set_xlabel("rank bin (all chains pooled)")
    fig.suptitle(f"Trace and rank plots, {metric_of(tree)} model (chains in colour)")
    return fig

