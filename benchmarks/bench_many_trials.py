"""How the Bayesian fit scales with the number of trials K (cubic model, P = 3, 8 teams).

For each K, in a fresh process per run (so compile time and memory are honest), trial summaries
are simulated from the model itself (:mod:`bayes_cmma.studies.synthetic`, beta = (1, 0.5, -0.3)) and one
metric is fitted with the default sampler (nutpie, 4 chains x 1000 draws after 1000 tuning steps,
both cores). Printed, as medians over ``--repeats`` runs:

* prepare: building and standardising the design from the trial table;
* compile: building and compiling the model (nutpie + numba);
* one gradient: one log-density + gradient evaluation through the compiled PyTensor function
  (numba; median of 200 calls, Python call overhead included);
* sample: NUTS wall time; ESS/s: the smallest bulk ESS of beta over that time;
* assemble: back-transform, per-trial log-likelihood (trial x draw) and the output tree;
* total: prepare + compile + sample + assemble, what ``fit_metric`` costs from a cold start;
* peak memory: maximum resident set size of the process;
* divergences and the largest R-hat over beta, and beta's posterior mean against the truth.

Usage: ``python benchmarks/bench_many_trials.py [--trials 190 1000 10000] [--repeats 3]``.
Target (issue 6): K = 10,000 in under 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, time, warnings
import numpy as np
warnings.simplefilter("ignore")
from bayes_cmma.studies.synthetic import simulate_summaries
from bayes_cmma.inputs.data import metric_design
from bayes_cmma.fitting.model import standardise, compiled_model
from bayes_cmma.fitting.bayes import fit_design
from bayes_cmma.fitting.spec import spec_for_degree
from bayes_cmma.checks.diagnostics import divergences, summary_table

K, seed = {K}, {seed}
truth = (1.0, 0.5, -0.3)
data, _ = simulate_summaries(np.random.default_rng(seed), n_trials=K, n_teams=8, beta=truth)
spec = spec_for_degree(3)
t = time.perf_counter()
design = metric_design(data, "y", "m", 3, warn_filled=False)
std = standardise(design)
prepare = time.perf_counter() - t
t = time.perf_counter()
compiled, _ = compiled_model(spec, design, std)
compile_s = time.perf_counter() - t
n_dim = compiled.n_dim
x = np.zeros(n_dim)
compiled.logp_func(x)
times = []
for _ in range(200):
    t = time.perf_counter(); compiled.logp_func(x); times.append(time.perf_counter() - t)
one_grad = float(np.median(times))
t = time.perf_counter()
fit = fit_design(design, spec, seed=seed, check_convergence=False)  # reuses the model compiled above
sample_s = fit.timings["sample_s"]
assemble = time.perf_counter() - t - sample_s
table = summary_table(fit.posterior)
rows = [i for i in table.index if i.startswith("beta[")]
print(json.dumps({{
    "prepare": prepare, "assemble": assemble, "compile": compile_s, "one_grad": one_grad, "sample": sample_s,
    "ess_per_s": float(table.loc[rows, "ess_bulk"].min() / sample_s),
    "divergences": int(divergences(fit.posterior)), "rhat": float(table.loc[rows, "r_hat"].max()),
    "beta": fit.beta.mean(("chain", "draw")).values.tolist(),
    "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    "n_dim": int(n_dim),
}}))
"""

def run(K: int, seed: int) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD.format(K=K, seed=seed)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, nargs="+", default=[190, 1000, 10000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"cubic model (P = 3), 8 teams, 4 chains x 1000 draws + 1000 tune, 2 cores; medians of {args.repeats}")
    print("| K | prepare s | compile s | one gradient ms | sample s | ESS/s (beta, min) | assemble s | "
          "total s | peak memory GiB | divergences (max) | R-hat (max) | beta mean (truth 1, 0.5, -0.3) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for K in args.trials:
        runs = [run(K, seed) for seed in range(args.repeats)]

        def med(key: str, runs: list[dict] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        total = statistics.median(r["prepare"] + r["compile"] + r["sample"] + r["assemble"] for r in runs)
        beta = ", ".join(f"{b:.3f}" for b in runs[0]["beta"])
        print(f"| {K:,} | {med("prepare"):.3f} | {med('compile'):.1f} | {med('one_grad') * 1e3:.3f} | "
              f"{med('sample'):.1f} | {med('ess_per_s'):.0f} | {med('assemble'):.2f} | {total:.1f} | "
              f"{med('peak_gib'):.2f} | {max(r['divergences'] for r in runs)} | "
              f"{max(r['rhat'] for r in runs):.3f} | {beta} (seed 0) |", flush=True)


if __name__ == "__main__":
    main()
