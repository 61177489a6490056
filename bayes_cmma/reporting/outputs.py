"""Tables of a fit and their atomic writing to an output folder.

A fit writes several files into one folder, and they belong together (the tables, the posteriors,
``run.json`` and the report of one run). :func:`write_atomically` replaces the set as a whole:

1. every file is written into a hidden temporary folder next to the target and flushed to disk;
2. a commit record (``.bayes_cmma-commit.json`` in the target: which files move in, which stale
   ones go) is put in place with one atomic rename;
3. the files are moved in (``os.replace``, atomic per file) and stale tables removed;
4. the commit record and the temporary folder are removed.

A crash or Ctrl-C before step 2 leaves the previous outputs untouched (the temporary folder is
left behind and removed by a later write once it is :data:`STALE_TMP_SECONDS` old). A crash
during step 3 leaves the commit record, and :func:`recover` completes the move: the next
:func:`write_atomically` into the folder and :func:`bayes_cmma.reporting.report.load_fit_dir` call it, so a
reader never sees one run's tables mixed with another's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bayes_cmma import dims
from bayes_cmma.checks.diagnostics import CI_PROB, summary_table
from bayes_cmma.decisions.derived import interval_table
from bayes_cmma.errors import BayesCMMAError
from bayes_cmma.fitting import interrupts
from bayes_cmma.fitting.bayes import CMMAResult

Writer = Callable[[Path], None]


#: Tables a fit may write; one a new run does not write is removed, so no stale table from an
#: earlier run sits next to the new ones (e.g. a rerun without --at).
TABLE_NAMES = ("summary.csv", "elasticity.csv", "ranking.csv", "drf.csv", "ols.csv", "assumptions.csv",
               "report.html", "joint.nc", "northstar.csv", "northstar.png", "more_trials.csv",
               "decision_value.csv")

#: The commit record inside an output folder while a set of files is being moved in.
COMMIT_FILE = ".bayes_cmma-commit.json"

#: Temporary folders of an interrupted write older than this (seconds) are removed by the next
#: write next to them; younger ones may belong to a write still running.
STALE_TMP_SECONDS = 3600.0


def _tmp_prefix(out: Path) -> str:
    return f".{out.name}.tmp-"


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def recover(out_dir: str | Path) -> bool:
    """Complete a write into ``out_dir`` that was interrupted while moving its files in.

    Returns True if there was one to complete. Moving in the files the commit record lists (those
    still in the temporary folder) and removing the stale ones finishes exactly what the
    interrupted :func:`write_atomically` was doing; every listed file was complete before the record
    was written.
    """
    out = Path(out_dir)
    record_path = out / COMMIT_FILE
    if not record_path.exists():
        return False
    try:
        record = json.loads(record_path.read_text())
        tmp = out.parent / str(record["tmp"])
        names, stale = [str(n) for n in record["files"]], [str(n) for n in record["remove"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BayesCMMAError(
            f"{record_path} is damaged ({exc}), so an interrupted write into {out} cannot be completed; "
            "rerun the command that writes this folder."
        ) from exc
    for name in names:
        if (tmp / name).exists():
            os.replace(tmp / name, out / name)
        elif not (out / name).exists():
            raise BayesCMMAError(
                f"an interrupted write into {out} cannot be completed: {name} is neither in {tmp} nor in {out}; "
                "rerun the command that writes this folder."
            )
    for name in stale:
        (out / name).unlink(missing_ok=True)
    record_path.unlink()
    shutil.rmtree(tmp, ignore_errors=True)
    return True


def _remove_stale_tmp(out: Path) -> None:
    now = time.time()
    for tmp in out.parent.glob(_tmp_prefix(out) + "*"):
        try:
            if tmp.is_dir() and now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except FileNotFoundError:  # removed meanwhile by another write
            continue


def _move(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def write_atomically(
    out_dir: str | Path, files: Mapping[str, Writer], stale: Sequence[str] = TABLE_NAMES
) -> list[Path]:
    """Write each ``name -> writer(path)`` into ``out_dir`` as one set; return the final paths.

    Files named in ``stale`` (default: a fit's :data:`TABLE_NAMES`) that this call does not write
    are removed from ``out_dir`` when the new files move in. See the module docstring for what an
    interruption leaves.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover(out)
    _remove_stale_tmp(out)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(out), dir=out.parent))
    committed = False
    try:
        for name, writer in files.items():
            writer(tmp / name)
            _fsync(tmp / name)
        out.mkdir(exist_ok=True)
        remove = [name for name in stale if name not in files]
        record = tmp / COMMIT_FILE
        record.write_text(json.dumps({"tmp": tmp.name, "files": list(files), "remove": remove}))
        _fsync(record)
        interrupts.check()  # a Ctrl-C swallowed by a finaliser while writing must not commit
        os.replace(record, out / COMMIT_FILE)  # from here on, recover() completes this write
        committed = True
        final = []
        for name in files:
            _move(tmp / name, out / name)
            final.append(out / name)
        for name in remove:
            (out / name).unlink(missing_ok=True)
        (out / COMMIT_FILE).unlink()
        return final
    finally:
        if not committed or not (out / COMMIT_FILE).exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_files_atomically(files: Mapping[str | Path, Writer]) -> list[Path]:
    """Write each ``path -> writer(path)`` to a temporary file beside it, then move all into place.

    Nothing is moved until every writer has finished, so a failure leaves no partial file and no
    new file at all.
    """
    temps: dict[Path, Path] = {}
    try:
        for target, writer in files.items():
            target = Path(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
            os.close(fd)
            temps[target] = Path(name)
            writer(temps[target])
        interrupts.check()
        for target, tmp in temps.items():
            os.replace(tmp, target)
        return list(temps)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def summary_frame(result: CMMAResult, prob: float = CI_PROB) -> pd.DataFrame:
    """Parameters of every metric's model (original scale), one row each, with diagnostics."""
    parts = []
    for metric, fit in result.fits.items():
        table = (fit.summary if prob == CI_PROB else summary_table(fit.posterior, prob=prob)).reset_index()
        table.insert(0, "metric", metric)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def elasticity_frame(
    result: CMMAResult,
    at: Mapping[str, float],
    lift: float,
    baseline: float | None,
    prob: float = CI_PROB,
    draws: xr.DataArray | None = None,
) -> pd.DataFrame:
    """Each metric's elasticity at its current value, and its point elasticity: mean, median, sd and interval.

    ``draws``: the elasticity draws when already computed (``result.elasticity(at, lift, baseline)``).
    The point elasticity m mu'(m) / baseline goes in ``point_elasticity_*`` columns.
    """
    el = result.elasticity(at, lift=lift, baseline=baseline) if draws is None else draws
    table = _with_median(interval_table(el, prob=prob), el)
    point = result.point_elasticity(at, baseline=baseline)
    point_table = _with_median(interval_table(point, prob=prob), point)
    for column in point_table.columns.drop(dims.METRIC):
        table[f"point_elasticity_{column}"] = point_table[column].to_numpy()
    table.insert(1, "at", [float(at[m]) for m in table[dims.METRIC]])
    table.insert(2, "lift", lift)
    table.insert(3, "baseline", "mu(m)" if baseline is None else baseline)
    return table


def _with_median(table: pd.DataFrame, draws: xr.DataArray) -> pd.DataFrame:
    """``table`` (one row per metric) with the draws' median after the mean."""
    median = draws.median([d for d in dims.SAMPLE_DIMS if d in draws.dims])
    values = median.sel({dims.METRIC: table[dims.METRIC].to_numpy()}).values
    table.insert(table.columns.get_loc("mean") + 1, "median", values)
    return table


def ranking_frame(ranking: xr.Dataset) -> pd.DataFrame:
    """One row per metric: P(best), expected rank, expected regret, P(rank = r) columns, and ``pairing``.

    ``pairing`` says what produced the draws: ``joint`` (one joint model; ``elasticity_prior`` says its
    prior, ``latent_prior`` its latent prior) or ``independent`` (separate fits paired by draw index as if
    independent). With the tie
    prior, ``p_tie`` and ``prior_p_tie``: the posterior and prior probability that the metrics tie.
    """
    table = ranking[["p_best", "expected_rank", "expected_regret", "elasticity_mean"]].to_dataframe()
    for r in ranking[dims.RANK].values:
        table[f"p_rank_{r}"] = ranking["p_rank"].sel({dims.RANK: r}).values
    table["pairing"] = ranking.attrs.get("pairing", "independent")
    if "elasticity_prior" in ranking.attrs:
        table["elasticity_prior"] = ranking.attrs["elasticity_prior"]
    if "latent_prior" in ranking.attrs:
        table["latent_prior"] = ranking.attrs["latent_prior"]
    if "p_tie" in ranking.attrs:  # the tie prior: posterior and prior probability that the metrics tie
        table["p_tie"] = ranking.attrs["p_tie"]
        table["prior_p_tie"] = ranking.attrs["prior_p_tie"]
    return table.reset_index().sort_values("expected_rank", kind="stable")


def drf_frame(result: CMMAResult, grids: Mapping[str, np.ndarray], prob: float = CI_PROB) -> pd.DataFrame:
    """Posterior DRF of each metric on its grid (mean and interval), long format."""
    parts = []
    for metric, grid in grids.items():
        table = interval_table(result[metric].drf(grid), prob=prob).rename(columns={dims.GRID: "metric_value"})
        table.insert(0, dims.METRIC, metric)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)
