"""Degree selection: fit the DRF at several degrees and compare them by leave-one-trial-out ELPD.

The Bayesian counterpart of the paper's nested Wald tests (docs: outputs.md, "Choosing the degree"):

1. fit each degree (one compiled model per degree, reused by the refits below);
2. PSIS-LOO over trials of the density of each trial's ATE vector. Every degree is fitted to the
   same numbers, the ATEs on the KPI and on metric, metric^2, ..., metric^Q (Q = the largest degree
   compared): the degree-q model is the degree-Q model with beta_{q+1..Q} = 0, its latent metric
   powers still modelled. Scoring each degree on its own ATEs only would compare densities of
   different data; scoring the (KPI, metric) pair alone cannot tell degrees apart, since its
   predictive law is a bivariate normal per team at every degree (we tried: ELPD within 1 on the
   example data whose true DRF is quadratic);
3. trials whose Pareto k exceeds ``k_threshold`` (0.7) make PSIS unreliable: the model is refitted
   without each of them and its exact leave-one-out density is used instead
   (:func:`arviz_stats.reloo`);
4. :func:`arviz_stats.compare` gives the table (ELPD, SE, differences, stacking weights), and the
   recommendation is the lowest degree whose ELPD is not clearly below the best one. "Clearly"
   means a difference larger than 4 and larger than twice its standard error (Sivula, Magnusson
   and Vehtari 2022: differences under 4 are small, and their SE is then unreliable). The
   posterior of each model's top coefficient is reported beside it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bayes_cmma import dims
from bayes_cmma.checks import checking
from bayes_cmma.errors import BayesCMMAError
from bayes_cmma.fitting.bayes import MetricFit, Progress, fit_design, resolve_spec, warn_if_weak
from bayes_cmma.fitting.model import trial_loglik_numpy
from bayes_cmma.fitting.spec import ModelSpec
from bayes_cmma.inputs.data import MetricDesign, TrialData, metric_design

#: Pareto k above which a trial's PSIS-LOO estimate is replaced by an exact refit.
K_THRESHOLD = checking.PARETO_K_BAD
#: An ELPD difference counts as clear when larger than this and than CLEAR_SE standard errors.
CLEAR_ELPD = 4.0
CLEAR_SE = 2.0


@dataclass
class DegreeComparison:
    """Result of :func:`compare_degrees`.

    Attributes
    ----------
    table : DataFrame
        ArviZ's comparison, one row per model (index ``degree 1``, ...): rank, elpd, p, elpd_diff,
        weight (stacking), se, dse, warning; plus ``degree`` and ``refits`` (exact LOO refits).
    top_coefficient : DataFrame
        Per degree q: posterior mean, sd, 94% interval of beta_q and P(beta_q > 0).
    pareto_k : DataFrame
        Per degree and trial: PSIS Pareto k before refitting, and whether the trial was refitted.
    recommended : int
    reason : str
        Plain-language reason for the recommendation.
    fits : dict
        degree -> MetricFit of the full data.
    """

    table: pd.DataFrame
    top_coefficient: pd.DataFrame
    pareto_k: pd.DataFrame
    recommended: int
    reason: str
    fits: dict[int, MetricFit] = field(repr=False)
    loo: dict[int, object] = field(repr=False)

    def __str__(self) -> str:
        cols = ["elpd", "se", "elpd_diff", "dse", "weight", "p", "refits"]
        return f"{self.table[cols].to_string(float_format=lambda v: f'{v:.2f}')}\n\n{self.reason}"


def drop_trial(design: MetricDesign, index: int) -> tuple[MetricDesign, MetricDesign]:
    """(design without trial ``index``, design of that trial alone); the team list is kept whole."""
    keep = np.arange(design.n_trials) != index

    def part(mask: np.ndarray) -> MetricDesign:
        return dataclasses.replace(
            design, z=design.z[mask], S=design.S[mask], team_idx=design.team_idx[mask],
            trials=[t for t, k in zip(design.trials, mask, strict=True) if k],
        )

    return part(keep), part(~keep)


def heldout_loglik(tree: xr.DataTree, heldout: MetricDesign) -> xr.DataArray:
    """Per-draw log-density of held-out trials' ATEs under a posterior, dims (chain, draw, trial)."""
    par = checking.params_of(tree)
    out = trial_loglik_numpy(heldout.z, heldout.S, heldout.team_idx, par.beta, par.alpha, par.pi, par.chol,
                             par.residual_sd, a3_corr=par.a3_corr)
    post = tree["posterior"]
    return xr.DataArray(
        out.reshape(*par.shape, -1),
        dims=(*dims.SAMPLE_DIMS, dims.TRIAL),
        coords={dims.CHAIN: post[dims.CHAIN].values, dims.DRAW: post[dims.DRAW].values,
                dims.TRIAL: heldout.trials},
    )


def _refit_wrapper(fit: MetricFit, tree: xr.DataTree, sample: dict):
    """An :class:`arviz_stats.SamplingWrapper` that refits ``fit``'s model without one trial."""
    from arviz_stats import SamplingWrapper

    class TrialRefit(SamplingWrapper):
        def sel_observations(self, idx):
            return drop_trial(fit.design, int(idx))

        def sample(self, modified_observed_data):
            return fit_design(modified_observed_data, fit.spec, check_convergence=False, **sample)

        def get_inference_data(self, fitted):
            return fitted.posterior

        def log_likelihood__i(self, excluded_obs, idata__i):
            return heldout_loglik(idata__i, excluded_obs).isel({dims.TRIAL: 0}, drop=True)

    return TrialRefit(model=fit.spec, idata_orig=tree)


def _top_coefficient(fits: dict[int, MetricFit], prob: float = 0.94) -> pd.DataFrame:
    rows = []
    for d, f in fits.items():
        draws = f.beta.sel({dims.POWER: d}).values.ravel()
        lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2])
        rows.append({"degree": d, "parameter": f"beta[{d}]", "mean": draws.mean(), "sd": draws.std(ddof=1),
                     f"eti{100 * prob:g}_lower": lo, f"eti{100 * prob:g}_upper": hi,
                     "p_positive": float((draws > 0).mean())})
    return pd.DataFrame(rows)


def recommend(table: pd.DataFrame, top: pd.DataFrame, prob: float = 0.94) -> tuple[int, str]:
    """The lowest degree whose ELPD is not clearly below the best, and why (see the module docstring)."""
    best = table.sort_values("elpd", ascending=False).iloc[0]
    by_degree = table.set_index("degree").sort_index()
    best_elpd = float(best["elpd"])
    chosen = int(best["degree"])
    lines = [f"degree {chosen} has the highest ELPD ({best['elpd']:.1f}, SE {best['se']:.1f})."]
    for d, row in by_degree.iterrows():
        if d == best["degree"]:
            continue
        diff, dse = best_elpd - float(row["elpd"]), float(row["dse"])
        clear = diff > CLEAR_ELPD and diff > CLEAR_SE * dse
        verdict = "clearly worse" if clear else "not clearly worse"
        lines.append(f"degree {d}: ELPD lower by {diff:.1f} (SE {dse:.1f}): {verdict} "
                     f"(clear means > {CLEAR_ELPD:g} and > {CLEAR_SE:g} SE).")
        if not clear and d < chosen:
            chosen = int(d)
    if chosen != int(best["degree"]):
        lines.append(f"Recommended: degree {chosen}, the simplest degree that predicts held-out trials as "
                     "well as the best one.")
    else:
        lines.append(f"Recommended: degree {chosen}.")
    pct = f"{100 * prob:g}"
    higher = top[top["degree"] > chosen]
    for _, r in higher.iterrows():
        lo, hi = r[f"eti{pct}_lower"], r[f"eti{pct}_upper"]
        inside = "includes" if lo <= 0 <= hi else "excludes"
        lines.append(f"In the degree-{int(r['degree'])} model, {r['parameter']}'s {pct}% interval "
                     f"[{lo:.4g}, {hi:.4g}] {inside} 0.")
    r = top[top["degree"] == chosen].iloc[0]
    lines.append(f"Its top coefficient {r['parameter']}: mean {r['mean']:.4g}, {pct}% interval "
                 f"[{r[f'eti{pct}_lower']:.4g}, {r[f'eti{pct}_upper']:.4g}].")
    return chosen, " ".join(lines)


def compare_degrees(
    data: TrialData,
    kpi: str,
    metric: str,
    degrees: Iterable[int] = (1, 2, 3),
    model: str | Path | ModelSpec | None = None,
    *,
    seed: int | None = 1,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    k_threshold: float = K_THRESHOLD,
    max_refits: int = 20,
    progress: Progress | None = None,
) -> DegreeComparison:
    """Fit the DRF at each degree and compare by leave-one-trial-out ELPD, refitting where PSIS fails.

    Parameters
    ----------
    data : TrialData
    kpi, metric : str
    degrees : iterable of int
        At least two distinct degrees; the table must hold the metric's powers up to the largest.
    model : str, path or ModelSpec, optional
        Priors and sampler settings to use at every degree (default: the bundled spec of each degree).
    seed : int, optional
        Sampler seed of the full-data fits (degree d uses ``seed + d``) and of the refits.
    draws, tune, chains : int, optional
        Override the spec's sampler settings (also for the refits).
    k_threshold : float
        Trials with Pareto k above this get an exact refit (default 0.7).
    max_refits : int
        At most this many refits per degree (the trials with the largest k); the others keep
        their PSIS estimate and are flagged in ``pareto_k``.
    progress : callable, optional
        Receives status lines.

    Returns
    -------
    DegreeComparison
    """
    from arviz_stats import compare as az_compare
    from arviz_stats import reloo

    degree_list = sorted({int(d) for d in degrees})
    if len(degree_list) < 2 or degree_list[0] < 1:
        raise BayesCMMAError(f"give at least two degrees >= 1 to compare (e.g. --degrees 1 2 3), got {list(degrees)}.")
    if max_refits < 0:
        raise BayesCMMAError(f"max_refits must be >= 0, got {max_refits}.")
    specs = {d: resolve_spec(model, degree=d) for d in degree_list}
    top_spec = specs[degree_list[-1]]
    design = metric_design(data, kpi, metric, degree_list[-1], top_spec.within_trial_correlation,
                           warn_filled=not top_spec.within_trial_correlation_given)
    warn_if_weak(design)
    sample = {"draws": draws, "tune": tune, "chains": chains}
    fits, loos, k_rows, refit_counts = {}, {}, [], {}
    for d in degree_list:
        fits[d] = fit_design(design, specs[d], seed=None if seed is None else seed + d, progress=progress,
                             data_hash=data.data_hash(), **sample)
        tree = fits[d].posterior
        psis = checking.loo(tree)
        k = psis.pareto_k.values
        bad = np.flatnonzero(k > k_threshold)
        threshold = k_threshold
        if len(bad) > max_refits:
            threshold = float(np.sort(k)[-max_refits - 1]) if max_refits else np.inf
        refitted = k > threshold
        if refitted.any():
            if progress:
                progress(f"degree {d}: {int(refitted.sum())} trial(s) with Pareto k > {threshold:.2f}: exact refits")
            wrapper = _refit_wrapper(fits[d], tree, {**sample, "seed": seed})
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*Pareto k.*", category=UserWarning)
                psis = reloo(wrapper, loo_orig=psis, var_name="trial_ate", k_threshold=threshold, pointwise=True)
        loos[d] = psis
        refit_counts[d] = int(refitted.sum())
        k_rows += [{"degree": d, "trial": t, "pareto_k": float(kk), "refitted": bool(r),
                    "unreliable": bool(kk > k_threshold and not r)}
                   for t, kk, r in zip(fits[d].design.trials, k, refitted, strict=True)]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Pareto k.*", category=UserWarning)
        table = az_compare({f"degree {d}": loos[d] for d in degree_list}, round_to="none")
    table.index.name = "model"
    table["degree"] = [int(str(i).split()[-1]) for i in table.index]
    table["refits"] = [refit_counts[d] for d in table["degree"]]
    top = _top_coefficient(fits)
    chosen, reason = recommend(table, top)
    pk = pd.DataFrame(k_rows)
    n_unreliable = int(pk["unreliable"].sum())
    if n_unreliable:
        reason += (f" Caution: {n_unreliable} trial-degree pair(s) kept Pareto k > {k_threshold} after "
                   f"{max_refits} refits per degree; raise max_refits (CLI --max-refits).")
    return DegreeComparison(table=table, top_coefficient=top, pareto_k=pk, recommended=chosen,
                            reason=reason, fits=fits, loo=loos)

