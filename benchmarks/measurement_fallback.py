"""Which measurement model, and which fallback when a trial table has no arm sizes?

The paper's cubic setting (Table 3: K = 100, mu(m) = 4m + 0m^2 + 5m^3), with equal trial sizes
(N_per = 1000) and with unequal ones (N_k log-uniform 200-5000), fitted at the true degree by the
Bayesian model with each measurement model (``[measurement]`` of the spec):

* ``per_trial``: each trial's reported S_k;
* ``pooled, arm sizes``: S_k = c_k U with c_k = 1/n_treated + 1/n_control (the default);
* the fallbacks without arm sizes (withheld from the model): c_k from the variance of the metric's
  ATE (``metric_se``, the default), from the KPI's (``kpi_se``), or equal (``equal``).

Every variant sees the same data sets (a study's seeds depend on the setting, not on the
estimator). The summary-level total-covariance estimator (Fuller's moments) and the paper's OLS run
beside them. Results: one study folder per variant under ``--out`` and a combined ``summary.md``.

Usage: ``python benchmarks/measurement_fallback.py [--sims 20] [--workers 2] [--out DIR]``
(default DIR: ``benchmarks/results/measurement_fallback``)
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import pandas as pd

from bayes_cmma.studies.runner import run_study
from bayes_cmma.studies.simulate import SimulationSettings
from bayes_cmma.studies.study import Setting, Study, summary_table

VARIANTS = {
    "per_trial": {"error_covariance": "per_trial"},
    "pooled_arm_sizes": {},
    "pooled_metric_se": {"arm_sizes": False, "size_proxy": "metric_se"},
    "pooled_kpi_se": {"arm_sizes": False, "size_proxy": "kpi_se"},
    "pooled_equal": {"arm_sizes": False, "size_proxy": "equal"},
}


def settings() -> tuple[Setting, ...]:
    cubic = dict(n_trials=100, beta=(4.0, 0.0, 5.0), random_slope=False)
    return (
        Setting("cubic, N_per=1000", SimulationSettings(n_per=1000, **cubic)),
        Setting("cubic, N_k 200-5000", SimulationSettings(n_per=200, n_per_max=5000, **cubic)),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sims", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--out", default="benchmarks/results/measurement_fallback")
    args = ap.parse_args()
    out = Path(args.out)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    tables = []
    for i, (name, meas) in enumerate(VARIANTS.items()):
        estimators = ("cmma_ols", "summary_tc", "bayes") if i == 0 else ("bayes",)
        study = Study(f"measurement_{name}", settings(), estimators=estimators, degrees=(3,), sims=args.sims,
                      seed=args.seed, bayes={"draws": args.draws, "tune": args.tune, "chains": 4, **meas})
        run = run_study(study, out / name, workers=args.workers, command=command)
        s = summary_table(run.results)
        s["estimator"] = [e if e != "bayes" else f"bayes ({name})" for e in s["estimator"]]
        tables.append(s)
    table = pd.concat(tables, ignore_index=True)
    lines = [
        "# Measurement model and its fallback without arm sizes (Table 3's cubic DRF, fitted at degree 3)",
        "",
        f"{args.sims} data sets per setting, the same for every variant; Bayesian fits 4 chains x {args.draws} "
        f"draws. Command: `{command}`",
        "",
        "| setting | estimator | bias beta_1 (MC s.e.) | bias beta_2 | bias beta_3 | coverage beta_1 / beta_2 / beta_3 "
        "| RMSE beta_1 | mean sd / sd of estimate, beta_1 | fits with divergences | mean time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (setting, est), g in table.groupby(["setting", "estimator"], sort=False):
        g = g.set_index("power")
        cov = " / ".join(f"{100 * g.loc[p, 'coverage']:.0f}%" for p in (1, 2, 3))
        lines.append(
            f"| {setting} | {est} | {g.loc[1, 'bias']:+.4f} ({g.loc[1, 'bias_mcse']:.4f}) | {g.loc[2, 'bias']:+.4f} "
            f"| {g.loc[3, 'bias']:+.4f} | {cov} | {g.loc[1, 'rmse']:.4f} "
            f"| {g.loc[1, 'mean_std_error']:.4f} / {g.loc[1, 'sd_estimate']:.4f} | {g.loc[1, 'divergent_reps']} "
            f"| {g.loc[1, 'mean_time_s']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    table.to_csv(out / "summary.csv", index=False)
    print(text)


if __name__ == "__main__":
    main()
