"""Trial tables in, validated trial data out.

The interchange format (docs: input.md):

* trial table, one row per trial and quantity: ``trial``, ``team`` (optional), ``quantity``,
  ``estimate``, ``std_error``, and optionally the trial's arm sizes ``n_treated``, ``n_control``
  (the same on every row of a trial); extra columns are kept. A quantity is the KPI (``gmv``) or a metric
  power (``ndcg`` = ``ndcg^1``, ``ndcg^2``, ``ndcg^3``): the estimated ATE of the p-th power of the
  unit-level metric.
* covariance table (optional): ``trial``, ``quantity_1``, ``quantity_2``, ``covariance``. Pairs not
  given are unknown (not zero); the model fills them from the spec's ``within_trial_correlation``.

:func:`read_trials` validates and returns :class:`TrialData` (an xarray Dataset with dims
``trial``, ``quantity``, ``quantity_other``). :func:`metric_design` cuts out what one model needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bayes_cmma import dims
from bayes_cmma.errors import AssumptionWarning, DataError

REQUIRED = ("trial", "quantity", "estimate", "std_error")
#: Optional per-trial columns: the number of units in each arm (both or neither).
ARM_SIZES = ("n_treated", "n_control")
COV_REQUIRED = ("trial", "quantity_1", "quantity_2", "covariance")
DEFAULT_TEAM = "all"
_QUANTITY_RE = re.compile(r"^(?P<base>.+?)(\^(?P<power>[0-9]+))?$")


def parse_quantity(name: str) -> tuple[str, int]:
    """Split ``"ndcg^2"`` into ``("ndcg", 2)``; ``"ndcg"`` is ``("ndcg", 1)``."""
    m = _QUANTITY_RE.match(str(name).strip())
    if m is None or not m.group("base"):
        raise DataError(f"quantity {name!r} is not a name or name^power.")
    return m.group("base"), int(m.group("power") or 1)


def quantity_name(base: str, power: int) -> str:
    """Canonical quantity label: ``ndcg`` for power 1, ``ndcg^p`` above."""
    return base if power == 1 else f"{base}^{power}"


@dataclass(frozen=True)
class TrialData:
    """Validated trial summaries.

    Attributes
    ----------
    dataset : xarray.Dataset
        ``estimate`` and ``std_error`` (trial, quantity), NaN where a trial lacks a quantity;
        ``covariance`` (trial, quantity, quantity_other), NaN where unknown, the squared standard
        error on the diagonal; coordinate ``team`` on ``trial``; ``n_treated`` and ``n_control``
        (trial, integers) when the table gives arm sizes.
    extra : pandas.DataFrame
        Extra columns of the trial table, indexed by (trial, quantity).
    source : str
        File name or ``"<DataFrame>"``.
    """

    dataset: xr.Dataset
    extra: pd.DataFrame
    source: str = "<DataFrame>"

    @property
    def trials(self) -> list[str]:
        return [str(t) for t in self.dataset[dims.TRIAL].values]

    @property
    def teams(self) -> list[str]:
        return sorted({str(t) for t in self.dataset["team"].values})

    @property
    def quantities(self) -> list[str]:
        return [str(q) for q in self.dataset[dims.QUANTITY].values]

    @property
    def has_covariance(self) -> bool:
        cov = self.dataset["covariance"].values
        off = ~np.eye(cov.shape[1], dtype=bool)
        return bool(np.isfinite(cov[:, off]).any())

    @property
    def has_arm_sizes(self) -> bool:
        """Whether the table gave every trial's arm sizes (``n_treated``, ``n_control``)."""
        return all(name in self.dataset for name in ARM_SIZES)

    def arm_sizes(self) -> np.ndarray | None:
        """(trial, 2) integer array of (n_treated, n_control), or None when the table has none."""
        if not self.has_arm_sizes:
            return None
        return np.column_stack([self.dataset[name].values for name in ARM_SIZES]).astype(np.int64)

    def data_hash(self) -> str:
        """SHA-256 of the numbers and labels, for provenance."""
        h = hashlib.sha256()
        for name in ("estimate", "std_error", "covariance", *ARM_SIZES):
            if name not in self.dataset:  # tables without arm sizes hash as before
                continue
            h.update(np.ascontiguousarray(self.dataset[name].values).tobytes())
        h.update("|".join(self.trials + self.quantities).encode())
        h.update("|".join(map(str, self.dataset["team"].values)).encode())
        return h.hexdigest()


def trial_frames(
    trials: Sequence[str],
    quantities: Sequence[str],
    estimate: np.ndarray,
    covariance: np.ndarray,
    teams: Sequence[str] | None = None,
    arm_sizes: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trial table and covariance table (the interchange format) of ATE vectors and their covariances.

    ``estimate`` is (trial, quantity), ``covariance`` (trial, quantity, quantity); ``teams`` (trial,)
    and ``arm_sizes`` (trial, 2: treated, control) are optional. Standard errors are the square roots
    of the diagonals; every pair of quantities gets a covariance row.
    """
    trials = np.asarray(trials, dtype=object)
    names = np.asarray(quantities, dtype=object)
    K, q = estimate.shape
    rows = {"trial": np.repeat(trials, q)}
    if teams is not None:
        rows["team"] = np.repeat(np.asarray(teams, dtype=object), q)
    rows.update(quantity=np.tile(names, K), estimate=estimate.ravel(),
                std_error=np.sqrt(np.diagonal(covariance, axis1=1, axis2=2)).ravel())
    if arm_sizes is not None:
        n = np.asarray(arm_sizes).astype(np.int64)
        rows.update(n_treated=np.repeat(n[:, 0], q), n_control=np.repeat(n[:, 1], q))
    j, i = np.tril_indices(q, -1)  # pairs (quantity_1 = names[i], quantity_2 = names[j]), i < j
    cov_rows = pd.DataFrame({"trial": np.repeat(trials, len(i)), "quantity_1": np.tile(names[i], K),
                             "quantity_2": np.tile(names[j], K), "covariance": covariance[:, i, j].ravel()})
    return pd.DataFrame(rows), cov_rows


def _read_table(
    path: str | Path,
    what: str,
    columns: list[str] | None = None,
    text: tuple[str, ...] = ("trial", "team", "quantity", "quantity_1", "quantity_2"),
) -> pd.DataFrame:
    """Read a CSV or Parquet file (a Parquet folder too) with one clear error for each way it can fail.

    ``columns``: read only those of these columns that the file has (the caller checks for missing
    ones), so a wide log costs only the columns used. ``text``: CSV columns read as strings (labels
    such as "007" keep their zeros).
    """
    path = Path(path)
    parquet = path.suffix.lower() in (".parquet", ".pq") or path.is_dir()
    if not path.exists():
        raise DataError(f"{what} file {str(path)!r} does not exist.")
    if path.is_dir() and not any(p.suffix.lower() in (".parquet", ".pq") for p in path.rglob("*") if p.is_file()):
        raise DataError(
            f"{what} {str(path)!r} is a directory without Parquet files; give a CSV or Parquet file, or a folder "
            "of Parquet files (one Parquet dataset)."
        )
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{what} file {str(path)!r} is empty; it needs a header row and data rows.")
    try:
        if parquet:
            if columns is not None:
                import pyarrow.dataset as ds

                names = ds.dataset(path, format="parquet").schema.names
                columns = [c for c in columns if c in names]
            df = pd.read_parquet(path, columns=columns)
        else:
            usecols = None if columns is None else (lambda c: c in columns)
            df = pd.read_csv(path, usecols=usecols, dtype=dict.fromkeys(text, str))
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{what} file {str(path)!r} is empty; it needs a header row.") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DataError(
            f"{what} file {str(path)!r} could not be read as "
            f"{'Parquet' if parquet else 'CSV'}: {exc}"
        ) from exc
    if df.empty:
        raise DataError(f"{what} file {str(path)!r} has a header but no data rows.")
    return df


def _require_columns(df: pd.DataFrame, required: tuple[str, ...], what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"{what} is missing column(s) {', '.join(map(repr, missing))}; it has "
            f"{', '.join(map(repr, map(str, df.columns)))}. Required: {', '.join(required)}."
        )


def _show(value: object) -> str:
    """A cell value for an error message: quoted text, or 'a missing (NA) value'."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "a missing (NA) value"
    return repr(str(value))


def _numeric(df: pd.DataFrame, column: str, what: str, label_cols: tuple[str, ...]) -> np.ndarray:
    values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = ", ".join(f"{c} {df[c].iloc[i]!r}" for c in label_cols)
        raise DataError(
            f"{what}: column {column!r} has a non-numeric or non-finite value "
            f"{_show(df[column].iloc[i])} at {where} ({int(bad.sum())} such row(s)); "
            "give a finite number or drop the row."
        )
    return values


def _labels(series: pd.Series, column: str, what: str) -> pd.Series:
    if series.isna().any():
        i = int(np.flatnonzero(series.isna().to_numpy())[0])
        raise DataError(f"{what}: column {column!r} is empty in row {i + 1}; give every row a label.")
    out = series.astype(str).str.strip()
    if (out == "").any():
        i = int(np.flatnonzero((out == "").to_numpy())[0])
        raise DataError(f"{what}: column {column!r} is empty in row {i + 1}; give every row a label.")
    return out


def read_trials(
    trials: str | Path | pd.DataFrame,
    covariance: str | Path | pd.DataFrame | None = None,
) -> TrialData:
    """Read and validate a trial table and an optional covariance table.

    Parameters
    ----------
    trials : path or DataFrame
        CSV or Parquet file, or a DataFrame, in the trial-table format.
    covariance : path or DataFrame, optional
        Within-trial covariances of pairs of estimates of the same trial.

    Returns
    -------
    TrialData

    Raises
    ------
    DataError
        Naming the trial/column/quantity at fault and what to do.
    """
    what = "trial table"
    if isinstance(trials, pd.DataFrame):
        df, source = trials.copy(), "<DataFrame>"
        if df.empty:
            raise DataError("trial table is empty; it needs one row per trial and quantity.")
    else:
        df, source = _read_table(trials, "trial table"), str(trials)
        what = f"trial table {source!r}"
    df.columns = [str(c) for c in df.columns]
    _require_columns(df, REQUIRED, what)
    df = df.reset_index(drop=True)
    df["trial"] = _labels(df["trial"], "trial", what)
    df["quantity"] = _labels(df["quantity"], "quantity", what)
    for q in df["quantity"].unique():
        _base, power = parse_quantity(q)
        if power < 1:
            raise DataError(f"{what}: quantity {q!r} has power {power}; powers start at 1.")
    df["quantity"] = [quantity_name(*parse_quantity(q)) for q in df["quantity"]]
    if "team" in df.columns:
        df["team"] = _labels(df["team"], "team", what)
    else:
        df["team"] = DEFAULT_TEAM
    df["estimate"] = _numeric(df, "estimate", what, ("trial", "quantity"))
    se = pd.to_numeric(df["std_error"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(se) | (se <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{what}: std_error must be a positive finite number, got {_show(df['std_error'].iloc[i])} "
            f"for trial {df['trial'].iloc[i]!r}, quantity {df['quantity'].iloc[i]!r} "
            f"({int(bad.sum())} such row(s)). Fix or drop those rows."
        )
    df["std_error"] = se

    dup = df.duplicated(["trial", "quantity"], keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        n = int(((df["trial"] == first["trial"]) & (df["quantity"] == first["quantity"])).sum())
        raise DataError(
            f"{what}: trial {first['trial']!r} has {n} rows for quantity {first['quantity']!r}; "
            "keep one row per (trial, quantity)."
        )
    teams_per_trial = df.groupby("trial", sort=False)["team"].nunique()
    if (teams_per_trial > 1).any():
        t = teams_per_trial[teams_per_trial > 1].index[0]
        raise DataError(f"{what}: trial {t!r} is listed under several teams; give it one team.")

    trial_labels = list(pd.unique(df["trial"]))
    base_order: dict[str, int] = {}
    for q in df["quantity"]:
        base_order.setdefault(parse_quantity(q)[0], len(base_order))
    quantity_labels = sorted(
        pd.unique(df["quantity"]), key=lambda q: (base_order[parse_quantity(q)[0]], parse_quantity(q)[1])
    )
    est = df.pivot(index="trial", columns="quantity", values="estimate")
    est = est.reindex(index=trial_labels, columns=quantity_labels)
    ses = df.pivot(index="trial", columns="quantity", values="std_error")
    ses = ses.reindex(index=trial_labels, columns=quantity_labels)
    team = df.drop_duplicates("trial").set_index("trial")["team"].reindex(trial_labels)

    nq = len(quantity_labels)
    cov = np.full((len(trial_labels), nq, nq), np.nan)
    idx = np.arange(nq)
    cov[:, idx, idx] = ses.to_numpy() ** 2
    if covariance is not None:
        _fill_covariance(cov, covariance, trial_labels, quantity_labels, ses)

    sizes = _arm_sizes(df, trial_labels, what)

    ds = xr.Dataset(
        {
            "estimate": ((dims.TRIAL, dims.QUANTITY), est.to_numpy(dtype=float)),
            "std_error": ((dims.TRIAL, dims.QUANTITY), ses.to_numpy(dtype=float)),
            "covariance": ((dims.TRIAL, dims.QUANTITY, dims.QUANTITY_OTHER), cov),
        },
        coords={
            dims.TRIAL: trial_labels,
            dims.QUANTITY: quantity_labels,
            dims.QUANTITY_OTHER: quantity_labels,
            "team": (dims.TRIAL, team.to_numpy(dtype=str).astype(object)),
        },
        attrs={"source": source},
    )
    for name, values in sizes.items():
        ds[name] = ((dims.TRIAL,), values)
    extra_cols = [c for c in df.columns if c not in (*REQUIRED, "team", *ARM_SIZES)]
    extra = df.set_index(["trial", "quantity"])[extra_cols]
    return TrialData(dataset=ds, extra=extra, source=source)


def _arm_sizes(df: pd.DataFrame, trial_labels: list[str], what: str) -> dict[str, np.ndarray]:
    """The per-trial arm sizes, checked: both columns or neither, positive integers, one value per trial.

    A trial's value may be given on every row or on some rows (blank on the others); rows of one
    trial must not disagree.
    """
    present = [c for c in ARM_SIZES if c in df.columns]
    if not present:
        return {}
    if len(present) == 1:
        other = next(c for c in ARM_SIZES if c not in present)
        raise DataError(
            f"{what} has column {present[0]!r} but not {other!r}; give both arm sizes (units in the treatment "
            "and in the control arm) or neither."
        )
    out = {}
    for column in ARM_SIZES:
        raw = df[column]
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        blank = raw.isna().to_numpy()
        bad = ~blank & ~(np.isfinite(values) & (values >= 1) & (values == np.round(values)))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{what}: column {column!r} must hold a positive whole number of units, got {_show(raw.iloc[i])} "
                f"for trial {df['trial'].iloc[i]!r} ({int(bad.sum())} such row(s)). Fix the value or leave it blank."
            )
        per_trial = pd.Series(values, index=df["trial"].to_numpy()).dropna()
        spread = per_trial.groupby(level=0).agg(["min", "max"])
        clash = spread[spread["min"] != spread["max"]]
        if len(clash):
            t = clash.index[0]
            raise DataError(
                f"{what}: trial {t!r} has different {column!r} values on its rows ({clash.loc[t, 'min']:.0f} and "
                f"{clash.loc[t, 'max']:.0f}); a trial has one arm size: give the same value on every row."
            )
        value = spread["min"].reindex(trial_labels)
        if value.isna().any():
            missing = [str(t) for t in value.index[value.isna()]]
            shown = ", ".join(map(repr, missing[:5])) + (" ..." if len(missing) > 5 else "")
            raise DataError(
                f"{what}: column {column!r} is blank on every row of {len(missing)} trial(s): {shown}; give each "
                "trial its arm sizes, or drop the n_treated and n_control columns."
            )
        out[column] = value.to_numpy().astype(np.int64)
    return out


def _fill_covariance(
    cov: np.ndarray,
    covariance: str | Path | pd.DataFrame,
    trial_labels: list[str],
    quantity_labels: list[str],
    ses: pd.DataFrame,
) -> None:
    if isinstance(covariance, pd.DataFrame):
        cdf, what = covariance.copy(), "covariance table"
        if cdf.empty:
            raise DataError("covariance table is empty; drop it or give one row per pair.")
    else:
        cdf = _read_table(covariance, "covariance table")
        what = f"covariance table {str(covariance)!r}"
    cdf.columns = [str(c) for c in cdf.columns]
    _require_columns(cdf, COV_REQUIRED, what)
    cdf = cdf.reset_index(drop=True)
    for col in ("trial", "quantity_1", "quantity_2"):
        cdf[col] = _labels(cdf[col], col, what)
    for col in ("quantity_1", "quantity_2"):
        cdf[col] = [quantity_name(*parse_quantity(q)) for q in cdf[col]]
    values = _numeric(cdf, "covariance", what, ("trial", "quantity_1", "quantity_2"))
    t_index = {t: i for i, t in enumerate(trial_labels)}
    q_index = {q: i for i, q in enumerate(quantity_labels)}
    seen: dict[tuple[int, int, int], float] = {}
    for row, (t, q1, q2, v) in enumerate(
        zip(cdf["trial"], cdf["quantity_1"], cdf["quantity_2"], values, strict=True)
    ):
        if t not in t_index:
            raise DataError(
                f"{what} row {row + 1}: trial {t!r} is not in the trial table; "
                "remove the row or add the trial."
            )
        k = t_index[t]
        for q in (q1, q2):
            if q not in q_index or not np.isfinite(ses.iat[k, q_index[q]]):
                raise DataError(
                    f"{what} row {row + 1}: trial {t!r} has no estimate of quantity {q!r} in the "
                    "trial table; remove the row or add that estimate."
                )
        i, j = q_index[q1], q_index[q2]
        if i == j:
            se2 = ses.iat[k, i] ** 2
            if not np.isclose(v, se2, rtol=1e-6, atol=0.0):
                raise DataError(
                    f"{what} row {row + 1}: variance of {q1!r} for trial {t!r} is {v:g} but its "
                    f"std_error squared is {se2:g}; make them agree or drop the diagonal row."
                )
            continue
        key = (k, min(i, j), max(i, j))
        if key in seen and not np.isclose(seen[key], v, rtol=1e-9, atol=0.0):
            raise DataError(
                f"{what}: trial {t!r} has two different covariances for ({q1!r}, {q2!r}); "
                "keep one row per pair."
            )
        seen[key] = v
        cov[k, i, j] = cov[k, j, i] = v


@dataclass(frozen=True)
class MetricDesign:
    """What one model (one KPI, one metric, one degree) needs, as numpy arrays.

    Attributes
    ----------
    z : ndarray, shape (trial, P + 1)
        Observed (KPI ATE, metric-power ATEs) per trial.
    S : ndarray, shape (trial, P + 1, P + 1)
        Measurement covariance per trial (unknown pairs filled with the assumed correlation).
    team_idx : ndarray of int, shape (trial,)
    trials, teams, quantities : list of str
        Labels for the trial axis, the team axis and the P + 1 quantities.
    kpi, metric : str
    degree : int
    n_filled : int
        How many off-diagonal pairs were filled with the assumed correlation.
    arm_sizes : ndarray of int, shape (trial, 2), optional
        (n_treated, n_control) per trial, when the trial table gives them.
    measurement : str
        What ``S`` holds: ``"per_trial"`` (as reported) until
        :func:`bayes_cmma.fitting.measurement.apply_measurement` replaces it with a pooled form, whose
        description it stores here.
    """

    z: np.ndarray
    S: np.ndarray
    team_idx: np.ndarray
    trials: list[str]
    teams: list[str]
    quantities: list[str]
    kpi: str
    metric: str
    degree: int
    n_filled: int
    arm_sizes: np.ndarray | None = None
    measurement: str = "per_trial"
    observed: np.ndarray | None = None

    @property
    def n_trials(self) -> int:
        return self.z.shape[0]

    @property
    def complete(self) -> bool:
        """Whether every trial reports every quantity of the design."""
        return self.observed is None or bool(self.observed.all())

    def mask(self) -> np.ndarray:
        """(trial, P + 1) float mask, 1 where the trial reports the quantity (all ones when complete)."""
        return np.ones(self.z.shape) if self.observed is None else self.observed.astype(float)

    def complete_cases(self) -> MetricDesign:
        """The design restricted to the trials that report every quantity (itself when complete).

        For the estimators that need whole trials (the paper's OLS, the summary-level peers, the A4
        check); the Bayesian model uses every trial.
        """
        if self.complete:
            return self
        keep = self.observed.all(axis=1)
        return dataclasses.replace(
            self, z=self.z[keep], S=self.S[keep], team_idx=self.team_idx[keep],
            trials=[t for t, k in zip(self.trials, keep, strict=True) if k],
            arm_sizes=None if self.arm_sizes is None else self.arm_sizes[keep], observed=None,
        )

    def with_nan(self) -> np.ndarray:
        """``z`` with NaN where a trial does not report a quantity."""
        return self.z if self.observed is None else np.where(self.observed, self.z, np.nan)


def min_trials(degree: int, n_teams: int) -> int:
    """Fewest trials for the regression on degree powers, an intercept and team dummies."""
    return degree + n_teams + 1


def metrics_in(data: TrialData) -> list[str]:
    """Base names of all quantities (KPI candidates and metrics), in table order."""
    seen: dict[str, None] = {}
    for q in data.quantities:
        seen.setdefault(parse_quantity(q)[0], None)
    return list(seen)


#: Highest DRF degree chosen by default (``fit`` without ``--degree``/``--model``).
DEFAULT_MAX_DEGREE = 3


def available_degree(data: TrialData, metric: str) -> int:
    """Highest p such that every trial reports the ATEs of ``metric``, ``metric^2`` ... ``metric^p`` (0 if none)."""
    quantities = set(data.quantities)
    p = 0
    while quantity_name(metric, p + 1) in quantities:
        values = data.dataset["estimate"].sel({dims.QUANTITY: quantity_name(metric, p + 1)}).values
        if not np.all(np.isfinite(values)):
            break
        p += 1
    return p


def default_degree(data: TrialData, metrics: Sequence[str], cap: int = DEFAULT_MAX_DEGREE) -> int:
    """The default DRF degree: the highest power every metric has in every trial, at most ``cap``, at least 1.

    A table that holds only each metric's ATE (the most common) gets the linear DRF; the example
    data (powers 1-3) the cubic. At least 1, so that a metric with no ATE at all reaches
    :func:`metric_design`, which names what is missing.
    """
    return max(1, min([cap, *(available_degree(data, m) for m in metrics)]))


def metric_design(
    data: TrialData,
    kpi: str,
    metric: str,
    degree: int,
    within_trial_correlation: float = 0.0,
    *,
    warn_filled: bool = True,
) -> MetricDesign:
    """Cut the arrays for one (KPI, metric, degree) model out of validated trial data.

    Raises
    ------
    DataError
        KPI or metric power not in the table, some trials lacking a needed quantity, fewer trials
        than parameters, or a trial's covariance matrix not positive definite.
    """
    available = data.quantities
    names = [kpi] + [quantity_name(metric, p) for p in range(1, degree + 1)]
    for role, q in zip(["KPI"] + [f"metric power {p}" for p in range(1, degree + 1)], names, strict=True):
        if q not in available:
            if role == "KPI" or q == metric:
                raise DataError(
                    f"{role.split()[0]} {q!r} is not a quantity of the trial table; it has "
                    f"{', '.join(map(repr, metrics_in(data)))}."
                )
            raise DataError(
                f"quantity {q!r} ({role} of {metric!r}) is not in the trial table; a degree-{degree} "
                f"model needs {', '.join(map(repr, names[1:]))}. Lower the degree or add the ATEs "
                f"of {metric}^p."
            )
    return _cut(data, names, kpi, [metric], metric, degree, within_trial_correlation, warn_filled)


def joint_design(
    data: TrialData,
    kpi: str,
    metrics: Sequence[str],
    within_trial_correlation: float = 0.0,
    *,
    warn_filled: bool = True,
) -> MetricDesign:
    """Cut the arrays of the joint model: the KPI and the first power of every candidate metric.

    The result is a :class:`MetricDesign` whose "powers" are the metrics: ``quantities`` is
    ``[kpi, *metrics]``, ``degree`` the number of metrics and ``metric`` their names joined by
    ``" + "`` (for messages). See :mod:`bayes_cmma.fitting.joint`.

    Raises
    ------
    DataError
        As :func:`metric_design`; also a metric named twice, or a quantity that is not a metric.
    """
    metrics = list(metrics)
    if len(set(metrics)) != len(metrics):
        raise DataError(f"metric names repeat: {metrics}; name each once.")
    available = data.quantities
    for q in [kpi, *metrics]:
        if q not in available:
            role = "KPI" if q == kpi else "metric"
            raise DataError(
                f"{role} {q!r} is not a quantity of the trial table; it has "
                f"{', '.join(map(repr, metrics_in(data)))}."
            )
    return _cut(data, [kpi, *metrics], kpi, metrics, " + ".join(metrics), 1, within_trial_correlation,
                warn_filled, joint=True)


def _cut(
    data: TrialData,
    names: list[str],
    kpi: str,
    metrics: list[str],
    label: str,
    degree: int,
    within_trial_correlation: float,
    warn_filled: bool,
    joint: bool = False,
) -> MetricDesign:
    """The arrays of quantities ``names`` (KPI first): trials that report none are left out."""
    metric = label
    ds = data.dataset.sel({dims.QUANTITY: names, dims.QUANTITY_OTHER: names})
    observed = np.isfinite(ds["estimate"].values)
    # a trial that reports none of these quantities (only other metrics) is not part of this design;
    # one that reports some of them enters with those (the likelihood marginalises the others)
    keep = observed.any(axis=1)
    if not keep.all():
        ds = ds.isel({dims.TRIAL: np.flatnonzero(keep)})
        observed = observed[keep]
    trial_names = [t for t, k in zip(data.trials, keep, strict=True) if k]
    z = np.where(observed, ds["estimate"].values, 0.0)
    for j, m in enumerate(metrics):
        col = 1 + j if joint else 1
        linked = int((observed[:, 0] & observed[:, col]).sum())
        if linked < 2:
            raise DataError(
                f"{linked} trial(s) report both the KPI {kpi!r} and the metric {m!r}; the dose-response is "
                "identified by trials that report both (their covariance across trials), so at least 2 must. "
                "Trials that report only one of them add information about it, but cannot link them."
            )
    if np.ptp(z[observed[:, 0], 0]) == 0:
        warnings.warn(
            f"the KPI {kpi!r} has the same estimate ({z[0, 0]:g}) in every trial: there is no variation for the "
            "metric to explain, and every DRF fits it equally well. Check the KPI column.",
            AssumptionWarning,
            stacklevel=3,
        )
    team_labels = data.dataset["team"].values.astype(str)
    teams = sorted(set(team_labels))
    team_labels = team_labels[keep]
    need = min_trials(len(names) - 1, len(teams))
    if len(z) < need:
        what, fewer = (f"joint model of {len(metrics)} metrics", "fit fewer metrics") if joint else (
            f"degree-{degree} model", "lower the degree")
        raise DataError(
            f"{len(z)} trial(s) for {kpi!r}/{metric!r} but a {what} with {len(teams)} team(s) needs at least "
            f"{need}; add trials, merge teams or {fewer}."
        )
    S = ds["covariance"].values.copy()
    se = ds["std_error"].values
    both = observed[:, :, None] & observed[:, None, :]
    unknown = ~np.isfinite(S) & both
    n_filled = int(unknown.sum() // 2)
    if n_filled:
        filled = within_trial_correlation * se[:, :, None] * se[:, None, :]
        S[unknown] = filled[unknown]
        if warn_filled:
            warnings.warn(
                f"{n_filled} within-trial covariance pair(s) of {kpi!r}/{metric!r} are unknown and "
                f"were filled with correlation {within_trial_correlation:g}. Supply them with a "
                "covariance table (--cov) or set [measurement] within_trial_correlation in the "
                "model spec.",
                AssumptionWarning,
                stacklevel=3,
            )
    S = placeholder_missing(S, observed)
    # scale-free check: the smallest eigenvalue of each trial's correlation matrix (of what it reports)
    sd = np.sqrt(np.diagonal(S, axis1=1, axis2=2))
    eig_min = np.linalg.eigvalsh(S / (sd[:, :, None] * sd[:, None, :]))[:, 0]
    bad = eig_min <= 1e-10
    if bad.any():
        trials = [trial_names[k] for k in np.flatnonzero(bad)]
        shown = ", ".join(map(repr, trials[:5])) + (" ..." if len(trials) > 5 else "")
        raise DataError(
            f"the within-trial covariance matrix of ({', '.join(names)}) is not positive definite "
            f"for trial(s) {shown}; check the covariances against the standard errors "
            "(|correlation| must be below 1 and the matrix consistent)."
        )
    team_idx = np.searchsorted(teams, team_labels)
    return MetricDesign(
        z=np.ascontiguousarray(z, dtype=float),
        S=np.ascontiguousarray(S, dtype=float),
        team_idx=team_idx.astype(np.int64),
        trials=trial_names,
        teams=teams,
        quantities=names,
        kpi=kpi,
        metric=metric,
        degree=len(names) - 1,
        n_filled=n_filled,
        arm_sizes=None if data.arm_sizes() is None else data.arm_sizes()[keep],
        observed=None if observed.all() else observed,
    )


def placeholder_missing(S: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Covariances with the rows and columns of unreported quantities set to those of the identity.

    The likelihood masks them out (:func:`bayes_cmma.fitting.model.trial_logp_graph`); the placeholder keeps
    every matrix positive definite so that the same vectorised algebra runs on every trial.
    """
    if observed.all():
        return S
    both = observed[:, :, None] & observed[:, None, :]
    eye = np.broadcast_to(np.eye(S.shape[-1]), S.shape)
    return np.where(both, S, eye)
