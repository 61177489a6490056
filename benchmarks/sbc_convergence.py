"""Which SBC fits fail to converge? The scale of their simulated data, from a committed run.

SBC runs on the internal scale with one fixed template (``bayes_cmma.checks.calibration``), so a prior
draw can produce trial summaries far from the unit scale that ``model.standardise`` gives every
real data set before sampling. This script regenerates the simulated data of a run (same model,
seed and template; no fitting), joins each simulation's worst bulk ESS from the run's
``ranks.csv``, and tabulates the share of fits with a parameter at ESS < 100 by the across-trial
sd of the simulated KPI ATEs (1 for every real fit, by construction), and by the true reliability
of the metric's first power, omega_1^2 / (omega_1^2 + mean measurement variance): near 0 is a
weak-A4 data set, where beta is barely identified (the toolkit's A4 warning is for that case),
and whether that warning (``assumptions.relevance_check`` on the simulated data) fires.

Usage: ``python benchmarks/sbc_convergence.py benchmarks/results/sbc_cubic/ranks.csv
--model cubic --seed 2018``
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy import stats

from bayes_cmma.checks.assumptions import relevance_check
from bayes_cmma.checks.calibration import _scalars, simulations
from bayes_cmma.fitting.bayes import resolve_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ranks", help="ranks.csv of a calibrate run that recorded ess_bulk")
    ap.add_argument("--model", default="cubic")
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--teams", type=int, default=4)
    args = ap.parse_args()
    ranks = pd.read_csv(args.ranks)
    sims = int(ranks["sim"].max()) + 1
    spec = resolve_spec(int(args.model) if args.model.isdigit() else args.model)
    kpi_sd, reliability, weak = [], [], []
    for _, truth, design in simulations(spec, sims, n_trials=args.trials, n_teams=args.teams, seed=args.seed):
        kpi_sd.append(float(design.z[:, 0].std()))
        omega2 = float(_scalars(truth, spec.degree, args.teams)["metric_sd[1]"]) ** 2
        reliability.append(omega2 / (omega2 + float(design.S[:, 1, 1].mean())))
        weak.append(relevance_check(design).weak)
    d = pd.DataFrame({"kpi_sd": kpi_sd, "reliability": reliability, "a4_warning": weak})
    d["ess_min"] = ranks.groupby("sim")["ess_bulk"].min()
    d["divergent"] = ranks.groupby("sim")["divergences"].first() > 0
    d["low_ess"] = d["ess_min"] < 100
    bins = pd.cut(d["kpi_sd"], [0, 5, 20, 100, np.inf], labels=["< 5", "5-20", "20-100", ">= 100"])
    table = d.groupby(bins, observed=True).agg(fits=("low_ess", "size"), low_ess=("low_ess", "mean"),
                                               divergent=("divergent", "mean"))
    print(f"{args.ranks}: {int(d['low_ess'].sum())} of {sims} fits have a parameter with bulk ESS < 100.")
    print(f"Median across-trial sd of the simulated KPI ATEs: {d['kpi_sd'].median():.1f} "
          f"(fits with ESS < 100: {d.loc[d['low_ess'], 'kpi_sd'].median():.1f}; "
          f"the others: {d.loc[~d['low_ess'], 'kpi_sd'].median():.1f}). A real fit sees 1.")
    rho = stats.spearmanr(d["kpi_sd"], d["ess_min"]).statistic
    print(f"Spearman correlation of the KPI sd with the fit's worst ESS: {rho:.2f}\n")
    print("| sd of simulated KPI ATEs | fits | share with ESS < 100 | share with divergences |")
    print("|---|---|---|---|")
    for label, row in table.iterrows():
        print(f"| {label} | {int(row['fits'])} | {row['low_ess']:.0%} | {row['divergent']:.0%} |")
    rel = pd.cut(d["reliability"], [0, 0.1, 0.5, 0.9, 1.0], labels=["< 0.1", "0.1-0.5", "0.5-0.9", ">= 0.9"])
    table = d.groupby(rel, observed=True).agg(fits=("low_ess", "size"), low_ess=("low_ess", "mean"),
                                              divergent=("divergent", "mean"), warned=("a4_warning", "mean"))
    print("\n| true reliability of the metric (A4) | fits | share with ESS < 100 | share with divergences "
          "| share where the A4 warning fires |")
    print("|---|---|---|---|---|")
    for label, row in table.iterrows():
        print(f"| {label} | {int(row['fits'])} | {row['low_ess']:.0%} | {row['divergent']:.0%} | {row['warned']:.0%} |")
    low = d[d["low_ess"]]
    print(f"\nOf the {len(low)} fits with ESS < 100, the A4 warning fires on {int(low['a4_warning'].sum())}; "
          f"on the {int((~d['low_ess']).sum())} others, {int(d.loc[~d['low_ess'], 'a4_warning'].sum())}.")


if __name__ == "__main__":
    main()
