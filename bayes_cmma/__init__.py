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
    "TrialData": "inputs.data", "metric_design": "inputs.data", "read_trials": "inputs.data",
    "summarize": "inputs.summarizer", "summarize_files": "inputs.summarizer", "summarize_units": "inputs.summarizer",
    "Example": "datasets", "load_example": "datasets",
    "ModelSpec": "fitting.spec", "load_spec": "fitting.spec",
    "CMMAResult": "fitting.bayes", "MetricFit": "fitting.bayes", "fit": "fitting.bayes", "fit_metric": "fitting.bayes",
    "FitGrid": "fitting.many", "fit_many": "fitting.many",
    "JointFit": "fitting.joint", "fit_joint": "fitting.joint", "joint_design": "inputs.data",
    "drf": "decisions.derived", "elasticity": "decisions.derived", "interval_table": "decisions.derived",
    "rank_metrics": "decisions.derived", "northstar": "decisions.northstar",
    "northstar_frame": "decisions.northstar", "value_of_trials": "decisions.more_trials",
    "value_of_trials_tie": "decisions.more_trials",
    "value_frame": "decisions.more_trials", "DecisionValue": "decisions.decision_value",
    "decision_value": "decisions.decision_value", "decision_focused_fusion": "decisions.fusion",
    "FusionChoice": "decisions.fusion", "fusion_frame": "decisions.fusion",
    "BilevelFusion": "decisions.bilevel", "bilevel_fusion": "decisions.bilevel",
    "diagnostics_table": "checks.diagnostics", "summary_table": "checks.diagnostics",
    "DegreeComparison": "checks.compare", "compare_degrees": "checks.compare",
    "RelevanceCheck": "checks.assumptions", "relevance_check": "checks.assumptions",
    "posterior_reliability": "checks.assumptions",
    "a3_sensitivity": "checks.sensitivity",
    "OLSResult": "baselines.ols", "cmma_ols": "baselines.ols",
    "augment": "augmentation.augment", "parse_dag": "augmentation.augment",
    "render_report": "reporting.report", "write_report": "reporting.report",
}

if TYPE_CHECKING:  # pragma: no cover
    from bayes_cmma.augmentation.augment import augment, parse_dag
    from bayes_cmma.baselines.ols import OLSResult, cmma_ols
    from bayes_cmma.checks.assumptions import RelevanceCheck, posterior_reliability, relevance_check
    from bayes_cmma.checks.compare import DegreeComparison, compare_degrees
    from bayes_cmma.checks.diagnostics import diagnostics_table, summary_table
    from bayes_cmma.checks.sensitivity import a3_sensitivity
    from bayes_cmma.datasets import Example, load_example
    from bayes_cmma.decisions.bilevel import BilevelFusion, bilevel_fusion
    from bayes_cmma.decisions.decision_value import DecisionValue, decision_value
    from bayes_cmma.decisions.derived import drf, elasticity, interval_table, rank_metrics
    from bayes_cmma.decisions.fusion import FusionChoice, decision_focused_fusion, fusion_frame
    from bayes_cmma.decisions.more_trials import value_frame, value_of_trials, value_of_trials_tie
    from bayes_cmma.decisions.northstar import northstar, northstar_frame
    from bayes_cmma.fitting.bayes import CMMAResult, MetricFit, fit, fit_metric
    from bayes_cmma.fitting.joint import JointFit, fit_joint
    from bayes_cmma.fitting.many import FitGrid, fit_many
    from bayes_cmma.fitting.spec import ModelSpec, load_spec
    from bayes_cmma.inputs.data import TrialData, joint_design, metric_design, read_trials
    from bayes_cmma.inputs.summarizer import summarize, summarize_files, summarize_units
    from bayes_cmma.reporting.report import render_report, write_report


#: Modules reachable as attributes (``bc.plots.sensitivity_plot``), imported on first use; the
#: names are those of the earlier flat layout, kept stable.
_SUBMODULES = {
    "plots": "reporting.plots", "report": "reporting.report", "outputs": "reporting.outputs",
    "checking": "checks.checking", "compare": "checks.compare", "calibration": "checks.calibration",
    "sensitivity": "checks.sensitivity", "assumptions": "checks.assumptions", "summarizer": "inputs.summarizer",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"bayes_cmma.{_SUBMODULES[name]}")
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
    "BilevelFusion",
    "CMMAResult",
    "ConvergenceWarning",
    "DataError",
    "DecisionValue",
    "DegreeComparison",
    "Example",
    "FitGrid",
    "FusionChoice",
    "JointFit",
    "MetricFit",
    "ModelSpec",
    "OLSResult",
    "RelevanceCheck",
    "RelevanceWarning",
    "SpecError",
    "TrialData",
    "a3_sensitivity",
    "augment",
    "bilevel_fusion",
    "cmma_ols",
    "compare_degrees",
    "decision_focused_fusion",
    "decision_value",
    "diagnostics_table",
    "drf",
    "elasticity",
    "fit",
    "fit_joint",
    "fit_many",
    "fit_metric",
    "fusion_frame",
    "interval_table",
    "joint_design",
    "load_example",
    "load_spec",
    "metric_design",
    "northstar",
    "northstar_frame",
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
    "value_frame",
    "value_of_trials",
    "value_of_trials_tie",
    "write_report",
]
