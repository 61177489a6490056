"""The frequentist CMMA estimator (Wang et al. 2020, Algorithm 1) and its nested Wald tests.

OLS across trials of the KPI ATE on the ATEs of the metric powers M^1..M^P, an intercept and team
dummies (first team as reference); classical standard errors. Ignores the measurement error of the
ATEs: biased and overconfident for small trials (docs: simulation.md), kept as the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bayes_cmma.errors import DataError
from bayes_cmma.inputs.data import MetricDesign, TrialData, metric_design


@dataclass(frozen=True)
class OLSResult:
    """Result of :func:`cmma_ols`.

    Attributes
    ----------
    params : Series
        All coefficients: ``intercept``, ``team[<label>]`` dummies, then ``<metric>^p`` (the DRF
        coefficients beta_p).
    cov : DataFrame
        Classical covariance sigma^2 (X'X)^-1.
    sigma2 : float
        Residual variance RSS / (n - k).
    nobs, df_resid : int
    degree : int
    kpi, metric : str
    method : str
        ``"ols"`` (Algorithm 1), or a summary-level errors-in-variables estimator of
        :mod:`bayes_cmma.baselines.eiv` (``"tc"``, ``"liml"``), whose ``params`` hold the DRF coefficients only.
    """

    params: pd.Series
    cov: pd.DataFrame
    sigma2: float
    nobs: int
    df_resid: int
    degree: int
    kpi: str
    metric: str
    method: str = "ols"

    @property
    def beta_names(self) -> list[str]:
        return list(self.params.index[-self.degree :])

    @property
    def beta(self) -> pd.Series:
        """The DRF coefficients beta_1..beta_P, indexed by power."""
        index = pd.RangeIndex(1, self.degree + 1, name="power")
        return pd.Series(self.params.iloc[-self.degree :].to_numpy(), index=index)

    @property
    def std_errors(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.cov.to_numpy())), index=self.params.index)

    def coefficient_table(self, prob: float = 0.95) -> pd.DataFrame:
        """Estimate, standard error, t, p-value and the ``prob`` confidence interval per coefficient."""
        se = self.std_errors
        t = self.params / se
        p = 2 * stats.t.sf(np.abs(t), self.df_resid)
        q = stats.t.ppf(0.5 + prob / 2, self.df_resid)
        pct = f"{100 * prob:g}"
        return pd.DataFrame(
            {
                "estimate": self.params,
                "std_error": se,
                "t": t,
                "p_value": p,
                f"ci{pct}_lower": self.params - q * se,
                f"ci{pct}_upper": self.params + q * se,
            }
        ).rename_axis("coefficient")

    def wald_tests(self) -> pd.DataFrame:
        """Nested Wald (F) tests: top coefficient = 0, top two = 0, ..., all DRF coefficients = 0."""
        rows = []
        names = self.beta_names
        b = self.params.to_numpy()
        V = self.cov.to_numpy()
        k = len(b)
        for q in range(1, self.degree + 1):
            idx = np.arange(k - q, k)
            bq = b[idx]
            Vq = V[np.ix_(idx, idx)]
            chi2 = float(bq @ np.linalg.solve(Vq, bq))
            F = chi2 / q
            rows.append(
                {
                    "hypothesis": " = ".join(names[-q:]) + " = 0",
                    "restrictions": q,
                    "F": F,
                    "p_value": float(stats.f.sf(F, q, self.df_resid)),
                    "chi2": chi2,
                    "p_value_chi2": float(stats.chi2.sf(chi2, q)),
                }
            )
        return pd.DataFrame(rows)


def ols_arrays(
    y: np.ndarray, powers: np.ndarray, team_idx: np.ndarray, teams: list[str], metric: str = "m"
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Design matrix and column names of Algorithm 1: intercept, team dummies, metric powers."""
    n, P = powers.shape
    dummies = np.zeros((n, max(len(teams) - 1, 0)))
    for j in range(1, len(teams)):
        dummies[:, j - 1] = team_idx == j
    X = np.column_stack([np.ones(n), dummies, powers])
    names = ["intercept"] + [f"team[{t}]" for t in teams[1:]] + [
        metric if p == 1 else f"{metric}^{p}" for p in range(1, P + 1)
    ]
    return X, names, y


def cmma_ols_design(design: MetricDesign) -> OLSResult:
    """Algorithm 1 on an already-cut :class:`MetricDesign` (its complete trials: OLS needs every quantity)."""
    design = design.complete_cases()
    X, names, y = ols_arrays(design.z[:, 0], design.z[:, 1:], design.team_idx, design.teams, design.metric)
    n, k = X.shape
    # equilibrate columns (metric powers can be 1e-10 next to an intercept of 1), then QR
    norms = np.linalg.norm(X, axis=0)
    norms[norms == 0] = 1.0
    Q, R = np.linalg.qr(X / norms)
    if np.min(np.abs(np.diag(R))) < 1e-12 * np.max(np.abs(np.diag(R))):
        raise DataError(
            f"the OLS design for {design.kpi!r} on {design.metric!r} powers 1..{design.degree} and team "
            "dummies is rank-deficient (collinear columns); lower the degree or check the table."
        )
    coef = np.linalg.solve(R, Q.T @ y) / norms
    resid = y - X @ coef
    df_resid = n - k
    sigma2 = float(resid @ resid / df_resid)
    R_inv = np.linalg.solve(R, np.eye(k))
    XtX_inv = (R_inv @ R_inv.T) / np.outer(norms, norms)
    return OLSResult(
        params=pd.Series(coef, index=names),
        cov=pd.DataFrame(sigma2 * XtX_inv, index=names, columns=names),
        sigma2=sigma2,
        nobs=n,
        df_resid=df_resid,
        degree=design.degree,
        kpi=design.kpi,
        metric=design.metric,
    )


def cmma_ols(data: TrialData, kpi: str, metric: str, degree: int = 1) -> OLSResult:
    """The paper's Algorithm 1 for one KPI and metric.

    Parameters
    ----------
    data : TrialData
    kpi, metric : str
    degree : int
        Degree P of the polynomial DRF.

    Returns
    -------
    OLSResult
    """
    return cmma_ols_design(metric_design(data, kpi, metric, degree, 0.0, warn_filled=False))
