"""Degree selection by LOO (``bayes-cmma compare``) on the paper's Table 3 data.

For each Table 3 shape (mu(m) = 4m, 4m + 2m^2, 4m + 0m^2 + 5m^3; K = 100 trials, N_per = 1000,
bayes_cmma.studies.simulate), ``--sims`` data sets are simulated at the unit level, summarised per trial, and
:func:`bayes_cmma.checks.compare.compare_degrees` picks a degree among 1-3 (PSIS-LOO over trials, exact
refits for Pareto k > 0.7, the lowest degree not clearly worse than the best). Prints and writes
(``--out``, Markdown) the share of data sets recommending each degree, with the mean number of
refits and the time per comparison. For reference: the paper's backward Wald tests pick the true
degree in most data sets, and so does our CMMA OLS (benchmarks/results/table3: 89%, 93%, 100%).

Usage: ``python benchmarks/compare_degrees.py [--sims 20] [--workers 2]
[--out benchmarks/results/compare_degrees/summary.md]``
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

SHAPES = {"4m": ((4.0,), True), "4m+2m^2": ((4.0, 2.0), True), "4m+0m^2+5m^3": ((4.0, 0.0, 5.0), False)}
TRUE_DEGREE = {"4m": 1, "4m+2m^2": 2, "4m+0m^2+5m^3": 3}


def run_shape(label: str, sims: int, seed: int, draws: int, chains: int) -> list[dict]:
    """All replications of one shape in one process (the three compiled models are reused)."""
    from bayes_cmma.checks.compare import compare_degrees
    from bayes_cmma.errors import AssumptionWarning, ConvergenceWarning, RelevanceWarning
    from bayes_cmma.inputs.data import read_trials
    from bayes_cmma.inputs.summarizer import summarize_units
    from bayes_cmma.studies.simulate import SimulationSettings, simulate_units

    beta, slope = SHAPES[label]
    settings = SimulationSettings(n_trials=100, n_per=1000, beta=beta, random_slope=slope)
    rows = []
    for rep in range(sims):
        rng = np.random.default_rng([seed, list(SHAPES).index(label), rep])
        sim = simulate_units(settings, rng)
        trials, cov = summarize_units(sim.units, kpi="y", metrics=["m"], degree=3)
        data = read_trials(trials, cov)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            for cat in (ConvergenceWarning, AssumptionWarning, RelevanceWarning):
                warnings.simplefilter("ignore", cat)
            res = compare_degrees(data, "y", "m", (1, 2, 3), seed=rep + 1, draws=draws, tune=draws, chains=chains)
        elapsed = time.perf_counter() - t0
        t = res.table.set_index("degree")
        best = float(t["elpd"].max())
        rows.append({"shape": label, "rep": rep, "recommended": res.recommended,
                     "best_elpd_degree": int(t["elpd"].idxmax()),
                     **{f"elpd_gap_{d}": best - float(t.loc[d, "elpd"]) for d in (1, 2, 3)},
                     "refits": int(t["refits"].sum()), "unreliable": int(res.pareto_k["unreliable"].sum()),
                     "seconds": elapsed})
        print(f"{label} rep {rep}: recommended {res.recommended} ({elapsed:.0f} s, {rows[-1]['refits']} refits)",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--draws", type=int, default=1000, help="draws and tuning steps per chain")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/compare_degrees/summary.md")
    args = parser.parse_args()
    from bayes_cmma.fitting.parallel import worker_pool

    t0 = time.perf_counter()
    with worker_pool(args.workers) as pool:
        futures = [pool.submit(run_shape, label, args.sims, args.seed, args.draws, args.chains) for label in SHAPES]
        rows = [r for f in futures for r in f.result()]
    wall = time.perf_counter() - t0
    df = pd.DataFrame(rows)
    lines = ["# Degree selection by LOO on the paper's Table 3 data", "",
             f"{args.sims} data sets per shape (K = 100, N_per = 1000), {args.chains} chains x {args.draws} draws "
             f"per fit; {wall:.0f} s with {args.workers} workers.",
             f"Command: `python benchmarks/compare_degrees.py --sims {args.sims} --workers {args.workers} "
             f"--seed {args.seed} --draws {args.draws} --chains {args.chains}`", "",
             "| true DRF | P(recommend 1) | P(recommend 2) | P(recommend 3) | P(highest ELPD = true) | "
             "median ELPD gap of the true degree's rivals | mean refits | median s per compare |",
             "|---|---|---|---|---|---|---|---|"]
    for label, g in df.groupby("shape", sort=False):
        true = TRUE_DEGREE[label]
        shares = [float((g["recommended"] == d).mean()) for d in (1, 2, 3)]
        others = [d for d in (1, 2, 3) if d != true]
        gaps = g[[f"elpd_gap_{d}" for d in others]].median().round(1).to_dict()
        gap_txt = ", ".join(f"degree {k.split('_')[-1]}: {v}" for k, v in gaps.items())
        lines.append(f"| {label} | {shares[0]:.2f} | {shares[1]:.2f} | {shares[2]:.2f} | "
                     f"{(g['best_elpd_degree'] == true).mean():.2f} | {gap_txt} | {g['refits'].mean():.1f} | "
                     f"{g['seconds'].median():.0f} |")
    lines += ["", "ELPD gap = best ELPD minus the degree's ELPD (0 for the best). Recommended = the lowest degree "
              "whose gap is at most 4 or at most 2 SE of the difference (bayes_cmma.checks.compare)."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    df.to_csv(out.with_name("replications.csv"), index=False)


if __name__ == "__main__":
    main()
