"""The embedded example data set (simulated; see ``generate_example.py`` for how)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources

from bayes_cmma.inputs.data import TrialData, read_trials


@dataclass(frozen=True)
class Example:
    """The example trial summaries with what a user would know about them.

    Attributes
    ----------
    trials : TrialData
    kpi : str
    metrics : list of str
    at : dict of str to float
        Current per-user level of each metric (control-arm average over all trials).
    kpi_baseline : float
        Current per-user KPI level (control-arm average).
    info : dict
        Generator settings (seed, true DRF of ndcg, ...).
    """

    trials: TrialData
    kpi: str
    metrics: list[str]
    at: dict[str, float]
    kpi_baseline: float
    info: dict


def load_example() -> Example:
    """Load the embedded example: ~190 simulated search A/B tests from 8 teams.

    KPI ``gmv``; metrics ``ndcg``, ``mrr``, ``map`` with their 2nd and 3rd powers; standard errors and
    full within-trial covariances.
    """
    root = resources.files("bayes_cmma.datasets")
    with resources.as_file(root / "example_trials.csv") as t, resources.as_file(root / "example_cov.csv") as c:
        trials = read_trials(t, c)
    meta = tomllib.loads((root / "example.toml").read_text(encoding="utf-8"))
    return Example(
        trials=trials,
        kpi=meta["kpi"],
        metrics=list(meta["metrics"]),
        at={k: float(v) for k, v in meta["at"].items()},
        kpi_baseline=float(meta["kpi_baseline"]),
        info=meta["generator"],
    )
