"""bayes_cmma: Bayesian causal meta-mediation analysis.

Which online metric should guide algorithm work, because raising it raises the KPI most? Fit a
hierarchical measurement-error model to the trial-level ATEs of many A/B tests and read off the
posterior dose-response function, elasticities and the ranking of candidate metrics.

Typical use::

    import bayes_cmma as bc
    trials = bc.read_trials("trials.csv", "cov.csv")
    result = bc.fit(trials, kpi="gmv", metrics=["ndcg", "mrr", "map"], model="cubic", seed=1)
    result.ranking(at={"ndcg": 0.0021, "mrr": 0.0016, "map": 0.0019}, baseline=60.0)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bayes_cmma.errors import (
    AssumptionWarning,
    BayesCMMAError,
    ConvergenceWarning,
    DataError,
    RelevanceWarning,
    SpecError,
)

#: Public name -> module. Imported on first use, so ``import bayes_cmma`` stays light: a Dask
#: worker that only runs the summarizer, or ``bayes-cmma summarize``, never loads PyMC.
_LAZY = {
    "TrialData": "data", "metric_design": "data", "read_trials": "data",
    "Example": "datasets", "load_example": "datasets",
    "drf": "derived", "elasticity": "derived", "interval_table": "derived", "rank_metrics": "derived",
    "diagnostics_table": "diagnostics", "summary_table": "diagnostics",
    "DegreeComparison": "compare", "compare_degrees": "compare",
    "render_report": "report", "write_report": "report",
    "CMMAResult": "fitting", "MetricFit": "fitting", "fit": "fitting", "fit_metric": "fitting",
    "FitGrid": "many", "fit_many": "many",
    "OLSResult": "ols", "cmma_ols": "ols",
    "RelevanceCheck": "assumptions", "relevance_check": "assumptions", "posterior_reliability": "assumptions",
    "a3_sensitivity": "sensitivity",
    "ModelSpec": "spec", "load_spec": "spec",
    "summarize": "summarizer", "summarize_files": "summarizer", "summarize_units": "summarizer",
    "augment": "augmentation", "parse_dag": "augmentation",
}

if TYPE_CHECKING:  # pragma: no cover
    from bayes_cmma.assumptions import RelevanceCheck, posterior_reliability, relevance_check
    from bayes_cmma.augmentation import augment, parse_dag
    from bayes_cmma.compare import DegreeComparison, compare_degrees
    from bayes_cmma.data import TrialData, metric_design, read_trials
    from bayes_cmma.datasets import Example, load_example
    from bayes_cmma.derived import drf, elasticity, interval_table, rank_metrics
    from bayes_cmma.diagnostics import diagnostics_table, summary_table
    from bayes_cmma.fitting import CMMAResult, MetricFit, fit, fit_metric
    from bayes_cmma.many import FitGrid, fit_many
    from bayes_cmma.ols import OLSResult, cmma_ols
    from bayes_cmma.report import render_report, write_report
    from bayes_cmma.sensitivity import a3_sensitivity
    from bayes_cmma.spec import ModelSpec, load_spec
    from bayes_cmma.summarizer import summarize, summarize_files, summarize_units


#: Submodules reachable as attributes (``bc.plots.sensitivity_plot``), imported on first use.
_SUBMODULES = ("plots", "checking", "compare", "report", "calibration", "sensitivity", "assumptions", "summarizer",
               "outputs")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"bayes_cmma.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bayes_cmma' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bayes_cmma.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})


__version__ = "0.1.0"

__all__ = [
    "AssumptionWarning",
    "BayesCMMAError",
    "CMMAResult",
    "ConvergenceWarning",
    "DataError",
    "DegreeComparison",
    "Example",
    "FitGrid",
    "MetricFit",
    "ModelSpec",
    "OLSResult",
    "RelevanceCheck",
    "RelevanceWarning",
    "SpecError",
    "TrialData",
    "a3_sensitivity",
    "augment",
    "cmma_ols",
    "compare_degrees",
    "diagnostics_table",
    "drf",
    "elasticity",
    "fit",
    "fit_many",
    "fit_metric",
    "interval_table",
    "load_example",
    "load_spec",
    "metric_design",
    "parse_dag",
    "posterior_reliability",
    "rank_metrics",
    "read_trials",
    "relevance_check",
    "render_report",
    "summarize",
    "summarize_files",
    "summarize_units",
    "summary_table",
    "write_report",
]
