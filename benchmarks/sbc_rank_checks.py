"""Other uniformity checks of committed SBC ranks: chi-square in 5, 10 and 20 bins, and KS.

``bayes-cmma calibrate`` reports a chi-square test in 10 bins. A single small p-value can come
from a spike in one binning; the same ranks in other binnings and a KS test on the randomised
ranks ((rank + U(0, 1)) / (L + 1), seed 0) tell a spike from a trend. Files written since the
z-scores were recorded also get E[z] = 0 and E[z^2] = 1 tests, and the share of fits whose bulk
ESS is below L (ranks then are not from roughly independent draws). ``--min-ess N`` repeats the
checks on the simulations whose fit reached a bulk ESS of N for every recorded parameter (chains
that disagree or stick give ESS 2-3 with 2 chains); conditioning on convergence is itself a
selection, so read the two side by side.

Usage: ``python benchmarks/sbc_rank_checks.py benchmarks/results/sbc_cubic/ranks.csv [--parameter kpi_mean[0]]``
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy import stats

from bayes_cmma.checks.calibration import uniformity, z_moments


def _checks(label: str, ranks: pd.DataFrame, draws: int, only: str | None) -> None:
    print("| ranks | parameter | sims | chi2 p, 5 bins | 10 bins | 20 bins | KS p | E[z]=0 p | E[z^2]=1 p | ESS < L |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, g in ranks.groupby("parameter", sort=False):
        if only and name != only:
            continue
        p = [float(uniformity(g, draws, b)["p_value"].iloc[0]) for b in (5, 10, 20)]
        u = (g["rank"].to_numpy() + np.random.default_rng(0).uniform(size=len(g))) / (draws + 1)
        ks = float(stats.kstest(u, "uniform").pvalue)
        if "z" in g and g["z"].notna().any():
            zm = z_moments(g["z"].to_numpy(dtype=float))
            extra = f"{zm['z_mean_p']:.3f} | {zm['z2_p']:.3f} | {(g['ess_bulk'].dropna() < draws).mean():.0%}"
        else:
            extra = "- | - | -"
        print(f"| {label} | {name} | {len(g)} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} | {ks:.3f} | {extra} |")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ranks", nargs="+", help="ranks.csv files written by bayes-cmma calibrate")
    ap.add_argument("--parameter", help="only this parameter")
    ap.add_argument("--draws", type=int, default=200, help="L, the number of draws ranked against (default 200)")
    ap.add_argument("--min-ess", type=float, help="only simulations whose every parameter reached this bulk ESS")
    ap.add_argument("--pool", action="store_true",
                    help="also test all files' ranks together (only meaningful for runs with different seeds)")
    args = ap.parse_args()
    pooled = []
    for path in args.ranks:
        ranks = pd.read_csv(path)
        if "ess_bulk" in ranks:
            worst = ranks.groupby("sim")["ess_bulk"].min()
            div = ranks.groupby("sim")["divergences"].first() > 0
            low = worst < 100
            print(f"{path}: {int(low.sum())} of {len(worst)} fits have a parameter with bulk ESS < 100 "
                  f"({int((worst < 20).sum())} below 20); {int((low & ~div).sum())} of them without a divergence.")
            if args.min_ess is not None:
                keep = worst.index[worst >= args.min_ess]
                ranks = ranks[ranks["sim"].isin(keep)]
                print(f"Checks below: the {len(keep)} fits with bulk ESS >= {args.min_ess:g} for every parameter.")
        elif args.min_ess is not None:
            print(f"{path}: no ESS recorded (written before it was); all fits used.")
        print()
        _checks(path, ranks, args.draws, args.parameter)
        pooled.append(ranks.assign(sim=ranks["sim"].astype(str) + "@" + path))
    if args.pool and len(pooled) > 1:
        _checks("pooled", pd.concat(pooled, ignore_index=True), args.draws, args.parameter)


if __name__ == "__main__":
    main()
