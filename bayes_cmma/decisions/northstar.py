"""The best composite north star: weights over the candidate metrics for a future trial (docs: model.md).

A future trial of team g has latent effects (y, m) ~ MvNormal((eta_g, alpha_g), G), the joint model's
law of a trial's true KPI effect y and true metric effects m (``bc.fit_joint``), and reports the
metrics' ATEs m_hat = m + e with e ~ MvNormal(0, S_f): the measurement covariance of a trial of the
chosen size, S_f = S_ref / r, where S_ref is the covariance of a median-sized past trial (the pooled
per-unit covariance times the median trial scale) and r the future trial's size relative to it. The
composite's observed ATE is s = w' m_hat. Two criteria, each a function of the direction of w only:

``"sign"`` (default)
    P(sign(s) = sign(y)), the probability that the composite moves in the direction of the trial's
    true KPI effect, over a future trial drawn from the teams in proportion to their past trials.
    With (y, s) bivariate normal per team (means (eta_g, w' alpha_g), sds (sd_y, sd_s), correlation
    rho) it is Phi2(a, b; rho) + Phi2(-a, -b; rho), a = eta_g / sd_y, b = w' alpha_g / sd_s,
    computed exactly through Owen's T. It is maximised numerically per posterior draw (gradient
    ascent on the sphere from several starts: the correlation optimum and every single metric).
``"correlation"``
    corr(s, y) over the same mixture of teams, maximised in closed form by w proportional to
    (Var m + S_f)^-1 Cov(m, y) (mixture moments). With zero team means the two criteria have the
    same optimum, since then P(agree) = 1/2 + arcsin(rho) / pi.

Only the direction of w matters, and the metrics come in different units, so :func:`northstar`
reports standardised weights: on each metric's ATE in units of its sd across the past trials
(``scale``), scaled to unit length (sum of squares 1; the sign is identified: -w flips every
decision). Unit length rather than sum |w_j| = 1: with the absolute values, noise in a weight near 0
always adds to the total and shrinks the others (on simulated tables the first metric's weight
came out 0.09 low, with 81% coverage of its 94% interval); squares make that effect second order.
``raw_weight`` = weight / scale builds the composite from the ATEs as reported.
``relative_weight`` = weight / the leading metric's weight (the metric with the largest posterior
median absolute weight at that future size, ``lead``; its own relative weight is 1) says the same direction
without a constraint: a unit-length weight near 1 can only err downwards, so its posterior piles up
against 1, and an equal-tailed interval sits below a true value near 1, while a ratio is free on both
sides. The unit-length weights therefore get highest-density intervals (:func:`weight_interval`).
Per draw the composite's score is >= every single metric's (the single metrics are among the starts).
Everything is per posterior draw, so the weights and scores get credible intervals.

Core functions work on numpy arrays with the draws on leading axes and metrics on the last axis;
:func:`northstar` wraps them for a joint posterior with named dims (``future_size``, chain, draw,
metric).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr
from arviz_stats.base import array_stats
from scipy import special

from bayes_cmma import dims
from bayes_cmma.errors import BayesCMMAError

#: Values of ``criterion`` (the first is the default).
CRITERIA = ("sign", "correlation")
#: Default future trial sizes, relative to a median-sized past trial.
DEFAULT_SIZES = (0.25, 1.0, 4.0, 16.0)
#: Name of the group of a joint posterior that holds the reference trial's measurement covariance.
CONSTANT_GROUP = "constant_data"

_EPS = 1e-12


def bvn_cdf(h: np.ndarray, k: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """P(X <= h, Y <= k) for standard bivariate normal (X, Y) with correlation rho (Owen's T form).

    Vectorised over broadcast arguments; |rho| < 1. Exact zeros of h or k are moved by 1e-12, which
    changes the probability by less than 1e-12.
    """
    h, k, rho = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (h, k, rho)))
    h = np.where(np.abs(h) < _EPS, _EPS, h)
    k = np.where(np.abs(k) < _EPS, _EPS, k)
    root = np.sqrt(1.0 - rho * rho)
    a_h = (k - rho * h) / (h * root)
    a_k = (h - rho * k) / (k * root)
    delta = np.where(h * k > 0, 0.0, 0.5)
    return 0.5 * (special.ndtr(h) + special.ndtr(k)) - special.owens_t(h, a_h) - special.owens_t(k, a_k) - delta


def agreement(a: np.ndarray, b: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """P(sign(y) = sign(s)) for bivariate normal (y, s) with standardised means a, b and correlation rho."""
    return bvn_cdf(a, b, rho) + bvn_cdf(-a, -b, rho)


def _agreement_grad(a: np.ndarray, b: np.ndarray, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d agreement / d b and d agreement / d rho."""
    root = np.sqrt(1.0 - rho * rho)
    q = (a - rho * b) / root
    d_b = np.exp(-0.5 * b * b) / np.sqrt(2 * np.pi) * (2.0 * special.ndtr(q) - 1.0)
    dens = np.exp(-(a * a - 2 * rho * a * b + b * b) / (2 * root * root)) / (2 * np.pi * root)
    return d_b, 2.0 * dens


def latent_law(beta: np.ndarray, metric_sd: np.ndarray, metric_corr: np.ndarray, residual_sd: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Var m (..., J, J), Cov(m, y) (..., J) and Var y (...) of a trial's latent effects in the joint model.

    Cov(m_j, y) = beta_j Var(m_j) (beta is each metric's marginal slope) and
    Var y = c' Sigma^-1 c + residual_sd^2.
    """
    sigma = metric_corr * metric_sd[..., :, None] * metric_sd[..., None, :]
    c = beta * metric_sd**2
    var_y = np.einsum("...j,...j->...", c, np.linalg.solve(sigma, c[..., None])[..., 0]) + residual_sd**2
    return sigma, c, var_y


def _whiten(V: np.ndarray, c: np.ndarray, mu_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """L (chol of V), L^-1 c and L^-1 mu_m (team on the second-last axis)."""
    L = np.linalg.cholesky(V)
    c_t = np.linalg.solve(L, c[..., None])[..., 0]
    mu_t = np.swapaxes(np.linalg.solve(L, np.swapaxes(mu_m, -1, -2)), -1, -2)
    return L, c_t, mu_t


def _score_v(v: np.ndarray, c_t: np.ndarray, sd_y: np.ndarray, mu_t: np.ndarray, a: np.ndarray,
             team_weight: np.ndarray, grad: bool = False):
    """Sign-agreement score of unit whitened directions v (..., J), and its gradient on the sphere."""
    rho = np.clip(np.einsum("...j,...j->...", v, c_t) / sd_y, -1 + 1e-12, 1 - 1e-12)
    b = np.einsum("...tj,...j->...t", mu_t, v)
    score = (team_weight * agreement(a, b, rho[..., None])).sum(axis=-1)
    if not grad:
        return score
    d_b, d_rho = _agreement_grad(a, b, rho[..., None])
    g = (np.einsum("...t,...tj->...j", team_weight * d_b, mu_t)
         + (team_weight * d_rho).sum(axis=-1)[..., None] * c_t / sd_y[..., None])
    g = g - np.einsum("...j,...j->...", g, v)[..., None] * v  # tangent to the sphere
    return score, g


def _ascend(v: np.ndarray, args: tuple, max_iter: int = 500, tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """Gradient ascent on the unit sphere, one step size per row (grown on success, halved on failure).

    ``v`` (N, J) and the arrays of ``args`` have one row per problem; rows stop when the tangent
    gradient is below ``tol`` (the score is then within about tol^2 of a stationary value).
    """
    c_t, sd_y, mu_t, a, team_weight = args
    score, g = _score_v(v, *args, grad=True)
    step = np.full(score.shape, 0.5)
    active = np.flatnonzero(np.linalg.norm(g, axis=-1) >= tol)
    for _ in range(max_iter):
        if active.size == 0:
            break
        sub = (c_t[active], sd_y[active], mu_t[active], a[active], team_weight)
        trial = v[active] + step[active, None] * g[active]
        trial /= np.linalg.norm(trial, axis=-1, keepdims=True)
        new_score, new_g = _score_v(trial, *sub, grad=True)
        better = new_score >= score[active]
        take = active[better]
        v[take], g[take], score[take] = trial[better], new_g[better], new_score[better]
        step[active] = np.where(better, step[active] * 1.5, step[active] * 0.5)
        done = (np.linalg.norm(g[active], axis=-1) < tol) | (step[active] < 1e-12)
        active = active[~done]
    return v, score


def _mixture_moments(V: np.ndarray, c: np.ndarray, var_y: np.ndarray, mu_m: np.ndarray, mu_y: np.ndarray,
                     team_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Var(m_hat), Cov(m_hat, y) and Var(y) over the mixture of teams (within-team moments plus team means')."""
    mbar = np.einsum("t,...tj->...j", team_weight, mu_m)
    ybar = np.einsum("t,...t->...", team_weight, mu_y)
    dm, dy = mu_m - mbar[..., None, :], mu_y - ybar[..., None]
    return (V + np.einsum("t,...ti,...tj->...ij", team_weight, dm, dm),
            c + np.einsum("t,...tj,...t->...j", team_weight, dm, dy),
            var_y + np.einsum("t,...t->...", team_weight, dy * dy))


def _normalise(w: np.ndarray) -> np.ndarray:
    return w / np.linalg.norm(w, axis=-1, keepdims=True)


def optimal_weights(
    sigma: np.ndarray,
    c: np.ndarray,
    var_y: np.ndarray,
    mu_m: np.ndarray,
    mu_y: np.ndarray,
    S_future: np.ndarray,
    team_weight: np.ndarray,
    criterion: str = "sign",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best composite weights, their score, and every single metric's score, per draw.

    Parameters
    ----------
    sigma : (..., J, J) latent Var m;  c : (..., J) latent Cov(m, y);  var_y : (...) latent Var y
    mu_m : (..., T, J) team means of m;  mu_y : (..., T) team means of y
    S_future : (J, J) or (..., J, J) measurement covariance of the future trial's metric ATEs
    team_weight : (T,) probabilities of the future trial's team
    criterion : "sign" or "correlation" (see the module docstring)

    Returns
    -------
    weights (..., J), the direction (unit length, in the units of the metrics' ATEs); score (...) of
    the composite; metric_score (..., J), the score of each metric alone (w = e_j).
    """
    if criterion not in CRITERIA:
        raise BayesCMMAError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}.")
    team_weight = np.asarray(team_weight, dtype=float)
    J = c.shape[-1]
    V = sigma + S_future
    if criterion == "correlation":
        V_tot, c_tot, vy_tot = _mixture_moments(V, c, var_y, mu_m, mu_y, team_weight)
        w = np.linalg.solve(V_tot, c_tot[..., None])[..., 0]
        eye = np.broadcast_to(np.eye(J), (*c.shape, J))
        cand = np.concatenate([w[..., None, :], eye], axis=-2)  # (..., 1 + J, J)
        num = np.einsum("...kj,...j->...k", cand, c_tot)
        den = np.sqrt(np.einsum("...ki,...ij,...kj->...k", cand, V_tot, cand) * vy_tot[..., None])
        scores = num / den
        return _normalise(w), scores[..., 0], scores[..., 1:]
    sd_y = np.sqrt(var_y)
    a = mu_y / sd_y[..., None]
    L, c_t, mu_t = _whiten(V, c, mu_m)
    # starts: the correlation optimum of one team (v ~ L^-1 c) and every single metric (w = e_j, so
    # v = L' e_j, row j of L)
    starts = np.concatenate([c_t[..., None, :], L], axis=-2)
    starts = starts / np.linalg.norm(starts, axis=-1, keepdims=True)
    expand = (c_t[..., None, :], sd_y[..., None], mu_t[..., None, :, :], a[..., None, :], team_weight)
    single_scores = _score_v(starts[..., 1:, :], *expand)
    lead, K, T = starts.shape[:-2], J + 1, mu_t.shape[-2]
    n = int(np.prod(lead, dtype=int)) * K
    flat = (np.broadcast_to(c_t[..., None, :], (*lead, K, J)).reshape(n, J),
            np.broadcast_to(sd_y[..., None], (*lead, K)).reshape(n),
            np.broadcast_to(mu_t[..., None, :, :], (*lead, K, T, J)).reshape(n, T, J),
            np.broadcast_to(a[..., None, :], (*lead, K, T)).reshape(n, T), team_weight)
    v, score = _ascend(starts.reshape(n, J).copy(), flat)
    v, score = v.reshape(*lead, K, J), score.reshape(*lead, K)
    best = np.argmax(score, axis=-1)
    v_best = np.take_along_axis(v, best[..., None, None], axis=-2)[..., 0, :]
    w = np.linalg.solve(np.swapaxes(L, -1, -2), v_best[..., None])[..., 0]
    return _normalise(w), np.take_along_axis(score, best[..., None], axis=-1)[..., 0], single_scores


def score_weights(
    w: np.ndarray,
    sigma: np.ndarray,
    c: np.ndarray,
    var_y: np.ndarray,
    mu_m: np.ndarray,
    mu_y: np.ndarray,
    S_future: np.ndarray,
    team_weight: np.ndarray,
    criterion: str = "sign",
) -> np.ndarray:
    """The score of given weights ``w`` (..., J) under a law (arguments as in :func:`optimal_weights`)."""
    if criterion not in CRITERIA:
        raise BayesCMMAError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}.")
    team_weight = np.asarray(team_weight, dtype=float)
    V = sigma + S_future
    if criterion == "correlation":
        V_tot, c_tot, vy_tot = _mixture_moments(V, c, var_y, mu_m, mu_y, team_weight)
        var_s = np.einsum("...i,...ij,...j->...", w, V_tot, w)
        return np.einsum("...j,...j->...", w, c_tot) / np.sqrt(var_s * vy_tot)
    sd_s = np.sqrt(np.einsum("...i,...ij,...j->...", w, V, w))
    sd_y = np.sqrt(var_y)
    rho = np.einsum("...j,...j->...", w, c) / (sd_y * sd_s)
    b = np.einsum("...tj,...j->...t", mu_m, w) / sd_s[..., None]
    return (team_weight * agreement(mu_y / sd_y[..., None], b, rho[..., None])).sum(axis=-1)


def _posterior_arrays(tree: xr.DataTree, metrics: list[str]) -> dict[str, np.ndarray]:
    post = tree["posterior"]
    sd = list(dims.SAMPLE_DIMS)
    get = {
        "beta": post["beta"].transpose(*sd, dims.METRIC),
        "metric_sd": post["metric_sd"].transpose(*sd, dims.METRIC),
        "metric_corr": post["metric_corr"].transpose(*sd, dims.METRIC, dims.METRIC_OTHER),
        "residual_sd": post["residual_sd"].transpose(*sd),
        "alpha": post["alpha"].transpose(*sd, dims.TEAM, dims.METRIC),
        "kpi_mean": post["kpi_mean"].transpose(*sd, dims.TEAM),
    }
    return {k: v.values for k, v in get.items()}


def metric_scales(tree: xr.DataTree, metrics: list[str]) -> np.ndarray:
    """Each metric's sd of the observed ATEs across the past trials (the unit of the standardised weights)."""
    obs = tree["observed_data"]["trial_ate"].sel({dims.QUANTITY: metrics}).transpose(dims.TRIAL, dims.QUANTITY)
    scale = np.nanstd(obs.values, axis=0, ddof=1)
    if not np.all(np.isfinite(scale) & (scale > 0)):
        bad = metrics[int(np.flatnonzero(~(np.isfinite(scale) & (scale > 0)))[0])]
        raise BayesCMMAError(f"metric {bad!r} has no spread of its ATEs across the trials; it cannot be weighed.")
    return scale


def future_sizes(tree: xr.DataTree, sizes: Sequence[float] | None = None, future_n: Sequence[float] | None = None
                 ) -> tuple[np.ndarray, float]:
    """Relative sizes r (a median past trial = 1) from ``sizes`` or ``future_n`` (units per arm)."""
    if sizes is not None and future_n is not None:
        raise BayesCMMAError("give the future trial's size one way: sizes (relative to a median past trial) or "
                             "future_n (units per arm), not both.")
    n_ref = float(tree[CONSTANT_GROUP].attrs.get("reference_n_per_arm", np.nan))
    if future_n is not None:
        if not np.isfinite(n_ref):
            raise BayesCMMAError(
                "the trial table gives no arm sizes (n_treated, n_control), so a future trial's size in units "
                "per arm cannot be converted; give it relative to a median past trial instead (sizes=..., CLI: "
                "--future-size 0.5 1 4)."
            )
        values, name = np.asarray(future_n, dtype=float), "future_n"
    else:
        values, name = np.asarray(DEFAULT_SIZES if sizes is None else sizes, dtype=float), "sizes"
    if values.ndim != 1 or values.size == 0:
        raise BayesCMMAError(f"{name} must be one or more positive numbers, got {values.tolist()!r}.")
    bad = values[~(np.isfinite(values) & (values > 0))]
    if bad.size:
        raise BayesCMMAError(f"{name} must be positive and finite; got {bad[0]:g}.")
    return (values / n_ref if future_n is not None else values), n_ref


def northstar(
    fit,
    sizes: Sequence[float] | None = None,
    *,
    future_n: Sequence[float] | None = None,
    criterion: str = "sign",
    team: str | None = None,
) -> xr.Dataset:
    """Best composite north star per posterior draw, for future trials of several sizes.

    Parameters
    ----------
    fit : JointFit or xarray.DataTree
        A joint posterior (``bc.fit_joint``, or ``joint.nc`` of ``fit --joint``).
    sizes : sequence of float, optional
        Future trial sizes relative to a median past trial (default 0.25, 1, 4, 16): the future
        trial's measurement covariance is the median trial's divided by the size.
    future_n : sequence of float, optional
        Instead of ``sizes``: units per arm of the future trial (needs arm sizes in the trial table).
    criterion : {"sign", "correlation"}
        What the weights maximise (see the module docstring).
    team : str, optional
        The future trial's team; default: a team drawn in proportion to the past trials per team.

    Returns
    -------
    xarray.Dataset
        ``weight`` (future_size, chain, draw, metric): standardised weights (on each metric's ATE
        divided by ``scale``), unit length; ``raw_weight``, the same on the ATEs as reported
        (weight / scale); ``relative_weight``, weight / the leading metric's weight (coordinate
        ``lead`` on future_size: the metric with the largest posterior median absolute weight); ``scale``
        (metric), each metric's sd of the ATEs across the past trials;
        ``score`` (future_size, chain, draw), the composite's; ``metric_score`` (future_size, chain,
        draw, metric), each metric's alone. Coordinate ``n_per_arm`` on ``future_size`` (NaN
        without arm sizes); attrs ``criterion``, ``team``.
    """
    tree = fit if isinstance(fit, xr.DataTree) else getattr(fit, "posterior", None)
    if not isinstance(tree, xr.DataTree) or "posterior" not in tree or "metric_corr" not in tree["posterior"]:
        raise BayesCMMAError("northstar needs a joint posterior (bc.fit_joint, or joint.nc of fit --joint).")
    if CONSTANT_GROUP not in tree or "reference_covariance" not in tree[CONSTANT_GROUP]:
        raise BayesCMMAError(
            "this joint posterior has no reference measurement covariance (constant_data group): it was written "
            "by an older bayes_cmma; refit with fit --joint."
        )
    if criterion not in CRITERIA:
        raise BayesCMMAError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}.")
    post = tree["posterior"]
    metrics = [str(m) for m in post[dims.METRIC].values]
    teams = [str(t) for t in post[dims.TEAM].values]
    const = tree[CONSTANT_GROUP]
    counts = const["team_trials"].sel({dims.TEAM: teams}).values.astype(float)
    if team is None:
        team_weight, team_label = counts / counts.sum(), "a team drawn in proportion to its past trials"
    elif team not in teams:
        raise BayesCMMAError(f"team {team!r} is not in the fit; teams: {', '.join(teams)}.")
    else:
        team_weight, team_label = (np.array(teams) == team).astype(float), team
    r, n_ref = future_sizes(tree, sizes, future_n)
    ref = const["reference_covariance"].sel({dims.QUANTITY: metrics, dims.QUANTITY_OTHER: metrics}).values
    arr = _posterior_arrays(tree, metrics)
    sigma, c, var_y = latent_law(arr["beta"], arr["metric_sd"], arr["metric_corr"], arr["residual_sd"])
    scale = metric_scales(tree, metrics)
    out_w, out_s, out_m = [], [], []
    for size in r:
        w, score, single = optimal_weights(sigma, c, var_y, arr["alpha"], arr["kpi_mean"], ref / size, team_weight,
                                           criterion)
        out_w.append(_normalise(w * scale))
        out_s.append(score)
        out_m.append(single)
    sd = list(dims.SAMPLE_DIMS)
    coords = {dims.FUTURE_SIZE: r, "n_per_arm": (dims.FUTURE_SIZE, r * n_ref), dims.CHAIN: post[dims.CHAIN].values,
              dims.DRAW: post[dims.DRAW].values, dims.METRIC: metrics}
    weight = np.stack(out_w)
    lead = np.argmax(np.abs(np.median(weight, axis=(1, 2))), axis=-1)  # (future_size,)
    coords["lead"] = (dims.FUTURE_SIZE, [metrics[j] for j in lead])
    relative = weight / np.take_along_axis(weight, lead[:, None, None, None], axis=-1)
    return xr.Dataset(
        {"weight": ((dims.FUTURE_SIZE, *sd, dims.METRIC), weight),
         "raw_weight": ((dims.FUTURE_SIZE, *sd, dims.METRIC), weight / scale),
         "relative_weight": ((dims.FUTURE_SIZE, *sd, dims.METRIC), relative),
         "scale": (dims.METRIC, scale),
         "score": ((dims.FUTURE_SIZE, *sd), np.stack(out_s)),
         "metric_score": ((dims.FUTURE_SIZE, *sd, dims.METRIC), np.stack(out_m))},
        coords=coords,
        attrs={"criterion": criterion, "team": team_label, "kpi": str(tree.attrs.get("kpi", "KPI"))},
    )


def weight_interval(w: np.ndarray, prob: float = 0.94) -> tuple[float, float]:
    """The ``prob`` highest-density interval (HDI) of one unit-length weight's draws ``w``.

    A unit-length weight lives on [-1, 1], and the leading metric's is near 1 when the others are
    small: its posterior piles up against 1 (1 - w is about half the sum of the others' squares),
    with its mode at or near the bound. An equal-tailed interval then leaves out the most probable
    values just below 1 and ends below a true weight near 1; the HDI holds the most probable values
    and reaches the bound when the density is highest there (measured coverage of both kinds: docs:
    checks.md, "Does the composite north star find the optimal weights?"). For the other weights,
    whose posteriors are about symmetric, the two intervals nearly agree.
    """
    lo, hi = array_stats.hdi(np.asarray(w, dtype=float), prob)
    return float(lo), float(hi)


def northstar_frame(ns: xr.Dataset, prob: float = 0.94) -> pd.DataFrame:
    """One row per (future size, candidate): the metrics' weights and every candidate's score.

    Columns: ``future_size``, ``n_per_arm``, ``criterion``, ``candidate`` (each metric, then ``composite``),
    ``weight_mean``, ``weight_lower``, ``weight_upper`` (standardised weights and their ``prob``
    highest-density interval, :func:`weight_interval`; empty for the composite), ``lead`` (the
    leading metric) and ``relative_weight_median``, ``relative_weight_lower``,
    ``relative_weight_upper`` (weight / the leading metric's; 1 for the lead), ``scale`` (divide a
    weight by it for the ATE as reported), ``score_mean``,
    ``score_lower``, ``score_upper``, ``p_composite_better`` (share of draws where the composite's
    score exceeds the metric's by more than 1e-9). Every other interval is equal-tailed.
    """
    lo_q, hi_q = (1 - prob) / 2, (1 + prob) / 2
    sd = list(dims.SAMPLE_DIMS)
    rows = []
    for i, size in enumerate(ns[dims.FUTURE_SIZE].values):
        sub = ns.isel({dims.FUTURE_SIZE: i})
        comp = sub["score"].values.ravel()
        base = {"future_size": float(size), "n_per_arm": float(sub["n_per_arm"]),
                "criterion": str(ns.attrs.get("criterion", "sign")), "lead": str(sub["lead"].values)}
        for m in ns[dims.METRIC].values:
            w = sub["weight"].sel({dims.METRIC: m}).transpose(*sd).values.ravel()
            s = sub["metric_score"].sel({dims.METRIC: m}).transpose(*sd).values.ravel()
            rel = sub["relative_weight"].sel({dims.METRIC: m}).transpose(*sd).values.ravel()
            w_lo, w_hi = weight_interval(w, prob)
            rows.append({**base, "candidate": str(m), "weight_mean": w.mean(), "weight_lower": w_lo,
                         "weight_upper": w_hi, "relative_weight_median": np.median(rel),
                         "relative_weight_lower": np.quantile(rel, lo_q),
                         "relative_weight_upper": np.quantile(rel, hi_q),
                         "scale": float(ns["scale"].sel({dims.METRIC: m})),
                         "score_mean": s.mean(),
                         "score_lower": np.quantile(s, lo_q), "score_upper": np.quantile(s, hi_q),
                         "p_composite_better": float(np.mean(comp > s + 1e-9))})
        rows.append({**base, "candidate": "composite", "weight_mean": np.nan, "weight_lower": np.nan,
                     "weight_upper": np.nan, "relative_weight_median": np.nan, "relative_weight_lower": np.nan,
                     "relative_weight_upper": np.nan, "scale": np.nan, "score_mean": comp.mean(),
                     "score_lower": np.quantile(comp, lo_q), "score_upper": np.quantile(comp, hi_q),
                     "p_composite_better": np.nan})
    return pd.DataFrame(rows)


def format_weights(singles: pd.DataFrame, relative: bool = False) -> str:
    """``"m1 +0.71 [+0.52, +0.86], m2 ..."``: the unit-length weights of one future size's rows of
    :func:`northstar_frame` (one per metric), or with ``relative`` the weights relative to the leading
    metric (median and interval; the lead itself is left out). One format for the terminal and the report.
    """
    if relative:
        return ", ".join(f"{r['candidate']} {r['relative_weight_median']:+.2f} [{r['relative_weight_lower']:+.2f}, "
                         f"{r['relative_weight_upper']:+.2f}]" for _, r in singles.iterrows()
                         if r["candidate"] != r["lead"])
    return ", ".join(f"{r['candidate']} {r['weight_mean']:+.2f} [{r['weight_lower']:+.2f}, {r['weight_upper']:+.2f}]"
                     for _, r in singles.iterrows())


__all__ = ["CRITERIA", "DEFAULT_SIZES", "agreement", "bvn_cdf", "latent_law", "metric_scales", "northstar",
           "northstar_frame", "optimal_weights", "score_weights", "weight_interval"]
