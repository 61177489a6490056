"""How the Gaussian first stage copes when trial effects are multiplicative (log-normal).

Simulates the example's unit-level logs twice (seed 20201): as shipped (additive trial shifts,
the model's assumptions hold approximately) and with multiplicative trial baselines/effects (a
trial's metric effects and standard errors grow together). Summarises each with the toolkit's
summarizer, fits the quadratic model for ndcg (true DRF 8000 m - 4e5 m^2) and the paper's OLS,
and prints beta with 94% intervals (OLS: 95%).

Run: ``python benchmarks/misspecification.py``.
"""

from __future__ import annotations

import warnings

import bayes_cmma as bc
from bayes_cmma.checks.diagnostics import summary_table
from bayes_cmma.datasets.generate_example import TRUE_BETA, simulate_units


def main() -> None:
    warnings.simplefilter("ignore")
    print(f"true beta: {TRUE_BETA[0]:g}, {TRUE_BETA[1]:g}\n")
    print("| trial effects | estimator | beta_1 | beta_2 |")
    print("|---|---|---|---|")
    for label, mult in (("additive (shipped example)", False), ("multiplicative (log-normal)", True)):
        units = simulate_units(multiplicative=mult)
        trials, cov = bc.summarize_units(units, kpi="gmv", metrics=["ndcg"], degree=2)
        data = bc.read_trials(trials, cov)
        fit = bc.fit_metric(data, "gmv", "ndcg", "quadratic", seed=1)
        t = summary_table(fit.posterior)
        cells = [f"{t.loc[f'beta[{p}]', 'mean']:.4g} [{t.loc[f'beta[{p}]', 'eti94_lb']:.4g}, "
                 f"{t.loc[f'beta[{p}]', 'eti94_ub']:.4g}]" for p in (1, 2)]
        print(f"| {label} | Bayesian | {cells[0]} | {cells[1]} |")
        ols = bc.cmma_ols(data, "gmv", "ndcg", 2).coefficient_table()
        cells = [f"{ols['estimate'].iloc[i]:.4g} [{ols['ci95_lower'].iloc[i]:.4g}, {ols['ci95_upper'].iloc[i]:.4g}]"
                 for i in (-2, -1)]
        print(f"| {label} | OLS | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
