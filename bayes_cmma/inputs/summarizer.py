"""Unit-level logs to trial summaries, on pandas or on Dask.

The ATE of the KPI and of each metric power is a difference in arm means; their joint covariance is
Cov_t / n_t + Cov_c / n_c of the vector (Y, M, M^2, ..., M^P) within each arm. So only per-arm
counts, means and centred cross-product sums are needed (:class:`ArmMoments`). They are computed
per chunk of rows (a block of a pandas frame, a file, a Dask partition) and merged exactly with the
pairwise update of Chan, Golub & LeVeque (1979)::

    n = sum n_i,   mean = sum n_i mean_i / n,   M2 = sum [M2_i + n_i (mean_i - mean)(mean_i - mean)']

Every sum of squares is taken about a mean, never about 0, so a KPI around 1e6 with a spread of 1
keeps full precision. Merging is associative, so the chunks can be reduced in any tree: on Dask each
partition is summarised where it lives and only the small per-(trial, arm) moments travel.

Entry points: :func:`summarize` (pandas or Dask data frame), :func:`summarize_files` (CSV/Parquet
files, engine ``"pandas"`` or ``"dask"``); :func:`summarize_units` is the pandas-only name kept from
earlier releases.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_cmma.errors import DataError
from bayes_cmma.inputs.data import quantity_name, trial_frames

#: Rows per block when a pandas frame is summarised in memory; bounds the temporaries (the powers
#: of every metric) to about ``BLOCK_ROWS * quantities * 8`` bytes a few times over.
BLOCK_ROWS = 1 << 20

_ORDER_BASE = 1 << 40  # order key = chunk number * _ORDER_BASE + row position within the chunk


@dataclass(frozen=True)
class Columns:
    """Which columns of a unit-level table hold what, and the quantities summarised."""

    kpi: str
    metrics: tuple[str, ...]
    degree: int
    trial: str = "trial"
    team: str | None = "team"
    treatment: str = "treated"

    @property
    def needed(self) -> list[str]:
        return [self.trial, self.treatment, self.kpi, *self.metrics] + ([self.team] if self.team else [])

    @property
    def labels(self) -> tuple[str, ...]:
        """Label columns (read as text)."""
        return (self.trial, self.team) if self.team else (self.trial,)

    @property
    def quantities(self) -> list[str]:
        return [self.kpi] + [quantity_name(m, p) for m in self.metrics for p in range(1, self.degree + 1)]

    def check(self, columns: Iterable[Any]) -> None:
        have = [str(c) for c in columns]
        missing = [c for c in self.needed if c not in have]
        if missing:
            raise DataError(
                f"unit table is missing column(s) {', '.join(map(repr, missing))}; it has "
                f"{', '.join(map(repr, have))}. Name the columns with --trial/--team/--treatment/--kpi/--metric."
            )


@dataclass(frozen=True)
class ArmMoments:
    """Per (trial, arm) count, mean and centred cross-product sum of (Y, M, M^2, ...).

    Shapes: ``trials`` (k,) labels, ``teams`` (k,) labels or None, ``order`` (k,) int first-seen key
    (chunk number, row), ``n`` (k, 2), ``mean`` (k, 2, q), ``m2`` (k, 2, q, q); arm 0 = control,
    1 = treatment. An arm with no units in a chunk has n = 0, mean = 0, m2 = 0.
    """

    trials: np.ndarray
    teams: np.ndarray | None
    order: np.ndarray
    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray


def _label_column(frame: pd.DataFrame, column: str) -> pd.Series:
    """Labels as stripped text (as :func:`bayes_cmma.read_trials` reads them); a missing or blank one is an error."""
    raw = frame[column]
    text = raw.astype(str).str.strip()
    blank = raw.isna().to_numpy() | (text == "").to_numpy()
    if blank.any():
        raise DataError(
            f"unit table: column {column!r} is missing or blank in {int(blank.sum())} row(s); give every unit "
            "a label (or drop those rows)."
        )
    return text


def chunk_moments(frame: pd.DataFrame, cols: Columns, chunk: int = 0) -> ArmMoments:
    """:class:`ArmMoments` of one chunk of unit rows (two passes over the chunk: means, then squares).

    Raises :class:`DataError` naming the column or trial for a treatment other than 0/1, a
    non-finite KPI or metric value, or a trial listed under two teams.
    """
    cols.check(frame.columns)
    q = len(cols.quantities)
    if len(frame) == 0:
        empty = np.array([], dtype=object)
        return ArmMoments(empty, empty if cols.team else None, np.zeros(0, np.int64), np.zeros((0, 2)),
                          np.zeros((0, 2, q)), np.zeros((0, 2, q, q)))
    treat = pd.to_numeric(frame[cols.treatment], errors="coerce").to_numpy(dtype=float)
    if not np.isin(treat, (0.0, 1.0)).all():
        bad = frame[cols.treatment].to_numpy()[~np.isin(treat, (0.0, 1.0))][0]
        raise DataError(f"column {cols.treatment!r} must be 0 (control) or 1 (treatment); found {bad}.")
    arm = treat.astype(np.int64)
    codes, labels = pd.factorize(_label_column(frame, cols.trial), sort=False)
    labels = np.asarray(labels, dtype=object)
    k = len(labels)
    columns = [frame[cols.kpi].to_numpy(dtype=float)]
    for m in cols.metrics:
        v = frame[m].to_numpy(dtype=float)
        columns.extend(v**p for p in range(1, cols.degree + 1))
    values = np.column_stack(columns)
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise DataError(f"unit table has a non-finite KPI/metric value in trial {labels[codes[bad]]!r}.")
    g = codes * 2 + arm
    size = 2 * k
    n = np.bincount(g, minlength=size).astype(float)
    safe = np.where(n > 0, n, 1.0)
    mean = np.column_stack([np.bincount(g, weights=values[:, i], minlength=size) for i in range(q)]) / safe[:, None]
    dev = values - mean[g]
    # corrected two-pass: the rounding error of the first-pass mean, removed with one more sum
    correction = np.column_stack([np.bincount(g, weights=dev[:, i], minlength=size) for i in range(q)]) / safe[:, None]
    mean += correction
    dev -= correction[g]
    m2 = np.empty((size, q, q))
    for i in range(q):
        for j in range(i + 1):
            m2[:, i, j] = m2[:, j, i] = np.bincount(g, weights=dev[:, i] * dev[:, j], minlength=size)
    first = np.unique(codes, return_index=True)[1]
    teams = None
    if cols.team:
        team_codes, team_labels = pd.factorize(_label_column(frame, cols.team), sort=False)
        lo = np.full(k, np.iinfo(np.int64).max)
        hi = np.full(k, -1)
        np.minimum.at(lo, codes, team_codes)
        np.maximum.at(hi, codes, team_codes)
        split = np.flatnonzero(lo != hi)
        if split.size:
            t = split[0]
            raise DataError(
                f"trial {labels[t]!r} is listed under more than one team ({team_labels[lo[t]]!r} and "
                f"{team_labels[hi[t]]!r}); each trial must belong to one team."
            )
        teams = np.asarray(team_labels, dtype=object)[lo]
    return ArmMoments(
        trials=labels,
        teams=teams,
        order=chunk * _ORDER_BASE + first.astype(np.int64),
        n=n.reshape(k, 2),
        mean=mean.reshape(k, 2, q),
        m2=m2.reshape(k, 2, q, q),
    )


def merge_moments(*parts: ArmMoments) -> ArmMoments:
    """Merge the moments of several chunks exactly (Chan et al.); associative, any grouping works."""
    parts = tuple(p for p in parts if len(p.trials)) or parts[:1]
    if len(parts) == 1:
        return parts[0]
    trials = np.concatenate([p.trials for p in parts])
    codes, labels = pd.factorize(trials, sort=False)
    labels = np.asarray(labels, dtype=object)
    k = len(labels)
    n_i = np.concatenate([p.n for p in parts])
    mean_i = np.concatenate([p.mean for p in parts])
    m2_i = np.concatenate([p.m2 for p in parts])
    order_i = np.concatenate([p.order for p in parts])
    q = mean_i.shape[-1]
    n = np.zeros((k, 2))
    np.add.at(n, codes, n_i)
    weighted = np.zeros((k, 2, q))
    np.add.at(weighted, codes, n_i[..., None] * mean_i)
    mean = weighted / np.where(n > 0, n, 1.0)[..., None]
    dev = mean_i - mean[codes]
    m2 = np.zeros((k, 2, q, q))
    np.add.at(m2, codes, m2_i + n_i[..., None, None] * dev[..., :, None] * dev[..., None, :])
    order = np.full(k, np.iinfo(np.int64).max)
    np.minimum.at(order, codes, order_i)
    teams = None
    if parts[0].teams is not None:
        teams_i = np.concatenate([p.teams for p in parts])
        # the team of each trial where first listed; every other chunk must agree
        teams = teams_i[np.unique(codes, return_index=True)[1]]
        clash = np.flatnonzero(teams_i != teams[codes])
        if clash.size:
            r = clash[0]
            raise DataError(
                f"trial {labels[codes[r]]!r} is listed under more than one team ({teams[codes[r]]!r} and "
                f"{teams_i[r]!r}); each trial must belong to one team."
            )
    return ArmMoments(labels, teams, order, n, mean, m2)


def ate_from_moments(moments: ArmMoments) -> tuple[np.ndarray, np.ndarray]:
    """ATE (trial, q) and its covariance (trial, q, q) (unbiased arm covariances over n - 1)."""
    n = moments.n
    cov_arm = moments.m2 / (n - 1)[..., None, None]
    ate = moments.mean[:, 1] - moments.mean[:, 0]
    cov = cov_arm[:, 1] / n[:, 1, None, None] + cov_arm[:, 0] / n[:, 0, None, None]
    return ate, cov


def _tables(moments: ArmMoments, cols: Columns) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The toolkit's trial table and covariance table from merged moments (trials in first-seen order)."""
    if len(moments.trials) == 0:
        raise DataError("unit table has no rows; it needs units of at least one trial.")
    small = np.argwhere(moments.n < 2)
    if small.size:
        k, a = small[np.argmin(moments.order[small[:, 0]])]
        raise DataError(
            f"trial {moments.trials[k]!r} has {int(moments.n[k, a])} unit(s) in its "
            f"{'treatment' if a else 'control'} arm; each arm needs at least 2."
        )
    q = len(cols.quantities)
    few = np.flatnonzero(moments.n.sum(axis=1) - 2 < q)
    if few.size:
        k = few[np.argmin(moments.order[few])]
        raise DataError(
            f"trial {moments.trials[k]!r} has {int(moments.n[k].sum())} units; the covariance of its {q} ATEs "
            f"({', '.join(cols.quantities)}) needs at least {q + 2} units (both arms together) to be of full rank. "
            "Drop the trial or summarise a lower degree."
        )
    ate, cov = ate_from_moments(moments)
    var = np.diagonal(cov, axis1=1, axis2=2)
    flat = np.argwhere(~(var > 0))
    if flat.size:
        k, i = flat[np.argmin(moments.order[flat[:, 0]])]
        raise DataError(
            f"trial {moments.trials[k]!r}: {cols.quantities[i]!r} does not vary within either arm, so its ATE has "
            "a standard error of 0; drop the trial, or the metric if it is constant."
        )
    idx = np.argsort(moments.order, kind="stable")
    n = moments.n[idx]
    return trial_frames(moments.trials[idx], cols.quantities, ate[idx], cov[idx],
                        teams=None if moments.teams is None else moments.teams[idx], arm_sizes=n[:, ::-1])


def _columns(
    kpi: str, metrics: str | Sequence[str], degree: int, trial: str, team: str | None, treatment: str
) -> Columns:
    metric_list = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metric_list:
        raise DataError("no metric column given; name at least one (CLI: --metric NAME).")
    if int(degree) < 1:
        raise DataError(f"degree must be at least 1, got {degree}.")
    return Columns(kpi=kpi, metrics=metric_list, degree=int(degree), trial=trial, team=team or None,
                   treatment=treatment)


def _is_dask(frame: Any) -> bool:
    return type(frame).__module__.split(".")[0] in ("dask", "dask_expr") and hasattr(frame, "to_delayed")


def _dask_moments(frame: Any, cols: Columns, split_every: int = 8) -> ArmMoments:
    """Moments of a Dask DataFrame: one task per partition, merged in a tree of fan-in ``split_every``.

    Nothing but per-(trial, arm) moments leaves a partition. Computed with the active scheduler (a
    ``distributed.Client`` if one is open, else Dask's default).
    """
    import dask

    cols.check(frame.columns)
    parts = frame[cols.needed].to_delayed()
    tasks = [dask.delayed(_pandas_moments)(p, cols, i) for i, p in enumerate(parts)]
    while len(tasks) > 1:
        tasks = [dask.delayed(merge_moments)(*tasks[i:i + split_every]) for i in range(0, len(tasks), split_every)]
    (moments,) = dask.compute(tasks[0])
    return moments


def _pandas_moments(frame: pd.DataFrame, cols: Columns, chunk: int = 0, block_rows: int = BLOCK_ROWS) -> ArmMoments:
    if len(frame) <= block_rows:  # chunk_moments checks the columns
        return chunk_moments(frame, cols, chunk)
    # blocks of one chunk keep its row numbering, so first-seen order is the frame's row order
    parts = []
    for start in range(0, len(frame), block_rows):
        m = chunk_moments(frame.iloc[start:start + block_rows], cols, chunk)
        parts.append(ArmMoments(m.trials, m.teams, m.order + start, m.n, m.mean, m.m2))
    return merge_moments(*parts)


def summarize(
    units: Any,
    *,
    kpi: str,
    metrics: str | Sequence[str],
    degree: int = 3,
    trial: str = "trial",
    team: str | None = "team",
    treatment: str = "treated",
    observational: str | None = None,
    partial: bool = False,
) -> tuple[pd.DataFrame, ...]:
    """Trial table and covariance table (the toolkit's input format) from unit-level rows.

    Parameters
    ----------
    units : pandas.DataFrame or dask.dataframe.DataFrame
        One row per unit with trial, (team), 0/1 treatment, KPI and metric columns. A Dask frame is
        summarised partition by partition on the active scheduler (a ``distributed.Client`` if one
        is open); only the per-(trial, arm) moments are gathered.
    kpi : str
    metrics : str or sequence of str
    degree : int
        Powers 1..degree of each metric are summarised.
    trial, team, treatment : str
        Column names; ``team=None`` when there is no team column.
    observational : {"control", "both", "treatment"}, optional
        Also return the observational table: per team and metric, the within-(trial, arm)
        regression of the KPI on the metric's powers in those arms
        (:func:`bayes_cmma.inputs.observational.observational_table`; confounded, see there). From the
        same pass over the rows.
    partial : bool
        With ``observational``, also return the partial-slope table (the KPI on every metric at once,
        :func:`bayes_cmma.inputs.observational.partial_table`) last.

    Returns
    -------
    (trials, covariance), (trials, covariance, observational) or (..., observational, partial)
        Trials in the order they first appear. The trial table carries each trial's arm sizes
        (``n_treated``, ``n_control``), which the pooled measurement model uses.

    Raises
    ------
    DataError
        Missing column, treatment other than 0/1, non-finite value, an arm with fewer than 2 units,
        a trial under two teams, no rows; the message names the column or trial.
    """
    cols = _columns(kpi, metrics, degree, trial, team, treatment)
    _check_arms(observational)
    moments = _dask_moments(units, cols) if _is_dask(units) else _pandas_moments(units, cols)
    trials, cov = _tables(moments, cols)
    if observational is None:
        if partial:
            raise DataError("partial=True needs observational= (the arms the regression uses).")
        return trials, cov
    extra = (_partial(moments, cols, observational),) if partial else ()
    return trials, cov, _observational(moments, cols, observational), *extra


def _check_arms(arms: str | None) -> None:
    from bayes_cmma.inputs.observational import ARMS

    if arms is not None and arms not in ARMS:
        raise DataError(f"observational arms must be one of {', '.join(ARMS)}, got {arms!r}.")


def _partial(moments: ArmMoments, cols: Columns, arms: str) -> pd.DataFrame:
    from bayes_cmma.inputs.observational import partial_table

    return partial_table(moments, cols, arms=arms, by="team")


def _observational(moments: ArmMoments, cols: Columns, arms: str) -> pd.DataFrame:
    from bayes_cmma.inputs.observational import observational_table

    return observational_table(moments, cols, arms=arms, by="team")


def summarize_units(
    units: pd.DataFrame,
    *,
    kpi: str,
    metrics: Sequence[str],
    degree: int = 3,
    trial: str = "trial",
    team: str | None = "team",
    treatment: str = "treated",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Same as :func:`summarize` without the observational table (kept name; accepts pandas or Dask frames)."""
    return summarize(units, kpi=kpi, metrics=metrics, degree=degree, trial=trial, team=team, treatment=treatment)


def _is_url(path: str) -> bool:
    return "://" in path


def _parquet(path: str) -> bool:
    local = not _is_url(path) and Path(path).is_dir()
    return local or path.lower().rstrip("/").endswith((".parquet", ".pq")) or path.rstrip("/").endswith("/*")


def _expand_paths(paths: Iterable[str | Path]) -> list[str]:
    """Local paths checked and their wildcards expanded; URLs (``s3://...``) passed on to Dask as given."""
    import glob

    out: list[str] = []
    for p in paths:
        s = str(p)
        if _is_url(s):
            out.append(s)
        elif any(ch in s for ch in "*?["):
            matches = sorted(glob.glob(s))
            if not matches:
                raise DataError(f"no unit table file matches {s!r}.")
            out.extend(matches)
        elif not Path(s).exists():
            raise DataError(f"unit table file {s!r} does not exist.")
        else:
            out.append(s)
    if not out:
        raise DataError("no unit-level file given.")
    return out


def summarize_files(
    paths: str | Path | Sequence[str | Path],
    *,
    kpi: str,
    metrics: str | Sequence[str],
    degree: int = 3,
    trial: str = "trial",
    team: str | None = "team",
    treatment: str = "treated",
    engine: str = "pandas",
    blocksize: str | int = "128MiB",
    observational: str | None = None,
    partial: bool = False,
) -> tuple[Any, ...]:
    """:func:`summarize` over unit-level files (CSV or Parquet; a Parquet folder counts as one file).

    ``engine="pandas"`` reads one file at a time (memory bounded by the largest file);
    ``engine="dask"`` reads every file lazily with Dask (only the needed columns; CSV in
    ``blocksize`` pieces) and summarises partition by partition on the active scheduler.

    Returns the trial table, the covariance table and the number of unit rows read, and with
    ``observational`` (as in :func:`summarize`) the observational table, then with ``partial`` the
    partial-slope table.
    """
    from bayes_cmma.inputs.data import _read_table

    files = _expand_paths([paths] if isinstance(paths, (str, Path)) else paths)
    cols = _columns(kpi, metrics, degree, trial, team, treatment)
    _check_arms(observational)
    if partial and observational is None:
        raise DataError("partial=True needs observational= (the arms the regression uses).")
    if engine == "pandas" and any(_is_url(f) for f in files):
        raise DataError(f"{next(f for f in files if _is_url(f))!r} is a URL; the pandas engine reads local "
                        "files only. Use --engine dask (engine='dask') for remote storage.")
    if engine == "dask":
        moments = _dask_moments(_dask_read(files, cols, blocksize), cols)
    elif engine == "pandas":
        parts = []
        for i, f in enumerate(files):
            frame = _read_table(f, "unit table", columns=cols.needed, text=cols.labels)
            cols.check(frame.columns)
            parts.append(_pandas_moments(frame[cols.needed], cols, chunk=i))
            del frame
        moments = merge_moments(*parts)
    else:
        raise DataError(f"unknown engine {engine!r}; use 'pandas' or 'dask'.")
    trials, cov = _tables(moments, cols)
    if observational is None:
        return trials, cov, int(moments.n.sum())
    extra = (_partial(moments, cols, observational),) if partial else ()
    return trials, cov, int(moments.n.sum()), _observational(moments, cols, observational), *extra


def _dask_read(files: list[str], cols: Columns, blocksize: str | int) -> Any:
    try:
        import dask.dataframe as dd
    except ImportError as exc:
        raise DataError(
            "engine 'dask' needs Dask: pip install 'bayes_cmma[dask]' (dask[dataframe] and distributed)."
        ) from exc
    kinds = {_parquet(f) for f in files}
    if len(kinds) > 1:
        raise DataError("unit table files mix Parquet and CSV; give files of one format.")
    try:
        if kinds.pop():
            # a partition per row group keeps each task's memory small (row groups are ~1e6 rows)
            frame = dd.read_parquet(files, split_row_groups=True)
        else:
            frame = dd.read_csv(files, blocksize=blocksize, dtype=dict.fromkeys(cols.labels, str))
    except (OSError, ValueError, ImportError) as exc:  # ImportError: a URL scheme without its fsspec driver
        raise DataError(f"unit table file(s) could not be read with Dask: {exc}") from exc
    cols.check(frame.columns)
    return frame
