"""Throughput and peak memory of the summarizer on Parquet logs: pandas engine vs Dask engine.

Generates unit-level logs with the paper's simulator (bayes_cmma.studies.simulate; 200 trials, 3 teams, one metric,
written as Parquet files of ``--rows-per-file`` rows; not committed), then runs
``bayes-cmma summarize LOGS/*.parquet --kpi y --metric m --degree 3`` in a fresh process per run,
once per engine, and prints the median wall time, rows per second and the median peak memory.

Peak memory is the largest sum of resident set sizes over the command's whole process tree (the
CLI process, and with Dask the scheduler, nannies and workers), sampled every 20 ms with psutil;
shared pages count once per process, so it over- rather than under-states.

Usage::

    python benchmarks/bench_summarize.py --rows 1e7 1e8 --repeats 3 --data /tmp/bayes_cmma_logs
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from bayes_cmma.studies.simulate import SimulationSettings, simulate_units

N_TRIALS = 200


def generate(folder: Path, rows: int, rows_per_file: int, seed: int = 0) -> list[Path]:
    """Write ``rows`` unit rows of ``N_TRIALS`` trials as Parquet files; reuse them if complete."""
    folder.mkdir(parents=True, exist_ok=True)
    n_files = max(1, rows // rows_per_file)
    trials_per_file = max(1, N_TRIALS // n_files)
    n_files = N_TRIALS // trials_per_file
    n_per = rows // (n_files * trials_per_file)
    done = folder / "COMPLETE"
    files = [folder / f"logs_{i:04d}.parquet" for i in range(n_files)]
    if done.exists() and done.read_text() == f"{rows} {n_per} {n_files}":
        return files
    for f in folder.glob("logs_*.parquet"):
        f.unlink()
    for i, f in enumerate(files):
        sim = SimulationSettings(n_trials=trials_per_file, n_per=n_per)
        units = simulate_units(sim, np.random.default_rng([seed, i])).units
        offset = i * trials_per_file
        codes = units["trial"].str[1:].astype(int) + offset
        units["trial"] = codes.map("t{:05d}".format)
        units["team"] = "team" + ((codes % 3) + 1).astype(str)
        units["treated"] = units["treated"].astype("int8")
        units.to_parquet(f, index=False, row_group_size=1 << 20)
    done.write_text(f"{rows} {n_per} {n_files}")
    return files


def peak_tree_rss(proc: psutil.Process, stop: threading.Event, out: list[int]) -> None:
    peak = 0
    while not stop.is_set():
        try:
            procs = [proc, *proc.children(recursive=True)]
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.02)
    out.append(peak)


def run_once(files: list[Path], engine: str, workdir: Path) -> tuple[float, int]:
    cmd = [str(Path(sys.executable).parent / "bayes-cmma"), "summarize", *map(str, files),
           "--kpi", "y", "--metric", "m", "--degree", "3", "--engine", engine, "--out", str(workdir / "trials.csv"),
           "--cov-out", str(workdir / "cov.csv")]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop, peak = threading.Event(), []
    watcher = threading.Thread(target=peak_tree_rss, args=(psutil.Process(child.pid), stop, peak))
    watcher.start()
    _, err = child.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    if child.returncode != 0:
        raise SystemExit(f"{engine} failed ({child.returncode}):\n{err}")
    return wall, peak[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=float, nargs="+", default=[1e7, 1e8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engines", nargs="+", default=["pandas", "dask"])
    ap.add_argument("--rows-per-file", type=float, default=5e6)
    ap.add_argument("--data", type=Path, default=Path("/tmp/bayes_cmma_logs"))
    args = ap.parse_args()
    print(f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"{args.repeats} runs per cell, medians")
    print("| rows | engine | files | wall s | rows/s | peak memory (GiB) |")
    print("|---|---|---|---|---|---|")
    check = {}
    for rows in args.rows:
        rows = int(rows)
        folder = args.data / f"rows_{rows:.0e}"
        t0 = time.perf_counter()
        files = generate(folder, rows, int(args.rows_per_file))
        gen = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in files) / 2**30
        print(f"<!-- {rows:.0e} rows: {len(files)} files, {size:.2f} GiB on disk, ready in {gen:.0f} s -->",
              flush=True)
        for engine in args.engines:
            walls, peaks = [], []
            for _ in range(args.repeats):
                wall, peak = run_once(files, engine, folder)
                walls.append(wall)
                peaks.append(peak)
                check[(rows, engine)] = (folder / "trials.csv").read_text()
            w = statistics.median(walls)
            print(f"| {rows:.0e} | {engine} | {len(files)} | {w:.1f} | {rows / w:,.0f} | "
                  f"{statistics.median(peaks) / 2**30:.2f} |", flush=True)
        if len(args.engines) == 2:
            import io

            import pandas as pd

            a, b = (pd.read_csv(io.StringIO(check[(rows, e)])) for e in args.engines)
            rel = np.max(np.abs(a["estimate"] - b["estimate"]) / np.abs(b["estimate"]))
            print(f"<!-- {rows:.0e} rows: max relative difference of the ATEs between engines {rel:.1e} -->")


if __name__ == "__main__":
    main()
