"""Other uniformity checks of committed SBC ranks: chi-square in 5, 10 and 20 bins, and KS.

``bayes-cmma calibrate`` reports a chi-square test in 10 bins. A single small p-value can come
from a spike in one binning; the same ranks in other binnings and a KS test on the randomised
ranks ((rank + U(0, 1)) / (L + 1), seed 0) tell a spike from a trend. Files written since the
z-scores were recorded also get E[z] = 0 and E[z^2] = 1 tests, and the share of fits whose bulk
ESS is below L (ranks then are not from roughly independent draws).

Usage: ``python benchmarks/sbc_rank_checks.py benchmarks/results/sbc_cubic_auto/ranks.csv [--parameter kpi_mean[0]]``
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy import stats

from bayes_cmma.calibration import uniformity, z_moments


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ranks", nargs="+", help="ranks.csv files written by bayes-cmma calibrate")
    ap.add_argument("--parameter", help="only this parameter")
    ap.add_argument("--draws", type=int, default=200, help="L, the number of draws ranked against (default 200)")
    args = ap.parse_args()
    print("| ranks | parameter | chi2 p, 5 bins | 10 bins | 20 bins | KS p | E[z]=0 p | E[z^2]=1 p | ESS < L |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in args.ranks:
        ranks = pd.read_csv(path)
        for name, g in ranks.groupby("parameter", sort=False):
            if args.parameter and name != args.parameter:
                continue
            p = [float(uniformity(g, args.draws, b)["p_value"].iloc[0]) for b in (5, 10, 20)]
            u = (g["rank"].to_numpy() + np.random.default_rng(0).uniform(size=len(g))) / (args.draws + 1)
            ks = float(stats.kstest(u, "uniform").pvalue)
            if "z" in g:
                zm = z_moments(g["z"].to_numpy(dtype=float))
                extra = f"{zm['z_mean_p']:.3f} | {zm['z2_p']:.3f} | {(g['ess_bulk'] < args.draws).mean():.0%}"
            else:
                extra = "- | - | -"
            print(f"| {path} | {name} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} | {ks:.3f} | {extra} |")


if __name__ == "__main__":
    main()
