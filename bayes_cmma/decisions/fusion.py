"""Decision-focused fusion: how far a composite launch rule should lean on the observational logs.

The decision is a launch policy: launch a trial's treatment when its composite north star,
w' m_hat (the metrics' ATEs weighted by w), is positive. Its value is linear in the trials' true KPI
effects, so :mod:`bayes_cmma.decisions.decision_value` estimates it without bias from held-out trials.
Two sources of weights:

* the trials: the noise-corrected best linear predictor of a trial's true KPI effect from its metric
  ATEs, w_T = G^-1 g with G = sum_k m_k m_k' and g = sum_k (m_k y_k - S_my,k) (total covariance; see
  :func:`bayes_cmma.decisions.decision_value.composite_weights`): unbiased, but noisy with few trials;
* the logs: the partial slopes o of the KPI on every metric at once in unit-level rows, plentiful but
  confounded.

Both estimate the same cross-moment sum_k m_k y_k: the trials directly (g), the logs through
y = o'm, as g_o = (G - sum_k S_mm,k) o (the metric ATEs' scatter less its noise, times the slopes).
The fused weights average the two with strength lambda::

    w(lambda) = G^-1 (g + lambda g_o) / (1 + lambda)

lambda = 0 is the trials alone; lambda -> infinity the logs alone, adjusted to the trials' noise
(G^-1 (G - sum S) o: the best rule for deciding on noisy ATEs when the KPI is o'm, which is not o
itself, since a noisy metric should weigh less). This is the bi-level problem of
Bi-DFCL (decision-focused causal learning): the inner level fits w(lambda) on the trials and the
logs; the outer level chooses lambda to maximise the cross-fitted, fission-scored decision value of
the launch rule w(lambda)' m_hat > 0 on held-out trials (the unbiased estimator of decision
quality). With one strength the outer problem is one-dimensional and solved on a grid.

The outer level is noisy with few trials: ten trials estimate the decision value with a standard
error about as large as the differences between strengths, so the choice is close to chance and
confounded logs get picked. The default (``select="stein"``) does not choose by the decision value.
It borrows the share s = min(1, (J - 2) / D^2) of the logs' cross-moment, where

    D^2 = (g - g_o)' V^-1 (g - g_o),   V = sum_k psi_k psi_k' / (1 - h_k)^2,
    psi_k = m_k (y_k - m_k' w_T) - S_my,k,   h_k = m_k' G^-1 m_k

is the logs' disagreement with the trials in units of the trials' own (sandwich) noise: the
positive-part James-Stein estimator of the cross-moment, shrunk from the trials' g towards the logs'
g_o (Green and Strawderman 1991, "A James-Stein type estimator for combining unbiased and possibly
biased estimators"). With J >= 3 metrics it has less squared error than the trials alone whatever
the logs' bias, if V were known; logs that disagree with the trials by much more than their noise
are barely borrowed. That guarantee is for the cross-moment's squared error, not for launch regret:
with V the true covariance of g - g_o the rule lost up to 9% of regret to confounded logs in a
simulation where this sandwich lost at most 1% (docs: checks.md, "Does decision-focused fusion help
a launch rule?"). Its strength is lambda = s / (1 - s). With 2 metrics J - 2 = 0: the trials
alone.

V is the HC3 sandwich (each trial's score divided by one minus its leverage h_k). With few trials
the plain sandwich underestimates the noise, because the residuals are those of a fit to the same
trials; the HC1 correction K / (K - J) is too small for that: at ten trials and clean logs its D^2
had a median about twice chi-square_3's, so Stein's rule borrowed half as much as it should.
HC3's median is close to chi-square_3's (``benchmarks/fusion_launch_check.py``; ``sandwich="hc1"``
gives the old form).

The value of the chosen lambda's rule on the same trials is optimistic (it was chosen for being
high); the curve is reported for that reason, and the studies evaluate the choice on new trials.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayes_cmma.decisions.decision_value import (
    check_composite_rank,
    cross_moments,
    fission,
    fold_labels,
    unit,
    value_per_trial,
)
from bayes_cmma.errors import DataError
from bayes_cmma.inputs.data import MetricDesign, TrialData, joint_design

#: Fusion strengths tried by default (0 = the trials alone, inf = the logs alone).
LAMBDAS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0, float("inf"))
#: Ways to choose the strength (the first is the default).
SELECT = ("stein", "significant", "best")
#: Small-sample forms of the sandwich V in :func:`disagreement` (the first is the default).
SANDWICHES = ("hc3", "hc1")


@dataclass(frozen=True)
class FusionChoice:
    """The decision-focused fusion strength and its launch rule.

    Attributes
    ----------
    curve : pandas.DataFrame
        Per ``fusion_strength``: the cross-fitted decision value (``value``, per trial, KPI units) and
        its ``std_error``, ``launch_rate``, and the paired ``difference`` from the first strength (the
        trials alone by default) with its ``difference_se``.
    strength : float
        The chosen strength (see ``select`` of :func:`decision_focused_fusion`).
    weights : pandas.Series
        w(strength) fitted on every trial (index ``metric``), unit length.
    disagreement : float
        D^2, the logs' disagreement with the trials in units of the trials' noise (see the module
        docstring); under "the logs are right" it is about chi-square with J degrees of freedom. NaN
        when it is undefined and ``select`` is not ``"stein"`` (which needs it).
    rule_weights : pandas.DataFrame
        w(strength) fitted on every trial for each row of ``curve`` (same row order; columns: the
        metrics), unit length.
    slopes : pandas.Series
        The logs' partial slopes o (index ``metric``).
    """

    curve: pd.DataFrame
    strength: float
    weights: pd.Series
    disagreement: float
    rule_weights: pd.DataFrame
    slopes: pd.Series


def fused_weights(z: np.ndarray, S: np.ndarray, prior: np.ndarray, strength: float) -> np.ndarray:
    """w(lambda) = G^-1 (g + lambda g_o) / (1 + lambda), unit length (see the module docstring).

    ``z`` (trial, 1 + J) holds the KPI ATE first, ``S`` (trial, 1 + J, 1 + J) the measurement
    covariances, ``prior`` (J,) the observational partial slopes o.
    """
    gram, cross = cross_moments(z, S)
    cross_obs = (gram - S[:, 1:, 1:].sum(axis=0)) @ np.asarray(prior, dtype=float)
    if np.isinf(strength):
        return unit(np.linalg.solve(gram, cross_obs))
    return unit(np.linalg.solve(gram, (cross + strength * cross_obs) / (1.0 + strength)))


def fusion_setup(
    data: TrialData,
    kpi: str,
    metrics: Sequence[str],
    observational_weights: Mapping[str, float],
    *,
    folds: int,
    tau: float,
    repeats: int,
    seed: int,
    within_trial_correlation: float,
) -> tuple[MetricDesign, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check the inputs of a fusion and draw what it scores with.

    Returns the complete-case design, the observational slopes (J,) in ``metrics`` order, the fold
    of each trial and the fission halves (f, g) (repeat, trial, 1 + J), drawn in that order from
    ``numpy.random.default_rng(seed)``.

    Raises
    ------
    DataError
        Fewer than 2 metrics, a metric without an observational slope, slopes all 0 or not finite,
        ``tau`` not positive, ``folds`` out of range, no more complete trials than metrics, collinear
        metric ATEs (:func:`~bayes_cmma.decisions.decision_value.check_composite_rank`), or the inputs
        :func:`bayes_cmma.decision_value` refuses.
    """
    metrics = list(metrics)
    if len(metrics) < 2:
        raise DataError(f"a composite needs 2 or more metrics; got {metrics}.")
    missing = [m for m in metrics if m not in observational_weights]
    if missing:
        raise DataError(f"no observational slope for metric(s) {', '.join(map(repr, missing))}; give one for every "
                        f"metric ({', '.join(metrics)}).")
    prior = np.array([float(observational_weights[m]) for m in metrics])
    if not np.all(np.isfinite(prior)) or not np.any(prior != 0):
        raise DataError("the observational slopes must be finite and not all 0.")
    if not (np.isfinite(tau) and tau > 0):
        raise DataError(f"tau (the fission strength) must be positive here, got {tau}.")
    design = joint_design(data, kpi, metrics, within_trial_correlation, warn_filled=False).complete_cases()
    K = design.n_trials
    if not 2 <= int(folds) <= K:
        raise DataError(f"folds must be between 2 and the number of complete trials ({K}), got {folds}.")
    if K <= len(metrics):
        raise DataError(f"the fusion needs more complete trials ({K}) than metrics ({len(metrics)}).")
    rng = np.random.default_rng(seed)
    fold = fold_labels(K, int(folds), rng)
    check_composite_rank(design.z[:, 1:], metrics, fold)
    f, g = fission(design.z, design.S, float(tau), rng, int(repeats))
    return design, prior, fold, f, g


def sandwich_covariance(z: np.ndarray, S: np.ndarray, *, form: str = "hc3") -> np.ndarray:
    """V, the sandwich covariance (J, J) of the trials' cross-moment g (see the module docstring).

    ``z`` (trial, 1 + J) holds the KPI ATE first, ``S`` (trial, 1 + J, 1 + J) the measurement
    covariances. ``form`` is the small-sample form: ``"hc3"`` (default) divides each trial's score by
    1 - h_k, its leverage h_k = m_k' G^-1 m_k; ``"hc1"`` scales the sum by K / (K - J).

    Raises
    ------
    DataError
        An unknown form, or a trial of leverage 1 (with ``"hc3"``: it alone determines a direction of
        the metric ATEs).
    """
    if form not in SANDWICHES:
        raise DataError(f"sandwich must be one of {', '.join(map(repr, SANDWICHES))}, got {form!r}.")
    gram, cross = cross_moments(z, S)
    m = z[:, 1:]
    K, J = m.shape
    psi = m * (z[:, 0] - m @ np.linalg.solve(gram, cross))[:, None] - S[:, 1:, 0]
    if form == "hc1":
        return psi.T @ psi * K / (K - J)
    leverage = np.einsum("ki,ki->k", m, np.linalg.solve(gram, m.T).T)
    if np.any(leverage > 1.0 - 1e-10):
        raise DataError(
            f"trial {int(np.argmax(leverage))} (0-based, of the {K} complete trials) alone determines a direction "
            "of the metrics' ATEs (leverage 1), so the trials' noise in that direction cannot be estimated and "
            "the logs' disagreement is undefined. Use another fusion choice (select='best' or 'significant'; "
            "CLI --fusion-select), fewer metrics, or more trials."
        )
    psi = psi / (1.0 - leverage)[:, None]
    return psi.T @ psi


def disagreement(z: np.ndarray, S: np.ndarray, prior: np.ndarray, *, sandwich: str = "hc3") -> float:
    """D^2 = (g - g_o)' V^-1 (g - g_o): the logs' disagreement with the trials (see the module docstring).

    ``z`` (trial, 1 + J) holds the KPI ATE first, ``S`` (trial, 1 + J, 1 + J) the measurement
    covariances, ``prior`` (J,) the observational partial slopes o. Needs more trials than metrics.
    ``sandwich`` is the small-sample form of V (:func:`sandwich_covariance`): ``"hc3"`` (default) or ``"hc1"``.

    Raises
    ------
    DataError
        A trial of leverage 1 (with ``"hc3"``: it alone determines a direction of the metric ATEs), or
        a singular V (scores that are collinear, e.g. a KPI fitted exactly).
    """
    V = sandwich_covariance(z, S, form=sandwich)
    gram, cross = cross_moments(z, S)
    K, J = z.shape[0], z.shape[1] - 1
    cross_obs = (gram - S[:, 1:, 1:].sum(axis=0)) @ np.asarray(prior, dtype=float)
    d = cross - cross_obs
    try:
        return float(d @ np.linalg.solve(V, d))
    except np.linalg.LinAlgError as exc:
        raise DataError(
            f"the trials' noise in the cross-moment cannot be estimated: their {J} metrics' scores are collinear "
            f"over the {K} trials (e.g. the KPI's ATE is fitted exactly by the metrics'); the logs' disagreement "
            "with the trials is undefined. Use another fusion choice (select='best' or 'significant'; CLI "
            "--fusion-select) or more trials."
        ) from exc


def stein_strength(z: np.ndarray, S: np.ndarray, prior: np.ndarray) -> float:
    """lambda = s / (1 - s) with s = min(1, (J - 2) / D^2): Stein's share of the logs (module docstring)."""
    return _stein_from(disagreement(z, S, prior), z.shape[1] - 1)


def _stein_from(D2: float, J: int) -> float:
    """:func:`stein_strength` from D^2 and the number of metrics J."""
    return strength_from_share(min(1.0, (J - 2) / D2) if D2 > 0 else float(J > 2))


def strength_from_share(share: float) -> float:
    """The fusion strength lambda = s / (1 - s) that borrows the share s of the logs' cross-moment (inf at 1)."""
    return float("inf") if share >= 1 else share / (1.0 - share)


def cross_fitted_table(
    f: np.ndarray,
    g: np.ndarray,
    fold: np.ndarray,
    rules: Sequence,
    weights: Callable[[object, int, np.ndarray], np.ndarray],
) -> pd.DataFrame:
    """The cross-fitted, fission-scored decision value of launch rules, a row per rule.

    ``f``, ``g`` (repeat, trial, 1 + J) are the fission halves, ``fold`` (trial,) the folds, and
    ``weights(rule, i, train)`` the rule's weights fitted on the trials ``train`` (a mask) of all but
    fold ``i``. Columns: ``value`` per trial, its ``std_error``, ``launch_rate``, and the paired
    ``difference`` from the first rule with its ``difference_se``.
    """
    K = f.shape[1]
    rows, per_trial = [], []
    for rule in rules:
        score = np.empty(f.shape[:2])
        for i in np.unique(fold):
            test = fold == i
            score[:, test] = f[:, test, 1:] @ weights(rule, int(i), ~test)
        contrib, rate = value_per_trial(score, g[..., 0])
        per_trial.append(contrib)
        rows.append({"value": contrib.mean(), "std_error": contrib.std(ddof=1) / np.sqrt(K),
                     "launch_rate": rate.mean()})
    table = pd.DataFrame(rows)
    diff = np.array(per_trial) - per_trial[0]  # paired, against the first rule
    table["difference"] = diff.mean(axis=1)
    table["difference_se"] = diff.std(axis=1, ddof=1) / np.sqrt(K)
    return table


def decision_focused_fusion(
    data: TrialData,
    kpi: str,
    metrics: Sequence[str],
    observational_weights: Mapping[str, float],
    *,
    strengths: Sequence[float] = LAMBDAS,
    folds: int = 5,
    tau: float = 1.0,
    repeats: int = 50,
    seed: int = 0,
    within_trial_correlation: float = 0.0,
    select: str = "stein",
) -> FusionChoice:
    """Choose how far the composite launch rule leans on the logs, and score every strength.

    By default by Stein's rule (the logs' disagreement with the trials), or by the cross-fitted,
    fission-scored decision value of each strength's launch rule (``select``); the curve of that
    value is reported either way.

    Parameters
    ----------
    data : TrialData
    kpi : str
    metrics : sequence of str
        At least 2 metrics.
    observational_weights : mapping metric -> float
        The logs' partial slopes of the KPI on the metrics (a unit-level regression on every metric at
        once, within arms), in KPI units per metric unit.
    strengths : sequence of float
        Fusion strengths lambda to try (>= 0; ``inf`` is the logs alone).
    folds, tau, repeats, seed, within_trial_correlation
        As in :func:`bayes_cmma.decision_value`.
    select : {"stein", "significant", "best"}
        ``"stein"`` (default): Stein's strength (module docstring), from the logs' disagreement with
        the trials, not from the decision value; its row is added to ``curve`` when it is not among
        ``strengths``. ``"best"``: the strength with the highest cross-fitted value.
        ``"significant"``: that strength only if its paired gain over the first strength (the trials
        alone) exceeds one standard error, else the first. Measured
        (``benchmarks/fusion_launch_check.py``, 500 replications per setting): with confounded logs,
        "best" lost up to 34% more KPI than the trials alone at 10 trials, "significant" up to 15%,
        "stein" at most 0.9%; with clean logs "best" gained up to 18%, "significant" 12%, "stein" 15%.

    Returns
    -------
    FusionChoice

    Raises
    ------
    DataError
        Fewer than 2 metrics, a metric without an observational slope, a negative strength, an
        unknown ``select``, no more complete trials than metrics, or the inputs
        :func:`bayes_cmma.decision_value` refuses.
    """
    strengths = [float(s) for s in strengths]
    if not strengths or any(not (s >= 0) for s in strengths):
        raise DataError(f"fusion strengths must be 0 or more (inf for the logs alone), got {strengths}.")
    if select not in SELECT:
        raise DataError(f"select must be one of {', '.join(map(repr, SELECT))}, got {select!r}.")
    design, prior, fold, f, g = fusion_setup(data, kpi, metrics, observational_weights, folds=folds, tau=tau,
                                             repeats=repeats, seed=seed,
                                             within_trial_correlation=within_trial_correlation)
    metrics = list(metrics)
    try:
        d2 = disagreement(design.z, design.S, prior)
    except DataError:
        if select == "stein":
            raise
        d2 = float("nan")  # reported only; the other choices do not use it
    if select == "stein":
        stein = _stein_from(d2, len(metrics))
        if stein not in strengths:  # in order, after the first (the reference of ``difference``)
            strengths.insert(next((i for i in range(1, len(strengths)) if strengths[i] > stein), len(strengths)),
                             stein)
    curve = cross_fitted_table(f, g, fold, strengths,
                               lambda lam, _, train: fused_weights(design.z[train], design.S[train], prior, lam))
    curve.insert(0, "fusion_strength", strengths)
    chosen = stein if select == "stein" else chosen_strength(curve, select)
    index = pd.Index(metrics, name="metric")
    rule_weights = pd.DataFrame([fused_weights(design.z, design.S, prior, lam) for lam in strengths], columns=index)
    weights = rule_weights.iloc[strengths.index(chosen)].rename(None)  # the chosen strength is one of the rows
    return FusionChoice(curve=curve, strength=chosen, weights=weights, disagreement=d2, rule_weights=rule_weights,
                        slopes=pd.Series(prior, index=index))


def chosen_strength(curve: pd.DataFrame, select: str) -> float:
    """The strength ``select="best"`` or ``"significant"`` picks from a fusion's ``curve`` (see
    :func:`decision_focused_fusion`): the highest value, or that only if its paired gain over the first row
    exceeds one standard error, else the first row's."""
    top = curve["value"].idxmax()
    if select == "significant" and not curve.loc[top, "difference"] > curve.loc[top, "difference_se"]:
        top = 0
    return float(curve.loc[top, "fusion_strength"])


def fusion_frame(choice: FusionChoice) -> pd.DataFrame:
    """One table of a fusion (``fusion.csv``): the curve, which row was chosen, D^2, and each row's weights.

    Columns: those of ``choice.curve``, ``chosen`` (bool), ``disagreement`` (D^2, on every row),
    ``weight_<metric>`` (each strength's weights fitted on every trial, unit length) and
    ``observational_slope_<metric>`` (the logs' slopes, on every row).
    """
    frame = choice.curve.copy()
    frame["chosen"] = frame["fusion_strength"] == choice.strength
    frame["disagreement"] = choice.disagreement
    for m in choice.rule_weights.columns:
        frame[f"weight_{m}"] = choice.rule_weights[m].to_numpy()
    for m, o in choice.slopes.items():
        frame[f"observational_slope_{m}"] = o
    return frame


__all__ = ["LAMBDAS", "SANDWICHES", "SELECT", "FusionChoice", "chosen_strength", "cross_fitted_table",
           "decision_focused_fusion",
           "disagreement", "fused_weights", "fusion_frame", "fusion_setup", "sandwich_covariance",
           "stein_strength", "strength_from_share"]
