"""Is P(best) calibrated? Trial summaries with a known best metric, and reliability tables.

The ranking is the toolkit's headline answer, so its probabilities should mean what they say: of
the metrics given P(best) = 0.3, about 30% should truly be best. This module simulates trial
summaries of a KPI and several candidate metrics from a known joint law, so that every metric's
true DRF, elasticity and the truly best metric are known exactly, and tabulates how often metrics
given a P(best) in each bin are truly best (a reliability diagram with binomial intervals).

The law (per trial k of team g, J metrics): latent metric effects m_k ~ MvNormal(alpha_g, Omega)
with unit variances and correlation ``metric_corr`` between metrics; latent KPI effect
y_k = b m_k1 + pi_g + u_k (only the first metric drives the KPI); observed ATEs
z_k = (y_k, m_k) + e_k with e_k ~ MvNormal(0, S_k). The per-metric model of metric j is the
marginal regression of y on m_j alone, so its true DRF slope is beta_j = Cov(y, m_j) / Var(m_j)
= b Omega_1j / Omega_jj, and its true elasticity at level a_j for a lift l with KPI baseline B is
beta_j a_j l / B (linear DRF). The levels set the regime: ``"spread"`` makes the elasticities
(1, 0.7, 0.4) times the first's, ``"near_tie"`` (1, 1.02, 0.98): the second metric is truly best
by 2%, the first by 2% over the third (about as in the joint-ranking issue's measurement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bayes_cmma.inputs.data import TrialData, read_trials

#: Relative true elasticities of the metrics per regime (the first metric's is 1).
REGIMES = {"spread": (1.0, 0.7, 0.4), "near_tie": (1.0, 1.02, 0.98)}


@dataclass(frozen=True)
class CandidateTruth:
    """What the simulated trials' law says about each candidate metric."""

    metrics: list[str]
    beta: np.ndarray  # (J,) true marginal DRF slope of the KPI on each metric
    at: dict[str, float]  # current level of each metric
    baseline: float
    lift: float

    @property
    def elasticity(self) -> np.ndarray:
        levels = np.array([self.at[m] for m in self.metrics])
        return self.beta * levels * self.lift / self.baseline

    @property
    def best(self) -> str:
        return self.metrics[int(np.argmax(self.elasticity))]


def candidate_truth(metric_corr: float, regime: str, *, b: float = 1.0, n_metrics: int = 3, baseline: float = 10.0,
                    lift: float = 0.1) -> CandidateTruth:
    """True slopes and the levels that give the regime's relative elasticities."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}")
    if not 0 < metric_corr < 1:
        raise ValueError(f"metric_corr must be in (0, 1), got {metric_corr}")
    metrics = [f"m{j + 1}" for j in range(n_metrics)]
    beta = np.array([b] + [b * metric_corr] * (n_metrics - 1))
    relative = np.resize(np.asarray(REGIMES[regime]), n_metrics)
    levels = relative / (beta / b)  # beta_j a_j proportional to the regime's relative elasticity
    return CandidateTruth(metrics, beta, dict(zip(metrics, levels.tolist(), strict=True)), baseline, lift)


def simulate_candidates(
    rng: np.random.Generator,
    truth: CandidateTruth,
    *,
    metric_corr: float,
    n_trials: int = 50,
    n_teams: int = 4,
    b: float = 1.0,
    residual_sd: float = 0.3,
    se_range: tuple[float, float] = (0.2, 0.5),
    error_corr: float = 0.3,
    return_law: bool = False,
) -> TrialData | tuple[TrialData, dict[str, np.ndarray]]:
    """One trial table (KPI ``y`` and metrics ``m1..mJ``, with covariances) from the law above.

    With ``return_law`` also the law's latent moments: ``sigma`` (Var m), ``c`` (Cov(m, y)),
    ``var_y``, the team means ``mu_m`` (team, metric) and ``mu_y`` (team), and ``team_trials``.
    """
    J = len(truth.metrics)
    team = np.arange(n_trials) % n_teams
    alpha = rng.normal(0.0, 1.0, (n_teams, J))
    pi = rng.normal(0.0, 0.5, n_teams)
    omega = (1 - metric_corr) * np.eye(J) + metric_corr * np.ones((J, J))
    m = alpha[team] + rng.standard_normal((n_trials, J)) @ np.linalg.cholesky(omega).T
    y = b * m[:, 0] + pi[team] + rng.normal(0.0, residual_sd, n_trials)
    d = J + 1
    R = error_corr * np.ones((d, d)) + (1 - error_corr) * np.eye(d)
    se = rng.uniform(*se_range, (n_trials, d))
    S = se[:, :, None] * se[:, None, :] * R
    z = np.column_stack([y, m]) + np.einsum("kij,kj->ki", np.linalg.cholesky(S), rng.standard_normal((n_trials, d)))
    names = ["y", *truth.metrics]
    trials = [f"k{i:03d}" for i in range(n_trials)]
    rows = [{"trial": trials[k], "team": f"team{team[k]}", "quantity": q, "estimate": z[k, i], "std_error": se[k, i]}
            for k in range(n_trials) for i, q in enumerate(names)]
    cov = [{"trial": trials[k], "quantity_1": names[i], "quantity_2": names[j], "covariance": S[k, i, j]}
           for k in range(n_trials) for i in range(d) for j in range(i)]
    data = read_trials(pd.DataFrame(rows), pd.DataFrame(cov))
    if not return_law:
        return data
    law = {"sigma": omega, "c": b * omega[:, 0], "var_y": b * b * omega[0, 0] + residual_sd**2, "mu_m": alpha,
           "mu_y": b * alpha[:, 0] + pi, "team_trials": np.bincount(team, minlength=n_teams)}
    return data, law


def within_team_slopes(data: TrialData, metrics: list[str], kpi: str = "y",
                       deconvolve: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The metrics' within-team sample correlation (J, J) and the KPI's marginal slope on each (J,).

    Team means are removed from the trials' estimates. With ``deconvolve`` the within-team covariance
    (divided by K - teams) has the trials' mean error covariance subtracted first: the
    method-of-moments value of the latent effects' covariance, what the per-metric and joint models
    estimate; without it the slopes are the within-team least-squares ones.
    """
    ds = data.dataset
    q = list(data.quantities)
    z = np.array(ds["estimate"].values, dtype=float)
    team = ds["team"].values.astype(str)
    for t in np.unique(team):
        z[team == t] -= z[team == t].mean(axis=0)
    idx = [q.index(x) for x in metrics] + [q.index(kpi)]
    cov = z[:, idx].T @ z[:, idx]
    if deconvolve:
        noise = np.array(ds["covariance"].values, dtype=float).mean(axis=0)[np.ix_(idx, idx)]
        cov = cov / (len(z) - len(np.unique(team))) - noise
    J = len(metrics)
    sd = np.sqrt(np.diag(cov)[:J])
    return cov[:J, :J] / np.outer(sd, sd), cov[:J, J] / np.diag(cov)[:J]


def reliability_table(p_best: np.ndarray, is_best: np.ndarray, edges: np.ndarray | None = None,
                      level: float = 0.95) -> pd.DataFrame:
    """How often metrics given P(best) in each bin were truly best, with Clopper-Pearson intervals.

    Parameters
    ----------
    p_best : array of the P(best) given to each (replication, metric)
    is_best : bool array, whether that metric was truly best
    edges : bin edges (default 0, 0.1, ..., 1; the last bin includes 1)

    Returns
    -------
    DataFrame, one row per bin: ``lower``, ``upper`` (the bin), ``n``, ``mean_p_best``,
    ``frequency_best`` and its interval ``ci_lower``, ``ci_upper``; ``gap`` = frequency - mean P(best).
    """
    p = np.asarray(p_best, dtype=float)
    hit = np.asarray(is_best, dtype=bool)
    edges = np.linspace(0.0, 1.0, 11) if edges is None else np.asarray(edges, dtype=float)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for i in range(len(edges) - 1):
        sel = idx == i
        n, k = int(sel.sum()), int(hit[sel].sum())
        if n:
            ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
            lo, hi = ci.low, ci.high
        else:
            lo = hi = np.nan
        rows.append({"lower": edges[i], "upper": edges[i + 1], "n": n,
                     "mean_p_best": float(p[sel].mean()) if n else np.nan,
                     "frequency_best": k / n if n else np.nan, "ci_lower": lo, "ci_upper": hi})
    table = pd.DataFrame(rows)
    table["gap"] = table["frequency_best"] - table["mean_p_best"]
    return table


def chosen_metric_summary(results: pd.DataFrame) -> dict[str, float]:
    """For the metric with the highest P(best) in each replication: its mean P(best) and how often it is truly best.

    ``results`` has one row per (``rep``, ``metric``) with ``p_best`` and ``is_best``.
    """
    chosen = results.loc[results.groupby("rep")["p_best"].idxmax()]
    n = len(chosen)
    freq = float(chosen["is_best"].mean())
    return {"replications": n, "mean_p_best": float(chosen["p_best"].mean()), "truly_best": freq,
            "truly_best_se": float(np.sqrt(freq * (1 - freq) / n)) if n else np.nan,
            "overconfidence": float(chosen["p_best"].mean()) - freq}
