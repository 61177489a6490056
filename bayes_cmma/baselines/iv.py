"""Unit-level comparison estimators of the paper's Table 1 (for the simulation study only).

They need the unit-level data the Bayesian model does without, and serve as references:

* **LIML** and **full-sample 2SLS**: Y on the mediator M, M instrumented by trial x treatment,
  with trial fixed effects and team x treatment direct effects;
* **Sobel IV**: the same with one common direct effect of treatment (treatment instead of team x
  treatment), which A3-style team differences in direct effects bias;
* **LSEM** (Baron-Kenny): OLS of Y on M with trial x treatment and trial fixed effects, standard
  errors clustered by trial; ignores that M is confounded with Y.

The trial fixed effects are partialled out (within-trial demeaning; Frisch-Waugh-Lovell), which
leaves the k-class point estimates and the heteroskedasticity-robust (HC0) and clustered sandwich
covariances unchanged (no degrees-of-freedom correction is used) and keeps the design small.
One trial x treatment instrument per team (per data set, for Sobel IV) is dropped, because the
direct-effect columns are sums of them. Estimation itself is done by linearmodels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bayes_cmma.errors import DataError

ESTIMATORS = ("liml", "2sls", "sobel_iv", "lsem")


@dataclass(frozen=True)
class UnitEstimate:
    """Estimate of the linear DRF coefficient from unit-level data."""

    estimator: str
    estimate: float
    std_error: float

    def interval(self, prob: float = 0.95) -> tuple[float, float]:
        """Normal-approximation confidence interval."""
        q = stats.norm.ppf(0.5 + prob / 2)
        return self.estimate - q * self.std_error, self.estimate + q * self.std_error


@dataclass(frozen=True)
class _Design:
    y: np.ndarray  # within-trial demeaned KPI
    m: np.ndarray  # within-trial demeaned mediator
    t_by_trial: np.ndarray  # (n, K): trial x treatment, demeaned within trial
    t_by_team: np.ndarray  # (n, G): team x treatment, demeaned within trial
    trial_codes: np.ndarray
    first_trial_of_team: np.ndarray


def _design(units: pd.DataFrame, trial: str, team: str, treatment: str, kpi: str, metric: str) -> _Design:
    missing = [c for c in (trial, team, treatment, kpi, metric) if c not in units.columns]
    if missing:
        raise DataError(f"unit table is missing column(s) {', '.join(map(repr, missing))}.")
    codes, _ = pd.factorize(units[trial], sort=False)
    team_codes, _ = pd.factorize(units[team], sort=True)
    K = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=K).astype(float)

    def demean(x: np.ndarray) -> np.ndarray:
        return x - (np.bincount(codes, weights=x, minlength=K) / counts)[codes]

    t = units[treatment].to_numpy(float)
    t_dm = demean(t)
    n = len(units)
    rows = np.arange(n)
    by_trial = np.zeros((n, K))
    by_trial[rows, codes] = t_dm
    G = int(team_codes.max()) + 1
    by_team = np.zeros((n, G))
    by_team[rows, team_codes] = t_dm
    trial_team = np.zeros(K, dtype=int)
    trial_team[codes] = team_codes
    first = np.array([np.flatnonzero(trial_team == g)[0] for g in range(G)])
    return _Design(
        y=demean(units[kpi].to_numpy(float)),
        m=demean(units[metric].to_numpy(float)),
        t_by_trial=by_trial,
        t_by_team=by_team,
        trial_codes=codes,
        first_trial_of_team=first,
    )


def _frame(x: np.ndarray, prefix: str) -> pd.DataFrame:
    return pd.DataFrame(x, columns=[f"{prefix}{j}" for j in range(x.shape[1])])


def _iv(d: _Design, *, exog: np.ndarray, drop: np.ndarray, liml: bool, name: str) -> UnitEstimate:
    from linearmodels.iv import IV2SLS, IVLIML

    keep = np.setdiff1d(np.arange(d.t_by_trial.shape[1]), drop)
    cls = IVLIML if liml else IV2SLS
    res = cls(
        pd.Series(d.y, name="y"), _frame(exog, "direct"), pd.Series(d.m, name="m"), _frame(d.t_by_trial[:, keep], "z")
    ).fit(cov_type="robust")
    return UnitEstimate(name, float(res.params["m"]), float(res.std_errors["m"]))


def unit_estimate(
    units: pd.DataFrame,
    estimator: str,
    *,
    trial: str = "trial",
    team: str = "team",
    treatment: str = "treated",
    kpi: str = "y",
    metric: str = "m",
) -> UnitEstimate:
    """One of :data:`ESTIMATORS` for the linear DRF coefficient, on a unit-level table.

    Parameters
    ----------
    units : DataFrame
        One row per unit (e.g. :func:`bayes_cmma.studies.simulate.simulate_units`).
    estimator : {"liml", "2sls", "sobel_iv", "lsem"}

    Returns
    -------
    UnitEstimate
    """
    if estimator not in ESTIMATORS:
        raise DataError(f"unknown unit-level estimator {estimator!r}; choose from {', '.join(ESTIMATORS)}.")
    d = _design(units, trial, team, treatment, kpi, metric)
    if estimator in ("liml", "2sls"):
        return _iv(d, exog=d.t_by_team, drop=d.first_trial_of_team, liml=estimator == "liml", name=estimator)
    if estimator == "sobel_iv":
        common = d.t_by_team.sum(axis=1, keepdims=True)
        return _iv(d, exog=common, drop=np.array([0]), liml=False, name=estimator)
    from linearmodels.iv import IV2SLS

    X = pd.concat([pd.Series(d.m, name="m"), _frame(d.t_by_trial, "trial_t")], axis=1)
    res = IV2SLS(pd.Series(d.y, name="y"), X, None, None).fit(cov_type="clustered", clusters=d.trial_codes)
    return UnitEstimate(estimator, float(res.params["m"]), float(res.std_errors["m"]))
