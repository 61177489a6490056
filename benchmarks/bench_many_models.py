"""Fits per minute for a 3-metric x 3-degree comparison on the embedded example (K = 190, 8 teams).

Each variant runs in a fresh process (imports, compiles and sampling all counted), default sampler
(4 chains x 1000 draws after 1000 tuning steps), seed 1:

* ``before``: what a user does without :func:`bayes_cmma.fit_many`: ``bc.fit(trials, "gmv",
  [ndcg, mrr, map], model=d)`` for d = 1, 2, 3 in turn. Each call compiles its degree once and
  samples its 3 metrics with the chains in parallel on both cores.
* ``fit_many, 1 worker``: the same work through ``fit_many`` (same grouping, in-process).
* ``fit_many, 2 workers``: ``fit_many(..., workers=2)``. The three shape groups go to two worker
  processes, costliest (cubic) first; each worker samples its chains one after another.

Prints the median wall time over ``--repeats`` runs and 9 fits / that time.
Usage: ``python benchmarks/bench_many_models.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, time, warnings
t0 = time.perf_counter()
warnings.simplefilter("ignore")
import bayes_cmma as bc
ex = bc.load_example()
metrics = ["ndcg", "mrr", "map"]
if {variant!r} == "before":
    fits = {{}}
    for d in (1, 2, 3):
        res = bc.fit(ex.trials, "gmv", metrics, model=d, seed=1)
        fits.update({{(m, d): res[m] for m in metrics}})
else:
    grid = bc.fit_many(ex.trials, "gmv", metrics, models=[1, 2, 3], seed=1, workers={workers})
    fits = grid.fits
wall = time.perf_counter() - t0
compile_s = sum(f.timings["compile_s"] for f in fits.values())
print(json.dumps({{"wall": wall, "fits": len(fits), "compile_s": compile_s}}))
"""

VARIANTS = [("before: bc.fit per degree", "before", 1), ("fit_many, 1 worker", "many", 1),
            ("fit_many, 2 workers", "many", 2)]


def run(variant: str, workers: int) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD.format(variant=variant, workers=workers)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"3 metrics x degrees 1-3 on the example (K = 190), fresh process per run; medians of {args.repeats}")
    print("| variant | wall s (runs) | fits per minute | compile s summed over fits |")
    print("|---|---|---|---|")
    for label, variant, workers in VARIANTS:
        runs = [run(variant, workers) for _ in range(args.repeats)]
        wall = statistics.median(r["wall"] for r in runs)
        each = ", ".join(f"{r['wall']:.1f}" for r in runs)
        print(f"| {label} | {wall:.1f} ({each}) | {runs[0]['fits'] * 60 / wall:.1f} | "
              f"{statistics.median(r['compile_s'] for r in runs):.1f} |", flush=True)


if __name__ == "__main__":
    main()
