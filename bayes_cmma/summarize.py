"""Unit-level logs to trial summaries (DESIGN §3).

The ATE of the KPI and of each metric power is a difference in arm means; their joint covariance is
Cov_t / n_t + Cov_c / n_c of the vector (Y, M, M^2, ..., M^P) within each arm. Only per-arm counts,
sums and sums of cross-products are needed: one pass, mergeable across chunks (:class:`ArmSums`
adds), so the same aggregation can run per partition of a distributed data frame. Values are shifted
by a per-trial reference (the trial's first row) before summing squares, for numerical stability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayes_cmma.data import quantity_name
from bayes_cmma.errors import DataError


@dataclass(frozen=True)
class ArmSums:
    """Sufficient statistics per (trial, arm): count, sum and cross-product sum of shifted values.

    Shapes: ``n`` (trial, arm), ``s1`` (trial, arm, q), ``s2`` (trial, arm, q, q), ``shift``
    (trial, q); arm 0 = control, 1 = treatment.
    """

    n: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    shift: np.ndarray

    def __add__(self, other: ArmSums) -> ArmSums:
        if not np.array_equal(self.shift, other.shift):
            raise ValueError("ArmSums can only be merged when computed with the same shift.")
        return ArmSums(self.n + other.n, self.s1 + other.s1, self.s2 + other.s2, self.shift)


def arm_sums(values: np.ndarray, trial_idx: np.ndarray, arm: np.ndarray, shift: np.ndarray, n_trials: int) -> ArmSums:
    """Accumulate :class:`ArmSums` of ``values`` (units, q) with per-trial ``shift`` (trial, q)."""
    q = values.shape[1]
    x = values - shift[trial_idx]
    g = trial_idx * 2 + arm
    size = n_trials * 2
    n = np.bincount(g, minlength=size).reshape(n_trials, 2).astype(float)
    s1 = np.empty((size, q))
    s2 = np.empty((size, q, q))
    for i in range(q):
        s1[:, i] = np.bincount(g, weights=x[:, i], minlength=size)
        for j in range(i + 1):
            s2[:, i, j] = s2[:, j, i] = np.bincount(g, weights=x[:, i] * x[:, j], minlength=size)
    return ArmSums(n, s1.reshape(n_trials, 2, q), s2.reshape(n_trials, 2, q, q), shift)


def ate_from_sums(sums: ArmSums) -> tuple[np.ndarray, np.ndarray]:
    """ATE (trial, q) and its covariance (trial, q, q) from arm sums (unbiased arm covariances)."""
    n = sums.n[..., None]
    mean = sums.s1 / n
    centred = sums.s2 - n[..., None] * mean[..., :, None] * mean[..., None, :]
    cov_arm = centred / (n[..., None] - 1)
    ate = mean[:, 1] - mean[:, 0]
    cov = cov_arm[:, 1] / sums.n[:, 1, None, None] + cov_arm[:, 0] / sums.n[:, 0, None, None]
    return ate, cov


def summarize_units(
    units: pd.DataFrame,
    *,
    kpi: str,
    metrics: list[str],
    degree: int = 3,
    trial: str = "trial",
    team: str | None = "team",
    treatment: str = "treated",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trial table and covariance table (toolkit format) from a unit-level table.

    Parameters
    ----------
    units : DataFrame
        One row per unit with trial, (team), 0/1 treatment, KPI and metric columns.
    kpi : str
    metrics : list of str
    degree : int
        Powers 1..degree of each metric are summarised.

    Returns
    -------
    (trials, covariance) : tuple of DataFrames
    """
    cols = [trial, treatment, kpi, *metrics] + ([team] if team else [])
    missing = [c for c in cols if c not in units.columns]
    if missing:
        raise DataError(f"unit table is missing column(s) {', '.join(map(repr, missing))}.")
    arm = units[treatment].to_numpy()
    if not np.isin(arm, (0, 1)).all():
        raise DataError(f"column {treatment!r} must be 0 (control) or 1 (treatment).")
    trial_codes, trial_labels = pd.factorize(units[trial].astype(str), sort=False)
    names = [kpi] + [quantity_name(m, p) for m in metrics for p in range(1, degree + 1)]
    columns = [units[kpi].to_numpy(float)]
    for m in metrics:
        v = units[m].to_numpy(float)
        columns.extend(v**p for p in range(1, degree + 1))
    values = np.column_stack(columns)
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise DataError(f"unit table has a non-finite KPI/metric value in trial {trial_labels[trial_codes[bad]]!r}.")
    first = np.unique(trial_codes, return_index=True)[1]
    shift = values[first]
    sums = arm_sums(values, trial_codes, arm.astype(np.int64), shift, len(trial_labels))
    small = np.argwhere(sums.n < 2)
    if small.size:
        k, a = small[0]
        raise DataError(
            f"trial {trial_labels[k]!r} has {int(sums.n[k, a])} unit(s) in its "
            f"{'treatment' if a else 'control'} arm; each arm needs at least 2."
        )
    ate, cov = ate_from_sums(sums)
    team_of = units.groupby(trial_codes)[team].first().astype(str).to_numpy() if team else None
    rows = []
    cov_rows = []
    for k, label in enumerate(trial_labels):
        for i, q in enumerate(names):
            row = {"trial": label, "quantity": q, "estimate": ate[k, i], "std_error": np.sqrt(cov[k, i, i])}
            if team_of is not None:
                row = {"trial": label, "team": team_of[k], **{kk: v for kk, v in row.items() if kk != "trial"}}
            rows.append(row)
            for j in range(i):
                cov_rows.append({"trial": label, "quantity_1": names[j], "quantity_2": q, "covariance": cov[k, j, i]})
    return pd.DataFrame(rows), pd.DataFrame(cov_rows)
