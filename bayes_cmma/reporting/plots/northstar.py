"""The composite north star figure: weights and scores against the future trial's size."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bayes_cmma.reporting.plots._common import legend_below


def northstar_plot(frame: pd.DataFrame, criterion: str = "sign", kpi: str = "KPI") -> Figure:
    """Left: each metric's weight in the best composite (mean, 94% HDI) against the future
    trial's size; right: the score of the composite and of every metric alone.

    ``frame`` is :func:`bayes_cmma.northstar_frame` (or ``northstar.csv``).
    """
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_w, ax_s = fig.subplots(1, 2)
    candidates = list(dict.fromkeys(frame["candidate"]))
    metrics = [c for c in candidates if c != "composite"]
    sizes = np.sort(frame["future_size"].unique())
    offsets = np.linspace(-0.04, 0.04, max(len(metrics), 1))
    for i, m in enumerate(metrics):
        sub = frame[frame["candidate"] == m].sort_values("future_size")
        x = sub["future_size"].to_numpy() * 2.0 ** offsets[i]
        mean = sub["weight_mean"].to_numpy()
        # the interval is an HDI (bayes_cmma.northstar_frame), which need not hold the mean
        err = np.maximum(0.0, np.vstack([mean - sub["weight_lower"].to_numpy(), sub["weight_upper"].to_numpy() - mean]))
        ax_w.errorbar(x, mean, yerr=err, marker="o", capsize=3, color=f"C{i}", label=m)
    ax_w.axhline(0.0, color="0.6", lw=0.8)
    ax_w.set_ylabel("weight on the ATE / its sd (unit length)")
    ax_w.set_title("Weights of the best composite", fontsize=10)
    for i, c in enumerate([*metrics, "composite"]):
        sub = frame[frame["candidate"] == c].sort_values("future_size")
        color = "black" if c == "composite" else f"C{i}"
        ax_s.plot(sub["future_size"], sub["score_mean"], marker="o", color=color, lw=2.5 if c == "composite" else 1.2,
                  label=c if c == "composite" else None)
        ax_s.fill_between(sub["future_size"], sub["score_lower"], sub["score_upper"], color=color, alpha=0.12, lw=0)
    ylabel = (f"P(sign agrees with {kpi}'s true effect)" if criterion == "sign"
              else f"corr(observed ATE, {kpi}'s true effect)")
    ax_s.set_ylabel(ylabel)
    ax_s.set_title("Score of each candidate (band: 94% interval)", fontsize=10)
    n_ref = frame.groupby("future_size")["n_per_arm"].first()
    for ax in (ax_w, ax_s):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [f"{s:.3g}" for s in sizes])
        ax.minorticks_off()
        if np.isfinite(n_ref.to_numpy()).all():
            ax.set_xlabel("future trial size, units per arm")
            ax.set_xticks(sizes, [f"{n:,.0f}" for n in n_ref.loc[sizes]])
        else:
            ax.set_xlabel("future trial size (1 = a median past trial)")
    legend_below(fig, [ax_w, ax_s], ncol=len(metrics) + 1)
    fig.suptitle("The best composite north star for a future trial")
    return fig


def more_trials_plot(frame: pd.DataFrame) -> Figure:
    """P(correct choice) and the expected P(best) of the choice, and the expected regret, against the
    number of new trials (``bayes_cmma.value_frame`` or ``more_trials.csv``)."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_p, ax_r = fig.subplots(1, 2)
    x = frame["new_trials"].to_numpy()
    xs = np.where(x == 0, 1.0, x)  # log axis: today at 1, labelled 0
    se = frame["p_correct_mcse"].to_numpy()
    ax_p.errorbar(xs, frame["p_correct"], yerr=2 * se, marker="o", capsize=3, color="C0",
                  label="P(the choice is truly best)")
    ax_p.plot(xs, frame["expected_p_best"], marker="s", ls="--", color="C1", label="expected P(best) of the choice")
    ax_p.plot(xs, frame["p_confident"], marker="^", ls=":", color="C2",
              label=f"P(P(best) >= {float(frame['target'].iloc[0]):g})")
    ax_p.axhline(float(frame["target"].iloc[0]), color="0.6", lw=0.8)
    ax_p.set_ylim(0, 1.02)
    ax_p.set_ylabel("probability")
    ax_r.plot(xs, frame["expected_regret"], marker="o", color="C3", label="expected regret")
    ax_r.set_ylabel("expected regret (elasticity lost)")
    for ax in (ax_p, ax_r):
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{int(v)}" for v in x])
        ax.minorticks_off()
        ax.set_xlabel("new trials like the past ones")
    legend_below(fig, [ax_p, ax_r], ncol=4)
    fig.suptitle(f"The value of more trials (today: {int(frame['total_trials'].iloc[0] - x[0])} trials)")
    return fig
