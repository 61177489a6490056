"""Derived quantities: dose-response function, elasticity, metric ranking.

Numpy cores work on a trailing ``power`` axis; the public functions are thin xarray wrappers that
name every output dim (``grid``, ``metric``, ``rank``) and keep any leading dims of the input
(``chain``, ``draw``). Coefficients may be posterior draws (a DataArray with dim ``power``) or
plain numbers (e.g. published estimates): ``drf([4.0, 2.0], grid=[0.0, 0.5, 1.0])``.

The DRF is mu(m) = sum_p beta_p m^p (no intercept: only differences of mu are identified).
Elasticity at m for a relative lift delta is (mu(m (1 + delta)) - mu(m)) / baseline, with baseline
mu(m) (the paper's convention) or a KPI level the user gives.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from bayes_cmma import dims
from bayes_cmma.errors import AssumptionWarning, BayesCMMAError


def drf_core(beta: np.ndarray, m: np.ndarray) -> np.ndarray:
    """mu(m) for coefficients ``beta`` (..., P) at values ``m`` (G,) -> (..., G)."""
    beta = np.asarray(beta, dtype=float)
    m = np.asarray(m, dtype=float)
    powers = np.arange(1, beta.shape[-1] + 1)
    return np.sum(beta[..., None, :] * m[:, None] ** powers, axis=-1)


def elasticity_core(
    beta: np.ndarray, m: np.ndarray, lift: float = 0.1, baseline: float | None = None
) -> np.ndarray:
    """Elasticity for coefficients (..., P) at values (G,) -> (..., G)."""
    m = np.asarray(m, dtype=float)
    gain = drf_core(beta, m * (1.0 + lift)) - drf_core(beta, m)
    base = drf_core(beta, m) if baseline is None else float(baseline)
    with np.errstate(divide="ignore", invalid="ignore"):
        return gain / base


def point_elasticity_core(beta: np.ndarray, m: np.ndarray, baseline: float | None = None) -> np.ndarray:
    """Point elasticity m mu'(m) / baseline (baseline = mu(m) by default), coefficients (..., P) at (G,) -> (..., G)."""
    beta = np.asarray(beta, dtype=float)
    m = np.asarray(m, dtype=float)
    powers = np.arange(1, beta.shape[-1] + 1)
    slope_times_m = np.sum(beta[..., None, :] * powers * m[:, None] ** powers, axis=-1)  # m mu'(m)
    base = drf_core(beta, m) if baseline is None else float(baseline)
    with np.errstate(divide="ignore", invalid="ignore"):
        return slope_times_m / base


def _as_coefficients(beta: xr.DataArray | Sequence[float] | np.ndarray) -> xr.DataArray:
    if isinstance(beta, xr.DataArray):
        if dims.POWER not in beta.dims:
            raise BayesCMMAError(f"coefficients need a {dims.POWER!r} dim; got dims {beta.dims}.")
        return beta
    arr = np.atleast_1d(np.asarray(beta, dtype=float))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise BayesCMMAError(
            f"coefficients must be a non-empty list of finite numbers (beta_1, ..., beta_P), got {beta!r}."
        )
    return xr.DataArray(arr, dims=[dims.POWER], coords={dims.POWER: np.arange(1, arr.size + 1)})


def _grid(values: Iterable[float] | xr.DataArray | float) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise BayesCMMAError(f"metric values must be finite numbers, got {values!r}.")
    return arr


def drf(beta: xr.DataArray | Sequence[float], grid: Iterable[float] | xr.DataArray) -> xr.DataArray:
    """Dose-response function mu(m) on a grid of metric values.

    Parameters
    ----------
    beta : DataArray with dim ``power`` (e.g. posterior draws) or a list (beta_1, ..., beta_P)
    grid : sequence of float
        Metric values (the user's units).

    Returns
    -------
    DataArray
        Dims: beta's other dims, then ``grid`` (coordinate = the metric values).
    """
    b = _as_coefficients(beta)
    g = _grid(grid)
    out = xr.apply_ufunc(
        drf_core, b, kwargs={"m": g}, input_core_dims=[[dims.POWER]], output_core_dims=[[dims.GRID]]
    )
    return out.assign_coords({dims.GRID: g}).rename("drf")


def elasticity(
    beta: xr.DataArray | Sequence[float],
    at: float | Iterable[float],
    lift: float = 0.1,
    baseline: float | None = None,
) -> xr.DataArray:
    """Elasticity of the KPI at metric value(s) ``at`` for a relative lift ``lift``.

    (mu(at (1 + lift)) - mu(at)) / baseline; baseline = mu(at) when ``baseline`` is None (the
    paper's convention), else the given KPI level. A scalar ``at`` gives no ``grid`` dim.
    """
    if not np.isfinite(lift) or lift == 0:
        raise BayesCMMAError(f"lift must be a non-zero finite number (0.1 = +10%), got {lift!r}.")
    if baseline is not None and (not np.isfinite(baseline) or baseline == 0):
        raise BayesCMMAError(f"KPI baseline must be a non-zero finite number, got {baseline!r}.")
    b = _as_coefficients(beta)
    if baseline is None and b.sizes[dims.POWER] == 1:
        warnings.warn(
            "with a linear DRF and baseline mu(m) the elasticity equals the lift for every metric "
            "and cannot rank them; give a KPI baseline (CLI: --kpi-baseline) or a higher degree.",
            AssumptionWarning,
            stacklevel=2,
        )
    scalar = np.ndim(at) == 0 and not isinstance(at, xr.DataArray)
    g = _grid(at)
    out = xr.apply_ufunc(
        elasticity_core,
        b,
        kwargs={"m": g, "lift": lift, "baseline": baseline},
        input_core_dims=[[dims.POWER]],
        output_core_dims=[[dims.GRID]],
    ).assign_coords({dims.GRID: g})
    out = out.isel({dims.GRID: 0}, drop=True) if scalar else out
    out.attrs.update({"lift": lift, "baseline": "mu(m)" if baseline is None else baseline})
    return out.rename("elasticity")


def point_elasticity(
    beta: xr.DataArray | Sequence[float], at: float | Iterable[float], baseline: float | None = None
) -> xr.DataArray:
    """Point elasticity of the KPI at metric value(s) ``at``: m mu'(m) / mu(m), or m mu'(m) / baseline.

    The limit of :func:`elasticity` / lift as the lift goes to 0: the relative KPI change per
    relative metric change. ``0.1 * point_elasticity`` is the first-order approximation of the
    elasticity for a +10% lift (how some published tables report it). With a linear DRF and
    baseline mu(m) it is 1 for every metric. A scalar ``at`` gives no ``grid`` dim.
    """
    if baseline is not None and (not np.isfinite(baseline) or baseline == 0):
        raise BayesCMMAError(f"KPI baseline must be a non-zero finite number, got {baseline!r}.")
    b = _as_coefficients(beta)
    scalar = np.ndim(at) == 0 and not isinstance(at, xr.DataArray)
    g = _grid(at)
    out = xr.apply_ufunc(
        point_elasticity_core,
        b,
        kwargs={"m": g, "baseline": baseline},
        input_core_dims=[[dims.POWER]],
        output_core_dims=[[dims.GRID]],
    ).assign_coords({dims.GRID: g})
    out = out.isel({dims.GRID: 0}, drop=True) if scalar else out
    out.attrs.update({"baseline": "mu(m)" if baseline is None else baseline})
    return out.rename("point_elasticity")


def stack_metrics(parts: Sequence[xr.DataArray], metrics: Sequence[str]) -> xr.DataArray:
    """Stack per-metric draws along a new ``metric`` dim (draw counts must match)."""
    shapes = {tuple(p.sizes.items()) for p in parts}
    if len(shapes) > 1:
        raise BayesCMMAError(
            "the metrics' posteriors have different chain/draw counts; fit them with the same "
            "sampler settings to rank them."
        )
    return xr.concat(list(parts), dim=pd.Index(list(metrics), name=dims.METRIC), join="exact")


def rank_metrics(elasticities: xr.DataArray, sample_dims: Sequence[str] = dims.SAMPLE_DIMS) -> xr.Dataset:
    """Posterior ranking of metrics by elasticity (rank 1 = largest).

    Parameters
    ----------
    elasticities : DataArray
        Dims ``metric`` plus the sample dims. Draws of different metrics are paired by index
        (the metrics' models are fitted separately, so the pairing is as independent posteriors).
        Metrics exactly equal in a draw share their ranks equally (the tie prior's tied draws,
        :mod:`bayes_cmma.decisions.ties`).

    Returns
    -------
    Dataset
        ``p_best`` (metric), ``p_rank`` (metric, rank), ``expected_rank`` (metric),
        ``expected_regret`` (metric): expected elasticity lost by choosing this metric instead of
        the best one in each draw, and ``elasticity_mean`` (metric).
    """
    if dims.METRIC not in elasticities.dims:
        raise BayesCMMAError(f"elasticities need a {dims.METRIC!r} dim; got {elasticities.dims}.")
    sdims = [d for d in sample_dims if d in elasticities.dims]
    flat = elasticities.stack(__sample__=sdims).transpose(dims.METRIC, "__sample__").values
    n_metric = flat.shape[0]
    # metrics tied in a draw (exactly equal: the tie prior's draws) share their ranks equally
    above = (flat[None, :, :] > flat[:, None, :]).sum(axis=1)  # (metric, sample): metrics strictly above
    tied = (flat[None, :, :] == flat[:, None, :]).sum(axis=1)  # including itself
    rank_coord = np.arange(1, n_metric + 1)
    r = rank_coord[None, :, None]
    share = (r > above[:, None, :]) & (r <= (above + tied)[:, None, :])
    p_rank = (share / tied[:, None, :]).mean(axis=2)
    expected_rank = (above + (tied + 1) / 2).mean(axis=1)
    regret = (flat.max(axis=0, keepdims=True) - flat).mean(axis=1)
    metric_coord = elasticities[dims.METRIC].values
    return xr.Dataset(
        {
            "p_best": ((dims.METRIC,), p_rank[:, 0]),
            "p_rank": ((dims.METRIC, dims.RANK), p_rank),
            "expected_rank": ((dims.METRIC,), expected_rank),
            "expected_regret": ((dims.METRIC,), regret),
            "elasticity_mean": ((dims.METRIC,), flat.mean(axis=1)),
        },
        coords={dims.METRIC: metric_coord, dims.RANK: rank_coord},
    )


def interval_table(
    draws: xr.DataArray, prob: float = 0.94, sample_dims: Sequence[str] = dims.SAMPLE_DIMS
) -> pd.DataFrame:
    """Mean, sd and equal-tailed ``prob`` interval over the sample dims, one row per other index."""
    sdims = [d for d in sample_dims if d in draws.dims]
    lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
    pct = f"{100 * prob:g}"
    ds = xr.Dataset(
        {
            "mean": draws.mean(sdims),
            "sd": draws.std(sdims),
            f"eti{pct}_lower": draws.quantile(lo, dim=sdims).drop_vars("quantile"),
            f"eti{pct}_upper": draws.quantile(hi, dim=sdims).drop_vars("quantile"),
        }
    )
    if not ds["mean"].dims:
        return pd.DataFrame([{k: float(v) for k, v in ds.items()}])
    return ds.to_dataframe().reset_index()
