"""Speed of the Bayesian fit on the embedded example (K = 190 trials, 8 teams, 3 metrics).

Prints, as medians over ``--repeats`` runs on this machine:
* compile time of one model shape (fresh process each time: nothing cached);
* sampling time per metric (4 chains x 1000 draws, 2 cores), for degree 2 and degree 3;
* ESS per second: the smallest bulk ESS of beta divided by that sampling time;
* end-to-end time of ``bayes-cmma demo`` from a cold start (new process, includes imports,
  compile, three fits and writing the outputs), and of ``bayes-cmma fit`` of one metric on the
  example's tables.

"Cold start" is a new process; PyTensor's and bayes_cmma's on-disk compile caches are filled
(as after any first run on a machine; ``benchmarks/compile_breakdown.py`` times an empty cache).

Run: ``python benchmarks/bench_fit.py [--repeats 3] [--demo-only]`` (the demo is timed with the
report, the default, and with ``--no-report``; so is the fit). Targets: sampling one metric
<= 3 s, the whole demo <= 60 s (issue 2), then the demo <= 20 s and one metric's fit <= 10 s
(issue 16).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

COMPILE_SNIPPET = """
import json, time, warnings
warnings.simplefilter("ignore")
import bayes_cmma as bc
from bayes_cmma.inputs.data import metric_design
from bayes_cmma.fitting.model import compiled_model, standardise
from bayes_cmma.fitting.spec import spec_for_degree
ex = bc.load_example()
spec = spec_for_degree({degree})
d = metric_design(ex.trials, "gmv", "ndcg", {degree}, warn_filled=False)
t = time.perf_counter(); compiled_model(spec, d, standardise(d)); print(json.dumps(time.perf_counter() - t))
"""


def compile_times(degree: int, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        res = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET.format(degree=degree)],
                             capture_output=True, text=True, check=True)
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def sampling(degree: int, repeats: int) -> dict[str, dict[str, float]]:
    import bayes_cmma as bc
    from bayes_cmma.checks.diagnostics import divergences, summary_table

    ex = bc.load_example()
    bc.fit_metric(ex.trials, "gmv", "ndcg", degree, seed=0, draws=50, tune=50)  # compile once, untimed
    out = {}
    for metric in ex.metrics:
        times, ess_s, div = [], [], []
        for r in range(repeats):
            f = bc.fit_metric(ex.trials, "gmv", metric, degree, seed=100 + r)
            t = f.timings["sample_s"]
            table = summary_table(f.posterior)
            ess = table.loc[[i for i in table.index if i.startswith("beta[")], "ess_bulk"].min()
            times.append(t)
            ess_s.append(ess / t)
            div.append(divergences(f.posterior))
        out[metric] = {"sample_s": statistics.median(times), "ess_per_s": statistics.median(ess_s),
                       "divergences": max(div)}
    return out


def cli_times(command: list[str], repeats: int) -> list[float]:
    """Wall time of ``bayes-cmma COMMAND --out TMP`` in a fresh process, ``repeats`` times."""
    out = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "bayes_cmma.cli", *command, "--out", tmp],
                           capture_output=True, text=True, check=True)
            out.append(time.perf_counter() - t)
    return out


def demo_times(repeats: int, extra: tuple[str, ...] = ()) -> list[float]:
    """``bayes-cmma demo`` end to end in a fresh process."""
    return cli_times(["demo", *extra], repeats)


def fit_times(repeats: int, extra: tuple[str, ...] = ()) -> list[float]:
    """``bayes-cmma fit`` of one metric on the example's tables, end to end in a fresh process."""
    from importlib.resources import files

    data = files("bayes_cmma") / "datasets"
    args = [str(data / "example_trials.csv"), "--cov", str(data / "example_cov.csv"), "--kpi", "gmv",
            "--metric", "ndcg", "--at", "ndcg=0.00195", "--kpi-baseline", "59.1"]
    return cli_times(["fit", *args, *extra], repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--demo-only", action="store_true", help="only the end-to-end timings (demo and fit)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"# bench_fit: median of {args.repeats} runs; 4 chains x 1000 draws, 2 cores\n")
    if not args.demo_only:
        model_table(args.repeats)
    for label, extra in (("", ()), (" with --no-report", ("--no-report",))):
        demo = demo_times(args.repeats, extra)
        print(f"\n`bayes-cmma demo{label}` end to end, cold start (degree 2, 3 metrics): median "
              f"{statistics.median(demo):.1f} s (runs: {', '.join(f'{t:.1f}' for t in demo)})", flush=True)
    for label, extra in (("", ()), (" with --no-report", ("--no-report",))):
        fit = fit_times(args.repeats, extra)
        print(f"\n`bayes-cmma fit` of one metric{label} end to end, cold start (the example's tables, degree 3 "
              f"by default): median {statistics.median(fit):.1f} s (runs: {', '.join(f'{t:.1f}' for t in fit)})",
              flush=True)


def model_table(repeats: int) -> None:
    print("| degree | compile (s) | metric | sampling (s) | min bulk ESS of beta / s | max divergences |")
    print("|---|---|---|---|---|---|")
    for degree in (2, 3):
        comp = statistics.median(compile_times(degree, repeats))
        for metric, row in sampling(degree, repeats).items():
            print(f"| {degree} | {comp:.1f} | {metric} | {row['sample_s']:.1f} | {row['ess_per_s']:.0f} | "
                  f"{row['divergences']} |", flush=True)


if __name__ == "__main__":
    main()
