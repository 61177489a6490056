"""A synthetic posterior without sampling: random standardised-scale draws put through the same
assembly as a real fit (original scale, per-trial log-likelihood, observed and constant data)."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from bayes_cmma.fitting.bayes import CMMAResult, MetricFit, _assemble, _cov_with_nan
from bayes_cmma.fitting.measurement import for_spec
from bayes_cmma.fitting.model import pooled, standardise, unpack_chol
from bayes_cmma.fitting.provenance import provenance
from bayes_cmma.fitting.spec import ModelSpec, spec_for_degree
from bayes_cmma.inputs.data import TrialData, metric_design


def fake_fit(
    data: TrialData,
    kpi: str,
    metric: str,
    spec: ModelSpec | int = 2,
    *,
    chains: int = 2,
    draws: int = 100,
    seed: int = 0,
    spread: float = 0.05,
) -> MetricFit:
    """A MetricFit whose draws scatter (``spread``) around plausible standardised-scale values."""
    spec = spec_for_degree(spec) if isinstance(spec, int) else spec
    rng = np.random.default_rng(seed)
    design = for_spec(metric_design(data, kpi, metric, spec.degree, spec.within_trial_correlation,
                                    warn_filled=False), spec)  # the covariances a real fit's likelihood uses
    std = standardise(design)
    P, T = spec.degree, len(design.teams)
    sh = (chains, draws)

    def jitter(center, shape=()):
        return np.asarray(center) + spread * rng.standard_normal((*sh, *shape))

    rows, cols = np.tril_indices(P)
    chol = np.where(rows == cols, 0.8, 0.3)
    gamma = jitter(np.linspace(0.6, 0.2, P), (P,))  # chol' beta: the scale the draws were first made on
    alpha = jitter(rng.normal(0, 0.5, (T, P)), (T, P))
    kpi_mean = jitter(rng.normal(0, 0.5, T), (T,))
    packed = np.abs(jitter(chol, (len(chol),))) if P == 1 else jitter(chol, (len(chol),))
    beta = np.linalg.solve(np.swapaxes(unpack_chol(packed, P), -1, -2), gamma[..., None])[..., 0]
    post = {
        "beta_std": (("chain", "draw", "b"), beta),
        "alpha": (("chain", "draw", "t", "p"), alpha),
        "kpi_mean": (("chain", "draw", "t"), kpi_mean),
        "metric_chol": (("chain", "draw", "c"), packed),
        "residual_sd": (("chain", "draw"), np.abs(jitter(0.4))),
    }
    if pooled(T, spec.team_effects):
        post["pi_mean"] = (("chain", "draw"), jitter(0.0))
        post["pi_sd"] = (("chain", "draw"), np.abs(jitter(0.5)))
    coords = {"chain": np.arange(chains), "draw": np.arange(draws)}
    stats = xr.Dataset({"diverging": (("chain", "draw"), np.zeros(sh, dtype=bool))}, coords=coords)
    trace = xr.DataTree.from_dict({"posterior": xr.Dataset(post, coords=coords), "sample_stats": stats})
    attrs = provenance(spec, seed=seed, data_hash=data.data_hash())
    attrs.update({"kpi": kpi, "metric": metric, "degree": spec.degree, "measurement": design.measurement})
    tree = _assemble(trace, design, std, attrs, spec.direct_effect_corr)
    return MetricFit(posterior=tree, spec=spec, design=design)


def fake_result(data: TrialData, kpi: str, metrics: list[str], spec: ModelSpec | int = 2, **kw) -> CMMAResult:
    """One fake fit per metric (seeds differ per metric)."""
    seed = kw.pop("seed", 0)
    fits = {m: fake_fit(data, kpi, m, spec, seed=seed + i, **kw) for i, m in enumerate(metrics)}
    return CMMAResult(fits=fits, kpi=kpi)


def point_tree(
    data: TrialData,
    kpi: str,
    metric: str,
    truth: dict,
    residual_sd: float,
    *,
    draws: int = 4,
    a3_corr: float = 0.0,
) -> xr.DataTree:
    """A posterior tree on the original scale whose every draw is the true parameter (a point mass).

    ``truth`` as returned by :func:`bayes_cmma.studies.synthetic.simulate_summaries`.
    """
    P = len(truth["beta"])
    design = metric_design(data, kpi, metric, P, warn_filled=False)
    omega = truth["omega_chol"] @ truth["omega_chol"].T
    sd = np.sqrt(np.diag(omega))
    sh = (1, draws)

    def rep(a):
        a = np.asarray(a, dtype=float)
        return np.broadcast_to(a, (*sh, *a.shape)).copy()

    coords = {"chain": [0], "draw": np.arange(draws), "power": np.arange(1, P + 1),
              "power_other": np.arange(1, P + 1), "team": design.teams}
    post = xr.Dataset(
        {
            "beta": (("chain", "draw", "power"), rep(truth["beta"])),
            "alpha": (("chain", "draw", "team", "power"), rep(truth["alpha"])),
            "pi": (("chain", "draw", "team"), rep(truth["pi"])),
            "metric_sd": (("chain", "draw", "power"), rep(sd)),
            "metric_corr": (("chain", "draw", "power", "power_other"), rep(omega / np.outer(sd, sd))),
            "residual_sd": (("chain", "draw"), rep(residual_sd)),
        },
        coords=coords,
    )
    q = design.quantities
    observed = xr.Dataset(
        {"trial_ate": (("trial", "quantity"), design.with_nan()),
         "measurement_cov": (("trial", "quantity", "quantity_other"), _cov_with_nan(design))},
        coords={"trial": design.trials, "quantity": q, "quantity_other": q},
    )
    constant = xr.Dataset({"team": (("trial",), np.asarray(design.teams, dtype=object)[design.team_idx])},
                          coords={"trial": design.trials})
    tree = xr.DataTree.from_dict({"posterior": post, "observed_data": observed, "constant_data": constant})
    spec = {"assumptions": {"direct_effect_corr": a3_corr}} if a3_corr else {}
    tree.attrs.update({"kpi": kpi, "metric": metric, "degree": P, "model_spec": json.dumps(spec)})
    return tree
