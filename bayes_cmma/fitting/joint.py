"""One joint posterior for every candidate metric, so that the ranking uses joint draws (docs: model.md).

The per-metric model of metric j is the normal of the latent (KPI effect, metric effect) per trial.
The joint model is one normal over (y_k, m_k1, ..., m_kJ), the latent KPI effect and the first
power of every metric; each per-metric model (degree 1) is one of its bivariate marginals. Every
metric is measured on the same trials with the same KPI noise, so the metrics' slopes are
estimated with correlated errors; pairing draws of separate fits as if independent ignores that.

Per trial k of team g, on the internal scale (each column divided by its sd across trials)::

    z_k ~ MvNormal( (eta_g, alpha_g),  G + S_k ),
    G = [[c' Sigma^-1 c + sigma_u^2, c'], [c, Sigma]],    c_j = beta_j Sigma_jj,
    Sigma = C C' (LKJ Cholesky),   eta_g = gamma' alpha_g + pi_g,   gamma = Sigma^-1 c.

Sampled: ``beta`` (one **marginal** DRF slope per metric, beta_j = Cov(y, m_j) / Var(m_j): the
slope its own per-metric model estimates), alpha (team, metric), the team KPI means, C, sigma_u
(the KPI's sd given every metric). Any beta and any positive-definite Sigma give a positive-definite
G, so the priors on beta are priors on the DRF coefficients users read, as in the per-metric model.
gamma (``partial_beta``) is the KPI's dependence on one metric holding the others fixed, reported
but not ranked. The DRF is linear (degree 1): the joint model of powers of several metrics is not
built.

Four priors on the slopes (``elasticity_prior``):

``"independent"``
    beta_j ~ the spec's ``beta_std`` prior, independently (as in the per-metric model).
``"pooled"`` (default)
    Partial pooling of the ranked quantities. With current levels a_j, metric j's elasticity is
    beta_j a_j lift / baseline, so the ranking orders r_j = beta_j a_j. On the internal scale
    r_j is proportional to u_j = b_j w_j with w_j = (a_j / s_j) / geometric mean, and
    u_j = mu + tau z_j, z_j ~ N(0, 1), mu ~ the ``beta_std`` prior, tau ~ HalfNormal(1). Candidate
    metrics that look alike are then not declared different on noise (the winner's curse of a near
    tie); with elasticities far apart tau is large and the pooling weak. The levels are needed at
    fit time.
``"observational"``
    A commensurate prior that borrows from the observational regression of the KPI on each metric
    in unit-level logs (:mod:`bayes_cmma.inputs.observational`): b_j = o_j + sqrt(kappa^2 + v_j^2) z_j,
    z_j ~ N(0, 1), with o_j and v_j the observational slope and its standard error on the internal
    scale, and kappa ~ HalfNormal(:data:`BIAS_SD_SCALE`) the scale of the observational bias, shared by
    the metrics and learned: when the trials agree with the observational slopes, kappa is small and the
    fit borrows their precision; when they disagree (confounding), kappa grows and the trials decide.
    ``observational_bias_sd`` reports kappa on each metric's original scale. With
    ``observational_bias_prior="harmonic"`` kappa^2 is uniform on [0, :data:`HARMONIC_BIAS_MAX`^2]
    instead: a (truncated) flat prior on the bias variance, under which the bias b - o has Stein's
    harmonic prior |b - o|^-(J - 2), whose posterior mean is minimax for J >= 3 under squared error
    (it never does worse than the trials alone, if their noise were isotropic and known). It puts
    less mass on "the logs are right" than the HalfNormal, so it borrows less from clean logs and is
    pulled less by confounded ones.
``"tie"``
    The model is sampled with the independent prior; the ranking then puts prior probability
    ``p_tie`` (default 0.5) on "the candidates' elasticities are equal" and otherwise spreads them
    around a common level (:mod:`bayes_cmma.decisions.ties`, which divides the independent prior
    out). A near tie is then read as one: P(best) moves towards 1/J, and ``p_tie`` says how likely
    the tie is. The fit's parameters are those of the independent prior; only the ranking differs.

The candidate metrics' correlation R has an LKJ prior of concentration ``metric_corr_eta``
(:data:`METRIC_CORR_ETA`, 1: uniform over correlation matrices), a setting of the joint model, not
the spec's ``metric_corr_eta`` (which is about the correlation of one metric's powers and has no
role in a degree-1 model). With the slopes sampled as marginal slopes beta, an LKJ(eta) prior is an
LKJ(eta + 1) prior relative to the partial slopes gamma the data pin down (the map from gamma to
beta has Jacobian det R), and every step of concentration pulls the metrics' correlations, and
with them the slopes of proxy metrics, towards 0: with the spec's 2 the proxies' slopes were
0.06-0.09 low at K = 50 (docs: checks.md, "Is P(best) calibrated?").

``latent_prior="lkj"`` replaces the slopes' normal prior and the metrics' LKJ prior by one LKJ prior
over the correlation of (m_1..m_J, y), with a factor that makes the KPI's correlations uniform
(:func:`latent_lkj`; default concentration :data:`LATENT_LKJ_ETA`). Its prior draws never pair
nearly collinear metrics with unrelated slopes (the slopes parametrisation's do, and with LKJ 0.5
the sampler fails on them); the slopes' prior is then the induced one, so it goes with the
independent and tie elasticity priors only (docs: model.md, "The latent LKJ prior").
``latent_prior="wishart"`` puts an inverse-Wishart prior IW(J + 2, :data:`WISHART_SCALE` I) on the
same covariance (:func:`latent_wishart`): correlations uniform a priori and no pull of the marginal
slopes beyond the small scale (docs: model.md, "The inverse-Wishart latent prior").

Data enter through ``pm.Data``; one compiled model serves every refit with the same number of
metrics, teams, priors, ``metric_corr_eta``, ``elasticity_prior`` and ``latent_prior``.
"""

from __future__ import annotations

import numbers
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from pytensor.tensor.linalg import solve_triangular

from bayes_cmma import dims
from bayes_cmma.checks.diagnostics import divergences, warn_on_problems
from bayes_cmma.decisions import derived
from bayes_cmma.decisions.ties import P_TIE, SPREAD_SCALE, tie_posterior
from bayes_cmma.errors import BayesCMMAError
from bayes_cmma.fitting import measurement, sampling
from bayes_cmma.fitting.bayes import resolve_spec
from bayes_cmma.fitting.model import (
    Standardised,
    _location,
    _observed_sd,
    _scale,
    _scale_dist,
    pooled,
    team_kpi_means,
    team_slope,
    trial_data,
    trial_loglik_numpy,
    trial_logp_graph,
    trial_swap,
    unpack_chol,
)
from bayes_cmma.fitting.provenance import provenance
from bayes_cmma.fitting.spec import ModelSpec, replace_spec
from bayes_cmma.inputs.data import MetricDesign, TrialData, joint_design

Progress = Callable[[str], None]

#: Values of ``elasticity_prior`` (the first is the default).
ELASTICITY_PRIORS = ("pooled", "independent", "observational", "tie")
#: Scale of the HalfNormal prior of kappa, the sd of the observational slopes' bias, on the internal
#: scale (where a slope is about a correlation, so |b_j| <= 1 or so): a bias as large as the slope
#: itself is possible, one of several times it is not.
BIAS_SD_SCALE = 0.5
#: Priors of kappa, the observational bias sd (the first is the default).
OBSERVATIONAL_BIAS_PRIORS = ("halfnormal", "harmonic")
#: Parametrisations of the slopes around the logs' (the first is the default): b_j = o_j + sqrt(kappa^2 +
#: v_j^2) z_j with z_j sampled (non-centred), or b_j ~ N(o_j, kappa^2 + v_j^2) sampled (centred).
OBSERVATIONAL_PARAMETRIZATIONS = ("non_centred", "centred")
#: Upper bound of kappa under the harmonic prior (kappa^2 uniform on [0, this^2]), on the internal scale:
#: a bias twice a slope of about a correlation's size.
HARMONIC_BIAS_MAX = 2.0
#: Scale of the HalfNormal prior of tau, the spread of the pooled (standardised) elasticities u_j.
POOLING_SD_SCALE = 1.0
#: LKJ concentration of the candidate metrics' correlation in the joint model (1: uniform over correlation
#: matrices). Measured on the P(best) calibration tables (K = 50, metrics correlated 0.8, tie prior, 100
#: replications per regime): the proxies' slope bias -0.046 / -0.037 against -0.072 / -0.062 with 2, and
#: the near tie's chosen metric +7.8 points over how often it is truly best against +15.
METRIC_CORR_ETA = 1.0
#: Values of ``latent_prior``, the prior of the latent covariance and slopes (the first is the default).
LATENT_PRIORS = ("slopes", "lkj", "wishart")
#: Default LKJ concentration of the KPI's and metrics' correlation under ``latent_prior="lkj"``: the value
#: measured (docs: checks.md, "The latent LKJ prior").
LATENT_LKJ_ETA = 0.5
#: Scale s of the inverse-Wishart prior IW(J + 2, s I) of ``latent_prior="wishart"`` on the internal scale,
#: where every column has unit spread across trials: a marginal slope's posterior mean is
#: (S + s I)_yj / (S + s I)_jj for a scatter S of the latent effects, so s is a tenth of one trial's
#: contribution (docs: model.md, "The inverse-Wishart latent prior").
WISHART_SCALE = 0.1
#: The elasticity priors that ``latent_prior="lkj"`` or ``"wishart"`` allows: it has no explicit prior on the slopes to
#: pool or to centre on observational ones.
LATENT_ELASTICITY_PRIORS = ("independent", "tie")
#: Default target acceptance of the joint model. Measured on 50-trial, 4-team, 3-metric tables
#: (4 seeds per regime, non-centred team effects, pooled prior): 0.9 left 1-19 divergent
#: transitions per fit of 2000 draws, 0.95 0-8, 0.99 0-1, for about twice the sampling time.
TARGET_ACCEPT = 0.99


def standardise_joint(design: MetricDesign) -> Standardised:
    """Divide the KPI and every metric column by its sd across trials (a diagonal map).

    Diagonal, not whitening as in the per-metric model: the internal slope b_j of each metric is then
    its marginal slope in other units, b_j = beta_j s_j / s_0, so a prior on b is a prior on beta.
    """
    observed = design.mask().astype(bool)
    scales = _observed_sd(design.z, observed, design.S)
    B = np.diag(1.0 / scales)
    z = design.z @ B.T
    S = B @ design.S @ B.T
    S = 0.5 * (S + np.swapaxes(S, -1, -2))
    return Standardised(z=np.ascontiguousarray(z), S=np.ascontiguousarray(S), kpi_scale=float(scales[0]),
                        L=np.diag(scales[1:]))


def rank_weights(at: Mapping[str, float], metrics: Sequence[str], std: Standardised) -> np.ndarray:
    """w_j = (a_j / s_j) / their geometric mean: u_j = b_j w_j is proportional to beta_j a_j."""
    levels = np.array([float(at[m]) for m in metrics])
    w = levels / np.diag(std.L)
    return w / np.exp(np.mean(np.log(w)))


def bias_prior(observational: tuple | None) -> str:
    """The prior of kappa named in an ``observational`` tuple of :func:`build_joint_model` (default HalfNormal)."""
    return "halfnormal" if observational is None or len(observational) < 4 else str(observational[3])


def bias_parametrization(observational: tuple | None) -> str:
    """How the slopes are sampled around the logs' (``observational[4]``): :data:`OBSERVATIONAL_PARAMETRIZATIONS`."""
    return "non_centred" if observational is None or len(observational) < 5 else str(observational[4])


def check_metric_corr_eta(value: Any,
                          label: str = "metric_corr_eta, the LKJ concentration of the metrics' correlation,") -> None:
    """One error naming ``label`` unless ``value`` is a positive finite number (the joint model's LKJ concentration)."""
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) and np.isfinite(value) and value > 0):
        raise BayesCMMAError(f"{label} must be a positive number (1 = uniform over correlation matrices), "
                             f"got {value!r}.")


def check_latent_prior(latent_prior: Any, elasticity_prior: str) -> None:
    """One error naming the value unless ``latent_prior`` is known and allowed with ``elasticity_prior``."""
    if latent_prior not in LATENT_PRIORS:
        raise BayesCMMAError(f"latent_prior must be one of {', '.join(LATENT_PRIORS)}, got {latent_prior!r}.")
    if latent_prior != "slopes" and elasticity_prior not in LATENT_ELASTICITY_PRIORS:
        raise BayesCMMAError(f"latent_prior={latent_prior!r} has no explicit prior on the slopes to build the "
                             f"{elasticity_prior!r} elasticity prior on; use elasticity_prior "
                             f"{' or '.join(repr(p) for p in LATENT_ELASTICITY_PRIORS)}, or latent_prior='slopes'.")


def sampled_prior(elasticity_prior: str) -> str:
    """The prior the model is sampled with: the tie prior samples the independent one."""
    return "independent" if elasticity_prior == "tie" else elasticity_prior


def sampled_vars(n_teams: int, elasticity_prior: str, team_effects: str = "auto") -> list[str]:
    """Names of the stored (internal-scale) variables (the same under every latent prior)."""
    hyper = ["pi_mean", "pi_sd"] if pooled(n_teams, team_effects) else []
    pool = {"pooled": ["elasticity_mean", "elasticity_sd"], "observational": ["observational_bias_sd"]}.get(
        elasticity_prior, [])
    return ["beta_std", *pool, "alpha", *hyper, "kpi_mean", "metric_chol", "residual_sd"]


def build_joint_model(
    spec: ModelSpec,
    n_teams: int,
    data: Standardised,
    team_idx: np.ndarray,
    observed: np.ndarray | None = None,
    elasticity_prior: str = "pooled",
    weights: np.ndarray | None = None,
    observational: tuple | None = None,
    latent_prior: str = "slopes",
) -> pm.Model:
    """The joint PyMC model on the internal scale (see the module docstring).

    ``latent_prior="lkj"`` replaces the slopes' prior and the metrics' LKJ prior by one prior over the
    latent covariance of (metrics, KPI): see :func:`latent_lkj`; ``elasticity_prior`` must then be
    ``"independent"`` (which then means: no prior on the slopes beyond the induced one).

    ``weights`` (metric,) are the :func:`rank_weights` of the pooled prior (swapped through
    ``rank_weight``; ignored by the other priors). ``observational`` is (slope, standard error) per
    metric on the internal scale, and optionally the scale of kappa's prior and that prior's name
    (:data:`OBSERVATIONAL_BIAS_PRIORS`) and the slopes' parametrisation
    (:data:`OBSERVATIONAL_PARAMETRIZATIONS`), for the observational prior (swapped through
    ``observational_beta``, ``observational_se`` and ``observational_bias_scale``: the HalfNormal's
    sigma, or the harmonic prior's upper bound).
    """
    J = data.z.shape[1] - 1
    if J < 2:
        raise BayesCMMAError("the joint model needs at least 2 metrics; fit one metric with bc.fit.")
    check_latent_prior(latent_prior, elasticity_prior)
    pri = spec.priors
    coords = {"metric": list(range(J)), "team": list(range(n_teams))}
    with pm.Model(coords=coords) as model:
        z, S, tidx, mask = trial_data(data, team_idx, observed)
        if elasticity_prior == "pooled":
            w = pm.Data("rank_weight", np.ones(J) if weights is None else np.asarray(weights, dtype=float))
            mu = _location("elasticity_mean", pri["beta_std"])
            tau = pm.HalfNormal("elasticity_sd", sigma=POOLING_SD_SCALE)
            # non-centred: sampling u_j ~ N(mu, tau) directly had 27-212 divergent transitions per fit
            # (of 2000) on near ties, where tau -> 0 (benchmarks/pbest_calibration.py settings, 4 seeds)
            u = mu + tau * pm.Normal("elasticity_z", 0.0, 1.0, dims="metric")
            beta = pm.Deterministic("beta_std", u / w, dims="metric")
        elif elasticity_prior == "observational":
            o, v = (np.zeros(J), np.ones(J)) if observational is None else observational[:2]
            o = pm.Data("observational_beta", np.asarray(o, dtype=float))
            v = pm.Data("observational_se", np.asarray(v, dtype=float))
            given = BIAS_SD_SCALE if observational is None or len(observational) < 3 else observational[2]
            scale = pm.Data("observational_bias_scale", float(given))
            if bias_prior(observational) == "harmonic":  # kappa^2 ~ Uniform(0, scale^2)
                u = pm.Uniform("observational_bias_u", 0.0, 1.0)
                kappa = pm.Deterministic("observational_bias_sd", scale * pm.math.sqrt(u))
            else:
                kappa = pm.HalfNormal("observational_bias_sd", sigma=scale)
            spread = pm.math.sqrt(kappa**2 + v**2)
            if bias_parametrization(observational) == "centred":
                beta = pm.Normal("beta_std", mu=o, sigma=spread, dims="metric")
            else:  # non-centred, as the pooled prior: kappa -> 0 when the trials agree with the logs
                z_obs = pm.Normal("observational_z", 0.0, 1.0, dims="metric")
                beta = pm.Deterministic("beta_std", o + spread * z_obs, dims="metric")
        elif latent_prior == "slopes":
            beta = _location("beta_std", pri["beta_std"], dims="metric")
        alpha = _location("alpha", pri["alpha"], dims=("team", "metric"))
        if latent_prior == "lkj":
            chol, w_gamma, residual_sd = latent_lkj(J, spec.metric_corr_eta, pri["metric_sd"])
        elif latent_prior == "wishart":
            chol, w_gamma, residual_sd = latent_wishart(J, WISHART_SCALE)
        else:
            packed = pm.LKJCholeskyCov("metric_chol", n=J, eta=spec.metric_corr_eta,
                                       sd_dist=_scale_dist(pri["metric_sd"], shape=(J,)), compute_corr=False)
            chol = pm.math.expand_packed_triangular(J, packed, lower=True)
            residual_sd = _scale("residual_sd", pri["residual_sd"])
            c = (chol * chol).sum(axis=1) * beta  # Cov(y, m_j) = beta_j Sigma_jj
            w_gamma = solve_triangular(chol, c, lower=True)  # C^-1 c = C' gamma, with gamma = Sigma^-1 c
        gamma = solve_triangular(chol.T, w_gamma, lower=False)
        slope = pm.Data("team_slope", team_slope(data.z, team_idx, J, observed))
        explained = alpha @ gamma
        kpi_mean = team_kpi_means(spec, n_teams, alpha, explained, slope)
        logp = trial_logp_graph(z, S, tidx, w_gamma, alpha, kpi_mean, chol, residual_sd, J, 0.0, mask)
        pm.Potential("trial_loglik", logp.sum())
    return model


def uniform_kpi_corr_exponent(n_metrics: int, eta: float) -> float:
    """1 - b, with b = eta + (J - 1) / 2 the Beta(b, b) parameter of the KPI's correlation with each metric
    under LKJ(eta) over J + 1 variables (the first level of a C-vine rooted at the KPI)."""
    return 1.0 - (eta + (n_metrics - 1) / 2.0)


def latent_lkj(J: int, eta: float, sd_prior: Any) -> tuple[Any, Any, Any]:
    """One prior over the latent covariance G of (m_1..m_J, y) (inside a ``pm.Model`` context).

    G = L L' with L the Cholesky factor of an LKJ(``eta``) correlation over the J + 1 variables and
    their sds ~ ``sd_prior`` (the spec's ``metric_sd`` prior, the KPI's total sd included; every
    column has unit spread on the internal scale), times prod_j (1 - rho_yj^2)^(1 - b)
    (:func:`uniform_kpi_corr_exponent`): in a C-vine rooted at the KPI, LKJ draws the KPI's
    correlations rho_yj with the metrics independently from Beta(b, b) on (-1, 1), and this factor
    makes them uniform, so that given the sds the marginal slopes beta_j = rho_yj sd_y / sd_j have a
    flat prior on their range rather than one pulled to 0; the metrics' partial correlations given
    the KPI keep their LKJ priors, and the whole stays proper. The metrics' block of L is their
    Cholesky factor C, its last row is C' gamma and its corner the KPI's residual sd, so the
    trial density is the one of the slopes parametrisation. Stores ``latent_chol`` (sampled) and,
    as deterministics, ``beta_std``, ``metric_chol`` and ``residual_sd``.

    Returns C (J, J), C' gamma (J,) and the residual sd.
    """
    n = J + 1
    packed = pm.LKJCholeskyCov("latent_chol", n=n, eta=eta, sd_dist=_scale_dist(sd_prior, shape=(n,)),
                               compute_corr=False)
    full = pm.math.expand_packed_triangular(n, packed, lower=True)
    chol, w_gamma, residual_sd, metric_var = latent_factors(full, J)
    c = chol @ w_gamma  # Cov(m_j, y)
    kpi_var = (w_gamma * w_gamma).sum() + residual_sd**2
    rho = c / pm.math.sqrt(metric_var * kpi_var)
    pm.Potential("uniform_kpi_corr", uniform_kpi_corr_exponent(J, eta) * pm.math.log1p(-rho * rho).sum())
    return chol, w_gamma, residual_sd


def latent_factors(full: Any, J: int) -> tuple[Any, Any, Any, Any]:
    """Split the Cholesky factor of the latent covariance of (m_1..m_J, y) into the metrics' factor C,
    C' gamma, the KPI's residual sd and the metrics' variances, storing ``metric_chol``, ``residual_sd``
    and ``beta_std``."""
    chol, w_gamma, residual_sd = full[:J, :J], full[J, :J], full[J, J]
    metric_var = (chol * chol).sum(axis=1)
    rows, cols = np.tril_indices(J)
    pm.Deterministic("metric_chol", chol[rows, cols])
    pm.Deterministic("residual_sd", residual_sd)
    pm.Deterministic("beta_std", chol @ w_gamma / metric_var, dims="metric")  # Cov(m_j, y) / Var(m_j)
    return chol, w_gamma, residual_sd, metric_var


def latent_wishart(J: int, scale: float) -> tuple[Any, Any, Any]:
    """An inverse-Wishart prior IW(J + 2, ``scale`` I) over the latent covariance G of (m_1..m_J, y)
    (inside a ``pm.Model`` context).

    J + 2 degrees of freedom make every correlation, and so every marginal slope's sign and size
    relative to the sds, uniform a priori, as the latent LKJ prior does; unlike it, the prior is
    conjugate to the latent effects' scatter S, so that each marginal slope's posterior mean is about
    (S + scale I)_yj / (S + scale I)_jj, the sample slope shrunk by scale against a trial's
    contribution, for every metric at once. The LKJ priors instead pull the metrics' correlations,
    and with them the proxies' slopes, towards 0 with few trials (docs: checks.md, "Is P(best)
    calibrated?"). Sampled by the Bartlett decomposition of the precision G^-1 = P P',
    P = A / sqrt(scale) with A lower triangular, A_ii^2 ~ chi^2(J + 2 - i) (i = 0..J) and
    A_ij ~ N(0, 1) below the diagonal (``bartlett_c``, ``bartlett_z``). Returns as :func:`latent_lkj`.
    """
    n = J + 1
    c = pm.ChiSquared("bartlett_c", nu=(n + 1) - np.arange(n), shape=n)
    rows, cols = np.tril_indices(n, -1)
    below = pm.Normal("bartlett_z", 0.0, 1.0, shape=len(rows))
    A = pt.set_subtensor(pt.zeros((n, n))[np.arange(n), np.arange(n)], pt.sqrt(c))
    A = pt.set_subtensor(A[rows, cols], below)
    inv = solve_triangular(A / np.sqrt(scale), pt.eye(n), lower=True)  # P^-1, so G = P^-T P^-1
    return latent_factors(pt.linalg.cholesky(inv.T @ inv), J)[:3]


_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def compiled_joint_model(spec: ModelSpec, design: MetricDesign, data: Standardised, elasticity_prior: str,
                         weights: np.ndarray | None,
                         observational: tuple | None = None, latent_prior: str = "slopes") -> tuple[Any, bool]:
    """Compiled nutpie model for this shape with this design's data swapped in (cached per shape)."""
    from bayes_cmma.fitting.callbacks import compile_model

    n_teams = len(design.teams)
    elasticity_prior = sampled_prior(elasticity_prior)
    key = (design.degree, n_teams, spec.structure_key(), elasticity_prior,
           (bias_prior(observational), bias_parametrization(observational))
           if elasticity_prior == "observational" else None, latent_prior)
    fresh = False
    with _LOCK:
        if key not in _CACHE:
            model = build_joint_model(spec, n_teams, data, design.team_idx, design.observed, elasticity_prior,
                                      weights, observational, latent_prior)
            _CACHE[key] = compile_model(model, sampled_vars(n_teams, elasticity_prior, spec.team_effects))
            fresh = True
        base = _CACHE[key]
    swap = trial_swap(data, design)
    if spec.team_effects != "non_centred" or not pooled(n_teams):
        swap["team_slope"] = team_slope(data.z, design.team_idx, design.degree, design.observed)
    if elasticity_prior == "pooled":
        swap["rank_weight"] = np.asarray(weights, dtype=float)
    if elasticity_prior == "observational":
        swap["observational_beta"], swap["observational_se"] = (np.asarray(a, dtype=float) for a in observational[:2])
        swap["observational_bias_scale"] = np.asarray(observational[2] if len(observational) > 2 else BIAS_SD_SCALE,
                                                      dtype=float)
    return base.with_data(**swap), fresh


def partial_coefficients(beta_std: np.ndarray, chol: np.ndarray) -> np.ndarray:
    """gamma = Sigma^-1 (diag(Sigma) beta) per draw: (..., J), (..., J, J) -> (..., J)."""
    sigma = chol @ np.swapaxes(chol, -1, -2)
    c = np.diagonal(sigma, axis1=-2, axis2=-1) * beta_std
    return np.linalg.solve(sigma, c[..., None])[..., 0]


def _to_original_scale(raw: xr.Dataset, design: MetricDesign, std: Standardised, metrics: list[str]) -> xr.Dataset:
    s0, s = std.kpi_scale, np.diag(std.L)
    J = len(metrics)
    chol = unpack_chol(raw["metric_chol"].values, J)
    b = raw["beta_std"].values
    gamma = partial_coefficients(b, chol)
    eta = raw["kpi_mean"].values
    alpha_std = raw["alpha"].values
    sd_std = np.sqrt((chol * chol).sum(axis=-1))
    corr = (chol @ np.swapaxes(chol, -1, -2)) / (sd_std[..., :, None] * sd_std[..., None, :])
    sdims = list(dims.SAMPLE_DIMS)
    out = xr.Dataset(
        {
            "beta": ((*sdims, dims.METRIC), b * s0 / s),
            "partial_beta": ((*sdims, dims.METRIC), gamma * s0 / s),
            "alpha": ((*sdims, dims.TEAM, dims.METRIC), alpha_std * s),
            "pi": ((*sdims, dims.TEAM), (eta - np.einsum("...tj,...j->...t", alpha_std, gamma)) * s0),
            "kpi_mean": ((*sdims, dims.TEAM), eta * s0),
            "metric_sd": ((*sdims, dims.METRIC), sd_std * s),
            "metric_corr": ((*sdims, dims.METRIC, dims.METRIC_OTHER), corr),
            "residual_sd": (sdims, raw["residual_sd"].values * s0),
        },
        coords={dims.CHAIN: raw[dims.CHAIN].values, dims.DRAW: raw[dims.DRAW].values, dims.METRIC: metrics,
                dims.METRIC_OTHER: metrics, dims.TEAM: design.teams},
    )
    if "pi_mean" in raw:
        out["pi_mean"] = (sdims, raw["pi_mean"].values * s0)
        out["pi_sd"] = (sdims, raw["pi_sd"].values * s0)
    if "elasticity_sd" in raw:  # dimensionless: the spread of the standardised elasticities u_j
        out["elasticity_pool_sd"] = (sdims, raw["elasticity_sd"].values)
    if "observational_bias_sd" in raw:  # kappa on each metric's slope scale
        out["observational_bias_sd"] = ((*sdims, dims.METRIC), raw["observational_bias_sd"].values[..., None] * s0 / s)
    return out


def _log_likelihood(raw: xr.Dataset, design: MetricDesign, std: Standardised) -> np.ndarray:
    """Per-trial log-density of the observed ATEs in original units, (chain, draw, trial)."""
    J = design.degree
    chol = unpack_chol(raw["metric_chol"].values, J)
    gamma = partial_coefficients(raw["beta_std"].values, chol)
    alpha = raw["alpha"].values
    pi = raw["kpi_mean"].values - np.einsum("...tj,...j->...t", alpha, gamma)
    lead = gamma.shape[:-1]
    n = int(np.prod(lead))
    flat = [a.reshape(n, *a.shape[len(lead):]) for a in (gamma, alpha, pi, chol, raw["residual_sd"].values)]
    out = trial_loglik_numpy(std.z, std.S, design.team_idx, *flat, observed=design.observed)
    return out.reshape(*lead, -1) + std.log_abs_det_B


@dataclass
class JointFit:
    """The joint posterior of every candidate metric's linear DRF (see the module docstring).

    Fields: ``posterior``, an xarray.DataTree with groups ``posterior`` (original scale: ``beta``
    (metric), the marginal DRF slope of each metric; ``partial_beta`` (metric); ``alpha`` (team,
    metric); ``pi``, ``kpi_mean`` (team); ``metric_sd`` (metric); ``metric_corr`` (metric,
    metric_other); ``residual_sd``; ``pi_mean``, ``pi_sd`` with >= 4 teams; ``elasticity_pool_sd``
    with the pooled prior; ``observational_bias_sd`` (metric) with the observational prior),
    ``sample_stats``, ``log_likelihood``, ``observed_data`` and
    ``constant_data`` (``reference_covariance``, the measurement covariance of a median-sized trial,
    which :func:`bayes_cmma.northstar` scales to a future trial's size; ``team_trials``), whose attrs
    say ``elasticity_prior`` and the levels it used (and ``observational_slopes`` with the
    observational prior); the model spec and the joint design (the KPI,
    then the metrics) it was fitted with; ``elasticity_prior``; ``at``, the metric levels the pooled
    prior used (None otherwise); and ``timings`` (seconds compiling and sampling).
    """

    posterior: xr.DataTree
    spec: ModelSpec
    design: MetricDesign
    elasticity_prior: str
    at: dict[str, float] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return list(self.design.quantities[1:])

    @property
    def beta(self) -> xr.DataArray:
        """Marginal DRF slopes, dims (chain, draw, metric), original scale."""
        return self.posterior["posterior"]["beta"]

    def metric_beta(self, metric: str) -> xr.DataArray:
        """One metric's DRF coefficients with a ``power`` dim (the form :mod:`derived` takes)."""
        if metric not in self.metrics:
            raise BayesCMMAError(f"metric {metric!r} was not fitted; fitted metrics: {', '.join(self.metrics)}.")
        return self.beta.sel({dims.METRIC: metric}, drop=True).expand_dims({dims.POWER: [1]}, axis=-1)

    def elasticity(self, at: Mapping[str, float], lift: float = 0.1, baseline: float | None = None) -> xr.DataArray:
        """Elasticity draws of each metric at its level, dims (metric, chain, draw), from joint draws.

        The DRFs are linear, so a KPI ``baseline`` is required (with the baseline mu(m) every metric's
        relative gain would equal the lift).
        """
        _check_levels(at, self.metrics)
        if baseline is None:
            raise BayesCMMAError(
                "the joint model's DRFs are linear: with the baseline mu(m) every metric's relative KPI gain "
                "equals the lift and nothing can be ranked. Give the KPI's level (baseline=..., CLI: "
                "--kpi-baseline)."
            )
        parts = [derived.elasticity(self.metric_beta(m), float(at[m]), lift=lift, baseline=baseline)
                 for m in self.metrics]
        return derived.stack_metrics(parts, self.metrics)

    def ranking_draws(self, at: Mapping[str, float], lift: float = 0.1,
                      baseline: float | None = None) -> xr.DataArray:
        """The elasticity draws the ranking uses: :meth:`elasticity`, or with the tie prior its draws
        under that prior (:func:`tie_draws`)."""
        if self.elasticity_prior == "tie":
            return self.tie_posterior(at, lift=lift, baseline=baseline)["elasticity"]
        return self.elasticity(at, lift=lift, baseline=baseline)

    def tie_posterior(self, at: Mapping[str, float], lift: float = 0.1, baseline: float | None = None, *,
                      p_tie: float | None = None, tie_spread_scale: float | None = None) -> xr.Dataset:
        """The elasticities under the tie prior (a fit with ``elasticity_prior="tie"``): the draws, the
        tie's posterior probability and the normal likelihood; see :func:`tie_draws`. ``p_tie`` and
        ``tie_spread_scale`` replace the fit's tie prior settings for this call (the tie prior acts
        after sampling, so no refit is needed); None keeps the fit's."""
        if self.elasticity_prior != "tie":
            raise BayesCMMAError(f"tie_posterior needs a fit with elasticity_prior='tie'; this one has "
                                 f"{self.elasticity_prior!r}.")
        return tie_draws(self.posterior, self.elasticity(at, lift=lift, baseline=baseline), at, lift, baseline,
                         p_tie=p_tie, spread_scale=tie_spread_scale)

    def ranking(self, at: Mapping[str, float], lift: float = 0.1, baseline: float | None = None, *,
                p_tie: float | None = None, tie_spread_scale: float | None = None) -> xr.Dataset:
        """Posterior ranking from joint draws; see :func:`derived.rank_metrics`. attrs say ``pairing``
        (and with the tie prior ``p_tie``, the posterior probability that the candidates tie).

        With the tie prior, ``p_tie`` and ``tie_spread_scale`` rank under other tie prior settings than
        the fit's without refitting (None keeps the fit's); other priors refuse them.
        """
        if self.elasticity_prior != "tie" and (p_tie, tie_spread_scale) != (None, None):
            raise BayesCMMAError(f"p_tie and tie_spread_scale are used only with elasticity_prior='tie'; this fit "
                                 f"has {self.elasticity_prior!r}. Refit with elasticity_prior='tie'.")
        return rank_tree(self.posterior, self.elasticity(at, lift=lift, baseline=baseline), at, lift, baseline,
                         p_tie=p_tie, spread_scale=tie_spread_scale)


def tie_draws(tree: xr.DataTree, elasticity: xr.DataArray, at: Mapping[str, float], lift: float,
              baseline: float, *, p_tie: float | None = None, spread_scale: float | None = None) -> xr.Dataset:
    """:func:`bayes_cmma.decisions.ties.tie_posterior` of a tie-prior fit's elasticity draws, with the
    fit's independent prior divided out (none with ``latent_prior="lkj"``) and the fit's seed (0 for an
    unseeded fit, so that the same posterior always gives the same ranking). ``p_tie`` and
    ``spread_scale`` default to the fit's tie prior settings (its attrs)."""
    const = tree["constant_data"]
    metrics = [str(m) for m in elasticity[dims.METRIC].values]
    factor = np.array([float(at[m]) for m in metrics]) * lift / baseline
    seed = tree.attrs.get("seed", "none")
    divided = "beta_prior_sd" in const  # latent_prior="lkj": its induced prior is treated as flat
    return tie_posterior(elasticity,
                         prior_mean=const["beta_prior_mean"].sel({dims.METRIC: metrics}).values * factor
                         if divided else None,
                         prior_sd=const["beta_prior_sd"].sel({dims.METRIC: metrics}).values * np.abs(factor)
                         if divided else None,
                         p_tie=float(tree.attrs.get("tie_prior_p", P_TIE)) if p_tie is None else p_tie,
                         spread_scale=float(tree.attrs.get("tie_spread_scale", SPREAD_SCALE))
                         if spread_scale is None else spread_scale,
                         seed=0 if seed == "none" else int(seed))  # unseeded fits: still one ranking


def rank_tree(tree: xr.DataTree, elasticity: xr.DataArray, at: Mapping[str, float], lift: float,
              baseline: float | None, *, p_tie: float | None = None, spread_scale: float | None = None) -> xr.Dataset:
    """The ranking of a joint posterior's elasticity draws, with the attrs that say how it was made
    (``p_tie``, ``spread_scale``: the tie prior's settings if not the fit's; see :func:`tie_draws`)."""
    prior = str(tree.attrs.get("elasticity_prior", "pooled"))
    extra: dict[str, Any] = {}
    if prior == "tie":
        tied = tie_draws(tree, elasticity, at, lift, baseline, p_tie=p_tie, spread_scale=spread_scale)
        elasticity = tied["elasticity"]
        extra = {"p_tie": tied.attrs["p_tie"], "prior_p_tie": tied.attrs["prior_p_tie"],
                 "tie_spread_scale": tied.attrs["spread_scale"]}
    out = derived.rank_metrics(elasticity)
    out.attrs.update({"pairing": "joint", "elasticity_prior": prior,
                      "latent_prior": str(tree.attrs.get("latent_prior", "slopes")), **borrowing_attrs(tree), **extra})
    return out


def borrowing_attrs(tree: xr.DataTree) -> dict[str, str]:
    """What the observational prior borrowed, for a ranking's attrs (empty for the other priors).

    ``observational_slopes`` (the slopes borrowed from) and ``observational_bias_sd``: each metric's
    posterior median of kappa beside its posterior median slope.
    """
    post = tree["posterior"]
    if "observational_bias_sd" not in post:
        return {}
    kappa = post["observational_bias_sd"].median((dims.CHAIN, dims.DRAW))
    beta = post["beta"].median((dims.CHAIN, dims.DRAW))
    text = ", ".join(f"{m}: {float(kappa.sel({dims.METRIC: m})):.3g} (slope {float(beta.sel({dims.METRIC: m})):.3g})"
                     for m in post["beta"][dims.METRIC].values)
    return {"observational_slopes": str(tree.attrs.get("observational_slopes", "")), "observational_bias_sd": text}


def _check_levels(at: Mapping[str, float] | None, metrics: Sequence[str]) -> None:
    if at is None:
        raise BayesCMMAError(
            f"no metric levels: give at={{'{metrics[0]}': VALUE, ...}} (CLI: --at METRIC=VALUE), every metric's "
            "current per-unit level."
        )
    unknown = [m for m in at if m not in metrics]
    if unknown:
        raise BayesCMMAError(f"at names metric {unknown[0]!r}, which is not fitted; fitted: {', '.join(metrics)}.")
    missing = [m for m in metrics if m not in at]
    if missing:
        raise BayesCMMAError(
            f"no current value for metric(s) {', '.join(missing)}: give at={{'{missing[0]}': VALUE}} "
            "(CLI: --at METRIC=VALUE)."
        )
    bad = [m for m in metrics if not (np.isfinite(float(at[m])) and float(at[m]) > 0)]
    if bad:
        raise BayesCMMAError(
            f"the level of {bad[0]!r} is {at[bad[0]]!r}; the joint ranking needs positive, finite metric levels."
        )


def _resolve(model: str | Path | ModelSpec | int | None) -> ModelSpec:
    spec = resolve_spec(1 if model is None else model)
    if spec.degree != 1:
        raise BayesCMMAError(
            f"the joint model has linear DRFs (degree 1); the spec {spec.name!r} has degree {spec.degree}. Fit "
            "with degree 1, or rank higher-degree fits of separate models (bc.fit)."
        )
    return spec


def fit_joint(
    data: TrialData,
    kpi: str,
    metrics: Sequence[str],
    *,
    at: Mapping[str, float] | None = None,
    elasticity_prior: str = "pooled",
    model: str | Path | ModelSpec | int | None = None,
    seed: int | None = None,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    cores: int | None = None,
    target_accept: float | None = None,
    progress_bar: bool = False,
    progress: Progress | None = None,
    observational: Any = None,
    observational_bias_scale: float | None = None,
    observational_bias_prior: str = "halfnormal",
    observational_parametrization: str = "non_centred",
    p_tie: float = P_TIE,
    tie_spread_scale: float = SPREAD_SCALE,
    metric_corr_eta: float | None = None,
    latent_prior: str = "slopes",
) -> JointFit:
    """Fit every candidate metric in one model (linear DRFs), for a ranking from joint draws.

    Parameters
    ----------
    data : TrialData
    kpi : str
    metrics : sequence of str
        At least 2 metrics (their first-power ATEs are used).
    at : mapping metric -> level, optional
        Current per-unit level of each metric; required by the pooled prior (it pools the
        elasticities at these levels).
    elasticity_prior : {"pooled", "independent", "observational", "tie"}
        See the module docstring.
    observational : DataFrame, path or mapping, optional
        With ``elasticity_prior="observational"`` (and only then): the observational slopes the prior
        borrows from, an observational table of degree 1 (``bayes-cmma summarize --degree 1
        --observational-out``) or ``{metric: (slope, standard error)}`` on the original scale.
    observational_bias_scale : float, optional
        The scale of kappa's prior, the observational bias sd, on the internal scale: the
        HalfNormal's sigma (default :data:`BIAS_SD_SCALE`; smaller borrows more), or the harmonic
        prior's upper bound (default :data:`HARMONIC_BIAS_MAX`).
    observational_bias_prior : {"halfnormal", "harmonic"}
        kappa ~ HalfNormal (default), or kappa^2 uniform (Stein's harmonic prior on the bias; see the
        module docstring).
    observational_parametrization : {"non_centred", "centred"}
        How the sampler sees the slopes around the logs' (the same model): through z_j with
        b_j = o_j + sqrt(kappa^2 + v_j^2) z_j (``"non_centred"``), or b_j ~ N(o_j, kappa^2 + v_j^2)
        directly (``"centred"``).
    p_tie, tie_spread_scale : float
        With ``elasticity_prior="tie"`` (and only then): the prior probability that the candidates'
        elasticities are equal (default 0.5), and the HalfNormal scale of their relative spread when
        they are not (default 1.0); see :mod:`bayes_cmma.decisions.ties`.
    metric_corr_eta : float > 0, optional
        LKJ concentration of the prior on the candidate metrics' correlation (default
        :data:`METRIC_CORR_ETA`, 1: uniform); larger values pull the correlations, and the slopes of
        proxy metrics, towards 0. It replaces the spec's ``metric_corr_eta``. With
        ``latent_prior="lkj"`` it is the concentration of the KPI's and metrics' correlation (default
        :data:`LATENT_LKJ_ETA`, 0.5).
    latent_prior : {"slopes", "lkj", "wishart"}
        ``"slopes"`` (default): the spec's normal prior on the marginal slopes and an LKJ prior on the
        metrics' correlation, independent of each other. ``"lkj"``: one LKJ prior over the latent
        correlation of the KPI and the metrics, with the KPI's correlation with each metric made
        uniform (:func:`latent_lkj`); the slopes' prior is the one it induces (flat on each slope's
        range given the sds), so no prior draw pairs nearly collinear metrics with unrelated slopes.
        ``"wishart"``: an inverse-Wishart prior over the latent covariance (:func:`latent_wishart`),
        conjugate to the latent effects' scatter, so that no correlation prior pulls the proxies'
        slopes towards 0; ``metric_corr_eta`` must then be left unset.
        Both only with ``elasticity_prior`` ``"independent"`` or ``"tie"`` (which then divides out no
        prior: it treats the induced one as flat).
    model : spec, bundled name, TOML path or 1, optional
        A degree-1 spec (default: the bundled ``linear`` spec); its priors (but ``metric_corr_eta``) and
        sampler settings are used.
    target_accept : float, optional
        NUTS target acceptance; default :data:`TARGET_ACCEPT` (0.99), whatever the spec says: the
        joint model needs smaller steps than the per-metric one.
    seed, draws, tune, chains, cores, progress_bar, progress
        As in :func:`bayes_cmma.fit`.

    Returns
    -------
    JointFit
    """
    if elasticity_prior not in ELASTICITY_PRIORS:
        raise BayesCMMAError(
            f"elasticity_prior must be one of {', '.join(ELASTICITY_PRIORS)}, got {elasticity_prior!r}."
        )
    metrics = list(metrics)
    if len(metrics) < 2:
        raise BayesCMMAError(f"the joint model ranks 2 or more metrics; got {metrics}. Fit one metric with bc.fit.")
    spec = _resolve(model)
    accept = TARGET_ACCEPT if target_accept is None else float(target_accept)
    if not 0 < accept < 1:
        raise BayesCMMAError(f"target_accept must be between 0 and 1 (e.g. 0.99), got {target_accept!r}.")
    check_latent_prior(latent_prior, elasticity_prior)
    if latent_prior == "wishart" and metric_corr_eta is not None:
        raise BayesCMMAError(f"metric_corr_eta is an LKJ concentration; latent_prior='wishart' has no LKJ prior "
                             f"(got metric_corr_eta={metric_corr_eta!r}). Leave it unset, or use latent_prior='lkj'.")
    if metric_corr_eta is None:
        metric_corr_eta = LATENT_LKJ_ETA if latent_prior == "lkj" else METRIC_CORR_ETA
    check_metric_corr_eta(metric_corr_eta)
    spec = replace_spec(spec, sampler={**spec.sampler, "target_accept": accept}, metric_corr_eta=float(metric_corr_eta))
    if elasticity_prior == "pooled" or at is not None:
        _check_levels(at, metrics)
    obs = None
    if elasticity_prior == "observational":
        from bayes_cmma.inputs.observational import observational_slopes

        if observational is None:
            raise BayesCMMAError("elasticity_prior='observational' borrows from observational slopes: give "
                                 "observational= (an observational table or {metric: (slope, standard error)}).")
        if observational_bias_prior not in OBSERVATIONAL_BIAS_PRIORS:
            raise BayesCMMAError(f"observational_bias_prior must be one of {', '.join(OBSERVATIONAL_BIAS_PRIORS)}, "
                                 f"got {observational_bias_prior!r}.")
        if observational_bias_scale is None:
            observational_bias_scale = HARMONIC_BIAS_MAX if observational_bias_prior == "harmonic" else BIAS_SD_SCALE
        if not (np.isfinite(observational_bias_scale) and observational_bias_scale > 0):
            raise BayesCMMAError(f"observational_bias_scale must be a positive number, got {observational_bias_scale}.")
        if observational_parametrization not in OBSERVATIONAL_PARAMETRIZATIONS:
            raise BayesCMMAError(f"observational_parametrization must be one of "
                                 f"{', '.join(OBSERVATIONAL_PARAMETRIZATIONS)}, got {observational_parametrization!r}.")
        obs = (*observational_slopes(observational, metrics), float(observational_bias_scale),
               observational_bias_prior, observational_parametrization)
    elif (observational is not None or observational_bias_scale is not None or observational_bias_prior != "halfnormal"
          or observational_parametrization != "non_centred"):
        raise BayesCMMAError(f"observational slopes, their bias prior and parametrization are used only with "
                             f"elasticity_prior='observational', not {elasticity_prior!r}.")
    tie = None
    if elasticity_prior == "tie":
        from bayes_cmma.decisions.ties import check_tie_prior

        check_tie_prior(p_tie, tie_spread_scale)
        if latent_prior == "slopes" and spec.priors["beta_std"].dist != "normal":
            raise BayesCMMAError(f"the tie prior divides out a normal prior on the slopes; the spec's beta_std prior "
                                 f"is {spec.priors['beta_std'].dist!r}. Use a normal beta_std prior.")
        tie = (float(p_tie), float(tie_spread_scale))
    elif (p_tie, tie_spread_scale) != (P_TIE, SPREAD_SCALE):
        raise BayesCMMAError(f"p_tie and tie_spread_scale are used only with elasticity_prior='tie', not "
                             f"{elasticity_prior!r}.")
    design = joint_design(data, kpi, metrics, spec.within_trial_correlation,
                          warn_filled=not spec.within_trial_correlation_given)
    design = measurement.for_spec(design, spec)
    kwargs = dict(seed=seed, draws=draws, tune=tune, chains=chains, cores=cores, progress_bar=progress_bar,
                  progress=progress, data_hash=data.data_hash(), elasticity_prior=elasticity_prior, at=at,
                  observational=obs, tie=tie, latent_prior=latent_prior)
    if spec.team_effects != "auto" or not pooled(len(design.teams)):
        chosen = spec if spec.team_effects != "auto" else replace_spec(spec, team_effects="centred")
        result = _fit_once(design, chosen, **kwargs)
        result.posterior.attrs["team_effects"] = (f"{spec.team_effects} (set in the spec)" if spec.team_effects
                                                  != "auto" else "independent (fewer than 4 teams)")
    else:
        # non-centred first, the other way round from the per-metric model: on the calibration tables the
        # centred joint model had 0-400 divergent transitions per fit, the non-centred one 2-19 (at 0.9)
        result = _fit_once(design, replace_spec(spec, team_effects="non_centred"), **kwargs)
        n_first = divergences(result.posterior)
        result.posterior.attrs["team_effects"] = "non-centred (auto: no divergent transitions)"
        if n_first:
            other = _fit_once(design, replace_spec(spec, team_effects="centred"), **kwargs)
            n_other = divergences(other.posterior)
            if n_other < n_first:
                result = other
            result.posterior.attrs["team_effects"] = (
                f"{'centred' if result is other else 'non-centred'} (auto: {n_first} divergent transitions "
                f"non-centred, {n_other} centred)")
    warn_on_problems(result.posterior, label="the joint model")
    return result


def _fit_once(design: MetricDesign, spec: ModelSpec, *, seed: int | None, draws: int | None, tune: int | None,
              chains: int | None, cores: int | None, progress_bar: bool, progress: Progress | None,
              data_hash: str, elasticity_prior: str, at: Mapping[str, float] | None,
              observational: tuple[np.ndarray, np.ndarray, float, str, str] | None = None,
              tie: tuple[float, float] | None = None, latent_prior: str = "slopes") -> JointFit:
    metrics = list(design.quantities[1:])
    std = standardise_joint(design)
    weights = rank_weights(at, metrics, std) if elasticity_prior == "pooled" else None
    internal = None
    if observational is not None:  # slopes and standard errors to the internal scale: b = beta s_j / s_0
        factor = np.diag(std.L) / std.kpi_scale
        internal = (observational[0] * factor, observational[1] * factor, *observational[2:])
    t0 = time.perf_counter()
    if progress:
        progress(f"compiling the joint model of {len(metrics)} metrics (once per shape)")
    compiled, fresh = compiled_joint_model(spec, design, std, elasticity_prior, weights, internal, latent_prior)
    t_compile = time.perf_counter() - t0 if fresh else 0.0
    settings = dict(spec.sampler)
    n_chains = int(chains or settings["chains"])
    t1 = time.perf_counter()
    trace = sampling.sample(compiled, draws=int(draws or settings["draws"]), tune=int(tune or settings["tune"]),
                            chains=n_chains, cores=int(cores or min(n_chains, os.cpu_count() or 1)), seed=seed,
                            label="the joint model", progress_bar=progress_bar,
                            target_accept=float(settings["target_accept"]), adaptation=settings["adaptation"])
    t_sample = time.perf_counter() - t1
    raw = trace["posterior"].to_dataset()
    posterior = _to_original_scale(raw, design, std, metrics)
    sdims = list(dims.SAMPLE_DIMS)
    loglik = xr.Dataset({"trial_ate": ((*sdims, dims.TRIAL), _log_likelihood(raw, design, std))},
                        coords={dims.CHAIN: posterior[dims.CHAIN], dims.DRAW: posterior[dims.DRAW],
                                dims.TRIAL: design.trials})
    q = design.quantities
    observed = xr.Dataset({"trial_ate": ((dims.TRIAL, dims.QUANTITY), design.with_nan())},
                          coords={dims.TRIAL: design.trials, dims.QUANTITY: q})
    stats = trace["sample_stats"].to_dataset()
    keep = [v for v in stats.data_vars if stats[v].dtype != object]
    ref, n_ref = measurement.reference_covariance(design, spec.size_proxy)
    constant = xr.Dataset({"reference_covariance": ((dims.QUANTITY, dims.QUANTITY_OTHER), ref),
                           "team_trials": (dims.TEAM, np.bincount(design.team_idx, minlength=len(design.teams)))},
                          coords={dims.QUANTITY: q, dims.QUANTITY_OTHER: q, dims.TEAM: design.teams},
                          attrs={"reference_n_per_arm": n_ref,
                                 "meaning": "measurement covariance of a median-sized trial's ATEs (bc.northstar)"})
    if elasticity_prior == "tie" and latent_prior == "slopes":  # the prior of beta the tie ranking divides out
        prior = spec.priors["beta_std"].params
        factor = std.kpi_scale / np.diag(std.L)
        constant["beta_prior_mean"] = (dims.METRIC, prior["mu"] * factor)
        constant["beta_prior_sd"] = (dims.METRIC, prior["sigma"] * factor)
        constant = constant.assign_coords({dims.METRIC: metrics})
    tree = xr.DataTree.from_dict({"posterior": posterior, "sample_stats": stats[keep], "log_likelihood": loglik,
                                  "observed_data": observed, "constant_data": constant})
    tree.attrs.update(provenance(spec, seed=seed, data_hash=data_hash))
    tree.attrs.update({"kpi": design.kpi, "metrics": ", ".join(metrics), "degree": 1, "model": "joint",
                       "elasticity_prior": elasticity_prior, "latent_prior": latent_prior,
                       "metric_corr_eta": float(spec.metric_corr_eta), "measurement": design.measurement,
                       "elasticity_prior_levels": "none" if at is None else
                       ", ".join(f"{m}={float(at[m]):g}" for m in metrics)})
    if tie is not None:
        tree.attrs["tie_prior_p"], tree.attrs["tie_spread_scale"] = tie
    if observational is not None:
        tree.attrs["observational_slopes"] = ", ".join(
            f"{m}={e:g} (se {v:g})" for m, e, v in zip(metrics, *observational[:2], strict=True))
        tree.attrs["observational_bias_scale"] = observational[2]
        tree.attrs["observational_bias_prior"] = bias_prior(observational)
        tree.attrs["observational_parametrization"] = bias_parametrization(observational)
    return JointFit(posterior=tree, spec=spec, design=design, elasticity_prior=elasticity_prior,
                    at=None if at is None else {m: float(at[m]) for m in metrics},
                    timings={"compile_s": t_compile, "sample_s": t_sample})


def clear_compiled_cache() -> None:
    """Forget every compiled joint model."""
    with _LOCK:
        _CACHE.clear()


__all__ = ["ELASTICITY_PRIORS", "HARMONIC_BIAS_MAX", "OBSERVATIONAL_BIAS_PRIORS", "JointFit", "build_joint_model",
           "fit_joint", "rank_tree", "standardise_joint", "tie_draws"]
