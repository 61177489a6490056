"""The observational relation of the KPI to each metric in unit-level logs: plentiful, but confounded.

Beside the trials' ATEs, unit-level logs hold a second, cross-sectional source of information: how
a user's KPI varies with the user's metric within an arm. Per team (or over all trials) and per
metric, :func:`observational_table` reports the least-squares regression of the KPI on the metric's
powers M, M^2, ..., M^P within each (trial, arm) cell, that is with a fixed effect per cell, in the
control arms by default (``arms="control"``; ``"both"`` adds the treatment arms). It comes from
the same per-(trial, arm) moments the summarizer computes, so it costs no extra pass over the logs
and runs on pandas or Dask alike. With W the pooled centred cross-products of (Y, M^1..M^P) over the
cells, N units and C cells::

    b = W_mm^-1 W_my,    s^2 = (W_yy - b' W_my) / (N - C - P),    Cov(b) = s^2 W_mm^-1

(the classical covariance: with millions of units the standard error is tiny either way, and what
matters is the bias). That bias is the reason the toolkit exists. A user whose idiosyncratic metric
level is high tends to have a high KPI for reasons other than the metric (unit-level confounding),
and the regression reads that as the metric's effect. In the KDD 2020 paper's simulation the
unit-level correlation of the metric's and the KPI's idiosyncratic parts is 0.95 with equal sds, so
the observational slope is 4 + 0.95 = 4.95 against a true 4 (the LSEM row of the paper's Table 1).
Only the trials identify the causal DRF; the observational slope is an input for fusing the two
sources, never a substitute.

Table format (``observational.csv``; one row per team and metric power): ``team``, ``metric``,
``power``, ``quantity`` (``ndcg``, ``ndcg^2``), ``estimate``, ``std_error``, ``cov_power_1`` ...
``cov_power_P`` (the covariance with the same team's and metric's power p's estimate), ``n_units``,
``n_cells`` and ``arms``. :func:`read_observational` reads and checks it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bayes_cmma.errors import DataError
from bayes_cmma.inputs.data import quantity_name

#: Which arms' units enter the observational regression.
ARMS = ("control", "both", "treatment")
#: Label of the pooled row set when the regression is over all trials (or the logs have no team).
ALL_TEAMS = "all"
REQUIRED = ("team", "metric", "power", "estimate", "std_error")


def _arm_mask(arms: str) -> np.ndarray:
    if arms not in ARMS:
        raise DataError(f"arms must be one of {', '.join(ARMS)}, got {arms!r}.")
    return np.array([arms in ("control", "both"), arms in ("treatment", "both")])


def _team_scatters(moments, arms: str, by: str):
    """Per team, in first-seen order: (team, W, N, C), the pooled centred cross-products of the cells
    of the chosen arms, their units and their (trial, arm) cells."""
    use = _arm_mask(arms)
    if by not in ("team", "all"):
        raise DataError(f"by must be 'team' or 'all', got {by!r}.")
    teams = moments.teams if (by == "team" and moments.teams is not None) else None
    labels = np.full(len(moments.trials), ALL_TEAMS, dtype=object) if teams is None else teams
    for team in dict.fromkeys(labels[np.argsort(moments.order, kind="stable")]):
        in_team = labels == team
        n = moments.n[in_team][:, use]
        yield team, moments.m2[in_team][:, use].sum(axis=(0, 1)), float(n.sum()), int((n > 0).sum())


def _regress(W: np.ndarray, idx: np.ndarray, df: float, constant, collinear: str) -> tuple[np.ndarray, np.ndarray]:
    """b = W_mm^-1 W_my and its classical covariance for the regressors ``idx`` (KPI at 0).

    ``constant(k)`` is the error message when regressor k does not vary; ``collinear`` the one when
    the regressors are collinear. The solve is done on the correlation scale.
    """
    Wmm = W[np.ix_(idx, idx)]
    d = np.sqrt(np.diag(Wmm))
    if not np.all(d > 0):
        raise DataError(constant(int(np.flatnonzero(~(d > 0))[0])))
    scaled = Wmm / np.outer(d, d)
    if np.linalg.cond(scaled) > 1e12:
        raise DataError(collinear)
    inv = np.linalg.inv(scaled) / np.outer(d, d)
    b = inv @ W[idx, 0]
    return b, max(float(W[0, 0] - b @ W[idx, 0]), 0.0) / df * inv


def observational_table(moments, cols, arms: str = "control", by: str = "team") -> pd.DataFrame:
    """The within-cell regression of the KPI on each metric's powers, per team (see the module docstring).

    Parameters
    ----------
    moments : :class:`~bayes_cmma.inputs.summarizer.ArmMoments`
        Merged per-(trial, arm) moments of (KPI, every metric's powers).
    cols : :class:`~bayes_cmma.inputs.summarizer.Columns`
    arms : {"control", "both", "treatment"}
    by : {"team", "all"}
        One regression per team, or one over all trials (the only choice without a team column).

    Raises
    ------
    DataError
        A team with too few units for the regression, or a metric power that does not vary within
        the cells (naming the team and the metric).
    """
    P = cols.degree
    rows = []
    for team, W, N, C in _team_scatters(moments, arms, by):
        for j, metric in enumerate(cols.metrics):
            df = N - C - P
            if df < 1:
                raise DataError(
                    f"team {team!r}: {int(N)} unit(s) in {C} (trial, arm) cell(s) of the {arms} arm(s) are too few "
                    f"for the observational regression of {cols.kpi!r} on {P} power(s) of {metric!r}."
                )
            b, cov = _regress(
                W, 1 + j * P + np.arange(P), df,
                lambda _k, t=team, m=metric: (f"team {t!r}: {m!r} does not vary within the trials' arms, so the "
                                              "observational regression is undefined; drop the metric."),
                f"team {team!r}: the powers of {metric!r} are collinear within the arms; summarise a lower degree.",
            )
            for p in range(P):
                row = {"team": team, "metric": metric, "power": p + 1, "quantity": quantity_name(metric, p + 1),
                       "estimate": b[p], "std_error": float(np.sqrt(cov[p, p]))}
                row |= {f"cov_power_{q + 1}": cov[p, q] for q in range(P)}
                rows.append(row | {"n_units": int(N), "n_cells": C, "arms": arms})
    return pd.DataFrame(rows)


def partial_table(moments, cols, arms: str = "control", by: str = "team") -> pd.DataFrame:
    """The within-cell regression of the KPI on every metric's first power at once, per team.

    The partial slopes: each metric's association with the KPI holding the other metrics fixed, which
    the decision-focused fusion of a composite launch rule borrows from
    (:func:`bayes_cmma.decision_focused_fusion`). Same estimator and covariance as
    :func:`observational_table`, with the metrics in place of one metric's powers. Columns: ``team``,
    ``metric``, ``estimate``, ``std_error``, ``cov_<metric>`` for every metric, ``n_units``, ``n_cells``,
    ``arms``.
    """
    J = len(cols.metrics)
    idx = 1 + np.arange(J) * cols.degree  # each metric's first power
    rows = []
    for team, W, N, C in _team_scatters(moments, arms, by):
        df = N - C - J
        if df < 1:
            raise DataError(f"team {team!r}: {int(N)} unit(s) in {C} (trial, arm) cell(s) of the {arms} arm(s) are too "
                            f"few for the observational regression of {cols.kpi!r} on {J} metric(s).")
        b, cov = _regress(
            W, idx, df,
            lambda k, t=team: (f"team {t!r}: {cols.metrics[k]!r} does not vary within the trials' arms; drop the "
                               "metric."),
            f"team {team!r}: the metrics are collinear within the arms, so their partial slopes are undefined; "
            "drop one.",
        )
        for j, metric in enumerate(cols.metrics):
            rows.append({"team": team, "metric": metric, "estimate": b[j], "std_error": float(np.sqrt(cov[j, j])),
                         **{f"cov_{m}": cov[j, q] for q, m in enumerate(cols.metrics)},
                         "n_units": int(N), "n_cells": C, "arms": arms})
    return pd.DataFrame(rows)


def partial_slopes(table: str | Path | pd.DataFrame, metrics: list[str]) -> dict[str, float]:
    """Every metric's partial slope from a :func:`partial_table`, the teams combined by their precision.

    b = (sum_g V_g^-1)^-1 sum_g V_g^-1 b_g over the teams g. Raises :class:`DataError` naming a
    missing column or metric, or a team whose covariance is not positive definite.
    """
    from bayes_cmma.inputs.data import _read_table

    frame = table.copy() if isinstance(table, pd.DataFrame) else _read_table(table, "observational partial table",
                                                                                text=("team", "metric"))
    needed = ["team", "metric", "estimate", *(f"cov_{m}" for m in metrics)]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"observational partial table is missing column(s) {', '.join(map(repr, missing))} "
                        "(bayes-cmma summarize --observational-partial-out writes it, for the same metrics).")
    frame["team"] = frame["team"].astype(str).str.strip()
    frame["metric"] = frame["metric"].astype(str).str.strip()
    precision, weighted = np.zeros((len(metrics), len(metrics))), np.zeros(len(metrics))
    for team, g in frame.groupby("team", sort=False):
        have = set(g["metric"])
        lacking = [m for m in metrics if m not in have]
        if lacking:
            raise DataError(f"observational partial table: team {team!r} has no row for metric(s) "
                            f"{', '.join(map(repr, lacking))}.")
        g = g.set_index("metric").loc[metrics]
        try:
            b = g["estimate"].to_numpy(dtype=float)
            V = g[[f"cov_{m}" for m in metrics]].to_numpy(dtype=float)
            inv = np.linalg.inv(0.5 * (V + V.T))
            np.linalg.cholesky(inv)
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise DataError(f"observational partial table: team {team!r}: the estimates and covariances of "
                            f"{', '.join(metrics)} must be numbers, the covariance positive definite ({exc}).") from exc
        if not np.all(np.isfinite(b)):
            raise DataError(f"observational partial table: team {team!r} has a non-finite estimate.")
        precision += inv
        weighted += inv @ b
    return dict(zip(metrics, np.linalg.solve(precision, weighted).tolist(), strict=True))


def read_observational(table: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Read and check an observational table (the format of :func:`observational_table`).

    Raises
    ------
    DataError
        A missing column, a non-numeric or non-finite estimate, a standard error that is not
        positive, a (team, metric) without power 1 or with a gap in its powers, a covariance
        column that disagrees with the standard error or is not symmetric; the message names the
        team and metric.
    """
    from bayes_cmma.inputs.data import _read_table

    frame = table.copy() if isinstance(table, pd.DataFrame) else _read_table(table, "observational table",
                                                                                text=("team", "metric", "quantity"))
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(f"observational table is missing column(s) {', '.join(map(repr, missing))}; it needs "
                        f"{', '.join(REQUIRED)} (bayes-cmma summarize --observational-out writes it).")
    frame["team"] = frame["team"].astype(str).str.strip()
    frame["metric"] = frame["metric"].astype(str).str.strip()
    for column in ("power", "estimate", "std_error"):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            r = frame.loc[bad].iloc[0]
            raise DataError(f"observational table: {column!r} of team {r['team']!r}, metric {r['metric']!r} is "
                            f"{r[column]!r}, not a finite number.")
        frame[column] = values
    if not (frame["std_error"] > 0).all():
        r = frame.loc[~(frame["std_error"] > 0)].iloc[0]
        raise DataError(f"observational table: std_error of team {r['team']!r}, metric {r['metric']!r} is "
                        f"{r['std_error']:g}; standard errors must be positive.")
    frame["power"] = frame["power"].astype(int)
    for (team, metric), g in frame.groupby(["team", "metric"], sort=False):
        powers = sorted(g["power"])
        if powers != list(range(1, len(powers) + 1)):
            raise DataError(f"observational table: team {team!r}, metric {metric!r} has powers {powers}; it needs "
                            "1, 2, ..., P once each.")
        P = len(powers)
        columns = [f"cov_power_{q}" for q in range(1, P + 1)]
        if P > 1 and any(c not in frame.columns for c in columns):
            raise DataError(f"observational table: team {team!r}, metric {metric!r} has {P} powers but not the "
                            f"columns {', '.join(columns)} with their covariances.")
        if P > 1:
            cov = g.sort_values("power")[columns].to_numpy(dtype=float)
            se = g.sort_values("power")["std_error"].to_numpy()
            if not (np.allclose(cov, cov.T, rtol=1e-6, atol=0) and np.allclose(np.diag(cov), se**2, rtol=1e-6)):
                raise DataError(f"observational table: team {team!r}, metric {metric!r}: the cov_power columns must "
                                "be symmetric with std_error^2 on the diagonal.")
    return frame.reset_index(drop=True)


def observational_slopes(
    observational: pd.DataFrame | str | Path | dict[str, tuple[float, float]], metrics: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Each metric's observational (linear) slope and its standard error, (metric,) arrays.

    From an observational table (:func:`observational_table`, degree 1; the teams' slopes combined
    with inverse-variance weights) or a mapping ``metric -> (slope, standard error)``.

    Raises
    ------
    DataError
        A metric with no slope, a table with powers above 1 for a metric (the joint model is linear),
        or a standard error that is not positive.
    """
    if isinstance(observational, dict):
        missing = [m for m in metrics if m not in observational]
        if missing:
            raise DataError(f"no observational slope for metric(s) {', '.join(map(repr, missing))}; give "
                            f"(slope, standard error) for every metric ({', '.join(metrics)}).")
        try:
            pairs = np.array([[float(v) for v in observational[m]] for m in metrics])
        except (TypeError, ValueError) as exc:
            raise DataError(f"observational slopes must be (slope, standard error) pairs per metric ({exc}).") from exc
        if pairs.shape != (len(metrics), 2):
            raise DataError("observational slopes must be (slope, standard error) pairs per metric.")
        est, se = pairs[:, 0], pairs[:, 1]
    else:
        table = read_observational(observational)
        est, se = np.empty(len(metrics)), np.empty(len(metrics))
        for j, m in enumerate(metrics):
            rows = table[table["metric"] == m]
            if rows.empty:
                raise DataError(f"the observational table has no rows for metric {m!r}; it has "
                                f"{', '.join(map(repr, table['metric'].unique()))}.")
            if (rows["power"] > 1).any():
                raise DataError(f"the observational table regresses the KPI on powers of {m!r} up to "
                                f"{int(rows['power'].max())}; the joint model's DRFs are linear, so it needs the "
                                "linear regression: summarise with --degree 1.")
            w = 1.0 / rows["std_error"].to_numpy() ** 2
            est[j] = float(np.sum(w * rows["estimate"].to_numpy()) / w.sum())
            se[j] = float(1.0 / np.sqrt(w.sum()))
    bad = ~(np.isfinite(est) & np.isfinite(se) & (se > 0))
    if bad.any():
        m = metrics[int(np.flatnonzero(bad)[0])]
        raise DataError(f"observational slope of {m!r}: the slope must be finite and its standard error positive.")
    return est, se


__all__ = [
    "ALL_TEAMS", "ARMS", "observational_slopes", "observational_table", "partial_slopes", "partial_table",
    "read_observational",
]
