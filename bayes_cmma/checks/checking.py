"""Model checking from a saved posterior: predictive moments, PIT, latent shrinkage, LOO.

Everything here reads one fitted posterior (the :class:`xarray.DataTree` of a
:class:`~bayes_cmma.fitting.bayes.MetricFit`, or one reloaded from its ``.nc`` file) and works on the
user's original scale. Given the global parameters of a draw, trial k's observed ATE vector z_k is
normal with mean mu_k (team means) and covariance G + S_k, where G is the covariance of the latent
true effects (y_k, m_k) (:func:`bayes_cmma.fitting.model.marginal_moments`) and S_k the measurement
covariance. From that follow, draw by draw:

- the posterior predictive distribution of z_k (its moments, PIT values);
- the posterior of the latent effects by Gaussian conditioning,
  E[x_k | z_k] = mu_k + G (G + S_k)^-1 (z_k - mu_k) (the shrinkage plot);
- the marginal log-density of z_k or of a block of it (:func:`pointwise_loglik`).

Reductions over draws run in blocks, so memory stays bounded with many trials.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy import special

from bayes_cmma import dims
from bayes_cmma.errors import BayesCMMAError
from bayes_cmma.fitting.linalg import cholesky_entries, forward_solve_entries
from bayes_cmma.fitting.model import A3_VAR, marginal_moments, trial_loglik_numpy
from bayes_cmma.inputs.data import placeholder_missing

#: (draw, trial) pairs per block in the draw-wise reductions.
BLOCK_ENTRIES = 200_000

#: Pareto k above which PSIS-LOO is unreliable for a trial (ArviZ's threshold for >= 2200 draws);
#: the figures flag such trials and :func:`bayes_cmma.checks.compare.compare_degrees` refits them.
PARETO_K_BAD = 0.7


@dataclass(frozen=True)
class _Params:
    """Original-scale global parameters of every draw, flattened to (n, ...)."""

    beta: np.ndarray  # (n, P)
    alpha: np.ndarray  # (n, team, P)
    pi: np.ndarray  # (n, team)
    chol: np.ndarray  # (n, P, P)
    residual_sd: np.ndarray  # (n,)
    shape: tuple[int, int]  # (chain, draw)
    a3_corr: np.ndarray  # (n,): the A3 correlation of each draw (one fixed value, or sampled under a prior)
    team_idx: np.ndarray  # (K,)
    z: np.ndarray  # (K, d); 0 where a trial does not report a quantity
    S: np.ndarray  # (K, d, d); identity rows/columns there
    observed: np.ndarray | None = None  # (K, d) bool, None when every trial reports everything

    @property
    def n(self) -> int:
        return self.beta.shape[0]

    def block(self, sl: slice) -> tuple[np.ndarray, ...]:
        """beta, alpha, pi, chol, residual_sd and the A3 correlation of the draws in ``sl``."""
        return self.beta[sl], self.alpha[sl], self.pi[sl], self.chol[sl], self.residual_sd[sl], self.a3_corr[sl]

    def blocks(self) -> Iterator[slice]:
        K = self.z.shape[0]
        step = max(1, BLOCK_ENTRIES // max(K, 1))
        for start in range(0, self.n, step):
            yield slice(start, min(start + step, self.n))


def _tree(fit_or_tree) -> xr.DataTree:
    tree = fit_or_tree if isinstance(fit_or_tree, xr.DataTree) else getattr(fit_or_tree, "posterior", None)
    if not isinstance(tree, xr.DataTree):
        raise BayesCMMAError(f"expected a MetricFit or its posterior DataTree, got {type(fit_or_tree).__name__}.")
    for group in ("posterior", "observed_data", "constant_data"):
        if group not in tree.children:
            raise BayesCMMAError(
                f"the posterior has no {group!r} group; it was not written by bayes_cmma's fit (refit it)."
            )
    return tree


def a3_corr_of(tree: xr.DataTree) -> np.ndarray:
    """The A3 correlation of each draw, flattened over (chain, draw).

    Its posterior draws when the spec gave it a prior; else the fixed value the spec set (0, as
    assumption A3 says, unless ``direct_effect_corr`` was set), repeated.
    """
    post = tree["posterior"]
    if A3_VAR in post:
        return post[A3_VAR].transpose(*dims.SAMPLE_DIMS).values.reshape(-1)
    spec = json.loads(tree.attrs.get("model_spec", "{}"))
    value = spec.get("assumptions", {}).get("direct_effect_corr", 0.0)
    return np.full(post.sizes[dims.CHAIN] * post.sizes[dims.DRAW], float(value))


def params_of(fit_or_tree) -> _Params:
    """Original-scale global parameters of every draw, flattened over (chain, draw), with the data."""
    tree = _tree(fit_or_tree)
    post = tree["posterior"].to_dataset()
    obs = tree["observed_data"].to_dataset()
    const = tree["constant_data"].to_dataset()
    C, D = post.sizes[dims.CHAIN], post.sizes[dims.DRAW]
    n = C * D
    z_obs = obs["trial_ate"].transpose(dims.TRIAL, dims.QUANTITY).values
    S_obs = obs["measurement_cov"].transpose(dims.TRIAL, dims.QUANTITY, dims.QUANTITY_OTHER).values
    observed = np.isfinite(z_obs)  # NaN where a trial does not report a quantity
    teams = [str(t) for t in post[dims.TEAM].values]
    position = {t: i for i, t in enumerate(teams)}
    team_idx = np.array([position[str(t)] for t in const["team"].values])
    sd = post["metric_sd"].transpose(*dims.SAMPLE_DIMS, dims.POWER).values.reshape(n, -1)
    corr = post["metric_corr"].transpose(*dims.SAMPLE_DIMS, dims.POWER, dims.POWER_OTHER).values
    cov = corr.reshape(n, sd.shape[1], sd.shape[1]) * sd[:, :, None] * sd[:, None, :]
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:  # a numerically singular Omega in some draw: a symmetric square root
        w, v = np.linalg.eigh(cov)
        chol = v * np.sqrt(np.clip(w, 0.0, None))[:, None, :]
    return _Params(
        beta=post["beta"].transpose(*dims.SAMPLE_DIMS, dims.POWER).values.reshape(n, -1),
        alpha=post["alpha"].transpose(*dims.SAMPLE_DIMS, dims.TEAM, dims.POWER).values.reshape(n, len(teams), -1),
        pi=post["pi"].transpose(*dims.SAMPLE_DIMS, dims.TEAM).values.reshape(n, len(teams)),
        chol=chol,
        residual_sd=post["residual_sd"].values.reshape(n),
        shape=(C, D),
        a3_corr=a3_corr_of(tree),
        team_idx=team_idx,
        z=np.nan_to_num(z_obs, nan=0.0),
        S=placeholder_missing(np.nan_to_num(S_obs, nan=0.0), observed),
        observed=None if observed.all() else observed,
    )


def _sample_coords(tree: xr.DataTree) -> dict:
    post = tree["posterior"]
    return {dims.CHAIN: post[dims.CHAIN].values, dims.DRAW: post[dims.DRAW].values}


def pointwise_loglik(fit_or_tree, quantities: list[int] | None = None) -> xr.DataArray:
    """Per-draw, per-trial log-density of the observed ATEs (or of a block of them), original scale.

    Parameters
    ----------
    fit_or_tree : MetricFit or DataTree
    quantities : list of int, optional
        Positions along ``quantity`` (0 = the KPI, p = the metric's p-th power) whose marginal
        density is wanted; all by default, which reproduces the stored ``log_likelihood``.

    Returns
    -------
    DataArray, dims (chain, draw, trial)
    """
    tree = _tree(fit_or_tree)
    par = params_of(tree)
    out = np.empty((par.n, par.z.shape[0]))
    for sl in par.blocks():
        out[sl] = trial_loglik_numpy(par.z, par.S, par.team_idx, *par.block(sl),
                                     block=quantities, observed=par.observed)
    trials = tree["observed_data"][dims.TRIAL].values
    return xr.DataArray(
        out.reshape(*par.shape, -1),
        dims=(*dims.SAMPLE_DIMS, dims.TRIAL),
        coords={**_sample_coords(tree), dims.TRIAL: trials},
        name="log_likelihood",
    )


def predictive_moments(fit_or_tree) -> xr.Dataset:
    """Mean and covariance of each trial's posterior predictive ATE vector (a new measurement).

    The predictive law is a mixture over draws of N(mu_k, G + S_k); returned are its exact first
    two moments: ``mean`` (trial, quantity) and ``cov`` (trial, quantity, quantity_other).
    """
    tree = _tree(fit_or_tree)
    par = params_of(tree)
    K, d = par.z.shape
    s1 = np.zeros((K, d))
    s2 = np.zeros((K, d, d))
    sG = np.zeros((d, d))
    for sl in par.blocks():
        mu, G = marginal_moments(par.team_idx, *par.block(sl))
        s1 += mu.sum(axis=0)
        s2 += np.einsum("nki,nkj->kij", mu, mu)
        sG += G.sum(axis=0)
    mean = s1 / par.n
    cov = s2 / par.n - mean[:, :, None] * mean[:, None, :] + sG / par.n + par.S
    if par.observed is not None:  # a quantity the trial does not report has no measurement error to add
        cov = np.where(par.observed[:, :, None] & par.observed[:, None, :], cov, np.nan)
    return _trial_quantity_dataset(tree, {"mean": mean, "cov": cov})


def pit(fit_or_tree) -> xr.DataArray:
    """Posterior predictive PIT of each observed ATE: P(new measurement <= observed), per quantity.

    Computed exactly per draw (normal CDF of the marginal) and averaged over draws. Under a
    well-specified model the values are close to uniform on (0, 1) (they are not LOO-PIT values, so
    with few trials they bunch slightly toward 0.5). Dims (trial, quantity).
    """
    tree = _tree(fit_or_tree)
    par = params_of(tree)
    acc = np.zeros(par.z.shape)
    for sl in par.blocks():
        mu, G = marginal_moments(par.team_idx, *par.block(sl))
        var = np.diagonal(G, axis1=-2, axis2=-1)[:, None, :] + np.diagonal(par.S, axis1=-2, axis2=-1)
        acc += special.ndtr((par.z - mu) / np.sqrt(var)).sum(axis=0)
    values = acc / par.n if par.observed is None else np.where(par.observed, acc / par.n, np.nan)
    return _trial_quantity_dataset(tree, {"pit": values})["pit"]


def latent_effects(fit_or_tree) -> xr.Dataset:
    """Posterior mean and sd of each trial's true (latent) effects on the KPI and the metric powers.

    Per draw the latent x_k = (y_k, m_k) given z_k is normal with mean
    mu_k + G (G + S_k)^-1 (z_k - mu_k) and covariance G - G (G + S_k)^-1 G; the posterior mean and
    variance follow by the laws of total expectation and variance. Returns ``mean`` and ``sd``
    (trial, quantity): the observed ATEs shrunk toward their team's mean, the more so the noisier.
    """
    tree = _tree(fit_or_tree)
    par = params_of(tree)
    K, d = par.z.shape
    s1 = np.zeros((K, d))
    s2 = np.zeros((K, d))
    if par.observed is not None:
        # precision of what each trial reports: inverse of its covariance on the reported block, 0 elsewhere
        both = par.observed[:, :, None] & par.observed[:, None, :]
        S_precision = np.where(both, np.linalg.inv(par.S), 0.0)  # placeholders make S block diagonal
    for sl in par.blocks():
        mu, G = marginal_moments(par.team_idx, *par.block(sl))
        if par.observed is None:
            # with L L' = G + S_k (entry by entry over draws and trials): G (G+S)^-1 r = W' w and
            # G (G+S)^-1 G = W' W, where W = L^-1 G and w = L^-1 r
            L = cholesky_entries([[G[:, None, i, j] + par.S[:, i, j] for j in range(d)] for i in range(d)], np.sqrt)
            resid = par.z - mu
            w = forward_solve_entries(L, [resid[..., i] for i in range(d)])
            W = [forward_solve_entries(L, [G[:, None, i, c] for i in range(d)]) for c in range(d)]  # W[c][r]
            cond_mean = np.stack([mu[..., c] + sum(W[c][r] * w[r] for r in range(d)) for c in range(d)], axis=-1)
            cond_var = np.stack([G[:, None, c, c] - sum(W[c][r] ** 2 for r in range(d)) for c in range(d)], axis=-1)
        else:  # condition on the reported quantities only: posterior precision G^-1 + S_obs^-1
            G_inv = np.linalg.inv(G)[:, None]  # (n, 1, d, d)
            cond_cov = np.linalg.inv(G_inv + S_precision)
            info = np.einsum("nkij,nkj->nki", np.broadcast_to(G_inv, cond_cov.shape), mu) + np.einsum(
                "kij,kj->ki", S_precision, par.z)
            cond_mean = np.einsum("nkij,nkj->nki", cond_cov, info)
            cond_var = np.diagonal(cond_cov, axis1=-2, axis2=-1)
        s1 += cond_mean.sum(axis=0)
        s2 += (cond_var + cond_mean**2).sum(axis=0)
    mean = s1 / par.n
    sd = np.sqrt(np.clip(s2 / par.n - mean**2, 0.0, None))
    return _trial_quantity_dataset(tree, {"mean": mean, "sd": sd})


def _trial_quantity_dataset(tree: xr.DataTree, arrays: dict[str, np.ndarray]) -> xr.Dataset:
    obs = tree["observed_data"]
    q = obs[dims.QUANTITY].values
    coords = {dims.TRIAL: obs[dims.TRIAL].values, dims.QUANTITY: q, dims.QUANTITY_OTHER: q}
    data = {}
    for name, arr in arrays.items():
        names = (dims.TRIAL, dims.QUANTITY, dims.QUANTITY_OTHER)[: arr.ndim]
        data[name] = (names, arr)
    ds = xr.Dataset(data, coords=coords)
    if dims.QUANTITY_OTHER not in ds.dims:
        ds = ds.drop_vars(dims.QUANTITY_OTHER)
    return ds


def relative_ess(tree: xr.DataTree) -> float:
    """Mean relative efficiency (ESS / draws) over the posterior's non-constant entries, for PSIS.

    As ArviZ's default, but skipping entries that are constant by construction (a correlation's
    unit diagonal, beta_{q+1..P} = 0 of a degree-q model fitted to P powers), whose ESS is NaN.
    """
    import arviz_stats  # noqa: F401  (registers the .azstats accessor)

    post = tree["posterior"].to_dataset()
    n = post.sizes[dims.CHAIN] * post.sizes[dims.DRAW]
    if post.sizes[dims.CHAIN] == 1:
        return 1.0
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ess = post.azstats.ess(method="mean")
    values = np.hstack([ess[v].values.ravel() for v in ess.data_vars])
    values = values[np.isfinite(values)]
    return float(values.mean() / n) if values.size else 1.0


def loo(fit_or_tree, var_name: str = "trial_ate"):
    """PSIS-LOO (ArviZ) over trials, pointwise, from the stored per-trial log-likelihood.

    When Pareto smoothing itself fails for a trial (ArviZ: "All tail values are the same", seen
    when a badly misspecified model's chains stick and repeat draws), that trial gets plain
    importance weights and Pareto k = inf, so it is flagged as unreliable (and refitted by
    :func:`bayes_cmma.checks.compare.compare_degrees`) instead of failing the whole computation.
    Returns :class:`arviz_stats.ELPDDataLOO` with ``elpd_i`` and ``pareto_k`` (dim ``trial``).
    """
    from arviz_stats import loo as az_loo

    tree = _tree(fit_or_tree)
    reff = relative_ess(tree)
    with warnings.catch_warnings():
        # ArviZ warns when some Pareto k is high; callers report k per trial (plots, compare) instead
        warnings.filterwarnings("ignore", message=".*Pareto k.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*[Ee]stimated shape parameter.*", category=UserWarning)
        try:
            return az_loo(tree, var_name=var_name, pointwise=True, reff=reff)
        except ValueError as exc:
            if "tail values" not in str(exc):
                raise
        ll = tree["log_likelihood"][var_name]
        lw_parts, k_parts = [], []
        for t in ll[dims.TRIAL].values:
            ll_t = ll.sel({dims.TRIAL: t})
            try:
                lw, k = ll_t.azstats.psislw(r_eff=reff, dim=list(dims.SAMPLE_DIMS))
            except ValueError:
                raw = -ll_t
                lw = raw - float(special.logsumexp(raw.values))
                k = xr.DataArray(np.inf)
            lw_parts.append(lw.expand_dims({dims.TRIAL: [t]}))
            k_parts.append(xr.DataArray(float(k), coords={dims.TRIAL: t}))
        log_weights = xr.concat(lw_parts, dim=dims.TRIAL).transpose(*dims.SAMPLE_DIMS, dims.TRIAL)
        pareto_k = xr.concat(k_parts, dim=dims.TRIAL)
        return az_loo(tree, var_name=var_name, pointwise=True, reff=reff, log_weights=log_weights,
                      pareto_k=pareto_k)


def influential_trials(loo_result, threshold: float = PARETO_K_BAD) -> list[tuple[str, float]]:
    """Trials whose PSIS-LOO Pareto k exceeds ``threshold``, as (trial, k), largest k first."""
    k = loo_result.pareto_k
    values = np.asarray(k.values, dtype=float)
    names = [str(t) for t in k[dims.TRIAL].values]
    bad = [(names[i], float(values[i])) for i in np.flatnonzero(values > threshold)]
    return sorted(bad, key=lambda item: -item[1])


def pareto_k_message(metric: str, bad: list[tuple[str, float]], shown: int = 8) -> str:
    """The plain-language warning for trials with Pareto k > 0.7, naming them (CLI and report)."""
    names = ", ".join(f"{t} (k = {k:.2f})" for t, k in bad[:shown]) + (" ..." if len(bad) > shown else "")
    return (f"{metric} model: {len(bad)} trial(s) have LOO Pareto k > {PARETO_K_BAD}: {names}. These trials are "
            "very influential or poorly predicted; look at them (the report's Pareto k plot) and compare degrees "
            "with `bayes-cmma compare`, which refits without them.")
