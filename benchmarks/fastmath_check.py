"""Does a machine's first run draw what later runs draw, and what does numba's fastmath cost?

Two measurements, each in fresh processes:

1. Same seed, same draws: fit the example's first metric (degree 1, seed 11, 2 chains x 200 draws)
   twice on an empty PyTensor compile folder, the first process compiling everything and the second
   loading it from the cache; once as bayes_cmma compiles (without fastmath) and once with fastmath
   (PyTensor's default, which bayes_cmma used before). Prints a hash of the draws and beta's mean.
2. Sampling time: the example's three metrics at degrees 2 and 3 (4 chains x 1000 draws, median of
   ``--repeats`` fits each), with and without fastmath, alternating ``--rounds`` times.

Usage: ``python benchmarks/fastmath_check.py [--repeats 5] [--rounds 2]`` (docs: scale.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

FIT = """
import hashlib, json, warnings
warnings.simplefilter("ignore")
import numpy as np
import bayes_cmma as bc
from bayes_cmma.fitting import callbacks
if {fastmath}:  # compile as before: PyTensor's default flags
    callbacks.compile_model = lambda m, v: callbacks._compile_model(m, v)
ex = bc.load_example()
m = ex.metrics[0]
b = bc.fit(ex.trials, ex.kpi, [m], model=1, seed=11, draws=200, tune=200, chains=2, cores=1)[m].beta.values
print(json.dumps([hashlib.sha256(np.ascontiguousarray(b).tobytes()).hexdigest()[:16], float(b.mean())]))
"""

TIMING = """
import json, statistics, warnings
warnings.simplefilter("ignore")
import bayes_cmma as bc
from bayes_cmma.fitting import callbacks
if {fastmath}:
    callbacks.compile_model = lambda m, v: callbacks._compile_model(m, v)
ex = bc.load_example()
total = 0.0
for degree in (2, 3):
    bc.fit_metric(ex.trials, "gmv", "ndcg", degree, seed=0, draws=50, tune=50)  # compile, untimed
    for metric in ex.metrics:
        total += statistics.median(bc.fit_metric(ex.trials, "gmv", metric, degree, seed=100 + r).timings["sample_s"]
                                   for r in range({repeats}))
print(json.dumps(total))
"""


def run(code: str, env: dict[str, str] | None = None):
    import os

    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ | (env or {}))
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print("| compile | first process (empty cache): hash, mean of beta | second process (cache): hash, mean |")
    print("|---|---|---|")
    for fastmath in (False, True):
        with tempfile.TemporaryDirectory() as folder:
            env = {"PYTENSOR_FLAGS": f"base_compiledir={folder}"}
            cold, warm = (run(FIT.format(fastmath=fastmath), env) for _ in range(2))
        label = "with fastmath (before)" if fastmath else "without fastmath (bayes_cmma)"
        print(f"| {label} | {cold[0]}, {cold[1]:.2f} | {warm[0]}, {warm[1]:.2f} |", flush=True)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):
        for fastmath in (True, False):
            times[fastmath].append(run(TIMING.format(fastmath=fastmath, repeats=args.repeats)))
    print(f"\nSampling the example's 3 metrics at degrees 2 and 3 (sum of medians of {args.repeats} fits; "
          f"{args.rounds} alternating rounds): with fastmath "
          f"{', '.join(f'{t:.1f}' for t in times[True])} s, without {', '.join(f'{t:.1f}' for t in times[False])} s "
          f"({100 * (min(times[False]) / min(times[True]) - 1):+.0f}% on the fastest of each).")


if __name__ == "__main__":
    main()
