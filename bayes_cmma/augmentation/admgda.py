"""The ``admgda`` baseline: the paper's OLS fitted on a causally augmented trial table.

Each trial is a row (team, metric-power ATEs ``M^1..M^P``, KPI ATE). The table is augmented
(:func:`bayes_cmma.augmentation.augment.augment`) along the DAG

    team -> M^1 -> ... -> M^P -> KPI,   team -> every M^p and KPI,   every M^p -> every later M^q and KPI,

with the team's kernel conditioning exactly on the team; then Algorithm 1 (KPI ATE on an intercept,
team dummies and the metric powers) is fitted by weighted least squares on the augmented rows.
Intervals: a percentile bootstrap over trials, resampled within teams (so every team keeps its
trials' count), each resample augmented and fitted anew. Like Algorithm 1, it ignores the
measurement error of the ATEs; the augmentation smooths the table but adds no information, which is
what the few-trials study measures (``docs/augmentation.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayes_cmma.augmentation.augment import WEIGHT, AugmentationError, Categorical, augment, make_dag
from bayes_cmma.baselines.ols import ols_arrays
from bayes_cmma.errors import DataError
from bayes_cmma.inputs.data import MetricDesign

DEFAULT_THETA = 1e-2
DEFAULT_BOOT = 200


@dataclass(frozen=True)
class ADMGDAResult:
    """Point estimate of beta (power order), bootstrap standard errors and percentile interval."""

    beta: np.ndarray
    std_error: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n_boot: int
    failed_boot: int
    rows: int


def _trial_frame(design: MetricDesign) -> tuple[pd.DataFrame, list[str]]:
    names = [f"m{p}" for p in range(1, design.degree + 1)]
    frame = pd.DataFrame(design.z[:, 1:], columns=names)
    frame.insert(0, "team", np.asarray(design.teams, dtype=object)[design.team_idx])
    frame["kpi"] = design.z[:, 0]
    return frame, names


def _dag(powers: list[str]):
    edges = [("team", p) for p in powers] + [("team", "kpi")]
    edges += [(a, b) for i, a in enumerate(powers) for b in powers[i + 1:]] + [(p, "kpi") for p in powers]
    return make_dag(edges, ["team", *powers, "kpi"])


def _wls(aug: pd.DataFrame, teams: list[str], powers: list[str]) -> np.ndarray:
    team_idx = pd.Categorical(aug["team"], categories=teams).codes
    X, _, y = ols_arrays(aug["kpi"].to_numpy(float), aug[powers].to_numpy(float), team_idx, teams)
    sw = np.sqrt(aug[WEIGHT].to_numpy())
    norms = np.linalg.norm(X, axis=0)
    norms[norms == 0] = 1.0
    coef, *_ = np.linalg.lstsq((X / norms) * sw[:, None], y * sw, rcond=None)
    return (coef / norms)[-len(powers):]


def admgda_fit(design: MetricDesign, *, theta: float = DEFAULT_THETA) -> tuple[np.ndarray, int]:
    """beta of weighted Algorithm 1 on the augmented trial table, and the augmented row count (complete trials)."""
    frame, powers = _trial_frame(design.complete_cases())
    aug = augment(frame, _dag(powers), theta=theta, kernels={"team": Categorical()})
    return _wls(aug, list(design.teams), powers), len(aug)


def admgda_estimate(design: MetricDesign, rng: np.random.Generator, *, theta: float = DEFAULT_THETA,
                    n_boot: int = DEFAULT_BOOT, prob: float = 0.95) -> ADMGDAResult:
    """Point estimate and a within-team percentile bootstrap over trials.

    Raises
    ------
    DataError
        When the augmentation of the full table fails (see :class:`bayes_cmma.augmentation.augment.AugmentationError`).
    """
    design = design.complete_cases()
    beta, rows = admgda_fit(design, theta=theta)
    groups = [np.flatnonzero(design.team_idx == g) for g in range(len(design.teams))]
    draws, failed = [], 0
    for _ in range(n_boot):
        pick = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups if len(g)])
        sub = MetricDesign(z=design.z[pick], S=design.S[pick], team_idx=design.team_idx[pick],
                           trials=[design.trials[i] for i in pick], teams=design.teams,
                           quantities=design.quantities, kpi=design.kpi, metric=design.metric,
                           degree=design.degree, n_filled=0)
        try:
            draws.append(admgda_fit(sub, theta=theta)[0])
        except (AugmentationError, np.linalg.LinAlgError):
            failed += 1
    if len(draws) < 2:
        raise DataError(f"admgda: {failed} of {n_boot} bootstrap resamples could not be augmented; raise n_boot "
                        "or lower theta.")
    draws = np.asarray(draws)
    lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return ADMGDAResult(beta, draws.std(axis=0, ddof=1), lo, hi, len(draws), failed, rows)
