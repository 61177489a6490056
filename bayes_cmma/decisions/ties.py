"""The ranking under a prior that the candidate metrics may tie (docs: model.md, "Ties between metrics").

With a flat or independent prior on the candidates' elasticities, P(best) reads a near tie as a
confident ranking: of three metrics whose true elasticities are within 4% of each other, the one
with the highest P(best) had P(best) = 0.6 on average and was truly best in about 30% of simulated
tables (docs: checks.md). Partial pooling with a continuous spread prior did not fix it. This
module puts real prior mass on a tie. The candidates' elasticities e_j follow

    e_j = mu + tau L z_j,   z_j ~ N(0, 1),   mu flat,
    tau = 0 with probability ``p_tie``,   tau ~ HalfNormal(``spread_scale``) otherwise,

with L the root mean square of the estimated elasticities, so that tau is a spread relative to
their level. tau = 0 is the hypothesis "the candidates are equally good"; its posterior probability
is reported as ``p_tie``, and a tied draw gives every metric the same share of P(best).

The likelihood of e is taken as the normal N(e_hat, V) that the fit's posterior draws imply once
their own (normal) prior is divided out, so the posterior is a mixture over tau of normals: the
marginal likelihood of tau (restricted: mu integrated out) is exact on a grid of tau, and draws
are made per grid point. Only the ranking uses this prior; the fit's other parameters are as
sampled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from scipy import stats

from bayes_cmma import dims
from bayes_cmma.errors import BayesCMMAError

#: Prior probability that the candidates tie (tau = 0): indifference between a tie and a spread.
P_TIE = 0.5
#: Scale of the HalfNormal prior of tau, the candidates' spread relative to their level, when they do
#: not tie (as the pooled prior's scale: a spread as large as the level is plausible).
SPREAD_SCALE = 1.0
#: Points of the tau grid (geometric, from 1e-4 to 20 times ``spread_scale``).
GRID_POINTS = 400


def check_tie_prior(p_tie: float, spread_scale: float) -> None:
    """One error naming the value when the tie prior's settings are out of range."""
    if not (np.isfinite(p_tie) and 0 <= p_tie < 1):
        raise BayesCMMAError(f"p_tie, the prior probability that the metrics tie, must be in [0, 1), got {p_tie}.")
    if not (np.isfinite(spread_scale) and spread_scale > 0):
        raise BayesCMMAError(f"the tie prior's spread scale must be a positive number, got {spread_scale}.")


def tau_grid(spread_scale: float, n: int = GRID_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Grid of tau > 0 and the HalfNormal prior mass of each point's cell (the masses sum to 1).

    A point's cell runs between the geometric midpoints to its neighbours; the first cell starts at
    0 and the last ends at infinity.
    """
    t = spread_scale * np.geomspace(1e-4, 20.0, n)
    edges = np.concatenate([[0.0], np.sqrt(t[:-1] * t[1:]), [np.inf]])
    mass = np.diff(stats.halfnorm.cdf(edges, scale=spread_scale))
    return t, mass


def restricted_loglik(e_hat: np.ndarray, V: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """log p(e_hat | spread) with mu integrated out (flat), up to a constant common to every spread.

    e_hat ~ N(mu 1, V + spread^2 I): -1/2 [log|S| + log(1'S^-1 1) + e'S^-1 e - (1'S^-1 e)^2 / 1'S^-1 1],
    with S = V + spread^2 I, for each value of ``spread`` (spread = 0 is the tie).
    """
    J = len(e_hat)
    S = V[None] + np.asarray(spread, dtype=float)[:, None, None] ** 2 * np.eye(J)
    Si = np.linalg.inv(S)
    one = np.ones(J)
    a = np.einsum("i,kij,j->k", one, Si, one)
    b = np.einsum("i,kij,j->k", one, Si, e_hat)
    q = np.einsum("i,kij,j->k", e_hat, Si, e_hat) - b * b / a
    return -0.5 * (np.linalg.slogdet(S)[1] + np.log(a) + q)


def likelihood_moments(draws: np.ndarray, prior_mean: np.ndarray | None = None,
                       prior_sd: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the normal likelihood implied by posterior draws (sample, metric).

    The draws' normal N(m, P^-1) divided by the fit's independent normal prior N(prior_mean,
    diag(prior_sd^2)): precision P - diag(prior_sd^-2), mean (P m - prior_mean / prior_sd^2) by
    that precision.
    """
    m = draws.mean(axis=0)
    P = np.linalg.inv(np.cov(draws, rowvar=False))
    h = P @ m
    if prior_sd is not None:
        prior_prec = 1.0 / np.asarray(prior_sd, dtype=float) ** 2
        P = P - np.diag(prior_prec)
        h = h - prior_prec * np.asarray(prior_mean, dtype=float)
    eig = np.linalg.eigvalsh(0.5 * (P + P.T))
    if eig.min() <= 0:
        raise BayesCMMAError(
            "the trials say too little about the metrics' elasticities to rank them under the tie prior (the "
            "posterior is as wide as the prior in some direction); fit more trials, or use --joint pooled.")
    V = np.linalg.inv(P)
    V = 0.5 * (V + V.T)
    return V @ h, V


def tie_posterior(
    elasticities: xr.DataArray,
    *,
    prior_mean: Sequence[float] | np.ndarray | None = None,
    prior_sd: Sequence[float] | np.ndarray | None = None,
    p_tie: float = P_TIE,
    spread_scale: float = SPREAD_SCALE,
    seed: int | None = None,
) -> xr.Dataset:
    """Elasticity draws under the tie prior (see the module docstring), paired with the input draws.

    Parameters
    ----------
    elasticities : DataArray
        Joint posterior draws, dims ``metric`` and the sample dims (``chain``, ``draw``), from a fit
        whose prior on them is independent normal (``prior_mean``, ``prior_sd``) or flat (None).
    prior_mean, prior_sd : array (metric,), optional
        The fit's prior on the elasticities, divided out of the draws.
    p_tie : float in [0, 1)
        Prior probability that the candidates tie.
    spread_scale : float > 0
        Scale of the HalfNormal prior of the relative spread tau when they do not tie.
    seed : int, optional
        Seed of the draws (same seed and input, same draws).

    Returns
    -------
    Dataset
        ``elasticity`` (metric and sample dims as the input; tied draws are exactly equal across
        metrics), ``tie`` (sample dims, bool), ``spread`` (sample dims: tau), the normal likelihood
        ``likelihood_mean`` (metric) and ``likelihood_cov`` (metric, metric_other), and attrs ``p_tie``
        (posterior probability of the tie), ``prior_p_tie``, ``spread_scale``, ``level`` (L).
    """
    if dims.METRIC not in elasticities.dims or elasticities.sizes[dims.METRIC] < 2:
        raise BayesCMMAError(f"the tie prior ranks 2 or more metrics; got dims {dict(elasticities.sizes)}.")
    check_tie_prior(p_tie, spread_scale)
    sdims = [d for d in elasticities.dims if d != dims.METRIC]
    ordered = elasticities.transpose(*sdims, dims.METRIC)
    flat = ordered.values.reshape(-1, elasticities.sizes[dims.METRIC])
    if not np.isfinite(flat).all():
        raise BayesCMMAError("the elasticity draws have non-finite values; check the fit's convergence warnings.")
    n, J = flat.shape
    if n <= J:
        raise BayesCMMAError(f"the tie prior needs more draws than metrics ({n} draws of {J} metrics).")
    e_hat, V = likelihood_moments(
        flat, None if prior_mean is None else np.asarray(prior_mean, dtype=float),
        None if prior_sd is None else np.asarray(prior_sd, dtype=float))
    level = float(np.sqrt(np.mean(e_hat**2)))
    grid = TieGrid(V, level, p_tie, spread_scale)
    post = grid.posterior(e_hat[None])[0]
    rng = np.random.default_rng(seed)
    which = rng.choice(len(post), size=n, p=post)
    out = np.empty_like(flat)
    for k in np.unique(which):  # sorted, so the draws do not depend on hash order
        at = np.flatnonzero(which == k)
        if k == 0:  # the tie: e = mu 1, mu ~ its posterior N(1'V^-1 e_hat / a, 1 / a) under e_hat ~ N(mu 1, V)
            out[at] = (grid.M[0] @ e_hat)[None] + np.sqrt(1.0 / grid.a[0]) * rng.standard_normal((len(at), 1))
            continue
        out[at] = grid.M[k] @ e_hat + rng.standard_normal((len(at), J)) @ grid.chol[k].T
    shape = ordered.shape
    coords = {d: ordered[d] for d in ordered.dims if d in ordered.coords}
    sample_shape = shape[:-1]
    return xr.Dataset(
        {"elasticity": (ordered.dims, out.reshape(shape)),
         "tie": (tuple(sdims), (which == 0).reshape(sample_shape)),
         "spread": (tuple(sdims), grid.tau[which].reshape(sample_shape)),
         "likelihood_mean": (dims.METRIC, e_hat),
         "likelihood_cov": ((dims.METRIC, dims.METRIC_OTHER), V)},
        coords=coords,
        attrs={"p_tie": float(post[0]), "prior_p_tie": float(p_tie), "spread_scale": float(spread_scale),
               "level": level},
    )


class TieGrid:
    """The tie prior's grid for one likelihood covariance V, for many likelihood means at once.

    Precomputes, per grid point k (k = 0 the tie, then the spreads tau_k L), S_k = V + (tau_k L)^2 I
    and its inverse, and for k > 0 the posterior covariance of e, (V^-1 + C / (tau_k L)^2)^-1 with C
    the centring matrix, a square root of it (``chol``) and the map M_k = cov_k V^-1 from a likelihood mean to
    the posterior mean. (For the tie, M_0 = 1 1' V^-1 / 1'V^-1 1: every metric gets the same weighted
    mean.)
    """

    def __init__(self, V: np.ndarray, level: float, p_tie: float, spread_scale: float):
        J = V.shape[0]
        t, mass = tau_grid(spread_scale)
        self.tau = np.concatenate([[0.0], t])  # the relative spreads (0: the tie)
        self.spread = self.tau * level
        with np.errstate(divide="ignore"):
            self.log_prior = np.log(np.concatenate([[p_tie], (1.0 - p_tie) * mass]))
        S = V[None] + self.spread[:, None, None] ** 2 * np.eye(J)
        self.Si = np.linalg.inv(S)
        one = np.ones(J)
        self.a = np.einsum("i,kij,j->k", one, self.Si, one)
        self.const = np.linalg.slogdet(S)[1] + np.log(self.a)
        Vi = np.linalg.inv(V)
        contrast = np.eye(J) - np.outer(one, one) / J
        cov = np.empty_like(S)
        cov[0] = 0.0
        with np.errstate(divide="ignore"):
            cov[1:] = np.linalg.inv(Vi[None] + contrast[None] / self.spread[1:, None, None] ** 2)
        cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
        self.M = cov @ Vi
        self.M[0] = np.outer(one, one @ Vi) / (one @ Vi @ one)
        # a square root of each covariance (for draws), from its eigen-decomposition: at the smallest
        # spreads the covariance is nearly singular in the contrasts, where a Cholesky factor can fail
        lam, Q = np.linalg.eigh(cov)
        self.chol = Q * np.sqrt(np.clip(lam, 0.0, None))[:, None, :]
        self.chol[0] = 0.0

    def posterior(self, e_hat: np.ndarray) -> np.ndarray:
        """Posterior probabilities of the grid points (row, grid) for likelihood means (row, metric)."""
        b = np.einsum("rj,kij->rki", e_hat, self.Si)  # Si_k e_r
        q = np.einsum("rki,ri->rk", b, e_hat) - np.einsum("rki->rk", b) ** 2 / self.a  # 1'Si e = sum(Si e)
        log_post = self.log_prior - 0.5 * (self.const + q)
        post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        return post / post.sum(axis=1, keepdims=True)


__all__ = ["P_TIE", "SPREAD_SCALE", "TieGrid", "check_tie_prior", "tie_posterior"]
