"""Where a cold fit's compile time goes, measured in fresh processes.

One compiled model per shape is the design (``bayes_cmma.fitting.model.compiled_model``); this
script says what that compile costs in a new process. Per fresh process it times, for the degree-2
model of the embedded example (``ndcg``, 8 teams):

* ``imports``: ``import bayes_cmma`` plus PyMC and nutpie;
* ``pytensor``: nutpie's ``_make_functions`` (PyMC's log-density and gradient graphs, PyTensor's
  rewrites);
* ``callbacks``: the two C callbacks nutpie samples through (log density with gradient, and
  expansion), which numba builds around PyTensor's numba functions of the graph. bayes_cmma
  (``bayes_cmma.fitting.callbacks``) caches them on disk, so a process loads them; nutpie's own
  ``compile_pymc_model`` compiles them in every process (numba cannot cache its closures: "uses
  dynamic globals"), which typing them, linking PyTensor's code in and optimising it all again;
* ``sampling``: 4 chains x 1000 draws after 1000 tuning steps, 2 cores.

Variants: ``warm`` (the caches filled, the usual case after a first run); ``nutpie's compile``
(the same with ``nutpie.compile_pymc_model``, what bayes_cmma did before it cached the callbacks);
``cold`` (an empty PyTensor compile folder: a new machine's first fit) and ``NUMBA_OPT=0`` with a
cold cache (LLVM optimisation off everywhere: a faster compile, at the price the table shows).

Usage: ``python benchmarks/compile_breakdown.py [--repeats 3] [--cold-repeats 1] [--out DIR]``
(prints medians; writes ``summary.md`` and ``runs.csv`` with ``--out``; about 5 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SNIPPET = r"""
import json, os, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import bayes_cmma as bc
import nutpie, pymc, numba
import nutpie.compile_pymc as ncp
from bayes_cmma.fitting.model import build_model, sampled_vars, standardise
from bayes_cmma.fitting.spec import spec_for_degree
from bayes_cmma.inputs.data import metric_design
from bayes_cmma.fitting.callbacks import compile_model
T = {"imports": time.perf_counter() - t0, "pytensor": 0.0, "callbacks": 0.0}

def timed(key, f):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            T[key] += time.perf_counter() - t
    return wrapper

ncp._make_functions = timed("pytensor", ncp._make_functions)
_cfunc = numba.cfunc
numba.cfunc = lambda sig, **kw: timed("callbacks", _cfunc(sig, **kw))
ex = bc.load_example()
spec = spec_for_degree(2)
d = metric_design(ex.trials, "gmv", "ndcg", 2, warn_filled=False)
t = time.perf_counter()
model = build_model(spec, len(d.teams), standardise(d), d.team_idx, d.observed)
if os.environ.get("BC_NUTPIE_COMPILE"):
    cm = nutpie.compile_pymc_model(model, var_names=sampled_vars(len(d.teams)))
else:
    cm = compile_model(model, sampled_vars(len(d.teams)))
T["compile total"] = time.perf_counter() - t
t = time.perf_counter()
nutpie.sample(cm, draws=1000, tune=1000, chains=4, cores=2, seed=1, progress_bar=False)
T["sampling"] = time.perf_counter() - t
print(json.dumps(T))
"""

COLUMNS = ["imports", "pytensor", "callbacks", "compile total", "sampling"]


def run(env_extra: dict[str, str]) -> dict[str, float]:
    env = os.environ | env_extra
    res = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of the warm variant")
    parser.add_argument("--cold-repeats", type=int, default=1, help="runs of each cold variant (1-3 min each)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    run({})  # fill the default cache first, so "warm" is warm
    for r in range(args.repeats):
        rows.append({"variant": "warm", "run": r, **run({})})
    for r in range(args.repeats):
        rows.append({"variant": "warm, nutpie's compile", "run": r, **run({"BC_NUTPIE_COMPILE": "1"})})
    for variant, extra in (("cold", {}), ("cold, NUMBA_OPT=0", {"NUMBA_OPT": "0"})):
        for r in range(args.cold_repeats):
            with tempfile.TemporaryDirectory() as tmp:  # an empty PyTensor compile folder each run
                flags = {**extra, "PYTENSOR_FLAGS": f"base_compiledir={tmp}"}
                rows.append({"variant": variant, "run": r, **run(flags)})
    lines = ["| variant | " + " | ".join(f"{c} (s)" for c in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        sel = [r for r in rows if r["variant"] == variant]
        lines.append(f"| {variant} | " + " | ".join(f"{statistics.median(r[c] for r in sel):.1f}" for c in COLUMNS)
                     + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        import pandas as pd

        args.out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).round(2).to_csv(args.out / "runs.csv", index=False)
        cmd = (f"python benchmarks/compile_breakdown.py --repeats {args.repeats} --cold-repeats {args.cold_repeats} "
               f"--out {args.out}")
        (args.out / "summary.md").write_text(
            "# Where a cold fit's compile time goes\n\n"
            f"Degree-2 model of the embedded example (ndcg, 8 teams), one fresh process per run; medians of "
            f"{args.repeats} warm runs and {args.cold_repeats} cold run(s) per variant on this machine (2 cores). "
            "`pytensor`: PyMC's graphs and PyTensor's "
            "rewrites; `callbacks`: the two C callbacks nutpie samples through, loaded from bayes_cmma's disk cache "
            "(warm) or compiled by numba (cold); `nutpie's compile`: `nutpie.compile_pymc_model`, which compiles "
            "them in every process; `cold`: an empty PyTensor compile "
            "folder (a new machine's first fit).\n\n" + table + f"\n\nCommand: `{cmd}`\n")


if __name__ == "__main__":
    main()
