"""Many fits of few shapes: several metrics x several models (degrees, priors, within-trial correlations).

A comparison of 3 metrics x 3 degrees is 9 fits but only 3 compiled models: compiling costs far
more than sampling a small model, so fits are grouped by compiled shape (degree, number of teams,
priors; :func:`bayes_cmma.fitting.model.compiled_model`). Each group compiles once and swaps the data in
for each of its fits. With ``workers > 1`` the groups run in parallel worker processes (spawned,
one BLAS thread each), the costliest group first; a worker samples its chains one after another
(``cores=1``) so the workers do not compete for cores. A specification that differs only in the
within-trial correlation (a sensitivity sweep) shares its group's compiled model.

Seeds do not depend on the number of workers: the i-th metric of every model gets ``seed + i``,
exactly as :func:`bayes_cmma.fit` does, so ``fit_many(...)[metric, model]`` has the same draws as
``fit(..., model=model)[metric]``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bayes_cmma.errors import AssumptionWarning, BayesCMMAError, ConvergenceWarning
from bayes_cmma.fitting.bayes import CMMAResult, MetricFit, fit_design, metric_names, resolve_spec, warn_if_weak
from bayes_cmma.fitting.spec import ModelSpec
from bayes_cmma.inputs.data import MetricDesign, TrialData, metric_design

Model = str | Path | ModelSpec | int


@dataclass(frozen=True)
class _Job:
    metric: str
    label: str
    design: MetricDesign
    spec: ModelSpec
    seed: int | None


@dataclass
class FitGrid:
    """Posteriors of every (metric, model) pair for one KPI.

    Attributes
    ----------
    fits : dict
        ``(metric, model label) -> MetricFit``; the label is the spec's name (``"linear"``,
        ``"quadratic"``, ``"cubic"``, or the ``name`` of a TOML spec).
    kpi : str
    wall_s : float
        Seconds for the whole grid (designs, compiles, sampling, gathering).
    workers : int
    """

    fits: dict[tuple[str, str], MetricFit]
    kpi: str
    wall_s: float = 0.0
    workers: int = 1
    order: tuple[list[str], list[str]] = field(default_factory=lambda: ([], []))

    def __getitem__(self, key: tuple[str, str]) -> MetricFit:
        try:
            return self.fits[key]
        except KeyError:
            raise BayesCMMAError(
                f"no fit for {key!r}; fitted (metric, model) pairs: {', '.join(map(str, self.fits))}."
            ) from None

    @property
    def metrics(self) -> list[str]:
        return list(self.order[0])

    @property
    def models(self) -> list[str]:
        return list(self.order[1])

    def result(self, model: str) -> CMMAResult:
        """The fits of one model for every metric, as :func:`bayes_cmma.fit` returns them."""
        if model not in self.order[1]:
            raise BayesCMMAError(f"model {model!r} was not fitted; fitted: {', '.join(self.order[1])}.")
        return CMMAResult(fits={m: self.fits[m, model] for m in self.order[0]}, kpi=self.kpi)

    def timings(self) -> pd.DataFrame:
        """One row per fit: metric, model, degree, compile_s (0 when reused), sample_s, worker."""
        rows = [
            {"metric": m, "model": lab, "degree": f.spec.degree, **f.timings}
            for (m, lab), f in self.fits.items()
        ]
        return pd.DataFrame(rows)


def _fit_group(jobs: list[_Job], settings: dict[str, Any]) -> list[tuple[str, str, MetricFit, list]]:
    """Fit the jobs of one compiled shape in order (runs in a worker or in the caller)."""
    import os

    out = []
    for job in jobs:
        with warnings.catch_warnings(record=True) as caught:
            # the process's own filters stay (a worker ignores PyTensor's BLAS notice); ours always count
            warnings.simplefilter("always", ConvergenceWarning)
            warnings.simplefilter("always", AssumptionWarning)
            fit = fit_design(job.design, job.spec, seed=job.seed, data_hash=settings["data_hash"],
                             draws=settings["draws"], tune=settings["tune"], chains=settings["chains"],
                             cores=settings["cores"])
        fit.timings["worker"] = os.getpid()
        out.append((job.metric, job.label, fit, [(w.category, str(w.message)) for w in caught]))
    return out


def _cost(jobs: list[_Job]) -> float:
    """Rough cost of a group: one compile plus its fits, both growing with the degree."""
    degree = jobs[0].spec.degree
    return degree * (4.0 + len(jobs))


def fit_many(
    data: TrialData,
    kpi: str,
    metrics: str | Iterable[str],
    models: Model | Sequence[Model] = (1, 2, 3),
    *,
    seed: int | None = None,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    workers: int = 1,
    progress: Callable[[str], None] | None = None,
) -> FitGrid:
    """Fit every (metric, model) pair, compiling each model shape once, optionally in parallel.

    Parameters
    ----------
    data : TrialData
    kpi : str
    metrics : str or iterable of str
    models : model or sequence of models
        Degrees, bundled spec names, TOML paths or :class:`ModelSpec` objects (default: degrees
        1, 2, 3). Their names must differ.
    seed : int, optional
        The i-th metric of each model is fitted with ``seed + i`` (as :func:`bayes_cmma.fit`).
    draws, tune, chains : int, optional
        Override each spec's sampler settings.
    workers : int
        Worker processes (default 1: everything in this process, chains in parallel). With more,
        each worker fits whole shape groups with its chains in sequence.
    progress : callable, optional
        Receives a line as each group finishes.

    Returns
    -------
    FitGrid
    """
    t0 = time.perf_counter()
    metric_list = metric_names(metrics)
    model_list = [models] if isinstance(models, (str, Path, ModelSpec, int)) else list(models)
    if not model_list:
        raise BayesCMMAError("no model given; name at least one degree or spec.")
    if int(workers) < 1:
        raise BayesCMMAError(f"workers must be at least 1, got {workers}.")
    specs = [resolve_spec(m) for m in model_list]
    labels = [s.name for s in specs]
    if len(set(labels)) != len(labels):
        raise BayesCMMAError(f"model names repeat: {labels}; give each spec its own name.")
    h = data.data_hash()
    groups: dict[tuple, list[_Job]] = {}
    n_teams = len(data.teams)
    with warnings.catch_warnings():
        for j, spec in enumerate(specs):
            for i, m in enumerate(metric_list):
                if i > 0 or j > 0:  # the filled-covariance warning is said once
                    warnings.simplefilter("ignore", category=AssumptionWarning)
                design = metric_design(data, kpi, m, spec.degree, spec.within_trial_correlation,
                                       warn_filled=not spec.within_trial_correlation_given)
                key = (spec.degree, n_teams, spec.structure_key())
                groups.setdefault(key, []).append(
                    _Job(m, labels[j], design, spec, None if seed is None else seed + i))
    warned = set()
    for jobs in groups.values():
        for job in jobs:
            if job.metric not in warned:  # A4 depends on the metric's first power only: say it once
                warn_if_weak(job.design)
                warned.add(job.metric)
    ordered = sorted(groups.values(), key=_cost, reverse=True)
    workers = min(int(workers), len(ordered))
    settings = {"draws": draws, "tune": tune, "chains": chains, "data_hash": h,
                "cores": 1 if workers > 1 else None}
    results = []
    if workers == 1:
        for jobs in ordered:
            results.extend(_fit_group(jobs, settings))
            if progress:
                progress(f"fitted {jobs[0].label}: {', '.join(j.metric for j in jobs)}")
    else:
        from bayes_cmma.fitting.parallel import worker_pool

        with worker_pool(workers) as pool:
            futures = {pool.submit(_fit_group, jobs, settings): jobs for jobs in ordered}
            for fut in as_completed(futures):
                results.extend(fut.result())
                if progress:
                    jobs = futures[fut]
                    progress(f"fitted {jobs[0].label}: {', '.join(j.metric for j in jobs)}")
    fits = {}
    for metric, label, fit, caught in results:
        for category, message in caught:  # say which model: a grid has several fits per metric
            warnings.warn(f"model {label!r}, {message}", category, stacklevel=2)
        fits[metric, label] = fit
    fits = {(m, lab): fits[m, lab] for lab in labels for m in metric_list}
    return FitGrid(fits=fits, kpi=kpi, wall_s=time.perf_counter() - t0, workers=workers,
                   order=(metric_list, labels))
