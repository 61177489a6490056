"""Checks of the identifying assumptions that the data can speak to.

A4 (relevance): the trials must move the metric by different amounts within a team; the DRF is
identified from that within-team variation, as an instrument is from its first stage. The check
is Cochran's Q of the trials' metric ATEs about their team's precision-weighted mean, pooled over
teams::

    Q = sum_g sum_{k in g} (m_k - mbar_g)^2 / se_k^2,   df = K - (number of teams with trials)

Under "no real within-team variation" Q ~ chi^2(df). ``F = Q / df`` plays the part of the
first-stage F statistic (1 when the spread is pure noise), and ``I^2 = max(0, 1 - df / Q)`` is
the share of the observed spread that is real: the reliability of a trial's metric ATE as a
measure of its true effect.

The data are called weak when the test finds no clear within-team variation (p >= 0.001) or when less
than 10% of the observed spread is real (I^2 < 0.1); the DRF is then driven by the prior. Not the
2SLS rule of thumb F < 10: that rule bounds the bias of an estimator that ignores measurement error,
while this model corrects for it, so moderate reliability is enough (a model-consistent data set
with F = 5.2, I^2 = 0.81 and 120 trials recovers beta; see tests/test_fit.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy import stats

from bayes_cmma import dims
from bayes_cmma.inputs.data import MetricDesign

#: No evidence of within-team variation at this level calls the metric weak.
WEAK_P = 0.001
#: Less than this share of real (not sampling) variation calls the metric weak.
MIN_I2 = 0.1


@dataclass(frozen=True)
class RelevanceCheck:
    """Cochran's Q test of within-team heterogeneity of the trials' metric ATEs (assumption A4)."""

    metric: str
    q: float
    df: int
    p_value: float
    f_stat: float
    i2: float
    alpha: float = WEAK_P
    min_i2: float = MIN_I2

    @property
    def weak(self) -> bool:
        """No within-team replication, no evidence of within-team variation, or too little of it is real."""
        return not (self.df > 0 and self.p_value < self.alpha and self.i2 >= self.min_i2)

    def message(self) -> str:
        if self.df == 0:
            return (f"A4 (relevance) cannot be checked for metric {self.metric!r}: no team has two trials, so "
                    "nothing shows how the KPI responds to different metric effects within a team; the DRF is "
                    "driven by the prior.")
        return (
            f"A4 (relevance) looks weak for metric {self.metric!r}: the trials' effects on it barely vary within "
            f"teams beyond their standard errors (Cochran's Q = {self.q:.1f} on {self.df} df, p = "
            f"{self.p_value:.2g}; F = Q/df = {self.f_stat:.2f}; I^2 = {self.i2:.2f}, the share of the spread that "
            "is real). Like a weak instrument, this leaves the DRF driven by the prior: do not trust its shape, "
            "the elasticity or the ranking for this metric."
        )

    def to_dict(self) -> dict[str, float | int | str | bool]:
        return {"metric": self.metric, "cochran_q": self.q, "df": self.df, "p_value": self.p_value,
                "f_stat": self.f_stat, "i2": self.i2, "weak": self.weak}


def cochran_q(estimate: np.ndarray, std_error: np.ndarray, team_idx: np.ndarray) -> tuple[float, int]:
    """Cochran's Q about precision-weighted team means, pooled over teams, and its degrees of freedom."""
    w = 1.0 / np.asarray(std_error, dtype=float) ** 2
    n_teams = int(team_idx.max()) + 1 if len(team_idx) else 0
    sw = np.bincount(team_idx, weights=w, minlength=n_teams)
    mean = np.bincount(team_idx, weights=w * estimate, minlength=n_teams) / np.where(sw > 0, sw, 1.0)
    q = float(np.sum(w * (estimate - mean[team_idx]) ** 2))
    counts = np.bincount(team_idx, minlength=n_teams)
    return q, int(np.sum(np.maximum(counts - 1, 0)))


def relevance_check(design: MetricDesign, alpha: float = WEAK_P, min_i2: float = MIN_I2) -> RelevanceCheck:
    """A4 check on the metric's ATEs (first power) of a model design; see the module docstring."""
    keep = np.ones(design.n_trials, dtype=bool) if design.observed is None else design.observed[:, 1]
    est = design.z[keep, 1]  # the trials that report the metric
    se = np.sqrt(design.S[keep, 1, 1])
    q, df = cochran_q(est, se, design.team_idx[keep])
    if df == 0:
        return RelevanceCheck(design.metric, q, 0, float("nan"), float("nan"), float("nan"), alpha, min_i2)
    f = q / df
    return RelevanceCheck(
        metric=design.metric,
        q=q,
        df=df,
        p_value=float(stats.chi2.sf(q, df)),
        f_stat=f,
        i2=max(0.0, 1.0 - df / q) if q > 0 else 0.0,
        alpha=alpha,
        min_i2=min_i2,
    )


def posterior_reliability(posterior: xr.DataTree) -> xr.DataArray:
    """Posterior draws of the reliability of a trial's metric ATE, dims (chain, draw).

    ``Omega_11 / (Omega_11 + mean_k S_k,11)``: the between-trial variance of the true metric effects
    over itself plus the average squared standard error. Near 0, the observed spread is mostly noise.
    """
    post = posterior["posterior"]
    omega = post["metric_sd"].sel({dims.POWER: 1}) ** 2
    s = posterior["observed_data"]["measurement_cov"]
    q1 = s[dims.QUANTITY].values[1]
    noise = float(s.sel({dims.QUANTITY: q1, dims.QUANTITY_OTHER: q1}).mean())
    out = omega / (omega + noise)
    return out.rename("reliability").drop_vars(dims.POWER, errors="ignore")
