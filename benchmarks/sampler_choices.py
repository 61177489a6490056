"""Evidence for the model's sampling choices, and parameter recovery (docs: model.md).

1. Recovery on data simulated from the model (300 trials, 4 teams, degree 2, noisy ATEs): the
   posterior of beta vs the truth (2, -1) and the paper's OLS.
2. Team effects with only 2 teams: partial pooling vs independent effects (what bayes_cmma uses
   below 4 teams): max R-hat and divergences, two seeds.
3. Mass-matrix adaptation for a cubic on the example data (ndcg): diag vs low_rank (the default):
   sampling time, mean tree depth, divergences.

Run: ``python benchmarks/sampler_choices.py`` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import warnings

import numpy as np

import bayes_cmma as bc
import bayes_cmma.fitting.model as model_mod
from bayes_cmma.checks.diagnostics import divergences, summary_table
from bayes_cmma.fitting.bayes import fit_design
from bayes_cmma.fitting.spec import replace_spec, spec_for_degree
from bayes_cmma.inputs.data import metric_design
from bayes_cmma.studies.synthetic import simulate_summaries


def recovery() -> None:
    data, _ = simulate_summaries(np.random.default_rng(5), n_trials=300, n_teams=4, beta=(2.0, -1.0),
                                     se_range=(0.3, 0.7))
    fit = bc.fit_metric(data, "y", "m", 2, seed=3)
    b = fit.beta
    ols = bc.cmma_ols(data, "y", "m", 2).beta.to_numpy()
    print("## 1. recovery (truth beta = 2, -1)\n")
    means, sds = b.mean(("chain", "draw")).values, b.std(("chain", "draw")).values
    print(f"Bayesian posterior mean (sd): {', '.join(f'{m:.3f} ({s:.3f})' for m, s in zip(means, sds, strict=True))}")
    print(f"OLS (paper's Algorithm 1):    {', '.join(f'{x:.3f}' for x in ols)}\n")


def pooling() -> None:
    data, _ = simulate_summaries(np.random.default_rng(8), n_trials=40, n_teams=2, beta=(1.5,))
    design = metric_design(data, "y", "m", 1)
    print("## 2. two teams: partial pooling vs independent team effects\n")
    print("| team effects | seed | max R-hat | divergences |\n|---|---|---|---|")
    default = model_mod.MIN_TEAMS_FOR_POOLING
    try:
        for label, min_teams in (("partially pooled", 1), ("independent (default)", default)):
            model_mod.MIN_TEAMS_FOR_POOLING = min_teams
            model_mod.clear_compiled_cache()
            for seed in (1, 2):
                f = fit_design(design, spec_for_degree(1), seed=seed)
                t = summary_table(f.posterior)
                print(f"| {label} | {seed} | {t['r_hat'].max():.3f} ({t['r_hat'].idxmax()}) | "
                      f"{divergences(f.posterior)} |", flush=True)
    finally:
        model_mod.MIN_TEAMS_FOR_POOLING = default
        model_mod.clear_compiled_cache()
    print()


def adaptation() -> None:
    ex = bc.load_example()
    design = metric_design(ex.trials, "gmv", "ndcg", 3, warn_filled=False)
    print("## 3. cubic on the example (ndcg): mass-matrix adaptation\n")
    print("| adaptation | sampling (s) | mean tree depth | divergences |\n|---|---|---|---|")
    for adapt in ("diag", "low_rank"):
        spec = replace_spec(spec_for_degree(3), sampler={"adaptation": adapt})
        f = fit_design(design, spec, seed=1)
        depth = float(f.posterior["sample_stats"]["depth"].mean())
        print(f"| {adapt} | {f.timings['sample_s']:.1f} | {depth:.2f} | {divergences(f.posterior)} |", flush=True)


def main() -> None:
    warnings.simplefilter("ignore")
    recovery()
    pooling()
    adaptation()


if __name__ == "__main__":
    main()
