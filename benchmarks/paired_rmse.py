"""Is the Bayesian model's RMSE worse than a summary-level peer's? A paired comparison.

RMSEs over 100 replications carry a Monte Carlo error of about 7%, too much to rank estimators
that differ by 1%. Every estimator of a study sees the same data sets, so the difference of
squared errors, replication by replication, has a far smaller error. For each setting of a study
folder (``results.csv`` of ``bayes-cmma simulate``) and each coefficient at the setting's true
degree, this prints the RMSE ratio bayes / peer and the mean paired difference of squared errors
with its standard error (negative: Bayes better).

Usage: ``python benchmarks/paired_rmse.py STUDY_DIR [STUDY_DIR ...]`` (writes ``paired_rmse.md``
into each folder)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

PEERS = ("summary_tc", "summary_liml", "liml", "admgda")


def paired_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, power, peer): RMSE ratio, paired MSE difference and its s.e."""
    rows = []
    for setting, g in results.groupby("setting", sort=False):
        # the true degree: the highest power with a nonzero true coefficient among the fitted ones
        true_degree = int(g.loc[g["true"] != 0, "power"].max())
        g = g[g["degree"] == true_degree]
        for power, gp in g.groupby("power"):
            wide = gp.pivot_table(index="rep", columns="estimator", values="estimate")
            sq = (wide - float(gp["true"].iloc[0])) ** 2
            for peer in PEERS:
                if peer not in sq or "bayes" not in sq:
                    continue
                diff = (sq["bayes"] - sq[peer]).dropna()
                se = diff.std(ddof=1) / np.sqrt(len(diff))
                rows.append({"setting": setting, "coefficient": f"beta_{power}", "peer": peer, "n": len(diff),
                             "rmse_ratio": np.sqrt(sq["bayes"].mean() / sq[peer].mean()),
                             "mse_diff": diff.mean(), "mse_diff_se": se, "z": diff.mean() / se})
    return pd.DataFrame(rows)


def _markdown(table: pd.DataFrame) -> str:
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    args = ap.parse_args()
    for folder in map(Path, args.folders):
        table = paired_table(pd.read_csv(folder / "results.csv"))
        text = (f"# Paired RMSE, bayes against the summary-level peers: {folder.name}\n\n"
                f"Command: `python benchmarks/paired_rmse.py {folder}` (from `results.csv`).\n"
                "mse_diff = mean over replications of (bayes error)^2 - (peer error)^2; z = mse_diff / its s.e. "
                "(positive: Bayes worse).\n\n" + _markdown(table) + "\n")
        (folder / "paired_rmse.md").write_text(text)
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
