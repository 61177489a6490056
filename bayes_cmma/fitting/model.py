"""The marginalised measurement-error CMMA model in PyMC (docs: model.md), compiled once per shape.

Per trial k of team g, on the internal scale (see :func:`standardise`)::

    z_k ~ MvNormal( (eta_g, alpha_g),  A Omega A' + S_k + diag(sigma_u^2, 0, ..., 0) )
    A = [beta'; I_P],   Omega = C C' (C lower triangular),   A C = [(C' beta)'; C]
    eta_g = beta' alpha_g + pi_g,
    pi_g ~ Normal(pi_mean, pi_sd)   (>= 4 teams; else independent)

Sampled: beta on the internal scale (``beta_std``, prior ``beta_std``), alpha, the team KPI means
eta_g (``kpi_mean``, partially centred through ``kpi_offset``, see :func:`team_slope`; or ``team_z`` with
eta_g = pi_mean + beta' alpha_g + pi_sd z_g when the spec says ``team_effects = "non_centred"``),
pi_mean and pi_sd (only with >= 4 teams; fewer teams get independent effects),
C (LKJ Cholesky, ``metric_chol``), sigma_u (``residual_sd``).
The latent true effects (y_k, m_k) and the residual u_k are integrated out exactly, so NUTS only
sees global parameters. The likelihood is written in closed form over the trial axis
(:mod:`bayes_cmma.fitting.linalg`). Data enter through ``pm.Data`` so one compiled model serves every
metric and every refit with the same (degree, number of teams, priors): see :func:`compiled_model`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayes_cmma.fitting.linalg import LOG_2PI, mvnormal_logpdf, mvnormal_logpdf_entries
from bayes_cmma.fitting.spec import ModelSpec, Prior
from bayes_cmma.inputs.data import MetricDesign

#: Fewest teams for partial pooling of the team effects pi_g. With fewer, the pooling scale pi_sd
#: is unidentified and every parameterisation has a funnel (seen with 2 teams: divergences and
#: R-hat up to 1.39 whether centred or not), so the team effects are independent, like the OLS's
#: team dummies: pi_g ~ the ``pi_mean`` prior, and there is no pi_mean / pi_sd.
MIN_TEAMS_FOR_POOLING = 4


def pooled(n_teams: int, team_effects: str = "auto") -> bool:
    """Whether team effects are partially pooled for this many teams (never if the spec says "independent")."""
    return n_teams >= MIN_TEAMS_FOR_POOLING and team_effects != "independent"


#: Name of the A3 correlation when the spec gives it a prior (a sampled parameter).
A3_VAR = "direct_effect_corr"


def sampled_vars(n_teams: int, a3_prior: bool = False, team_effects: str = "auto") -> list[str]:
    """Names of the sampled (standardised-scale) variables for a number of teams."""
    hyper = ["pi_mean", "pi_sd"] if pooled(n_teams, team_effects) else []
    return ["beta_std", "alpha", *hyper, "kpi_mean", "metric_chol", "residual_sd", *([A3_VAR] if a3_prior else [])]


@dataclass(frozen=True)
class Standardised:
    """Trial data on the internal scale.

    ``z = x B'`` and ``S = B S_orig B'`` with ``B = blockdiag(1 / kpi_scale, inv(L))``, where
    ``L`` is the lower Cholesky factor of the pooled within-team covariance of the metric-power
    ATEs. The KPI is divided by its across-trial sd; the metric powers are whitened (the QR-style
    reparameterisation of a regression: ATE(M), ATE(M^2), ATE(M^3) are often >99% correlated
    across trials, which makes NUTS crawl on the raw scale). The map is linear and exact, so the
    model is the same; :meth:`to_original` maps parameters back.
    """

    z: np.ndarray
    S: np.ndarray
    kpi_scale: float
    L: np.ndarray  # (P, P) lower triangular; metric block m = L m_std

    @property
    def log_abs_det_B(self) -> float:
        """log |det B|, the Jacobian of the data transform (for densities in original units)."""
        return float(-np.log(self.kpi_scale) - np.log(np.diag(self.L)).sum())


def _metric_factor(design: MetricDesign) -> np.ndarray:
    """Lower Cholesky factor of the pooled within-team covariance of the metric-power ATEs.

    Within-team, because the team means alpha_g absorb between-team differences: Omega is a
    within-team covariance, and whitening with the total covariance leaves alpha_g's components
    strongly correlated (seen: -0.92, tree depth 8-10 for a cubic). Falls back to the total
    covariance, then to per-column scales, when a factor cannot be formed.
    """
    m = design.z[:, 1:]
    K, P = m.shape
    n_teams = len(design.teams)
    if not design.complete and not design.observed[:, 1:].all():
        # some trials lack some metric powers: a diagonal map keeps each internal coordinate a function
        # of one reported quantity, so the likelihood can leave out exactly the unreported ones
        return np.diag(_observed_sd(m, design.observed[:, 1:], design.S[:, 1:, 1:]))
    candidates = []
    if K - n_teams > P:
        means = np.zeros((n_teams, P))
        np.add.at(means, design.team_idx, m)
        means /= np.bincount(design.team_idx, minlength=n_teams)[:, None]
        dev = m - means[design.team_idx]
        candidates.append(dev.T @ dev / (K - n_teams))
    if K > P:
        candidates.append(np.atleast_2d(np.cov(m, rowvar=False, ddof=0)))
    for cov in candidates:
        scale = np.sqrt(np.diag(cov))
        if np.all(scale > 0):
            corr = cov / np.outer(scale, scale)
            try:
                # a tiny ridge keeps the factor well-conditioned when powers are (nearly) collinear
                return scale[:, None] * np.linalg.cholesky(corr + 1e-9 * np.eye(P))
            except np.linalg.LinAlgError:
                continue
    fallback = m.std(axis=0)
    se = np.sqrt(np.mean(np.diagonal(design.S, axis1=1, axis2=2), axis=0))[1:]
    return np.diag(np.where(fallback > 0, fallback, se))


def _observed_sd(x: np.ndarray, observed: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Per-column sd of the reported values (the mean reported standard error when they do not vary)."""
    out = np.empty(x.shape[1])
    for j in range(x.shape[1]):
        values = x[observed[:, j], j]
        sd = float(values.std()) if values.size > 1 else 0.0
        out[j] = sd if sd > 0 else float(np.sqrt(np.mean(S[observed[:, j], j, j])))
    return out


def standardise(design: MetricDesign) -> Standardised:
    """Put a design on the internal scale (see :class:`Standardised`).

    With incomplete trials, the KPI scale is the sd of the reported KPI ATEs, and the metric powers
    are scaled per power (see :func:`_metric_factor`) when some trials lack some of them.
    """
    if design.complete:
        kpi_scale = float(design.z[:, 0].std())
        if not kpi_scale > 0:
            kpi_scale = float(np.sqrt(np.mean(design.S[:, 0, 0])))
    else:
        kpi_scale = float(_observed_sd(design.z[:, :1], design.observed[:, :1], design.S[:, :1, :1])[0])
    L = _metric_factor(design)
    P = L.shape[0]
    B = np.zeros((P + 1, P + 1))
    B[0, 0] = 1.0 / kpi_scale
    B[1:, 1:] = np.linalg.inv(L)
    z = design.z @ B.T
    S = B @ design.S @ B.T
    S = 0.5 * (S + np.swapaxes(S, -1, -2))
    return Standardised(z=np.ascontiguousarray(z), S=np.ascontiguousarray(S), kpi_scale=kpi_scale, L=L)


def _location(name: str, prior: Prior, shift: Any = 0.0, **kw: Any) -> pt.TensorVariable:
    p = prior.params
    if prior.dist == "normal":
        return pm.Normal(name, mu=p["mu"] + shift, sigma=p["sigma"], **kw)
    return pm.StudentT(name, nu=p["nu"], mu=p["mu"] + shift, sigma=p["sigma"], **kw)


def _scale_dist(prior: Prior, **kw: Any) -> Any:
    p = prior.params
    if prior.dist == "halfnormal":
        return pm.HalfNormal.dist(sigma=p["sigma"], **kw)
    if prior.dist == "halfstudentt":
        return pm.HalfStudentT.dist(nu=p["nu"], sigma=p["sigma"], **kw)
    return pm.Exponential.dist(lam=p["lam"], **kw)


def _scale(name: str, prior: Prior, **kw: Any) -> pt.TensorVariable:
    p = prior.params
    if prior.dist == "halfnormal":
        return pm.HalfNormal(name, sigma=p["sigma"], **kw)
    if prior.dist == "halfstudentt":
        return pm.HalfStudentT(name, nu=p["nu"], sigma=p["sigma"], **kw)
    return pm.Exponential(name, lam=p["lam"], **kw)


def trial_logp_graph(
    z: Any, S: Any, team_idx: Any, gamma: Any, alpha: Any, kpi_mean: Any, chol: Any, residual_sd: Any,
    degree: int, a3_corr: Any = 0.0, mask: Any = None,
) -> Any:
    """Per-trial marginal log-density as a PyTensor graph (standardised scale).

    ``gamma`` is chol' beta, so A chol = [gamma'; chol] and
    A Omega A' = [gamma'; chol][gamma'; chol]' needs no solve. ``kpi_mean`` (team) is
    eta_g = beta' alpha_g + pi_g, the team's mean latent KPI effect. ``a3_corr`` is the assumed
    within-team correlation rho between a trial's KPI residual u_k and its first metric power's
    effect (assumption A3 says 0); see :func:`a3_terms`.

    ``mask`` (trial, d), 1 where the trial reports the quantity and 0 where not, makes the density
    that of the reported quantities only (the marginal of a normal): an unreported coordinate gets
    residual 0, variance 1 and no covariance, which adds exactly log N(0 | 0, 1) = -log(2 pi)/2, taken
    back out. With every entry 1 the density is unchanged.
    """
    d = degree + 1
    AL = pt.concatenate([gamma[None, :], chol], axis=0)  # (d, P)
    G = AL @ AL.T  # (d, d) between-trial covariance of the latent (y, m)
    mean_by_team = pt.concatenate([kpi_mean[:, None], alpha], axis=1)  # (team, d)
    mu = mean_by_team[team_idx]
    resid = [z[:, i] - mu[:, i] for i in range(d)]
    cross, extra_var = a3_terms(gamma, chol, residual_sd, a3_corr, pt.sqrt)
    cov = [[G[i, j] + S[:, i, j] for j in range(d)] for i in range(d)]
    cov[0][0] = cov[0][0] + residual_sd**2 + extra_var
    for j in range(1, d):
        cov[0][j] = cov[0][j] + cross[j - 1]
        cov[j][0] = cov[j][0] + cross[j - 1]
    if mask is None:
        return mvnormal_logpdf_entries(resid, cov, pt.sqrt, pt.log)
    resid, cov, missing = masked_entries(resid, cov, [mask[:, i] for i in range(d)])
    return mvnormal_logpdf_entries(resid, cov, pt.sqrt, pt.log) + 0.5 * LOG_2PI * missing


def masked_entries(resid: list, cov: list, mask: list) -> tuple[list, list, Any]:
    """Residuals and covariance entries of the reported coordinates only (see :func:`trial_logp_graph`).

    ``mask[i]`` is 1 where coordinate i is reported, else 0 (per trial). Returns the masked residuals,
    the masked covariance (an unreported coordinate: variance 1, covariances 0) and the number of
    unreported coordinates per trial. Works on numpy arrays and PyTensor tensors.
    """
    d = len(resid)
    out_resid = [mask[i] * resid[i] for i in range(d)]
    out_cov = [[mask[i] * mask[j] * cov[i][j] + ((1.0 - mask[i]) if i == j else 0.0) for j in range(d)]
               for i in range(d)]
    missing = sum(1.0 - mask[i] for i in range(d))
    return out_resid, out_cov, missing


def a3_terms(gamma: Any, chol: Any, residual_sd: Any, rho: Any, sqrt: Any) -> tuple[Any, Any]:
    """What a correlation rho between u_k and the first latent metric power adds to the covariance.

    With u = c (m_1 - alpha_1) + independent noise, c = rho sigma_u / omega_1 (so that
    Corr(u, m_1) = rho and Var(u) = sigma_u^2 for |rho| <= 1): Cov(y, m) gains c Omega[:, 0] and
    Var(y) gains 2 c beta' Omega[:, 0] = 2 c gamma . chol[0, :]. Works on numpy arrays (leading
    draw axes) and on PyTensor tensors. Returns (cross (..., P), extra variance (...)).
    """
    row = chol[..., 0, :]  # (..., P)
    omega1 = sqrt((row * row).sum(axis=-1))
    c = rho * residual_sd / omega1
    cross = c[..., None] * (chol * row[..., None, :]).sum(axis=-1)  # c * (chol @ row): Omega[:, 0]
    extra = 2.0 * c * (gamma * row).sum(axis=-1)
    return cross, extra


def build_model(
    spec: ModelSpec, n_teams: int, data: Standardised, team_idx: np.ndarray, observed: np.ndarray | None = None
) -> pm.Model:
    """The PyMC model on the standardised scale (global parameters only).

    Parameters
    ----------
    spec : ModelSpec
    n_teams : int
        Size of the ``team`` dim (fixed at compile time).
    data : Standardised
        Initial data; swapped later through ``pm.Data`` names ``z``, ``S``, ``team_idx``.
    team_idx : ndarray of int
    observed : ndarray of bool (trial, P + 1), optional
        Which quantities each trial reports (default: all); swapped through ``observed_mask``.

    Returns
    -------
    pymc.Model

    Notes
    -----
    The data may carry more metric powers (P) than the DRF's degree q = ``spec.degree``: the
    degree-q model is then the degree-P model with beta_{q+1..P} = 0, fitted to the same numbers
    (how :mod:`bayes_cmma.checks.compare` scores degrees on equal footing). The whitening map is lower
    triangular, so that is exactly beta_{q+1..P} = 0 on the internal scale too.

    beta is sampled directly on the internal scale, with the ``beta_std`` prior. (Until version
    0.1 the model sampled gamma = chol' beta with that prior, Zellner's g-prior on beta: with
    well-identified data, e.g. the paper's cubic simulation, the posterior of (gamma, chol) is a
    curved ridge, 14-70 divergent transitions and 33 s per fit, against none and 5-9 s sampling
    beta; and with weak A4 nothing bounded beta itself.)
    """
    P = data.z.shape[1] - 1
    q = spec.degree
    if q > P:
        raise ValueError(f"the data hold {P} metric power(s), fewer than the degree {q}")
    coords = {"power": list(range(1, P + 1)), "drf_power": list(range(1, q + 1)), "team": list(range(n_teams))}
    pri = spec.priors
    with pm.Model(coords=coords) as model:
        z, S, tidx, mask = trial_data(data, team_idx, observed)
        beta = _location("beta_std", pri["beta_std"], dims="drf_power")  # beta on the internal scale
        if q < P:
            beta = pt.concatenate([beta, pt.zeros(P - q)])
        alpha = _location("alpha", pri["alpha"], dims=("team", "power"))
        if P == 1:
            sd = _scale("metric_chol", pri["metric_sd"], shape=(1,))
            chol = sd[:, None]
        else:
            chol = pm.LKJCholeskyCov(
                "metric_chol",
                n=P,
                eta=spec.metric_corr_eta,
                sd_dist=_scale_dist(pri["metric_sd"], shape=(P,)),
                compute_corr=False,
            )
            chol = pm.math.expand_packed_triangular(P, chol, lower=True)
        residual_sd = _scale("residual_sd", pri["residual_sd"])
        # Centred in the team KPI mean eta_g = beta' alpha_g + pi_g: the data pin eta_g directly, so
        # sampling it (rather than pi_g) keeps alpha_g's components uncorrelated. pi_g = eta_g -
        # beta' alpha_g is a unit-Jacobian shift, so pi_g ~ Normal(pi_mean, pi_sd) exactly.
        gamma = chol.T @ beta  # A chol = [gamma'; chol]
        # The team KPI mean eta_g = beta' alpha_g + pi_g is sampled partially centred: xi_g = eta_g - b' alpha_g
        # with b = team_slope(...), the data's within-team slope of the KPI ATEs on the metric powers. The
        # likelihood pins (eta_g, alpha_g) with the correlation of the trials' observed (KPI, metric) vectors:
        # near 1 when the metric explains the KPI (the paper's cubic simulation: sampling eta_g took 250-400
        # leapfrog steps per warm-up iteration for 300 iterations), and xi_g is uncorrelated with alpha_g. For
        # fixed alpha and beta, eta -> xi is a shift (unit Jacobian) and pi_g = xi_g - (beta - b)' alpha_g, so
        # the prior is exactly pi_g ~ Normal(pi_mean, pi_sd) for every b: the same model, another geometry.
        # (kpi_offset starts at 0, not at its prior mean: nutpie's initial point would freeze the
        # compile-time team_slope into it, and a cached model reused with other data would then start,
        # and sample, differently from a fresh compile; tests/test_many.py checks they agree.)
        slope = pm.Data("team_slope", team_slope(data.z, team_idx, q, observed))
        kpi_mean = team_kpi_means(spec, n_teams, alpha, alpha @ beta, slope)
        if spec.direct_effect_corr_prior is not None:
            lower, upper = spec.direct_effect_corr_prior
            a3_corr = pm.Uniform(A3_VAR, lower=lower, upper=upper)
        else:
            a3_corr = pm.Data("a3_corr", np.asarray(0.0))
        logp = trial_logp_graph(z, S, tidx, gamma, alpha, kpi_mean, chol, residual_sd, P, a3_corr, mask)
        pm.Potential("trial_loglik", logp.sum())
    return model


def trial_data(data: Standardised, team_idx: np.ndarray, observed: np.ndarray | None) -> tuple[Any, Any, Any, Any]:
    """The trial data as ``pm.Data`` (inside a ``pm.Model`` context): z (trial, d), S (trial, d, d),
    team_idx (trial,) and the observed mask (trial, d), swapped later with :func:`trial_swap`."""
    z = pm.Data("z", data.z)
    S = pm.Data("S", data.S)
    tidx = pm.Data("team_idx", np.asarray(team_idx, dtype=np.int64))
    mask = pm.Data("observed_mask", np.ones(data.z.shape) if observed is None else observed.astype(float))
    return z, S, tidx, mask


def trial_swap(data: Standardised, design: MetricDesign) -> dict[str, np.ndarray]:
    """The ``with_data`` arguments that put this design's trials into a model built by :func:`trial_data`."""
    return {"z": data.z, "S": data.S, "team_idx": design.team_idx, "observed_mask": design.mask()}


def team_kpi_means(spec: ModelSpec, n_teams: int, alpha: Any, explained: Any, slope: Any) -> Any:
    """The team KPI means eta_g = explained_g + pi_g as model variables (inside a ``pm.Model`` context).

    ``explained`` (team) is the part the metrics explain (beta' alpha_g, or gamma' alpha_g in the joint
    model), ``slope`` the ``team_slope`` data of the partially centred form (see :func:`build_model`).
    With >= 4 teams pi_g ~ Normal(pi_mean, pi_sd), centred (``kpi_offset``) or non-centred (``team_z``)
    as the spec says; with fewer, or ``team_effects = "independent"``, independent pi_g ~ the ``pi_mean``
    prior. Returns ``kpi_mean``.
    """
    pri = spec.priors
    if pooled(n_teams, spec.team_effects):
        pi_mean = _location("pi_mean", pri["pi_mean"])
        pi_sd = _scale("pi_sd", pri["pi_sd"])
        if spec.team_effects == "non_centred":
            # pi_g = pi_mean + pi_sd z_g: no funnel between pi_sd and the team effects when pi_sd -> 0
            team_z = pm.Normal("team_z", 0.0, 1.0, dims="team")
            return pm.Deterministic("kpi_mean", pi_mean + explained + pi_sd * team_z, dims="team")
        xi = pm.Normal("kpi_offset", mu=pi_mean + explained - alpha @ slope, sigma=pi_sd, dims="team",
                       initval=np.zeros(n_teams))
        return pm.Deterministic("kpi_mean", xi + alpha @ slope, dims="team")
    # independent team effects: pi_g = eta_g - explained_g ~ the pi_mean prior
    xi = _location("kpi_offset", pri["pi_mean"], shift=explained - alpha @ slope, dims="team",
                   initval=np.zeros(n_teams))
    return pm.Deterministic("kpi_mean", xi + alpha @ slope, dims="team")


def team_slope(z: np.ndarray, team_idx: np.ndarray, degree: int, observed: np.ndarray | None = None) -> np.ndarray:
    """Within-team regression slope b (P,) of the observed KPI ATEs on the first ``degree`` metric powers.

    The partially centred team KPI means of :func:`build_model` sample xi_g = eta_g - b' alpha_g. In
    the likelihood the team means (eta_g, alpha_g) are estimated like the mean of the trials' observed
    (KPI, metric) vectors, so their posterior correlation is the within-team correlation of those
    vectors and xi_g is uncorrelated with alpha_g for this b. Powers beyond ``degree`` get 0; b = 0
    (sampling eta_g) when the regression is undefined. Only the sampler's geometry depends on b.
    """
    P = z.shape[1] - 1
    b = np.zeros(P)
    if observed is not None:  # the trials that report the KPI and the powers used
        keep = observed[:, :degree + 1].all(axis=1)
        z, team_idx = z[keep], team_idx[keep]
    K = len(z)
    if K == 0:
        return b
    x, y = z[:, 1:degree + 1], z[:, 0]
    n_teams = int(team_idx.max()) + 1
    safe = np.maximum(np.bincount(team_idx, minlength=n_teams), 1).astype(float)
    xm = np.zeros((n_teams, x.shape[1]))
    np.add.at(xm, team_idx, x)
    xt = x - (xm / safe[:, None])[team_idx]
    yt = y - (np.bincount(team_idx, weights=y, minlength=n_teams) / safe)[team_idx]
    w_xx = xt.T @ xt
    try:
        np.linalg.cholesky(w_xx)
    except np.linalg.LinAlgError:
        return b
    b[:degree] = np.linalg.solve(w_xx, xt.T @ yt)
    return b if np.all(np.isfinite(b)) else np.zeros(P)


_CACHE: dict[tuple[int, int, int, str], Any] = {}
_LOCK = threading.Lock()


def compiled_model(spec: ModelSpec, design: MetricDesign, data: Standardised) -> tuple[Any, bool]:
    """Compiled nutpie model for this shape, with this design's data swapped in.

    The compiled model is cached per (degree, metric powers in the data, number of teams,
    priors); the number of trials may change between calls. Returns the model and whether it was
    compiled now.
    """
    from bayes_cmma.fitting.callbacks import compile_model

    key = (spec.degree, design.degree, len(design.teams), spec.structure_key())
    fresh = False
    with _LOCK:
        if key not in _CACHE:
            model = build_model(spec, len(design.teams), data, design.team_idx, design.observed)
            a3_prior = spec.direct_effect_corr_prior is not None
            _CACHE[key] = compile_model(model, sampled_vars(len(design.teams), a3_prior, spec.team_effects))
            fresh = True
        base = _CACHE[key]
    fixed = {}
    if spec.direct_effect_corr_prior is None:
        fixed["a3_corr"] = np.asarray(float(spec.direct_effect_corr))
    if spec.team_effects != "non_centred" or not pooled(len(design.teams)):  # else eta has no offset
        fixed["team_slope"] = team_slope(data.z, design.team_idx, spec.degree, design.observed)
    return base.with_data(**trial_swap(data, design), **fixed), fresh


def is_compiled(spec: ModelSpec, n_teams: int, data_degree: int | None = None) -> bool:
    """Whether a compiled model for this shape is already cached."""
    P = spec.degree if data_degree is None else data_degree
    with _LOCK:
        return (spec.degree, P, n_teams, spec.structure_key()) in _CACHE


def pad_beta(beta_std: np.ndarray, P: int) -> np.ndarray:
    """Internal-scale DRF coefficients (..., q) padded with zeros to the data's P powers."""
    q = beta_std.shape[-1]
    if q == P:
        return beta_std
    return np.concatenate([beta_std, np.zeros((*beta_std.shape[:-1], P - q))], axis=-1)


def clear_compiled_cache() -> None:
    """Forget every compiled model (frees memory; the next fit compiles again)."""
    with _LOCK:
        _CACHE.clear()


def unpack_chol(packed: np.ndarray, degree: int) -> np.ndarray:
    """Packed lower-triangular (..., P(P+1)/2) or sd (..., 1) -> Cholesky factor (..., P, P)."""
    P = degree
    out = np.zeros((*packed.shape[:-1], P, P))
    rows, cols = np.tril_indices(P)
    out[..., rows, cols] = packed
    return out


def marginal_moments(
    team_idx: np.ndarray,
    beta: np.ndarray,
    alpha: np.ndarray,
    pi: np.ndarray,
    chol: np.ndarray,
    residual_sd: np.ndarray,
    a3_corr: float | np.ndarray = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the latent true effects (y_k, m_k) per draw, before measurement error.

    Shapes as in :func:`trial_loglik_numpy`. Returns ``mu`` (..., K, d), the mean of trial k's
    latent (and observed) vector, and ``G`` (..., d, d), the latent covariance
    A Omega A' + diag(sigma_u^2, 0, ...) (+ the A3 terms); the observed z_k has covariance G + S_k.
    ``a3_corr`` is one number or one per draw (shape ``...``, when the spec gave it a prior).
    """
    P = beta.shape[-1]
    eye = np.broadcast_to(np.eye(P), (*beta.shape[:-1], P, P))
    A = np.concatenate([beta[..., None, :], eye], axis=-2)  # (..., d, P)
    AL = A @ chol
    G = AL @ np.swapaxes(AL, -1, -2)
    G[..., 0, 0] += residual_sd**2
    if np.any(a3_corr):
        gamma = np.einsum("...pq,...p->...q", chol, beta)  # chol' beta
        cross, extra = a3_terms(gamma, chol, np.asarray(residual_sd), np.asarray(a3_corr), np.sqrt)
        G[..., 0, 0] += extra
        G[..., 0, 1:] += cross
        G[..., 1:, 0] += cross
    mean_by_team = np.concatenate(
        [(np.einsum("...tp,...p->...t", alpha, beta) + pi)[..., None], alpha], axis=-1
    )  # (..., team, d)
    return mean_by_team[..., team_idx, :], G


def trial_loglik_numpy(
    z: np.ndarray,
    S: np.ndarray,
    team_idx: np.ndarray,
    beta: np.ndarray,
    alpha: np.ndarray,
    pi: np.ndarray,
    chol: np.ndarray,
    residual_sd: np.ndarray,
    a3_corr: float | np.ndarray = 0.0,
    block: slice | list[int] | None = None,
    observed: np.ndarray | None = None,
) -> np.ndarray:
    """Per-draw, per-trial marginal log-density (same scale as the inputs), written with beta.

    Shapes: ``z`` (K, d), ``S`` (K, d, d), ``team_idx`` (K,), and per draw (leading dims ``...``):
    ``beta`` (..., P), ``alpha`` (..., team, P), ``pi`` (..., team), ``chol`` (..., P, P),
    ``residual_sd`` (...). ``block`` selects quantities (e.g. ``[0, 1]``: the KPI and the metric's
    first power) whose marginal density is returned. ``observed`` (K, d) bool: which quantities each
    trial reports; the density is then that of the reported ones (within ``block``). Returns (..., K).
    """
    mu, G = marginal_moments(team_idx, beta, alpha, pi, chol, residual_sd, a3_corr)
    resid = z - mu
    cov = G[..., None, :, :] + S
    mask = None if observed is None else observed.astype(float)
    if block is not None:
        idx = np.arange(z.shape[-1])[block]
        resid = resid[..., idx]
        cov = cov[..., idx[:, None], idx[None, :]]
        mask = None if mask is None else mask[:, idx]
    if mask is None or mask.all():
        return mvnormal_logpdf(resid, cov)
    d = resid.shape[-1]
    entries, cov_entries, missing = masked_entries(
        [resid[..., i] for i in range(d)], [[cov[..., i, j] for j in range(d)] for i in range(d)],
        [mask[:, i] for i in range(d)])
    return mvnormal_logpdf_entries(entries, cov_entries, np.sqrt, np.log) + 0.5 * LOG_2PI * missing
