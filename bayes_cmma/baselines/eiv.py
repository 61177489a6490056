"""Summary-level errors-in-variables estimators: what an industry statistician would use instead.

Both correct the regression of the KPI ATEs on the metric-power ATEs (within teams, i.e. with team
dummies partialled out) for the measurement error the trials report. With x_k the metric-power ATEs
and y_k the KPI ATE of trial k, deviations from their team means x~, y~, and the within-trial error
covariances S_k (blocks S_xx, S_xy, S_yy)::

    A = sum_k x~_k x~_k',   b = sum_k x~_k y~_k,   N_xx = sum_k (1 - 1/n_g(k)) S_xx,k   (n_xy, n_yy alike)
    beta(kappa) = (A - kappa N_xx)^-1 (b - kappa n_xy)

(the factor 1 - 1/n_g is the expected share of a trial's error left after subtracting its team mean).

``tc`` (kappa = 1)
    Fuller's (1987) method-of-moments errors-in-variables regression: subtract the accumulated error
    covariance from the scatter. It is also the *total-covariance* estimator of Bibaut, Chou, Ejdemyr
    and Kallus (KDD 2024, "Learning the covariance of treatment effects across many weak
    experiments"): the covariance of the true effects is the total covariance of the estimates minus
    their average noise covariance, and the slope is read off it. Consistent as the number of trials
    grows, whatever the distribution of the true effects, when the reported S_k are unbiased and a
    trial's KPI residual (its direct effect beyond its team's) is unrelated to its metric effects.
``liml``
    LIML as total least squares on the whitened scatter: kappa = lambda_min, the smallest root of
    det(W - lambda N) = 0 for the scatter W and noise N of the full vector (y~, x~). It treats all the
    spread of y~ - beta' x~ beyond the noise as noise, so it assumes no trial-level KPI residual
    (sigma_u = 0, the exclusion restriction of the instrumental-variable view of trials); it is then
    less biased than ``tc`` in small samples. With sigma_u > 0 it over-corrects.

Standard errors are the M-estimation sandwich of the estimating equation
psi_k(beta) = x~_k (y~_k - x~_k' beta) - kappa (1 - 1/n_g)(S_xy,k - S_xx,k beta), with a small-sample
factor K / (K - G - P); for ``liml`` lambda is taken as known. Intervals use Student's t with
K - G - P degrees of freedom, as the OLS does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import linalg

from bayes_cmma.baselines.ols import OLSResult
from bayes_cmma.errors import DataError
from bayes_cmma.inputs.data import MetricDesign, TrialData, metric_design, quantity_name

#: Summary-level estimators, by the name ``bayes-cmma ols --method`` and the study runner use.
METHODS = ("tc", "liml")


@dataclass(frozen=True)
class _Moments:
    A: np.ndarray  # (P, P) within-team scatter of the metric-power ATEs
    b: np.ndarray  # (P,)
    yy: float
    N_xx: np.ndarray  # (P, P) accumulated error covariance, times (1 - 1/n_g)
    n_xy: np.ndarray  # (P,)
    n_yy: float
    xt: np.ndarray  # (K, P) team-demeaned x
    yt: np.ndarray  # (K,)
    w: np.ndarray  # (K,) 1 - 1/n_g


def _moments(design: MetricDesign) -> _Moments:
    y, x, S = design.z[:, 0], design.z[:, 1:], design.S
    g = design.team_idx
    n_g = np.bincount(g, minlength=len(design.teams)).astype(float)
    mean_x = np.zeros((len(n_g), x.shape[1]))
    np.add.at(mean_x, g, x)
    mean_x /= np.where(n_g > 0, n_g, 1.0)[:, None]
    mean_y = np.bincount(g, weights=y, minlength=len(n_g)) / np.where(n_g > 0, n_g, 1.0)
    xt, yt = x - mean_x[g], y - mean_y[g]
    w = 1.0 - 1.0 / n_g[g]
    return _Moments(
        A=xt.T @ xt, b=xt.T @ yt, yy=float(yt @ yt),
        N_xx=np.einsum("k,kij->ij", w, S[:, 1:, 1:]), n_xy=np.einsum("k,ki->i", w, S[:, 1:, 0]),
        n_yy=float(w @ S[:, 0, 0]), xt=xt, yt=yt, w=w,
    )


def liml_kappa(design: MetricDesign) -> float:
    """lambda_min of det(W - lambda N) = 0: W the within-team scatter of (y, x), N its accumulated noise."""
    mo = _moments(design)
    W = np.block([[np.array([[mo.yy]]), mo.b[None, :]], [mo.b[:, None], mo.A]])
    N = np.block([[np.array([[mo.n_yy]]), mo.n_xy[None, :]], [mo.n_xy[:, None], mo.N_xx]])
    try:
        return float(linalg.eigh(W, N, eigvals_only=True)[0])
    except linalg.LinAlgError as exc:
        raise DataError(
            f"LIML for {design.kpi!r} on {design.metric!r}: the accumulated measurement covariance is not positive "
            "definite; check the standard errors and covariances."
        ) from exc


def eiv_estimate(design: MetricDesign, method: str = "tc") -> OLSResult:
    """Fit a summary-level errors-in-variables estimator (see the module docstring).

    Parameters
    ----------
    design : MetricDesign
        Its ``S`` is the measurement covariance used (as reported, or pooled by
        :func:`bayes_cmma.fitting.measurement.apply_measurement`).
    method : {"tc", "liml"}

    Returns
    -------
    OLSResult
        ``params`` and ``cov`` hold the DRF coefficients only (the team effects are partialled out);
        ``sigma2`` is kappa (1 for ``tc``, lambda_min for ``liml``); ``method`` names the estimator.

    Raises
    ------
    DataError
        Too few trials, or a corrected scatter that is not positive definite (the measurement error
        swamps the between-trial spread of the metric: see assumption A4).
    """
    design = design.complete_cases()  # the moments need every quantity of a trial
    if method not in METHODS:
        raise DataError(f"unknown summary-level method {method!r}; choose from {', '.join(METHODS)}.")
    K, P, G = design.n_trials, design.degree, len(design.teams)
    df = K - G - P
    if df < 1:
        raise DataError(
            f"{K} trial(s) for {design.kpi!r}/{design.metric!r}: the {method} estimator of degree {P} with {G} team(s) "
            f"needs at least {G + P + 1}; add trials, merge teams or lower the degree."
        )
    mo = _moments(design)
    kappa = 1.0 if method == "tc" else liml_kappa(design)
    M = mo.A - kappa * mo.N_xx
    try:
        np.linalg.cholesky(M)
    except np.linalg.LinAlgError as exc:
        raise DataError(
            f"{method}: after subtracting the measurement error, the within-team spread of the ATEs of "
            f"{design.metric!r} powers 1..{P} is not positive definite: the trials barely move the metric beyond "
            "their noise (assumption A4). The errors-in-variables correction is undefined here; use the Bayesian fit."
        ) from exc
    beta = np.linalg.solve(M, mo.b - kappa * mo.n_xy)
    S = design.S
    r = mo.yt - mo.xt @ beta
    psi = mo.xt * r[:, None] - kappa * mo.w[:, None] * (S[:, 1:, 0] - S[:, 1:, 1:] @ beta)
    Minv = np.linalg.inv(M)
    cov = Minv @ (psi.T @ psi) @ Minv.T * (K / df)
    cov = 0.5 * (cov + cov.T)
    names = [quantity_name(design.metric, p) for p in range(1, P + 1)]
    return OLSResult(
        params=pd.Series(beta, index=names),
        cov=pd.DataFrame(cov, index=names, columns=names),
        sigma2=kappa,
        nobs=K,
        df_resid=df,
        degree=P,
        kpi=design.kpi,
        metric=design.metric,
        method=method,
    )


def summary_estimate(data: TrialData, kpi: str, metric: str, degree: int = 1, method: str = "tc",
                     within_trial_correlation: float | None = None) -> OLSResult:
    """:func:`eiv_estimate` on a trial table, with its reported covariances.

    Within-trial covariance pairs the table does not give are filled with
    ``within_trial_correlation``; when it is None, with 0 and an :class:`AssumptionWarning`.
    """
    design = metric_design(data, kpi, metric, degree, within_trial_correlation or 0.0,
                           warn_filled=within_trial_correlation is None)
    return eiv_estimate(design, method)


__all__ = ["METHODS", "eiv_estimate", "liml_kappa", "summary_estimate"]
