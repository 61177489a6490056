"""Two P(best) calibration runs on the same tables, compared table by table.

``pbest_calibration.py`` draws each table from (seed, setting, replication) only, so two runs with the
same seed and settings but different arms or priors fit the same tables. This script pairs their
chosen metrics (the one with the highest P(best) per replication) and reports, per setting, each run's
gap (mean P(best) of the chosen metric minus how often it is truly best), the paired change of the gap
and of the share of correct choices with their Monte Carlo standard errors (sd of the per-table
differences / sqrt(n)), and how often each metric was chosen.

Usage: ``python benchmarks/pbest_paired.py --pairs BASE_DIR:NEW_DIR ... [--arm joint_tie]
[--out benchmarks/results/pbest_paired_wishart]`` (result folders of ``pbest_calibration.py``; settings
present in both folders are compared).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SETTING = ["trials", "corr", "regime"]


def chosen(results: pd.DataFrame, arm: str) -> pd.DataFrame:
    """The chosen metric's row per (setting, replication) for one arm."""
    rows = results[results["arm"] == arm]
    picked = rows.loc[rows.groupby([*SETTING, "rep"])["p_best"].idxmax()]
    return picked.set_index([*SETTING, "rep"])[["metric", "p_best", "is_best"]]


def compare(base: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """One row per setting in both: gaps, paired changes (se) and choice counts."""
    joined = base.add_suffix("_base").join(new.add_suffix("_new"), how="inner")
    rows = []
    for key, g in joined.groupby(level=SETTING):
        n = len(g)
        hit_b, hit_n = g["is_best_base"].astype(float), g["is_best_new"].astype(float)
        gap_change = (g["p_best_new"] - hit_n) - (g["p_best_base"] - hit_b)
        hit_change = hit_n - hit_b
        rows.append(dict(zip(SETTING, key, strict=True)) | {
            "tables": n,
            "gap_base": 100 * (g["p_best_base"].mean() - hit_b.mean()),
            "gap_new": 100 * (g["p_best_new"].mean() - hit_n.mean()),
            "gap_change": 100 * gap_change.mean(), "gap_change_se": 100 * gap_change.std() / np.sqrt(n),
            "truly_best_base": 100 * hit_b.mean(), "truly_best_new": 100 * hit_n.mean(),
            "correct_change": 100 * hit_change.mean(), "correct_change_se": 100 * hit_change.std() / np.sqrt(n),
            "chosen_base": " ".join(f"{m} {c}" for m, c in sorted(g["metric_base"].value_counts().items())),
            "chosen_new": " ".join(f"{m} {c}" for m, c in sorted(g["metric_new"].value_counts().items())),
        })
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", nargs="+", required=True, metavar="BASE:NEW")
    ap.add_argument("--arm", default="joint_tie")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pbest_paired_wishart"))
    args = ap.parse_args()
    parts = []
    for pair in args.pairs:
        base_dir, sep, new_dir = pair.partition(":")
        if not sep:
            ap.error(f"--pairs takes BASE_DIR:NEW_DIR, got {pair!r}")
        base, new = (chosen(pd.read_csv(Path(d) / "results.csv"), args.arm) for d in (base_dir, new_dir))
        table = compare(base, new)
        if table.empty:
            ap.error(f"{base_dir} and {new_dir} share no setting")
        parts.append(table.assign(base=Path(base_dir).name, new=Path(new_dir).name))
    table = pd.concat(parts, ignore_index=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "paired.csv", index=False)
    lines = ["# P(best) runs compared table by table", "",
             f"Command: `python benchmarks/pbest_paired.py --arm {args.arm} --pairs "
             + " ".join(f"{Path(b).name}:{Path(n).name}" for b, _, n in (p.partition(':') for p in args.pairs))
             + "` (folders under `benchmarks/results/`). Gap: the chosen metric's mean P(best) minus how often it "
             "is truly best, in points; changes are new minus base, paired by table, with their Monte Carlo se.", "",
             "| setting | tables | gap base | gap new | gap change (se) | truly best base, new | correct change (se) "
             "| chosen base | chosen new |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| K = {r.trials}, corr {r.corr:g}, {r.regime.replace('_', ' ')} | {r.tables} | "
                     f"{r.gap_base:+.1f} | {r.gap_new:+.1f} | {r.gap_change:+.1f} ({r.gap_change_se:.1f}) | "
                     f"{r.truly_best_base:.0f}%, {r.truly_best_new:.0f}% | {r.correct_change:+.1f} "
                     f"({r.correct_change_se:.1f}) | {r.chosen_base} | {r.chosen_new} |")
    lines += ["", "Base and new folders per row, in order: "
              + "; ".join(f"{r.base} -> {r.new}" for r in table.itertuples()), ""]
    (out / "summary.md").write_text("\n".join(lines))
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
