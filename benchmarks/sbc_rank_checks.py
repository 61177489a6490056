"""Other uniformity checks of committed SBC ranks: chi-square in 5, 10 and 20 bins, and KS.

``bayes-cmma calibrate`` reports a chi-square test in 10 bins. A single small p-value can come
from a spike in one binning; the same ranks in other binnings and a KS test on the randomised
ranks ((rank + U(0, 1)) / (L + 1), seed 0) tell a spike from a trend.

Usage: ``python benchmarks/sbc_rank_checks.py benchmarks/results/sbc_cubic_auto/ranks.csv [--parameter kpi_mean[0]]``
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy import stats

from bayes_cmma.calibration import uniformity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ranks", nargs="+", help="ranks.csv files written by bayes-cmma calibrate")
    ap.add_argument("--parameter", help="only this parameter")
    ap.add_argument("--draws", type=int, default=200, help="L, the number of draws ranked against (default 200)")
    args = ap.parse_args()
    print("| ranks | parameter | chi2 p, 5 bins | 10 bins | 20 bins | KS p |")
    print("|---|---|---|---|---|---|")
    for path in args.ranks:
        ranks = pd.read_csv(path)
        for name, g in ranks.groupby("parameter", sort=False):
            if args.parameter and name != args.parameter:
                continue
            p = [float(uniformity(g, args.draws, b)["p_value"].iloc[0]) for b in (5, 10, 20)]
            u = (g["rank"].to_numpy() + np.random.default_rng(0).uniform(size=len(g))) / (args.draws + 1)
            ks = float(stats.kstest(u, "uniform").pvalue)
            print(f"| {path} | {name} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} | {ks:.3f} |")


if __name__ == "__main__":
    main()
