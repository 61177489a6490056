"""Sampling cost of the demo's fits, paired by seed: leapfrog steps per draw and seconds per fit.

For each metric of the embedded example at degree 2 and 3, with centred team effects (so no auto
refit enters the timing) and the default sampler (4 chains x 1000 draws, 2 cores), two seeds:
the mean number of leapfrog steps per draw, the sampling time and the divergent transitions.
Steps per draw do not depend on the machine's load, seconds do; compare versions by running this
script against each of them back to back, e.g. ``PYTHONPATH=/path/to/a/clone/at/COMMIT``.

Usage: ``python benchmarks/sampling_steps.py [--adaptation low_rank|diag]``
"""

from __future__ import annotations

import argparse
import warnings

from bayes_cmma.datasets import load_example
from bayes_cmma.fitting.bayes import fit_design
from bayes_cmma.fitting.spec import replace_spec, spec_for_degree
from bayes_cmma.inputs.data import metric_design


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adaptation", default=None, help="mass-matrix adaptation (default: the spec's)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    ex = load_example()
    print("| degree | metric | seed 1: steps/draw, s, divergences | seed 2: steps/draw, s, divergences |")
    print("|---|---|---|---|")
    for degree in (2, 3):
        spec = replace_spec(spec_for_degree(degree), team_effects="centred")
        if args.adaptation:
            spec = replace_spec(spec, sampler={**spec.sampler, "adaptation": args.adaptation})
        for metric in ex.metrics:
            design = metric_design(ex.trials, ex.kpi, metric, degree)
            cells = []
            for seed in (1, 2):
                fit = fit_design(design, spec, seed=seed, cores=2, check_convergence=False)
                stats = fit.posterior["sample_stats"]
                cells.append(f"{float(stats['n_steps'].mean()):.1f}, {fit.timings['sample_s']:.2f}, "
                             f"{int(stats['diverging'].sum())}")
            print(f"| {degree} | {metric} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
