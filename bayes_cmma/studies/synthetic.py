"""Trial summaries simulated from the Bayesian model itself (docs: model.md), for recovery checks.

Unlike the unit-level simulator of the paper's study, this draws trial-level quantities directly:
latent metric effects m_k ~ MvNormal(alpha_g, Omega), y_k = beta' m_k + pi_g + u_k, and observed
z_k ~ MvNormal((y_k, m_k), S_k) with S_k built from standard errors and a correlation matrix.

Two options bring it closer to unit-level data. ``arm_sizes = (lo, hi)`` draws each arm's size
uniformly in that range and builds S_k = c_k V_k with c_k = 1/n_treated + 1/n_control (the table
then carries ``n_treated`` and ``n_control``). ``informative_precision = kappa`` makes a trial's
measurement covariance grow with its latent metric level, as for powers of a metric in real logs:
S_k is multiplied by exp(2 kappa s_k), s_k the trial's latent first metric power standardised within
its team. The model's per-trial form assumes S_k independent of the latent effects, so this mode is
where it goes wrong and the pooled form (:mod:`bayes_cmma.fitting.measurement`) should not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_cmma.inputs.data import TrialData, quantity_name, read_trials


def simulate_summaries(
    rng: np.random.Generator,
    *,
    n_trials: int = 120,
    n_teams: int = 4,
    beta: tuple[float, ...] = (2.0, -1.0),
    alpha_sd: float = 1.0,
    pi: np.ndarray | None = None,
    omega_chol: np.ndarray | None = None,
    residual_sd: float = 0.3,
    se_range: tuple[float, float] = (0.2, 0.6),
    error_corr: float = 0.6,
    kpi: str = "y",
    metric: str = "m",
    arm_sizes: tuple[int, int] | None = None,
    informative_precision: float = 0.0,
) -> tuple[TrialData, dict[str, np.ndarray]]:
    """Simulate a trial table (with covariances) and return it with the true parameters.

    ``arm_sizes`` and ``informative_precision``: see the module docstring. With ``arm_sizes`` the
    standard errors are ``mean(se_range)`` at the median trial size (times the informative factor).

    Returns
    -------
    (TrialData, truth) where truth has ``beta``, ``alpha``, ``pi``, ``omega_chol``, ``m``, ``y``,
    ``S`` (the true measurement covariances) and, with ``arm_sizes``, ``n`` (trial, 2: treated, control).
    """
    beta_arr = np.asarray(beta, dtype=float)
    P = beta_arr.size
    team = np.arange(n_trials) % n_teams
    alpha = rng.normal(0.0, alpha_sd, (n_teams, P))
    pi = rng.normal(0.0, 0.5, n_teams) if pi is None else np.asarray(pi, dtype=float)
    if omega_chol is None:
        omega_chol = np.linalg.cholesky(0.5 * np.eye(P) + 0.5 * np.ones((P, P)))
    m = alpha[team] + rng.standard_normal((n_trials, P)) @ omega_chol.T
    y = m @ beta_arr + pi[team] + rng.normal(0.0, residual_sd, n_trials)
    d = P + 1
    R = error_corr * np.ones((d, d)) + (1 - error_corr) * np.eye(d)
    sizes = None
    if arm_sizes is None:
        se = rng.uniform(*se_range, (n_trials, d))
    else:
        lo, hi = arm_sizes
        sizes = rng.integers(lo, hi + 1, (n_trials, 2))
        c = 1.0 / sizes[:, 0] + 1.0 / sizes[:, 1]
        se = np.repeat(float(np.mean(se_range)) * np.sqrt(c / np.median(c))[:, None], d, axis=1)
    if informative_precision:
        level = (m[:, 0] - alpha[team, 0]) / omega_chol[0, 0]  # latent first power, within-team standardised
        se = se * np.exp(informative_precision * level)[:, None]
    S = se[:, :, None] * se[:, None, :] * R
    noise = np.einsum("kij,kj->ki", np.linalg.cholesky(S), rng.standard_normal((n_trials, d)))
    z = np.column_stack([y, m]) + noise
    names = [kpi] + [quantity_name(metric, p) for p in range(1, P + 1)]
    trials = [f"k{i:03d}" for i in range(n_trials)]
    teams = [f"team{g}" for g in range(n_teams)]
    rows = [
        {"trial": trials[k], "team": teams[team[k]], "quantity": q, "estimate": z[k, i], "std_error": se[k, i]}
        | ({} if sizes is None else {"n_treated": int(sizes[k, 0]), "n_control": int(sizes[k, 1])})
        for k in range(n_trials)
        for i, q in enumerate(names)
    ]
    cov_rows = [
        {"trial": trials[k], "quantity_1": names[i], "quantity_2": names[j], "covariance": S[k, i, j]}
        for k in range(n_trials)
        for i in range(d)
        for j in range(i)
    ]
    data = read_trials(pd.DataFrame(rows), pd.DataFrame(cov_rows))
    truth = {"beta": beta_arr, "alpha": alpha, "pi": pi, "omega_chol": omega_chol, "m": m, "y": y, "S": S}
    if sizes is not None:
        truth["n"] = sizes
    return data, truth
