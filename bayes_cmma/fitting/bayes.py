"""Fit the Bayesian CMMA model: one posterior per (KPI, metric), on the user's original scale.

``fit`` is the notebook entry point::

    import bayes_cmma as bc
    trials = bc.read_trials("trials.csv", "cov.csv")
    result = bc.fit(trials, kpi="gmv", metrics=["ndcg", "mrr"], model="cubic", seed=1)
    result["ndcg"].posterior          # xarray.DataTree, original scale, named dims
    result.elasticity(at={"ndcg": 0.0021, "mrr": 0.0015})
    result.ranking(at={...})
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bayes_cmma import dims
from bayes_cmma.checks.assumptions import relevance_check
from bayes_cmma.checks.diagnostics import divergences, summary_table, warn_on_problems
from bayes_cmma.decisions import derived
from bayes_cmma.errors import AssumptionWarning, BayesCMMAError, RelevanceWarning
from bayes_cmma.fitting import measurement, sampling
from bayes_cmma.fitting.model import (
    A3_VAR,
    Standardised,
    compiled_model,
    is_compiled,
    pad_beta,
    pooled,
    standardise,
    trial_loglik_numpy,
    unpack_chol,
)
from bayes_cmma.fitting.provenance import provenance
from bayes_cmma.fitting.spec import ModelSpec, load_spec, replace_spec, spec_for_degree
from bayes_cmma.inputs.data import MetricDesign, TrialData, default_degree, metric_design

Progress = Callable[[str], None]


def resolve_spec(model: str | Path | ModelSpec | int | None = None, degree: int | None = None) -> ModelSpec:
    """A ModelSpec from a bundled name, a TOML path, a degree, or a spec (default: cubic)."""
    if isinstance(model, ModelSpec):
        spec = model
    elif isinstance(model, int) and not isinstance(model, bool):
        spec = spec_for_degree(model)
    elif model is None:
        spec = spec_for_degree(degree if degree is not None else 3)
        degree = None
    else:
        spec = load_spec(model)
    if degree is not None and degree != spec.degree:
        spec = replace_spec(spec, degree=degree)
    return spec


@dataclass
class MetricFit:
    """The posterior of one (KPI, metric) model with what made it.

    Attributes
    ----------
    posterior : xarray.DataTree
        Groups ``posterior`` (original scale: ``beta`` (power), ``alpha`` (team, power), ``pi``
        (team), ``kpi_mean`` (team; beta' alpha + pi), ``pi_mean``, ``pi_sd`` (with >= 4 teams), ``metric_sd``
        (power), ``metric_corr`` (power, power_other), ``residual_sd``), ``sample_stats``,
        ``log_likelihood`` (``trial_ate``: trial), ``observed_data``, ``constant_data``; provenance in ``attrs``.
    spec : ModelSpec
    design : MetricDesign
    timings : dict
        Seconds spent compiling (0 when a cached model was reused) and sampling.
    """

    posterior: xr.DataTree
    spec: ModelSpec
    design: MetricDesign
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.design.metric

    @cached_property
    def summary(self) -> pd.DataFrame:
        """:func:`bayes_cmma.checks.diagnostics.summary_table` of the posterior (94% intervals), computed once."""
        return summary_table(self.posterior)

    @property
    def beta(self) -> xr.DataArray:
        """Posterior draws of the DRF coefficients, dims (chain, draw, power), original scale."""
        return self.posterior["posterior"]["beta"]

    def drf(self, grid: Iterable[float] | xr.DataArray) -> xr.DataArray:
        """Posterior draws of mu(m) on a grid of metric values, dims (chain, draw, grid)."""
        return derived.drf(self.beta, grid)

    def elasticity(
        self, at: float | Iterable[float], lift: float = 0.1, baseline: float | None = None
    ) -> xr.DataArray:
        """Posterior draws of the elasticity at metric value(s) ``at``; see :func:`derived.elasticity`."""
        return derived.elasticity(self.beta, at, lift=lift, baseline=baseline)


def _to_original_scale(raw: xr.Dataset, design: MetricDesign, std: Standardised) -> xr.Dataset:
    """Map standardised draws back: beta = s0 L^-T b, alpha = L a, Omega = L Omega_std L'."""
    s0, L = std.kpi_scale, std.L
    P = design.degree
    Linv = np.linalg.inv(L)
    chol_std = unpack_chol(raw["metric_chol"].values, P)
    beta_std_scale = pad_beta(raw["beta_std"].values, P)
    beta = s0 * beta_std_scale @ Linv  # beta_j = s0 sum_i b_i Linv[i, j]
    alpha = raw["alpha"].values @ L.T
    eta = raw["kpi_mean"].values
    pi = (eta - np.einsum("...tp,...p->...t", raw["alpha"].values, beta_std_scale)) * s0
    kpi_mean = eta * s0
    chol = L @ chol_std
    cov = chol @ np.swapaxes(chol, -1, -2)
    sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    corr = cov / (sd[..., :, None] * sd[..., None, :])
    sdims = list(dims.SAMPLE_DIMS)
    coords = {
        dims.CHAIN: raw[dims.CHAIN].values,
        dims.DRAW: raw[dims.DRAW].values,
        dims.POWER: np.arange(1, P + 1),
        dims.POWER_OTHER: np.arange(1, P + 1),
        dims.TEAM: design.teams,
    }
    out = xr.Dataset(
        {
            "beta": ((*sdims, dims.POWER), beta),
            "alpha": ((*sdims, dims.TEAM, dims.POWER), alpha),
            "pi": ((*sdims, dims.TEAM), pi),
            "kpi_mean": ((*sdims, dims.TEAM), kpi_mean),
            "metric_sd": ((*sdims, dims.POWER), sd),
            "metric_corr": ((*sdims, dims.POWER, dims.POWER_OTHER), corr),
            "residual_sd": (sdims, raw["residual_sd"].values * s0),
        },
        coords=coords,
    )
    if "pi_mean" in raw:  # partial pooling (>= 4 teams, team_effects not "independent")
        out["pi_mean"] = (sdims, raw["pi_mean"].values * s0)
        out["pi_sd"] = (sdims, raw["pi_sd"].values * s0)
    if A3_VAR in raw:  # the A3 correlation had a prior: a correlation, the same on every scale
        out[A3_VAR] = (sdims, raw[A3_VAR].values)
    return out


#: Draws per block when the per-trial log-likelihood is evaluated: a block holds about this many
#: (draw, trial, d, d) covariance entries (2 MB), so 4000 draws x 10,000 trials never builds the
#: 5 GB array, and blocks stay in cache: "assemble" at K = 10,000 in benchmarks/bench_many_trials.py
#: took 5.1 s, against 11.6 s with 4e6-entry blocks.
LOGLIK_BLOCK_ENTRIES = 250_000


def _log_likelihood(raw: xr.Dataset, design: MetricDesign, std: Standardised, a3_corr: float = 0.0) -> np.ndarray:
    """Per-trial log-density of the observed ATEs in original units (standardised minus log-Jacobian).

    Evaluated in blocks of draws (:data:`LOGLIK_BLOCK_ENTRIES`); returns (chain, draw, trial).
    """
    chol = unpack_chol(raw["metric_chol"].values, design.degree)
    beta = pad_beta(raw["beta_std"].values, design.degree)
    alpha = raw["alpha"].values
    pi = raw["kpi_mean"].values - np.einsum("...tp,...p->...t", alpha, beta)
    residual_sd = raw["residual_sd"].values
    lead = beta.shape[:-1]
    n = int(np.prod(lead))
    flat = [a.reshape(n, *a.shape[len(lead):]) for a in (beta, alpha, pi, chol, residual_sd)]
    rho = raw[A3_VAR].values.reshape(n) if A3_VAR in raw else np.full(n, a3_corr)
    K, d = std.z.shape
    block = max(1, LOGLIK_BLOCK_ENTRIES // (K * d * d))
    out = np.empty((n, K))
    for start in range(0, n, block):
        sl = slice(start, start + block)
        out[sl] = trial_loglik_numpy(std.z, std.S, design.team_idx, *(a[sl] for a in flat), a3_corr=rho[sl],
                                     observed=design.observed)
    return out.reshape(*lead, K) + std.log_abs_det_B


def _cov_with_nan(design: MetricDesign) -> np.ndarray:
    """The measurement covariances with NaN in the rows and columns of unreported quantities."""
    if design.observed is None:
        return design.S
    both = design.observed[:, :, None] & design.observed[:, None, :]
    return np.where(both, design.S, np.nan)


def _assemble(
    trace: xr.DataTree, design: MetricDesign, std: Standardised, attrs: dict, a3_corr: float = 0.0
) -> xr.DataTree:
    raw = trace["posterior"].to_dataset()
    posterior = _to_original_scale(raw, design, std)
    sdims = list(dims.SAMPLE_DIMS)
    loglik = xr.Dataset(
        {"trial_ate": ((*sdims, dims.TRIAL), _log_likelihood(raw, design, std, a3_corr))},
        coords={dims.CHAIN: posterior[dims.CHAIN], dims.DRAW: posterior[dims.DRAW], dims.TRIAL: design.trials},
    )
    q = design.quantities
    observed = xr.Dataset(
        {
            # NaN where a trial does not report a quantity
            "trial_ate": ((dims.TRIAL, dims.QUANTITY), design.with_nan()),
            "measurement_cov": ((dims.TRIAL, dims.QUANTITY, dims.QUANTITY_OTHER), _cov_with_nan(design)),
        },
        coords={dims.TRIAL: design.trials, dims.QUANTITY: q, dims.QUANTITY_OTHER: q},
    )
    constant = xr.Dataset(
        {
            "team": ((dims.TRIAL,), np.asarray(design.teams, dtype=object)[design.team_idx]),
            "kpi_scale": ((), std.kpi_scale),
            "metric_factor": ((dims.POWER, dims.POWER_OTHER), std.L),
        },
        coords={dims.TRIAL: design.trials, dims.POWER: np.arange(1, design.degree + 1),
                dims.POWER_OTHER: np.arange(1, design.degree + 1)},
    )
    stats = trace["sample_stats"].to_dataset()
    keep = [v for v in stats.data_vars if stats[v].dtype != object]
    groups = {
        "posterior": posterior,
        "sample_stats": stats[keep],
        "log_likelihood": loglik,
        "observed_data": observed,
        "constant_data": constant,
    }
    tree = xr.DataTree.from_dict(groups)
    tree.attrs.update(attrs)
    return tree


def fit_metric(
    data: TrialData,
    kpi: str,
    metric: str,
    model: str | Path | ModelSpec | int | None = None,
    *,
    seed: int | None = None,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    cores: int | None = None,
    progress_bar: bool = False,
    progress: Progress | None = None,
) -> MetricFit:
    """Fit the model for one KPI and one metric.

    Parameters
    ----------
    data : TrialData
        From :func:`bayes_cmma.read_trials`.
    kpi, metric : str
        Quantity names; the metric's powers ``metric^2`` ... up to the degree must be in the table.
    model : str, path, ModelSpec or int, optional
        Bundled spec name, TOML file, spec, or degree. Default: the bundled spec of the highest
        degree (at most 3) whose metric powers every trial reports
        (:func:`bayes_cmma.inputs.data.default_degree`).
    seed : int, optional
        Seed of the sampler; the same seed and data give identical draws.
    draws, tune, chains : int, optional
        Override the spec's ``[sampler]`` settings.
    cores : int, optional
        Chains run in parallel; default ``min(chains, os.cpu_count())``.
    progress_bar : bool
        Show nutpie's progress bar.
    progress : callable, optional
        Receives short status lines ("compiling ...", "sampling ...").

    Returns
    -------
    MetricFit
    """
    spec = resolve_spec(default_degree(data, [metric]) if model is None else model)
    design = metric_design(data, kpi, metric, spec.degree, spec.within_trial_correlation,
                           warn_filled=not spec.within_trial_correlation_given)
    warn_if_weak(design)
    return fit_design(design, spec, seed=seed, draws=draws, tune=tune, chains=chains, cores=cores,
                      progress_bar=progress_bar, progress=progress, data_hash=data.data_hash())


def fit_design(
    design: MetricDesign,
    spec: ModelSpec,
    *,
    seed: int | None = None,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    cores: int | None = None,
    progress_bar: bool = False,
    progress: Progress | None = None,
    data_hash: str | None = None,
    check_convergence: bool = True,
) -> MetricFit:
    """Fit the model to an already-cut :class:`MetricDesign` (simulation studies reuse this).

    ``check_convergence=False`` skips the :class:`ConvergenceWarning` check (a summary of every
    parameter), for callers that record diagnostics themselves.

    The spec's measurement model is applied first (:func:`bayes_cmma.fitting.measurement.for_spec`: by
    default each trial's error covariance is the pooled per-unit covariance scaled by its arm
    sizes); the returned fit's ``design`` holds the covariances the likelihood used, and the
    posterior's ``measurement`` attribute says which.

    With ``spec.team_effects == "auto"`` (the default) and partially pooled teams (>= 4), the
    centred parametrization is fitted first; if it has divergent transitions, the non-centred one
    is fitted too (same seed) and the fit with fewer divergences is kept (the centred one on a tie).
    Both are the same model, so this only chooses the sampler geometry that suits the data:
    centred when each team's trials pin its effect down, non-centred when the team effects are
    weakly identified or barely differ (``benchmarks/team_effects.py``, the SBC results).
    The posterior's ``team_effects`` attribute says what was used and why.
    """
    design = measurement.for_spec(design, spec)
    kwargs = dict(seed=seed, draws=draws, tune=tune, chains=chains, cores=cores, progress_bar=progress_bar,
                  progress=progress, data_hash=data_hash)
    if spec.team_effects != "auto":
        fit = _fit_concrete(design, spec, **kwargs)
        fit.posterior.attrs["team_effects"] = f"{spec.team_effects} (set in the spec)"
    elif not pooled(len(design.teams)):
        fit = _fit_concrete(design, replace_spec(spec, team_effects="centred"), **kwargs)
        fit.posterior.attrs["team_effects"] = "independent (fewer than 4 teams: no pooling to parametrize)"
    else:
        fit = _fit_concrete(design, replace_spec(spec, team_effects="centred"), **kwargs)
        n_centred = divergences(fit.posterior)
        fit.posterior.attrs["team_effects"] = "centred (auto: no divergent transitions)"
        if n_centred:
            if progress:
                progress(f"{design.metric!r}: {n_centred} divergent transitions with centred team effects; "
                         "refitting non-centred")
            centred = fit
            other = _fit_concrete(design, replace_spec(spec, team_effects="non_centred"), **kwargs)
            n_other = divergences(other.posterior)
            fit = other if n_other < n_centred else centred
            chosen = "non-centred" if fit is other else "centred"
            fit.posterior.attrs["team_effects"] = (
                f"{chosen} (auto: {n_centred} divergent transitions centred, {n_other} non-centred)")
            fit.timings = {k: centred.timings.get(k, 0.0) + other.timings.get(k, 0.0)
                           for k in ("compile_s", "sample_s")}
    if check_convergence:
        warn_on_problems(fit.posterior, label=design.metric, table=fit.summary)
    return fit


def _fit_concrete(
    design: MetricDesign,
    spec: ModelSpec,
    *,
    seed: int | None,
    draws: int | None,
    tune: int | None,
    chains: int | None,
    cores: int | None,
    progress_bar: bool,
    progress: Progress | None,
    data_hash: str | None,
) -> MetricFit:
    """One fit with a concrete (centred or non-centred) spec; no convergence check."""
    std = standardise(design)
    t0 = time.perf_counter()
    if design.degree < spec.degree:
        raise BayesCMMAError(
            f"the design holds {design.degree} power(s) of {design.metric!r}, fewer than the model's degree "
            f"{spec.degree}; cut it with metric_design(..., degree={spec.degree})."
        )
    if progress and not is_compiled(spec, len(design.teams), design.degree):
        progress(f"compiling the degree-{spec.degree} model (once per shape: a few seconds, about half a minute "
                 "the first time on a machine)")
    compiled, fresh = compiled_model(spec, design, std)
    t_compile = time.perf_counter() - t0 if fresh else 0.0
    settings = dict(spec.sampler)
    n_chains = int(chains or settings["chains"])
    n_cores = int(cores or min(n_chains, os.cpu_count() or 1))
    if progress:
        progress(f"sampling {design.metric!r}: {n_chains} chains x {int(draws or settings['draws'])} draws")
    t1 = time.perf_counter()
    trace = sampling.sample(
        compiled,
        draws=int(draws or settings["draws"]),
        tune=int(tune or settings["tune"]),
        chains=n_chains,
        cores=n_cores,
        seed=seed,
        label=repr(design.metric),
        progress_bar=progress_bar,
        target_accept=float(settings["target_accept"]),
        adaptation=settings["adaptation"],
    )
    t_sample = time.perf_counter() - t1
    attrs = provenance(spec, seed=seed, data_hash=data_hash)
    attrs.update({"kpi": design.kpi, "metric": design.metric, "degree": spec.degree,
                  "measurement": design.measurement})
    tree = _assemble(trace, design, std, attrs, spec.direct_effect_corr)
    return MetricFit(posterior=tree, spec=spec, design=design,
                     timings={"compile_s": t_compile, "sample_s": t_sample})


@dataclass
class CMMAResult:
    """Posteriors of several candidate metrics for one KPI (one model per metric)."""

    fits: dict[str, MetricFit]
    kpi: str

    def __getitem__(self, metric: str) -> MetricFit:
        try:
            return self.fits[metric]
        except KeyError:
            raise BayesCMMAError(
                f"metric {metric!r} was not fitted; fitted metrics: {', '.join(self.fits)}."
            ) from None

    @property
    def metrics(self) -> list[str]:
        return list(self.fits)

    def _check_at(self, at: Mapping[str, float | Iterable[float]]) -> None:
        for m in at:
            if m not in self.fits:
                raise BayesCMMAError(
                    f"--at/at names metric {m!r}, which was not fitted; fitted: {', '.join(self.fits)}."
                )

    def elasticity(
        self, at: Mapping[str, float], lift: float = 0.1, baseline: float | None = None
    ) -> xr.DataArray:
        """Elasticity draws of each metric at its current value, dims (metric, chain, draw)."""
        self._check_at(at)
        missing = [m for m in self.fits if m not in at]
        if missing:
            raise BayesCMMAError(
                f"no current value for metric(s) {', '.join(missing)}: give at={{'{missing[0]}': "
                "VALUE}} (CLI: --at METRIC=VALUE), the metric's current per-unit level."
            )
        # one warning per message for all metrics (e.g. the linear-DRF one), not one per metric
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            parts = [self.fits[m].elasticity(float(at[m]), lift=lift, baseline=baseline) for m in self.fits]
        for message, category in dict.fromkeys((str(w.message), w.category) for w in caught):
            warnings.warn(message, category, stacklevel=2)
        return derived.stack_metrics(parts, list(self.fits))

    def point_elasticity(self, at: Mapping[str, float], baseline: float | None = None) -> xr.DataArray:
        """Point elasticity m mu'(m) / mu(m) (or / ``baseline``) of each metric at its current value.

        Dims (metric, chain, draw); see :func:`derived.point_elasticity`.
        """
        self._check_at(at)
        missing = [m for m in self.fits if m not in at]
        if missing:
            raise BayesCMMAError(f"no current value for metric(s) {', '.join(missing)}.")
        parts = [derived.point_elasticity(self.fits[m].beta, float(at[m]), baseline=baseline) for m in self.fits]
        return derived.stack_metrics(parts, list(self.fits))

    def ranking(
        self, at: Mapping[str, float], lift: float = 0.1, baseline: float | None = None
    ) -> xr.Dataset:
        """Posterior ranking of the metrics by elasticity; see :func:`derived.rank_metrics`."""
        return derived.rank_metrics(self.elasticity(at, lift=lift, baseline=baseline))


def warn_if_weak(design: MetricDesign) -> None:
    """Warn (:class:`RelevanceWarning`) when assumption A4 looks weak for this design's metric."""
    check = relevance_check(design)
    if check.weak:
        warnings.warn(check.message(), RelevanceWarning, stacklevel=3)


def metric_names(metrics: str | Iterable[str]) -> list[str]:
    """The metric list of a multi-metric fit: at least one, none repeated."""
    metric_list = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metric_list:
        raise BayesCMMAError("no metric given; name at least one (CLI: --metric NAME).")
    if len(set(metric_list)) != len(metric_list):
        raise BayesCMMAError(f"metric names repeat: {metric_list}; name each once.")
    return metric_list


def fit(
    data: TrialData,
    kpi: str,
    metrics: str | Iterable[str],
    model: str | Path | ModelSpec | int | None = None,
    *,
    seed: int | None = None,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    cores: int | None = None,
    progress_bar: bool = False,
    progress: Progress | None = None,
) -> CMMAResult:
    """Fit one model per candidate metric, reusing one compiled model for all of them.

    Every metric's design is validated before anything is sampled, so a bad input fails fast.
    Each metric gets its own seed derived from ``seed`` (the i-th metric: ``seed + i``).
    See :func:`fit_metric` for the parameters.
    """
    metric_list = metric_names(metrics)
    spec = resolve_spec(default_degree(data, metric_list) if model is None else model)
    designs = {}
    for i, m in enumerate(metric_list):
        with warnings.catch_warnings():
            if i > 0:  # the filled-covariance warning is said once, for the first metric
                warnings.simplefilter("ignore", category=AssumptionWarning)
            designs[m] = metric_design(data, kpi, m, spec.degree, spec.within_trial_correlation,
                                       warn_filled=not spec.within_trial_correlation_given)
    for design in designs.values():
        warn_if_weak(design)
    fits = {}
    h = data.data_hash()
    for i, (m, design) in enumerate(designs.items()):
        fits[m] = fit_design(design, spec, seed=None if seed is None else seed + i, draws=draws,
                             tune=tune, chains=chains, cores=cores, progress_bar=progress_bar,
                             progress=progress, data_hash=h)
    return CMMAResult(fits=fits, kpi=kpi)
