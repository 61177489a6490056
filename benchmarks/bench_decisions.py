"""Time the decision layer without a fit: the composite north star, the value of more trials, and the
model-free decision value and decision-focused fusion.

Builds a synthetic joint posterior (4 chains x 1000 draws, 3 metrics, 4 teams, with a reference
measurement covariance) and times ``bc.northstar`` (4 future sizes, both criteria) and
``bc.value_of_trials`` (default grid of 7 numbers of new trials) on its elasticity-like draws; and
``bc.decision_value``, ``bc.decision_focused_fusion`` (9 strengths and Stein's) and
``bc.bilevel_fusion`` on the embedded example's 190 trials and 3 metrics (defaults: 5 folds, 50
fission draws). Prints the median of ``--repeats`` runs of each.

Usage: ``python benchmarks/bench_decisions.py [--repeats 5]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import xarray as xr


def fake_joint(rng: np.random.Generator, chains: int = 4, draws: int = 1000, J: int = 3, T: int = 4) -> xr.DataTree:
    metrics, teams = [f"m{j + 1}" for j in range(J)], [f"t{t}" for t in range(T)]
    corr = np.broadcast_to(0.5 * np.eye(J) + 0.5, (chains, draws, J, J)).copy()
    sd = ("chain", "draw")
    post = xr.Dataset(
        {"beta": ((*sd, "metric"), rng.normal(1.0, 0.1, (chains, draws, J))),
         "metric_sd": ((*sd, "metric"), rng.uniform(0.8, 1.2, (chains, draws, J))),
         "metric_corr": ((*sd, "metric", "metric_other"), corr),
         "residual_sd": (sd, rng.uniform(0.2, 0.4, (chains, draws))),
         "alpha": ((*sd, "team", "metric"), rng.normal(0.3, 0.1, (chains, draws, T, J))),
         "kpi_mean": ((*sd, "team"), rng.normal(0.2, 0.1, (chains, draws, T)))},
        coords={"chain": np.arange(chains), "draw": np.arange(draws), "metric": metrics, "metric_other": metrics,
                "team": teams})
    q = ["y", *metrics]
    const = xr.Dataset({"reference_covariance": (("quantity", "quantity_other"), 0.3 * np.eye(J + 1) + 0.05),
                        "team_trials": ("team", np.full(T, 10))},
                       coords={"quantity": q, "quantity_other": q, "team": teams},
                       attrs={"reference_n_per_arm": float("nan")})
    obs = xr.Dataset({"trial_ate": (("trial", "quantity"), rng.normal(size=(40, J + 1)))},
                     coords={"trial": np.arange(40), "quantity": q})
    return xr.DataTree.from_dict({"posterior": post, "constant_data": const, "observed_data": obs})


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import bayes_cmma as bc

    tree = fake_joint(np.random.default_rng(0))
    beta = tree["posterior"]["beta"].transpose("metric", "chain", "draw")
    print(f"draws: 4 x 1000, 3 metrics, 4 teams; median of {args.repeats} runs")
    for criterion in ("sign", "correlation"):
        s = median_seconds(lambda c=criterion: bc.northstar(tree, [0.25, 1, 4, 16], criterion=c), args.repeats)
        print(f"bc.northstar, 4 future sizes, criterion {criterion}: {s:.2f} s")
    s = median_seconds(lambda: bc.value_of_trials(beta, 50), args.repeats)
    print(f"bc.value_of_trials, 7 numbers of new trials: {s:.2f} s")
    ex = bc.load_example()
    s = median_seconds(lambda: bc.decision_value(ex.trials, ex.kpi, ex.metrics), args.repeats)
    print(f"bc.decision_value, {len(ex.trials.trials)} trials, {len(ex.metrics)} metrics: {s:.2f} s")
    slopes = dict.fromkeys(ex.metrics, 1.0)
    s = median_seconds(lambda: bc.decision_focused_fusion(ex.trials, ex.kpi, ex.metrics, slopes), args.repeats)
    print(f"bc.decision_focused_fusion, 9 strengths and Stein's (the default), same trials: {s:.2f} s")
    s = median_seconds(lambda: bc.bilevel_fusion(ex.trials, ex.kpi, ex.metrics, slopes), args.repeats)
    print(f"bc.bilevel_fusion, a pull per metric, same trials: {s:.2f} s")


if __name__ == "__main__":
    main()
