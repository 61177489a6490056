"""The measurement model: which error covariance S_k each trial's ATE vector gets in the likelihood.

Two forms, chosen in the model spec (``[measurement] error_covariance``):

``per_trial``
    S_k as reported (standard errors and the covariance table), trial by trial.
``pooled``
    S_k = c_k U. The scale c_k = 1/n_treated,k + 1/n_control,k carries what is legitimately
    trial-specific, the sample size; U is the within-arm covariance per unit of (KPI, M, M^2, ...),
    pooled as the mean of S_j / c_j over all trials (``pool_by = "all"``) or over the trials of
    the same team (``pool_by = "team"``).

Why pooling (docs: model.md, "The measurement model"): the marginal likelihood assumes
a trial's latent effects are independent of its S_k. For powers of a metric that fails: what makes a
trial's ATE(M^2), ATE(M^3) large (its metric level and its effect on M) also makes Var(M^p) in its
arms, hence S_k, large. On the paper's cubic simulation the per-trial form biases beta_1 by about
+0.09 (coverage about 50%), while the pooled form is unbiased. With an S_k that does not depend on
the trial's level the Gaussian likelihood is a consistent quasi-likelihood whatever the shape of the
latent distribution (with equal c_k its maximum is Fuller's method-of-moments errors-in-variables
estimator). The pooled form assumes a trial's size is unrelated to its latent effects (the usual
ignorability of precision).

Without arm sizes in the trial table, c_k is inferred from the reported variance of the metric's
first-power ATE (``size_proxy = "metric_se"``, the default): in a difference of means that variance is
the per-unit variance of the metric times c_k, and the metric's own variance depends on the trial's
level far less than its powers do. ``"kpi_se"`` uses the KPI's variance instead, ``"equal"`` takes
every c_k equal (the plain average of the S_k). ``benchmarks/measurement_fallback.py`` measures them.

:func:`apply_measurement` takes a :class:`~bayes_cmma.inputs.data.MetricDesign` with reported covariances and
returns one whose ``S`` is what the likelihood uses; every consumer of the likelihood (the fit, the
stored log-likelihood, LOO, the model checks, SBC, the A3 sensitivity) reads that ``S``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bayes_cmma.errors import DataError
from bayes_cmma.fitting.spec import MEASUREMENT_CHOICES, ModelSpec
from bayes_cmma.inputs.data import MetricDesign, placeholder_missing

#: Values of ``[measurement] error_covariance`` (the first is the default).
ERROR_COVARIANCE = MEASUREMENT_CHOICES["error_covariance"]
#: Values of ``[measurement] pool_by``.
POOL_BY = MEASUREMENT_CHOICES["pool_by"]
#: Values of ``[measurement] size_proxy``: how c_k is inferred when the table has no arm sizes.
SIZE_PROXIES = MEASUREMENT_CHOICES["size_proxy"]


def size_factors(design: MetricDesign, size_proxy: str = "metric_se") -> tuple[np.ndarray, str]:
    """The trial scales c_k (trial,) and where they came from.

    From the arm sizes when the design has them (c_k = 1/n_treated + 1/n_control), else from
    ``size_proxy``: proportional to the reported variance of the metric's ATE (``"metric_se"``) or
    of the KPI's ATE (``"kpi_se"``), or all equal (``"equal"``). Only ratios of the c_k matter.
    """
    if design.arm_sizes is not None:
        n = np.asarray(design.arm_sizes, dtype=float)
        return 1.0 / n[:, 0] + 1.0 / n[:, 1], "arm sizes"
    if size_proxy in ("metric_se", "kpi_se"):
        j, name = (1, design.metric) if size_proxy == "metric_se" else (0, design.kpi)
        if design.observed is not None and not design.observed[:, j].all():
            k = int(np.flatnonzero(~design.observed[:, j])[0])
            raise DataError(
                f"trial {design.trials[k]!r} does not report {name!r}, whose variance scales the pooled measurement "
                "covariance (size_proxy); give the trial table n_treated and n_control, or set [measurement] "
                "size_proxy = \"equal\" or error_covariance = \"per_trial\"."
            )
        return design.S[:, j, j].copy(), f"the variance of the {name!r} ATE (no arm sizes given)"
    if size_proxy == "equal":
        return np.ones(design.n_trials), "equal for every trial (no arm sizes given)"
    raise ValueError(f"size_proxy must be one of {', '.join(SIZE_PROXIES)}, got {size_proxy!r}")


def pooled_covariance(
    S: np.ndarray, c: np.ndarray, groups: np.ndarray | None = None, observed: np.ndarray | None = None
) -> np.ndarray:
    """Per-unit covariance U pooled over trials: mean of S_k / c_k, per group if given.

    Parameters
    ----------
    S : ndarray (trial, d, d)
    c : ndarray (trial,)
        Positive trial scales.
    groups : ndarray of int (trial,), optional
        Pool within each group (team) instead of over all trials.

    Returns
    -------
    ndarray (trial, d, d)
        U_{g(k)} for every trial (the same matrix for every trial when ``groups`` is None).
    """
    per_unit = S / c[:, None, None]
    if observed is not None and not observed.all():
        return _pooled_incomplete(per_unit, groups, observed)
    if groups is None:
        return np.broadcast_to(per_unit.mean(axis=0), S.shape).copy()
    out = np.empty_like(S)
    for g in np.unique(groups):
        mask = groups == g
        out[mask] = per_unit[mask].mean(axis=0)
    return out


def _pooled_incomplete(per_unit: np.ndarray, groups: np.ndarray | None, observed: np.ndarray) -> np.ndarray:
    """:func:`pooled_covariance` when some trials do not report some quantities.

    Each entry is the mean over the trials (of the group) that report both of its quantities; an
    entry no trial reports stays that of the identity (the likelihood never reads it).
    """
    weight = (observed[:, :, None] & observed[:, None, :]).astype(float)
    groups = np.zeros(len(per_unit), dtype=int) if groups is None else groups
    out = np.empty_like(per_unit)
    for g in np.unique(groups):
        mask = groups == g
        count = weight[mask].sum(axis=0)
        total = (np.where(weight[mask] > 0, per_unit[mask], 0.0)).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[mask] = np.where(count > 0, total / np.maximum(count, 1), np.eye(per_unit.shape[-1]))
    return out


def apply_measurement(
    design: MetricDesign,
    error_covariance: str = "pooled",
    pool_by: str = "all",
    size_proxy: str = "metric_se",
) -> MetricDesign:
    """The design with the measurement covariance the likelihood uses (see the module docstring).

    Idempotent: a design already transformed is returned as it is.

    Raises
    ------
    DataError
        When a trial scale is not positive (a zero variance used as a size proxy), or the pooled
        covariance is not positive definite (naming the team).
    """
    if error_covariance not in ERROR_COVARIANCE:
        raise ValueError(f"error_covariance must be one of {', '.join(ERROR_COVARIANCE)}, got {error_covariance!r}")
    if pool_by not in POOL_BY:
        raise ValueError(f"pool_by must be one of {', '.join(POOL_BY)}, got {pool_by!r}")
    if design.measurement != "per_trial" or error_covariance == "per_trial":
        return design
    c, source = size_factors(design, size_proxy)
    if not np.all(np.isfinite(c) & (c > 0)):
        k = int(np.flatnonzero(~(np.isfinite(c) & (c > 0)))[0])
        raise DataError(
            f"trial {design.trials[k]!r}: its scale for the pooled measurement covariance ({source}) is not "
            "positive; give the trial table n_treated and n_control, or set [measurement] error_covariance = "
            "\"per_trial\"."
        )
    groups = design.team_idx if pool_by == "team" else None
    U = pooled_covariance(design.S, c, groups, design.observed)
    sd = np.sqrt(np.diagonal(U, axis1=1, axis2=2))
    eig_min = np.linalg.eigvalsh(U / (sd[:, :, None] * sd[:, None, :]))[:, 0]
    if np.any(eig_min <= 1e-12):
        k = int(np.flatnonzero(eig_min <= 1e-12)[0])
        where = f"team {str(design.teams[design.team_idx[k]])!r}" if groups is not None else "all trials"
        raise DataError(
            f"the measurement covariance of ({', '.join(design.quantities)}) pooled over {where} is not positive "
            "definite; check the covariances, or set [measurement] pool_by = \"all\" or error_covariance = "
            "\"per_trial\"."
        )
    S = c[:, None, None] * U
    if design.observed is not None:
        S = placeholder_missing(S, design.observed)
    label = f"pooled over {'teams' if groups is not None else 'all trials'}, scaled by {source}"
    return dataclasses.replace(design, S=np.ascontiguousarray(S), measurement=label)


def for_spec(design: MetricDesign, spec: ModelSpec) -> MetricDesign:
    """:func:`apply_measurement` with the spec's ``[measurement]`` choices."""
    return apply_measurement(design, spec.error_covariance, spec.pool_by, spec.size_proxy)


def reference_covariance(design: MetricDesign, size_proxy: str = "metric_se") -> tuple[np.ndarray, float]:
    """Measurement covariance of a median-sized trial, and its size in units per arm (NaN if unknown).

    The per-unit covariance U pooled over all trials (:func:`pooled_covariance`) times the median
    trial scale c_k. A trial r times that size has covariance ``reference / r``. With arm sizes the
    size is 2 / median(c_k), the units per arm of an equal-arm trial with that scale; without arm
    sizes c_k comes from ``size_proxy`` (all equal when that quantity is missing for some trial).
    """
    try:
        c, _ = size_factors(design, size_proxy)
    except DataError:
        c, _ = size_factors(design, "equal")
    U = pooled_covariance(design.S, c, None, design.observed)[0]
    c_ref = float(np.median(c))
    n_ref = 2.0 / c_ref if design.arm_sizes is not None else float("nan")
    return 0.5 * (U + U.T) * c_ref, n_ref


__all__ = [
    "ERROR_COVARIANCE", "POOL_BY", "SIZE_PROXIES", "apply_measurement", "for_spec", "pooled_covariance",
    "reference_covariance", "size_factors",
]
