"""Per-metric decision-focused fusion: Bi-DFCL's bi-level problem, solved with implicit differentiation.

:mod:`bayes_cmma.decisions.fusion` leans on the logs with one strength for all metrics. Here every
metric has its own pull towards the logs, so the outer problem has J parameters and a grid will not
do. The inner level is a ridge regression of the trials' KPI ATEs on their metric ATEs, pulled
towards the logs' weights::

    w(lam) = argmin_w  w' G w - 2 g' w + sum_j lam_j G_jj (w_j - o*_j)^2
           = (G + P)^-1 (g + P o*),   P = diag(lam_j G_jj),

with G, g the trials' noise-corrected cross-moments and o* = G^-1 (G - sum S) o the logs' slopes
adjusted to the trials' noise (the strength-inf rule of the fusion module). lam = 0 is the trials'
composite, lam_j -> inf fixes metric j's weight at the logs'. The inner problem's stationarity
condition F(w, lam) = (G + P) w - g - P o* = 0 gives, by the implicit function theorem,

    dw / dlam_j = -(dF/dw)^-1 dF/dlam_j = (G + P)^-1 e_j G_jj (o*_j - w_j).

The outer level maximises the cross-fitted, fission-scored decision value of the launch rule
w' m_hat > 0 (:mod:`bayes_cmma.decisions.decision_value`), with the step smoothed so that it has a
gradient: a held-out trial k is launched with probability Phi(w' f_k / (h sd_k)), sd_k the sd of
w' f_k and h the ``smoothing``. The gradient flows through each fold's inner solution by the formula
above (checked against PyTensor's automatic gradient through ``solve`` in the tests), and the
pulls are found by L-BFGS-B on [0, ``max_pull``]^J from lam = 0.

As with one strength, the outer value is estimated from the same few trials it is maximised on:
optimistic, and with ten trials close to noise. By default the pulls are kept only when the
(unsmoothed) cross-fitted value of the fused rule beats the trials' composite by more than one
paired standard error. Measured in ``benchmarks/fusion_launch_check.py`` (500 replications per
setting): with ten trials it gained 12% in regret with clean logs (7% with the significance check)
and lost up to 30% (23%) with confounded ones; the one-strength Stein rule of
:mod:`bayes_cmma.decisions.fusion` is the safer default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

from bayes_cmma.decisions.decision_value import cross_moments, unit
from bayes_cmma.decisions.fusion import cross_fitted_table, fusion_setup
from bayes_cmma.errors import DataError
from bayes_cmma.inputs.data import TrialData


@dataclass(frozen=True)
class BilevelFusion:
    """Per-metric pulls towards the logs chosen by the cross-fitted decision value.

    Attributes
    ----------
    pulls : pandas.Series
        lam_j per metric (index ``metric``): 0 = the trials alone for that metric's weight. All 0
        when the fused rule was not kept.
    optimised : pandas.Series
        The pulls the outer level found (kept or not).
    weights : pandas.Series
        w(pulls) fitted on every trial (index ``metric``), unit length.
    table : pandas.DataFrame
        Rows ``trials`` (lam = 0) and ``fused`` (the optimised pulls): the cross-fitted decision
        ``value`` per trial with its ``std_error``, ``launch_rate``, and the paired ``difference``
        from ``trials`` with its ``difference_se``.
    kept : bool
        Whether the optimised pulls were kept (see ``keep`` of :func:`bilevel_fusion`).
    """

    pulls: pd.Series
    optimised: pd.Series
    weights: pd.Series
    table: pd.DataFrame
    kept: bool


def logs_target(z: np.ndarray, S: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """o* = G^-1 (G - sum_k S_mm,k) o: the logs' slopes adjusted to the trials' noise (J,)."""
    gram, _ = cross_moments(z, S)
    return np.linalg.solve(gram, (gram - S[:, 1:, 1:].sum(axis=0)) @ np.asarray(prior, dtype=float))


def inner_weights(gram: np.ndarray, cross: np.ndarray, target: np.ndarray, pulls: np.ndarray) -> np.ndarray:
    """w(lam) = (G + P)^-1 (g + P o*), P = diag(lam_j G_jj): the inner solution (not normalised)."""
    p = np.asarray(pulls, dtype=float) * np.diag(gram)
    return np.linalg.solve(gram + np.diag(p), cross + p * target)


def inner_jacobian(gram: np.ndarray, w: np.ndarray, target: np.ndarray, pulls: np.ndarray) -> np.ndarray:
    """dw/dlam (J, J), column j = (G + P)^-1 e_j G_jj (o*_j - w_j), by the implicit function theorem."""
    diag = np.diag(gram)
    return np.linalg.solve(gram + np.diag(np.asarray(pulls, dtype=float) * diag), np.diag(diag * (target - w)))


def smoothed_value(
    w: np.ndarray, f: np.ndarray, kpi: np.ndarray, cov: np.ndarray, smoothing: float
) -> tuple[float, np.ndarray]:
    """sum over trials of mean over repeats of kpi * Phi(w' f / (h sd)), and its gradient in w.

    ``f`` (repeat, trial, J) are the decision halves of the metric ATEs, ``kpi`` (repeat, trial) the
    scoring halves of the KPI ATE, ``cov`` (trial, J, J) the covariance of f per trial, so that
    sd_k = sqrt(w' cov_k w). The value is invariant to the scale of w.
    """
    cw = cov @ w  # (trial, J)
    sd = np.sqrt(cw @ w)  # (trial,)
    u = f @ w  # (repeat, trial)
    x = u / (smoothing * sd)
    value = float(np.mean(kpi * stats.norm.cdf(x), axis=0).sum())
    weight = kpi * stats.norm.pdf(x) / (smoothing * sd)  # d value / d u, per (repeat, trial)
    # d x / d w = f / (h sd) - u cov w / (h sd^3)
    grad = np.einsum("rk,rkj->j", weight, f) - np.einsum("rk,rk,kj->j", weight, u / sd**2, cw)
    return value, grad / f.shape[0]


def bilevel_fusion(
    data: TrialData,
    kpi: str,
    metrics: Sequence[str],
    observational_weights: Mapping[str, float],
    *,
    folds: int = 5,
    tau: float = 1.0,
    repeats: int = 50,
    seed: int = 0,
    within_trial_correlation: float = 0.0,
    smoothing: float = 0.5,
    max_pull: float = 100.0,
    keep: str = "significant",
) -> BilevelFusion:
    """Per-metric pulls of the composite launch rule towards the logs, by implicit differentiation.

    Parameters
    ----------
    data, kpi, metrics, observational_weights, folds, tau, repeats, seed, within_trial_correlation
        As in :func:`bayes_cmma.decision_focused_fusion`; the folds and fission draws are the same
        for the same seed.
    smoothing : float
        h of the smoothed launch Phi(w' f / (h sd)) that the outer level maximises (> 0; the
        reported values use the unsmoothed step).
    max_pull : float
        Upper bound of every lam_j (> 0).
    keep : {"significant", "always"}
        ``"significant"`` (default): keep the optimised pulls only if the fused rule's paired gain over
        the trials' composite exceeds one standard error, else the trials alone. ``"always"``: keep
        them.

    Returns
    -------
    BilevelFusion

    Raises
    ------
    DataError
        Bad ``smoothing``, ``max_pull`` or ``keep``, or the inputs
        :func:`bayes_cmma.decision_focused_fusion` refuses.
    """
    if not (np.isfinite(smoothing) and smoothing > 0):
        raise DataError(f"smoothing must be a positive number, got {smoothing}.")
    if not (np.isfinite(max_pull) and max_pull > 0):
        raise DataError(f"max_pull must be a positive number, got {max_pull}.")
    if keep not in ("significant", "always"):
        raise DataError(f"keep must be 'significant' or 'always', got {keep!r}.")
    design, prior, fold, f, g = fusion_setup(data, kpi, metrics, observational_weights, folds=folds, tau=tau,
                                             repeats=repeats, seed=seed,
                                             within_trial_correlation=within_trial_correlation)
    metrics, K, J = list(metrics), design.n_trials, len(metrics)
    z, S = design.z, design.S
    parts = []
    for i in range(int(folds)):
        test = fold == i
        gram, cross = cross_moments(z[~test], S[~test])
        parts.append((test, gram, cross, logs_target(z[~test], S[~test], prior),
                      (1 + tau**2) * S[test][:, 1:, 1:]))

    def objective(pulls: np.ndarray) -> tuple[float, np.ndarray]:
        total, grad = 0.0, np.zeros(J)
        for test, gram, cross, target, cov in parts:
            w = inner_weights(gram, cross, target, pulls)
            value, dw = smoothed_value(w, f[:, test, 1:], g[:, test, 0], cov, smoothing)
            total += value
            grad += inner_jacobian(gram, w, target, pulls).T @ dw
        return -total / K, -grad / K

    found = optimize.minimize(objective, np.zeros(J), jac=True, method="L-BFGS-B",
                              bounds=[(0.0, float(max_pull))] * J)
    pulls = np.clip(found.x, 0.0, max_pull)

    table = cross_fitted_table(f, g, fold, [np.zeros(J), pulls],
                               lambda lam, i, _: inner_weights(*parts[i][1:4], lam))
    table.index = pd.Index(["trials", "fused"], name="rule")
    kept = keep == "always" or bool(table.loc["fused", "difference"] > table.loc["fused", "difference_se"])
    chosen = pulls if kept else np.zeros(J)
    gram, cross = cross_moments(z, S)
    w = unit(inner_weights(gram, cross, logs_target(z, S, prior), chosen))
    index = pd.Index(metrics, name="metric")
    return BilevelFusion(pulls=pd.Series(chosen, index=index), optimised=pd.Series(pulls, index=index),
                         weights=pd.Series(w, index=index), table=table, kept=kept)


def bilevel_frame(result: BilevelFusion) -> pd.DataFrame:
    """One table of a :class:`BilevelFusion` (``fusion.csv`` of ``decision-value --fusion-select
    per-metric``): its ``table`` with a ``rule`` column, each metric's optimised pull as
    ``pull_<metric>`` (0 on the ``trials`` row) and ``chosen`` marking the rule that was kept."""
    table = result.table.reset_index()
    for m, v in result.optimised.items():
        table[f"pull_{m}"] = [0.0, float(v)]
    table["chosen"] = [not result.kept, result.kept]
    return table


__all__ = ["BilevelFusion", "bilevel_frame", "bilevel_fusion", "inner_jacobian", "inner_weights", "logs_target",
           "smoothed_value"]
