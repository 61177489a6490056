"""The unit-level data-generating process of the paper's simulation study (the KDD 2020 paper's Tables 1-3).

Per trial k of team g = k mod n_teams, units i = 1..N_per, treatment T_i ~ Bernoulli(1/2)::

    (M*_i, Y*_i, e_i) ~ Normal(0, sds (3, 3, 0.5), corr(M*, Y*) = 0.95, corr(e, .) = 0.8)
    phi_k, theta_k ~ U(-2, 2);  tau_k = tau_team[g] + U(-3, 3);  gamma_k = gamma_team[g]
    M_i = phi_k + (tau_k + eps_tau_i) T_i + M*_i
    Y_i = mu(M_i) + eps_beta_i M_i + theta_k + (gamma_k + delta_k + eps_gamma_i) T_i + Y*_i

with mu(m) = sum_p beta_p m^p and eps_tau, eps_gamma, eps_beta ~ Normal(0, 0.5). ``delta_k`` is
zero unless assumption A3 is violated. Violations:

* A2: eps_beta_i := e_i (the unit's effect of M on Y depends on its idiosyncratic level);
* A3: a trial-level extra direct effect delta_k ~ Normal(0, ``a3_direct_sd``), correlated
  ``a3_corr`` with the trial's U(-3, 3) effect on M (the paper gives the correlation, 0.8; the
  sd of 1 is our reading, and with it CMMA OLS reproduces the published bias 0.483);
* A4: tau_k has no within-team variation (the U(-3, 3) term is 0).

Every constant is a field of :class:`SimulationSettings` with the paper's value as default.
:func:`simulate_units` returns a unit-level table (``trial``, ``team``, ``treated``, ``m``, ``y``),
the input format of :func:`bayes_cmma.summarize_units`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayes_cmma.errors import BayesCMMAError

VIOLATIONS = ("A2", "A3", "A4")


@dataclass(frozen=True)
class SimulationSettings:
    """Every constant of the data-generating process; defaults are the paper's (Tables 1-2).

    Attributes
    ----------
    n_trials, n_per : int
        K trials with N_per units each.
    n_per_max : int, optional
        When given (> n_per), trial sizes differ: N_k is log-uniform between n_per and n_per_max
        (rounded), drawn independently of everything else (precision ignorable, as the pooled
        measurement model assumes).
    beta : tuple of float
        DRF coefficients beta_1..beta_P of mu(m) = sum_p beta_p m^p.
    violation : str or None
        ``None``, ``"A2"``, ``"A3"`` or ``"A4"``.
    random_slope : bool
        Include the unit-level slope innovation eps_beta_i M_i (the paper drops it for its cubic case).
    tau_team, gamma_team : tuple of float
        Per-team mean effect of treatment on M, and direct effect on Y; their length is the number of teams.
    tau_spread : float
        Half-width of the within-team U(-a, a) variation of tau_k.
    direct_spread : float
        Half-width of a within-team U(-a, a) variation of the direct effect gamma_k, independent of
        everything else (assumption A3 holds): the model's trial-level KPI residual u_k, with sd
        a / sqrt(3). The paper has none (0, the default).
    baseline_halfwidth : float
        Half-width of phi_k, theta_k ~ U(-a, a).
    sd_m, sd_y, corr_my : float
        Unit-level (M*, Y*) sds and correlation.
    sd_e, corr_e : float
        sd of e and its correlation with M* and Y* (used only under A2).
    sd_innovation : float
        sd of eps_tau, eps_gamma, eps_beta.
    treat_prob : float
        Probability that a unit is treated.
    a3_corr, a3_direct_sd : float
        Correlation of delta_k with the U(-a, a) effect on M, and sd of delta_k (A3 only).
    """

    n_trials: int = 50
    n_per: int = 200
    n_per_max: int | None = None
    beta: tuple[float, ...] = (4.0,)
    violation: str | None = None
    random_slope: bool = True
    tau_team: tuple[float, ...] = (0.5, 1.0, 2.5)
    gamma_team: tuple[float, ...] = (0.0, 1.5, 3.0)
    tau_spread: float = 3.0
    direct_spread: float = 0.0
    baseline_halfwidth: float = 2.0
    sd_m: float = 3.0
    sd_y: float = 3.0
    corr_my: float = 0.95
    sd_e: float = 0.5
    corr_e: float = 0.8
    sd_innovation: float = 0.5
    treat_prob: float = 0.5
    a3_corr: float = 0.8
    a3_direct_sd: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", tuple(float(b) for b in self.beta))
        object.__setattr__(self, "tau_team", tuple(float(b) for b in self.tau_team))
        object.__setattr__(self, "gamma_team", tuple(float(b) for b in self.gamma_team))
        problems = []
        if self.n_trials < 2:
            problems.append(f"n_trials must be at least 2, got {self.n_trials}")
        if self.n_per < 4:
            problems.append(f"n_per must be at least 4 (two units per arm), got {self.n_per}")
        if self.n_per_max is not None and not (isinstance(self.n_per_max, int) and self.n_per_max >= self.n_per):
            problems.append(f"n_per_max must be an integer >= n_per ({self.n_per}), got {self.n_per_max!r}")
        if not 1 <= len(self.beta) <= 5:
            problems.append(f"beta needs 1 to 5 coefficients, got {len(self.beta)}")
        if self.violation not in (None, *VIOLATIONS):
            problems.append(f"violation must be one of {', '.join(VIOLATIONS)} or none, got {self.violation!r}")
        if len(self.tau_team) != len(self.gamma_team) or not self.tau_team:
            problems.append("tau_team and gamma_team need the same, non-zero length (one entry per team)")
        if not 0 < self.treat_prob < 1:
            problems.append(f"treat_prob must be in (0, 1), got {self.treat_prob}")
        for name in ("corr_my", "corr_e", "a3_corr"):
            if not -1 < getattr(self, name) < 1:
                problems.append(f"{name} must be in (-1, 1), got {getattr(self, name)}")
        for name in ("sd_m", "sd_y", "sd_e", "sd_innovation", "a3_direct_sd", "direct_spread"):
            if not getattr(self, name) >= 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if problems:
            raise BayesCMMAError("simulation settings: " + "; ".join(problems) + ".")

    @property
    def n_teams(self) -> int:
        return len(self.tau_team)

    @property
    def degree(self) -> int:
        return len(self.beta)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists for tuples, no None), e.g. for TOML/JSON."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if (v is None and f.name == "n_per_max") or (v == 0.0 and f.name == "direct_spread"):
                continue  # absent at their defaults, so that earlier studies keep their identity and seeds
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def replace(self, **changes: Any) -> SimulationSettings:
        """A copy with some fields changed (unknown names are an error naming the key)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            from bayes_cmma.fitting.spec import _unknown_key

            raise _unknown_key(unknown[0], sorted(names), "simulation settings")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SimulatedUnits:
    """A simulated unit-level data set and the trial-level truth behind it.

    Attributes
    ----------
    units : DataFrame
        One row per unit: ``trial``, ``team``, ``treated`` (0/1), ``m``, ``y``.
    truth : dict of str to ndarray
        Per trial: ``team_idx``, ``phi``, ``theta``, ``tau``, ``gamma``, ``delta``; and ``beta``.
    settings : SimulationSettings
    """

    units: pd.DataFrame
    truth: dict[str, np.ndarray] = field(repr=False)
    settings: SimulationSettings = field(default_factory=SimulationSettings)


def _unit_noise_chol(s: SimulationSettings) -> np.ndarray:
    """Cholesky factor of the covariance of (M*, Y*, e)."""
    sd = np.array([s.sd_m, s.sd_y, s.sd_e])
    corr = np.array([[1.0, s.corr_my, s.corr_e], [s.corr_my, 1.0, s.corr_e], [s.corr_e, s.corr_e, 1.0]])
    cov = corr * np.outer(sd, sd)
    try:
        return np.linalg.cholesky(cov + 1e-15 * np.eye(3))
    except np.linalg.LinAlgError as exc:
        raise BayesCMMAError(
            f"simulation settings: corr_my = {s.corr_my} with corr_e = {s.corr_e} is not a valid correlation "
            "matrix of (M*, Y*, e); lower corr_e."
        ) from exc


def simulate_units(settings: SimulationSettings, rng: np.random.Generator) -> SimulatedUnits:
    """Draw one unit-level data set from the paper's DGP (module docstring).

    Parameters
    ----------
    settings : SimulationSettings
    rng : numpy.random.Generator

    Returns
    -------
    SimulatedUnits
    """
    s = settings
    K, N, G = s.n_trials, s.n_per, s.n_teams
    team_idx = np.arange(K) % G
    phi = rng.uniform(-s.baseline_halfwidth, s.baseline_halfwidth, K)
    theta = rng.uniform(-s.baseline_halfwidth, s.baseline_halfwidth, K)
    spread = rng.uniform(-s.tau_spread, s.tau_spread, K)
    if s.violation == "A4":
        spread = np.zeros(K)
    tau = np.asarray(s.tau_team)[team_idx] + spread
    gamma = np.asarray(s.gamma_team)[team_idx]
    if s.direct_spread > 0:  # a separate stream, so that the rest of the data set is as without it
        direct_rng = rng.spawn(1)[0]  # spawning does not advance rng
        gamma = gamma + direct_rng.uniform(-s.direct_spread, s.direct_spread, K)
    delta = np.zeros(K)
    if s.violation == "A3":
        # delta_k correlates a3_corr with the within-team effect on M (uniform, sd a / sqrt(3))
        u_sd = s.tau_spread / np.sqrt(3.0) if s.tau_spread > 0 else 1.0
        delta = s.a3_direct_sd * (s.a3_corr * spread / u_sd + np.sqrt(1 - s.a3_corr**2) * rng.standard_normal(K))

    if s.n_per_max is not None and s.n_per_max > s.n_per:
        # drawn from a separate stream so that the rest of the data set is as with equal sizes
        size_rng = rng.spawn(1)[0]  # spawning does not advance rng
        sizes = np.rint(np.exp(size_rng.uniform(np.log(s.n_per), np.log(s.n_per_max), K))).astype(np.int64)
    else:
        sizes = np.full(K, N)
    n = int(sizes.sum())
    k = np.repeat(np.arange(K), sizes)
    T = (rng.random(n) < s.treat_prob).astype(np.int8)
    noise = rng.standard_normal((n, 3)) @ _unit_noise_chol(s).T
    m_star, y_star, e = noise[:, 0], noise[:, 1], noise[:, 2]
    eps = rng.normal(0.0, s.sd_innovation, (n, 3))
    eps_tau, eps_gamma = eps[:, 0], eps[:, 1]
    eps_beta = e if s.violation == "A2" else eps[:, 2]
    M = phi[k] + (tau[k] + eps_tau) * T + m_star
    mu = np.zeros(n)
    for p, b in enumerate(s.beta, start=1):
        if b != 0.0:
            mu += b * M**p
    Y = mu + theta[k] + (gamma[k] + delta[k] + eps_gamma) * T + y_star
    if s.random_slope:
        Y += eps_beta * M
    trial_labels = np.array([f"t{i:03d}" for i in range(K)], dtype=object)
    team_labels = np.array([f"team{g + 1}" for g in range(G)], dtype=object)
    units = pd.DataFrame(
        {"trial": trial_labels[k], "team": team_labels[team_idx[k]], "treated": T, "m": M, "y": Y}
    )
    truth = {
        "team_idx": team_idx,
        "phi": phi,
        "theta": theta,
        "tau": tau,
        "gamma": gamma,
        "delta": delta,
        "beta": np.asarray(s.beta),
    }
    return SimulatedUnits(units=units, truth=truth, settings=s)
