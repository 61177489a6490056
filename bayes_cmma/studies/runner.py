"""Run a simulation study: parallel over replications, resumable, with a progress bar.

Layout of the output folder::

    OUT/study.json    what the study is (settings, estimators, seed); a rerun must match it
    OUT/results.csv   one row per (replication, estimator, degree, power), appended as replications finish
                      (the fusion study: per replication, bias and rule)
    OUT/summary.csv   bias, RMSE, coverage, width per (setting, estimator, degree, power) (the fusion study:
                      regret and its change against the trials alone per setting, bias and rule)
    OUT/summary.md    the paper's table layout (the fusion study: its targets and changes), plus the wall
                      time and the command

A study gives the runner its ``settings`` (each with a ``label``), ``sims``, ``name``, ``columns``,
``identity()``, ``rows_per_replication()``, ``replicate(setting_index, rep)``, ``describe()`` and
``summarise(results)``: :class:`~bayes_cmma.studies.study.Study` (the paper's) and
:class:`~bayes_cmma.studies.fusion_study.FusionStudy` do.

Only the parent process writes ``results.csv``: each finished replication's rows are appended in
one ``write`` and flushed to disk (``fsync``). A run that is interrupted (Ctrl-C, a killed process)
keeps every finished replication; on rerun with the same arguments the file is repaired (a
partial last line from a kill mid-write is cut, a replication with a missing row is dropped) and
only the replications not yet in it are run, so a finished row is never lost or duplicated.
Replications are seeded independently of the number of workers (:func:`study.replication_seed`).
Each worker process compiles the Bayesian model once per degree and reuses it for every replication.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_cmma.errors import BayesCMMAError
from bayes_cmma.fitting import interrupts
from bayes_cmma.fitting.parallel import worker_pool
from bayes_cmma.reporting.outputs import write_files_atomically
from bayes_cmma.studies.fusion_study import FusionStudy
from bayes_cmma.studies.study import Study

RESULTS = "results.csv"
META = "study.json"


@dataclass
class StudyRun:
    """What :func:`run_study` did: all results so far and how long the new replications took."""

    results: pd.DataFrame
    summary: pd.DataFrame
    tables: str
    n_new: int
    n_skipped: int
    wall_s: float
    out_dir: Path


AnyStudy = Study | FusionStudy


def _replicate(study: AnyStudy, setting_index: int, rep: int) -> list[dict[str, Any]]:
    return study.replicate(setting_index, rep)


def _check_meta(study: AnyStudy, out: Path) -> None:
    meta_path = out / META
    identity = study.identity()
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise BayesCMMAError(f"{meta_path} is not valid JSON; remove the folder or choose another --out.") from exc
        if old.get("identity") != identity:
            raise BayesCMMAError(
                f"{out} holds results of a different study (settings, estimators, degrees, seed or sampler "
                "differ); choose another --out, or delete that folder to start over."
            )
        return
    text = json.dumps({"identity": identity}, indent=2)
    write_files_atomically({meta_path: lambda p: p.write_text(text)})


def _repair_results(study: AnyStudy, path: Path) -> pd.DataFrame:
    """Read the results file, dropping a partial last line and incomplete replications."""
    columns = list(study.columns)
    if not path.exists():
        return pd.DataFrame(columns=columns)
    raw = path.read_bytes()
    good = raw if raw.endswith(b"\n") or not raw else raw[: raw.rfind(b"\n") + 1]
    df = pd.read_csv(io.BytesIO(good)) if good.strip() else pd.DataFrame(columns=columns)
    if list(df.columns) != columns:
        raise BayesCMMAError(f"{path} does not have the columns of a results file; choose another --out.")
    labels = {s.label: i for i, s in enumerate(study.settings)}
    counts = df.groupby(["setting", "rep"]).size()
    complete = {
        key for key, n in counts.items() if key[0] in labels and n == study.rows_per_replication()
    }
    keep = [(s, r) in complete for s, r in zip(df["setting"], df["rep"], strict=True)]
    cleaned = df[keep]
    if len(cleaned) != len(df) or len(good) != len(raw):
        tmp = path.with_suffix(".csv.tmp")
        cleaned.to_csv(tmp, index=False)
        os.replace(tmp, path)
    return cleaned


def _append(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    if not path.exists() or path.stat().st_size == 0:
        writer.writeheader()
    writer.writerows(rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())


class _Progress:
    """A rich progress bar with ETA on a terminal, a plain line every ~10% otherwise."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total, self.done, self.label = total, 0, label
        self.t0 = time.perf_counter()
        self.bar = None
        self.next_line = 0.1
        self.enabled = enabled and total > 0
        if self.enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("ETA"), TimeRemainingColumn(), transient=False)
            self.bar.start()
            self.task = self.bar.add_task(label, total=total)

    def advance(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.advance(self.task)
        elif self.done / self.total >= self.next_line or self.done == self.total:
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / self.done * (self.total - self.done)
            print(f"[bayes-cmma] {self.label}: {self.done}/{self.total} replications, "
                  f"{elapsed:.0f} s elapsed, ETA {eta:.0f} s", file=sys.stderr, flush=True)
            self.next_line = np.floor(self.done / self.total * 10 + 1) / 10

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_study(
    study: AnyStudy,
    out_dir: str | Path,
    *,
    workers: int = 1,
    progress: bool = True,
    on_replication: Callable[[int, int], None] | None = None,
    command: str | None = None,
) -> StudyRun:
    """Run every replication of ``study`` not yet in ``out_dir``; write results and summary tables.

    Parameters
    ----------
    study : Study or FusionStudy
        The paper's study (:class:`~bayes_cmma.studies.study.Study`) or the fusion study
        (:class:`~bayes_cmma.studies.fusion_study.FusionStudy`).
    out_dir : path
        Created if needed; a folder holding another study's results is refused.
    workers : int
        Processes running replications in parallel (1 = in this process).
    progress : bool
        Show a progress bar with ETA (a line per 10% when stderr is not a terminal).
    on_replication : callable, optional
        Called as ``on_replication(n_done_now, n_to_do)`` after each replication is written.
    command : str, optional
        The command line, recorded in ``summary.md``.

    Returns
    -------
    StudyRun
    """
    if workers < 1:
        raise BayesCMMAError(f"--workers must be at least 1, got {workers}.")
    out = Path(out_dir)
    _check_meta(study, out)
    path = out / RESULTS
    existing = _repair_results(study, path)
    done = set(zip(existing["setting"], existing["rep"], strict=True))
    todo = [
        (i, r) for i, s in enumerate(study.settings) for r in range(study.sims) if (s.label, r) not in done
    ]
    n_skipped = sum(1 for i, s in enumerate(study.settings) for r in range(study.sims) if (s.label, r) in done)
    bar = _Progress(len(todo), f"{study.name}", progress)
    t0 = time.perf_counter()
    n_new = 0

    def finished(rows: list[dict[str, Any]]) -> None:
        nonlocal n_new
        _append(path, rows, study.columns)  # a finished replication is kept even when Ctrl-C came meanwhile
        n_new += 1
        interrupts.check()
        bar.advance()
        if on_replication is not None:
            on_replication(n_new, len(todo))

    try:
        if workers == 1 or len(todo) <= 1:
            for i, r in todo:
                finished(_replicate(study, i, r))
        else:
            with worker_pool(workers) as pool:
                _run_pool(pool, study, todo, workers, finished)
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    results = pd.read_csv(path)
    # in replication order, not the order workers finished in, so the summaries' sums (to the last digit)
    # do not depend on the number of workers
    order = {s.label: i for i, s in enumerate(study.settings)}
    results = (results[results["rep"] < study.sims]
               .sort_values(["setting", "rep"], key=lambda c: c.map(order) if c.name == "setting" else c,
                            kind="stable")
               .reset_index(drop=True))
    summary, tables = study.summarise(results)
    header = (
        f"# Simulation study {study.name!r}\n\n"
        f"{results.groupby('setting').rep.nunique().min()} replications per setting; "
        f"this run: {n_new} new replication(s) in {wall:.0f} s with {workers} worker(s)"
        f" ({n_skipped} already in {RESULTS}).\n"
        + study.describe() + "\n"
        + (f"\nCommand: `{command}`\n" if command else "")
        + "\n"
    )
    write_files_atomically({
        out / "summary.csv": lambda p: summary.to_csv(p, index=False),
        out / "summary.md": lambda p: p.write_text(header + tables),
    })
    return StudyRun(results=results, summary=summary, tables=tables, n_new=n_new, n_skipped=n_skipped,
                    wall_s=wall, out_dir=out)


def _run_pool(
    pool: ProcessPoolExecutor, study: AnyStudy, todo: list[tuple[int, int]], workers: int,
    finished: Callable[[list[dict[str, Any]]], None],
) -> None:
    pending: set = set()
    queue = list(todo)
    try:
        # at most 2 replications per worker in flight, so an interruption loses little work
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                i, r = queue.pop(0)
                pending.add(pool.submit(_replicate, study, i, r))
            complete, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in complete:
                finished(fut.result())
    except BaseException:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
