"""How good a north star's launch decisions are, estimated from the trials alone (no model).

A north star is used to decide: launch a trial's treatment when the north star moved up. Its
*decision value* is the true KPI effect those launches collect, per trial,
``V = mean_k d_k y_k`` with d_k = 1 when the rule launches trial k and y_k the trial's true KPI
effect. The trials' KPI ATEs are unbiased for the y_k, but scoring a rule with the KPI ATE of the
trial it decided on is biased whenever the KPI's and the metrics' estimation errors correlate (they
come from the same users): a trial whose metric ATE is high by chance tends to have a KPI ATE high by
chance too, so a metric looks better than it is. That bias cannot be removed exactly from one
Gaussian observation (it involves the density of the unknown true effect).

**Data fission** (Leiner, Duan, Wasserman & Ramdas, JASA 2025) splits each trial's ATE vector z_k ~
Normal(theta_k, S_k) into two independent parts with a fresh draw e_k ~ Normal(0, S_k)::

    f_k = z_k + tau e_k ~ Normal(theta_k, (1 + tau^2) S_k),   g_k = z_k - e_k / tau ~ Normal(theta_k, (1 + 1/tau^2) S_k)

with Cov(f_k, g_k) = S_k - S_k = 0, so f_k and g_k are independent. The rule decides on f_k's metric
ATEs and is scored with g_k's KPI ATE: E[d(f_k) g_k,KPI] = P(d(f_k) = 1) y_k exactly. The estimate is
the decision value of the rule applied to trials with (1 + tau^2) times today's measurement variance
(twice, at the default tau = 1); averaging over ``repeats`` fission draws removes most of the noise
the split adds, and keeps the estimate unbiased. ``tau = 0`` turns fission off (decide and score on
the same ATEs), for comparison only.

Rules whose parameters are learned (the composite's weights) are **cross-fitted**: learned on the
other folds' trials, applied to the held-out ones. The composite is the best linear predictor through
the origin of a trial's true KPI effect from its observed metric ATEs, with the noise correction of
the total-covariance estimator (Bibaut, Chou, Ejdemyr & Kallus, KDD 2024)::

    w = (sum_k m_k m_k')^-1 sum_k (m_k y_k - S_my,k)

Standard errors are the spread of the per-trial values across trials over sqrt(K). The trials are
independent, so an interval for the mean of their values covers the mean decision value of new
trials like these (and, conservatively, the value on these trials' own true effects). The per-trial
values are skewed (a launch collects a trial's KPI effect or nothing), and with few trials Student's t
interval then undercovers; by default the intervals correct for the skewness with Hall's
transformation (:func:`mean_interval`). The measurement covariances must be right: fission
needs the within-trial covariance of the KPI and the metrics (a covariance table, or the arm sizes
and the summarizer); unknown pairs are filled as the model does (``within_trial_correlation``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from bayes_cmma import dims
from bayes_cmma.errors import AssumptionWarning, DataError
from bayes_cmma.inputs.data import TrialData, joint_design

#: Label of the cross-fitted composite candidate, and of the reference rule that launches every trial.
COMPOSITE = "composite"
LAUNCH_ALL = "launch every trial"
#: Coverage of the intervals in the table.
CI_PROB = 0.95
#: Interval methods of :func:`mean_interval`.
INTERVALS = ("skew-corrected", "t")


@dataclass(frozen=True)
class DecisionValue:
    """The decision-value estimates of every candidate north star.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per candidate (index ``candidate``): ``kind`` (metric / composite / reference),
        ``value`` (mean true KPI effect collected per trial, in KPI units), ``std_error``,
        ``ci_lower``/``ci_upper`` (95%; :func:`mean_interval`), ``launch_rate``, ``difference``
        from the best candidate with its paired ``difference_se``, ``n_trials`` (complete trials used) and
        ``measurement_variance_factor`` (1 + tau^2). Every setting also in ``table.attrs``.
    per_trial : xarray.DataArray
        (candidate, trial): each trial's contribution, averaged over the fission draws; ``value`` is
        its mean over trials.
    weights : pandas.DataFrame
        (fold, metric): the composite's weights learned on each fold's training trials, standardised as
        the north star's (:func:`bayes_cmma.northstar`): on each metric's ATE divided by its sd across
        the trials, unit length.
    """

    table: pd.DataFrame
    per_trial: xr.DataArray
    weights: pd.DataFrame

    @property
    def best(self) -> str:
        """The candidate north star (metric or composite) with the highest estimated value."""
        rows = self.table[self.table["kind"] != "reference"]
        return str(rows["value"].idxmax())


def fission(
    z: np.ndarray, S: np.ndarray, tau: float, rng: np.random.Generator, repeats: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian data fission of ATE vectors: two independent parts (repeat, trial, d).

    Parameters
    ----------
    z : ndarray (trial, d)
        Observed ATE vectors.
    S : ndarray (trial, d, d)
        Their measurement covariances (positive definite).
    tau : float
        Fission strength; f has variance (1 + tau^2) S, g has (1 + 1/tau^2) S. ``0``: no split
        (f = g = z, one repeat).
    rng : numpy.random.Generator
    repeats : int
        Independent fission draws.

    Returns
    -------
    (f, g) : ndarrays (repeat, trial, d)
    """
    if tau == 0:
        return z[None].copy(), z[None].copy()
    L = np.linalg.cholesky(S)
    e = np.einsum("kij,rkj->rki", L, rng.standard_normal((repeats, *z.shape)))
    return z[None] + tau * e, z[None] - e / tau


def cross_moments(z: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """G = sum_k m_k m_k' (J, J) and the noise-corrected g = sum_k (m_k y_k - S_my,k) (J,).

    ``z`` (trial, 1 + J) holds the KPI ATE first, ``S`` (trial, 1 + J, 1 + J) the measurement covariances.
    """
    m = z[:, 1:]
    return m.T @ m, m.T @ z[:, 0] - S[:, 1:, 0].sum(axis=0)


def unit(w: np.ndarray) -> np.ndarray:
    """``w`` scaled to unit length (a zero vector as it is)."""
    norm = np.linalg.norm(w)
    return w / norm if norm > 0 else w


def composite_weights(z: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Noise-corrected best linear predictor, through 0, of the KPI effect from the metric ATEs.

    ``z`` (trial, 1 + J) holds the KPI ATE first, ``S`` (trial, 1 + J, 1 + J) the measurement
    covariances. Returns the unit-length weights (J,) G^-1 g (see :func:`cross_moments`).
    """
    return unit(np.linalg.solve(*cross_moments(z, S)))


def check_composite_rank(m: np.ndarray, metrics: Sequence[str], fold: np.ndarray | None = None) -> None:
    """Refuse metric ATEs (trial, J) from which no composite can be fitted.

    The composite's weights solve G w = g with G = sum_k m_k m_k'; G is singular when a metric's ATEs
    are a linear combination of the others' over the trials (the same metric twice, a metric that
    is a sum of others, a metric that never moves), or over the trials outside a cross-fitting fold.

    Raises
    ------
    DataError
        Naming the first metric whose ATEs the earlier ones already span, or the fold whose
        training trials are collinear.
    """
    metrics = list(metrics)
    K = m.shape[0]
    norm = np.linalg.norm(m, axis=0)
    m = m / np.where(norm > 0, norm, 1.0)  # rank on a common scale: metrics' ATEs may differ by many orders
    for j, name in enumerate(metrics):
        if np.linalg.matrix_rank(m[:, : j + 1]) <= j:
            if j == 0 or not np.any(m[:, j]):
                raise DataError(f"the ATEs of metric {name!r} are 0 in all {K} trials that report every metric; "
                                "a composite cannot weigh it: drop it.")
            raise DataError(
                f"over the {K} trials that report every metric, the ATEs of metric {name!r} are a linear "
                f"combination of those of {', '.join(map(repr, metrics[:j]))} (the same metric twice?); a composite "
                "cannot tell them apart: drop one of them."
            )
    if fold is None:
        return
    for i in np.unique(fold):
        train = m[fold != i]
        if np.linalg.matrix_rank(train) < len(metrics):
            raise DataError(
                f"the {len(train)} trials outside cross-fitting fold {int(i)} of {len(np.unique(fold))} do not "
                f"determine a composite of {len(metrics)} metrics (their ATEs are collinear there); use more folds "
                "(CLI: --folds), fewer metrics, or more trials."
            )


def fold_labels(n_trials: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold number (trial,) of each trial: a random permutation cut into ``folds`` near-equal parts."""
    labels = np.arange(n_trials) % folds
    return labels[rng.permutation(n_trials)]


def value_per_trial(
    scores: np.ndarray, kpi: np.ndarray, cutoff: np.ndarray | float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Each trial's contribution d * g_KPI and launch rate, averaged over the repeats (leading axis).

    ``scores`` and ``kpi`` are (repeat, ..., trial); a trial is launched when its score exceeds
    ``cutoff`` (broadcast against ``scores``).
    """
    launch = scores > cutoff
    return np.mean(launch * kpi, axis=0), np.mean(launch, axis=0)


def decision_value(
    data: TrialData,
    kpi: str,
    metrics: Sequence[str],
    *,
    folds: int = 5,
    tau: float = 1.0,
    repeats: int = 50,
    threshold: float = 0.0,
    composite: bool = True,
    seed: int = 0,
    within_trial_correlation: float = 0.0,
    warn_filled: bool = True,
    interval: str = "skew-corrected",
) -> DecisionValue:
    """Cross-fitted, fission-scored decision value of each metric (and a composite) as the north star.

    Parameters
    ----------
    data : TrialData
        Validated trial summaries; the trials that report the KPI and every metric are used.
    kpi : str
    metrics : sequence of str
        Candidate metrics (their first-power ATEs).
    folds : int
        Cross-fitting folds for the composite's weights (at least 2, at most the number of trials).
    tau : float
        Fission strength (>= 0; see the module docstring). The estimate is the decision value for
        trials with (1 + tau^2) times today's measurement variance; 0 disables fission (biased when
        the KPI's and metrics' errors correlate; for comparison).
    repeats : int
        Fission draws averaged per trial.
    threshold : float
        Launch when the north star's ATE exceeds ``threshold`` standard errors (of the decision's
        ATE, with the fission variance); 0 launches on any positive movement.
    composite : bool
        Add the cross-fitted composite of the metrics (needs at least 2 metrics).
    seed : int
        Seeds the folds and the fission draws.
    within_trial_correlation : float
        Correlation assumed for covariance pairs the table does not give.
    warn_filled : bool
        Warn (:class:`~bayes_cmma.AssumptionWarning`) when pairs were filled.
    interval : {"skew-corrected", "t"}
        How the 95% intervals are formed (:func:`mean_interval`): Student's t corrected for the
        skewness of the per-trial values (default), or plain Student's t with K - 1 degrees of freedom.

    Returns
    -------
    DecisionValue

    Raises
    ------
    DataError
        Fewer than 4 complete trials, ``folds`` outside [2, trials], ``tau`` < 0, ``repeats`` < 1,
        an unknown ``interval``, or (with the composite) metric ATEs that cannot determine it
        (:func:`check_composite_rank`).
    """
    metrics = list(metrics)
    if not metrics:
        raise DataError("no metric given; name at least one candidate north star (CLI: --metric NAME).")
    if not (np.isfinite(tau) and tau >= 0):
        raise DataError(f"tau (the fission strength) must be 0 or more, got {tau}.")
    if int(repeats) < 1:
        raise DataError(f"repeats must be at least 1, got {repeats}.")
    if not np.isfinite(threshold):
        raise DataError(f"threshold must be a finite number of standard errors, got {threshold}.")
    if interval not in INTERVALS:
        raise DataError(f"interval must be one of {', '.join(INTERVALS)}; got {interval!r}.")
    design = joint_design(data, kpi, metrics, within_trial_correlation, warn_filled=False).complete_cases()
    if design.n_filled and warn_filled:
        warnings.warn(
            f"{design.n_filled} within-trial covariance pair(s) of ({kpi}, {', '.join(metrics)}) are unknown and were "
            f"filled with correlation {within_trial_correlation:g}. The decision value is unbiased only with the "
            "right covariance of the KPI's and the metrics' errors: give the covariance table (bayes-cmma "
            "summarize writes it; --cov) or the correlation you know (--within-trial-correlation).",
            AssumptionWarning,
            stacklevel=2,
        )
    K, J = design.n_trials, len(metrics)
    if K < 4:
        raise DataError(
            f"{K} trial(s) report {kpi!r} and every metric ({', '.join(metrics)}); the decision value needs "
            "at least 4."
        )
    if not 2 <= int(folds) <= K:
        raise DataError(f"folds must be between 2 and the number of complete trials ({K}), got {folds}.")
    folds = int(folds)
    composite = composite and J >= 2
    rng = np.random.default_rng(seed)
    fold = fold_labels(K, folds, rng)
    if composite:
        check_composite_rank(design.z[:, 1:], metrics, fold)
    f, g = fission(design.z, design.S, float(tau), rng, int(repeats))
    inflate = 1.0 + float(tau) ** 2
    g_kpi = g[..., 0]  # (repeat, trial)

    names = list(metrics)
    sd = np.sqrt(inflate * np.diagonal(design.S, axis1=1, axis2=2)[:, 1:])  # (trial, J)
    contrib, rate = value_per_trial(np.moveaxis(f[..., 1:], -1, 1), g_kpi[:, None], threshold * sd.T)
    contributions, rates, kinds = list(contrib), list(rate), ["metric"] * J

    weights = np.full((folds, J), np.nan)
    if composite:
        score = np.empty(f.shape[:2])
        cut = np.empty(K)
        for i in range(folds):
            test = fold == i
            w = composite_weights(design.z[~test], design.S[~test])
            weights[i] = w
            score[:, test] = f[:, test, 1:] @ w
            cut[test] = threshold * np.sqrt(inflate * np.einsum("i,kij,j->k", w, design.S[test][:, 1:, 1:], w))
        c, r = value_per_trial(score, g_kpi, cut)
        contributions.append(c)
        rates.append(r)
        names.append(COMPOSITE)
        kinds.append("composite")
    # the reference rule: launch everything (its value is the mean KPI effect; the north stars must beat it)
    contributions.append(g_kpi.mean(axis=0))
    rates.append(np.ones(K))
    names.append(LAUNCH_ALL)
    kinds.append("reference")

    per_trial = xr.DataArray(
        np.array(contributions), dims=(dims.CANDIDATE, dims.TRIAL),
        coords={dims.CANDIDATE: names, dims.TRIAL: design.trials}, name="decision_value",
    )
    table = _table(per_trial.values, np.array(rates), names, kinds, interval)
    table["n_trials"] = K
    table["measurement_variance_factor"] = inflate
    table.attrs.update(
        kpi=kpi, n_trials=K, folds=folds, tau=float(tau), repeats=int(repeats), threshold=float(threshold),
        seed=int(seed), measurement_variance_factor=inflate, interval=interval, ci_prob=CI_PROB,
    )
    scale = design.z[:, 1:].std(axis=0, ddof=1)
    standard = weights * scale
    standard /= np.linalg.norm(standard, axis=1, keepdims=True)
    weight_frame = pd.DataFrame(standard, index=pd.RangeIndex(folds, name="fold"),
                                columns=pd.Index(metrics, name=dims.METRIC))
    return DecisionValue(table=table, per_trial=per_trial, weights=weight_frame if composite else weight_frame.iloc[:0])


def mean_interval(
    values: np.ndarray, prob: float = CI_PROB, method: str = "skew-corrected"
) -> tuple[np.ndarray, np.ndarray]:
    """Interval for the mean of independent values along the last axis.

    ``"t"`` is Student's t interval with n - 1 degrees of freedom. ``"skew-corrected"`` (the
    default) applies Hall's (1992) transformation of the studentised mean T = sqrt(n) (mean - mu) / s,
    which removes the first-order effect of the values' skewness gamma on T's distribution::

        g(T) = T + gamma / (6 sqrt(n)) + gamma T^2 / (3 sqrt(n)) + gamma^2 T^3 / (27 n),

    a cubic that is increasing in T, so the interval {mu : abs(g(T)) <= q} is
    [mean - se g^-1(q), mean - se g^-1(-q)], with se = s / sqrt(n), gamma the sample skewness
    (moments with divisor n) and q Student's t quantile with n - 1 degrees of freedom (Hall uses the
    normal quantile; Student's keeps the method equal to Student's interval when gamma = 0). For
    right-skewed values the interval reaches further above the mean than below it. In the
    decision-value check (docs: checks.md) it covered 94-96% with 10 trials, Student's 92-93%.

    Parameters
    ----------
    values : numpy.ndarray
        (..., n) with n >= 2.
    prob : float
        Coverage, in (0, 1).
    method : {"skew-corrected", "t"}

    Returns
    -------
    (lower, upper) : tuple of numpy.ndarray
        Shaped like ``values`` without its last axis.

    Raises
    ------
    DataError
        An unknown ``method``, ``prob`` outside (0, 1), or fewer than 2 values.

    References
    ----------
    Hall, P. (1992). On the removal of skewness by transformation. *Journal of the Royal
    Statistical Society B* 54(1), 221-228.
    """
    from scipy import stats

    if method not in INTERVALS:
        raise DataError(f"interval must be one of {', '.join(INTERVALS)}; got {method!r}.")
    if not 0 < prob < 1:
        raise DataError(f"the interval's coverage must be between 0 and 1, got {prob}.")
    values = np.asarray(values, dtype=float)
    n = values.shape[-1] if values.ndim else 0
    if n < 2:
        raise DataError(f"an interval for a mean needs at least 2 values, got {n}.")
    mean = values.mean(axis=-1)
    se = values.std(axis=-1, ddof=1) / np.sqrt(n)
    q = stats.t.ppf(0.5 + prob / 2, n - 1)
    if method == "t":
        return mean - q * se, mean + q * se
    dev = values - mean[..., None]
    m2 = np.mean(dev**2, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma = np.where(m2 > 0, np.mean(dev**3, axis=-1) / m2**1.5, 0.0)

    def inverse(u: float) -> np.ndarray:
        # g^-1(u) = (3 sqrt(n) / gamma) (c - 1) with c = cbrt(1 + gamma v / sqrt(n)), v = u - gamma / (6 sqrt(n));
        # written as 3 v / (c^2 + c + 1) (since c^3 - 1 = (c - 1)(c^2 + c + 1)): no division by gamma
        v = u - gamma / (6 * np.sqrt(n))
        c = np.cbrt(1 + gamma * v / np.sqrt(n))
        return 3 * v / (c**2 + c + 1)

    return mean - se * inverse(q), mean - se * inverse(-q)


def _table(
    per_trial: np.ndarray, rates: np.ndarray, names: list[str], kinds: list[str], interval: str = "skew-corrected"
) -> pd.DataFrame:
    """Value, its standard error and interval, and the paired difference from the best north star."""
    K = per_trial.shape[1]
    value = per_trial.mean(axis=1)
    se = per_trial.std(axis=1, ddof=1) / np.sqrt(K)
    lower, upper = mean_interval(per_trial, CI_PROB, interval)  # a mean of K independent trials' contributions
    candidates = [i for i, k in enumerate(kinds) if k != "reference"]
    best = max(candidates, key=lambda i: value[i])
    diff = per_trial - per_trial[best]
    table = pd.DataFrame(
        {
            "kind": kinds,
            "value": value,
            "std_error": se,
            "ci_lower": lower,
            "ci_upper": upper,
            "launch_rate": rates.mean(axis=1),
            "difference": diff.mean(axis=1),
            "difference_se": diff.std(axis=1, ddof=1) / np.sqrt(K),
        },
        index=pd.Index(names, name=dims.CANDIDATE),
    )
    return table


__all__ = [
    "COMPOSITE", "INTERVALS", "LAUNCH_ALL", "DecisionValue", "composite_weights", "cross_moments", "decision_value",
    "fission", "fold_labels", "mean_interval", "unit", "value_per_trial",
]
