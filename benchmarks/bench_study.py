"""Speed of the simulation study runner (issue 3): the Table 1 study, cold start, on this machine.

Runs ``bayes-cmma simulate --study table1 --sims S --workers W`` ``--repeats`` times, each in a new
process and a new results folder (so every run compiles the Bayesian model in each worker), and
prints the median wall time, the median seconds per replication per estimator and N_per (the
``time_s`` column of the results), and the wall time extrapolated to the full study
(100 replications x 3 N_per). Target (issue 3): the full Table 1 study in under 15 minutes on 2 cores.
First it times the simulator alone: one K = 100, N_per = 1000 data set (100k units), median of 5.

Run: ``python benchmarks/bench_study.py [--sims 10] [--repeats 3] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import numpy as np

    from bayes_cmma.studies.simulate import SimulationSettings, simulate_units

    settings, times = SimulationSettings(n_trials=100, n_per=1000), []
    for seed in range(5):
        t0 = time.perf_counter()
        simulate_units(settings, np.random.default_rng(seed))
        times.append(time.perf_counter() - t0)
    print(f"simulator, K = 100, N_per = 1000: median {statistics.median(times):.3f} s of 5\n")
    exe = Path(sys.executable).with_name("bayes-cmma")
    walls, per_rep = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run([str(exe), "simulate", "--study", "table1", "--sims", str(args.sims), "--workers",
                            str(args.workers), "--out", tmp], check=True, capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            res = pd.read_csv(Path(tmp) / "results.csv")
            per_rep.append(res.groupby(["setting", "estimator"], sort=False)["time_s"].median())
    n_reps = 3 * args.sims
    wall = statistics.median(walls)
    print(f"table1, {args.sims} replications x 3 N_per, {args.workers} worker(s), {args.repeats} cold runs")
    print(f"wall time: median {wall:.1f} s (runs: {', '.join(f'{w:.1f}' for w in walls)}); "
          f"{wall / n_reps:.2f} s per replication overall (includes one compile per worker)")
    table = pd.concat(per_rep, axis=1).median(axis=1).unstack("estimator")
    print("\nmedian seconds per replication, per estimator (one core):")
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    print(f"\nextrapolated full Table 1 (300 replications): {wall / n_reps * 300 / 60:.1f} min")


if __name__ == "__main__":
    main()
