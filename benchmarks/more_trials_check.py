"""Is the value-of-more-trials prediction right? Predicted against realised, with refits on real new trials.

For each replication: simulate K + max(K_new) trials of a KPI and 3 metrics from a known joint law
(``bayes_cmma.checks.ranking_calibration.simulate_candidates``; the truly best metric is known),
fit the joint model (``bc.fit_joint``, pooled prior, or ``--prior tie``) on the first K trials and
predict, with ``bc.value_of_trials`` (``bc.value_of_trials_tie`` under the tie prior), the
probability that the metric chosen after K_new more trials is truly best and its expected P(best).
Then refit on the first K + K_new trials (new trials from the same law, as the prediction assumes),
choose the metric with the largest posterior mean elasticity and record whether it is truly best
and its P(best). Over replications the mean predicted probability should match the realised
frequency (target: within 5 percentage points).

Writes ``results.csv`` (one row per replication and K_new) and ``summary.md``.

``--metric-corr-eta X`` fits with LKJ concentration X on the metrics' correlation
(``bc.fit_joint(metric_corr_eta=X)``; recorded in the results and shown beside the prior), and
``--latent-prior lkj`` with one LKJ prior over the KPI's and metrics' correlation
(``bc.fit_joint(latent_prior="lkj")``; with ``--prior tie``), ``--latent-prior wishart`` with the
inverse-Wishart prior over their covariance.

Usage: ``python benchmarks/more_trials_check.py --sims 100 --trials 20 --regime spread --new 20 80
[--corr 0.8] [--draws 400] [--metric-corr-eta X] [--latent-prior lkj|wishart]
[--out benchmarks/results/more_trials_check]``;
``--summarise [A.csv ...]`` writes ``summary.md`` from ``results.csv`` (or from the given files, merged into it).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def one_replication(corr: float, regime: str, k: int, new: list[int], rep: int, seed: int, draws: int, tune: int,
                    prior: str = "pooled", metric_corr_eta: float | None = None,
                    latent_prior: str = "slopes") -> list[dict]:
    import bayes_cmma as bc
    from bayes_cmma.checks.ranking_calibration import candidate_truth, simulate_candidates
    from bayes_cmma.inputs.data import TrialData

    rng = np.random.default_rng([seed, int(corr * 1000), k, rep, sum(map(ord, regime))])
    truth = candidate_truth(corr, regime)
    data = simulate_candidates(rng, truth, metric_corr=corr, n_trials=k + max(new))
    fit_seed = int(rng.integers(2**31))
    eta = {} if metric_corr_eta is None else {"metric_corr_eta": metric_corr_eta}
    label = prior if metric_corr_eta is None else f"{prior} (LKJ {metric_corr_eta:g})"
    if latent_prior != "slopes":
        from bayes_cmma.fitting.joint import LATENT_LKJ_ETA

        eta["latent_prior"] = latent_prior
        label = (f"{prior} (latent LKJ {eta.get('metric_corr_eta', LATENT_LKJ_ETA):g})" if latent_prior == "lkj"
                 else f"{prior} (latent {latent_prior})")

    def fit_first(n: int):
        subset = TrialData(dataset=data.dataset.isel(trial=slice(0, n)), extra=data.extra.iloc[0:0])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = bc.fit_joint(subset, "y", truth.metrics, at=truth.at, seed=fit_seed, draws=draws, tune=tune,
                               chains=4, cores=1, elasticity_prior=prior, **eta)
        if prior == "tie":  # the tie prior's draws, and for the prediction its whole posterior
            tied = fit.tie_posterior(truth.at, lift=truth.lift, baseline=truth.baseline)
            return tied["elasticity"], len(caught), tied
        el = fit.elasticity(truth.at, lift=truth.lift, baseline=truth.baseline)
        return el, len(caught), None

    t0 = time.perf_counter()
    el, n_warn, tied = fit_first(k)
    predicted = (bc.value_of_trials_tie(tied, k, [0, *new], seed=rep) if prior == "tie"
                 else bc.value_of_trials(el, k, [0, *new], seed=rep))
    today = truth.metrics[int(np.argmax(el.mean(("chain", "draw")).sel(metric=truth.metrics).values))]
    rows = [{"prior": label, "corr": corr, "regime": regime, "trials": k, "rep": rep, "new_trials": 0,
             "predicted_p_correct": float(predicted["p_correct"].sel(new_trials=0)),
             "predicted_p_best": float(predicted["expected_p_best"].sel(new_trials=0)),
             "chosen": today, "truly_best": truth.best, "correct": today == truth.best,
             "p_best_after": float(bc.rank_metrics(el)["p_best"].sel(metric=today)),
             "warnings": n_warn}]
    for n in new:
        el_after, n_warn, _ = fit_first(k + n)
        chosen = truth.metrics[int(np.argmax(el_after.mean(("chain", "draw")).sel(metric=truth.metrics).values))]
        rows.append({"prior": label, "corr": corr, "regime": regime, "trials": k, "rep": rep, "new_trials": n,
                     "predicted_p_correct": float(predicted["p_correct"].sel(new_trials=n)),
                     "predicted_p_best": float(predicted["expected_p_best"].sel(new_trials=n)),
                     "chosen": chosen, "truly_best": truth.best, "correct": chosen == truth.best,
                     "p_best_after": float(bc.rank_metrics(el_after)["p_best"].sel(metric=chosen)),
                     "warnings": n_warn})
    seconds = time.perf_counter() - t0
    for r in rows:
        r["seconds"] = seconds
        r["draws"] = draws
    return rows


def _draws(results: pd.DataFrame) -> str:
    """The draws per chain of the fits (recorded from this version on; the earlier committed runs used 300)."""
    if "draws" not in results or results["draws"].isna().all():
        return "300 draws per chain, the committed runs' setting, not recorded in their results"
    return "/".join(f"{d:g}" for d in sorted(results["draws"].dropna().unique())) + " draws per chain"


def summarise(results: pd.DataFrame) -> str:
    lines = ["# The value of more trials: predicted against realised", "",
             "Generated by `benchmarks/more_trials_check.py` from `results.csv`. Per replication the joint model "
             "(the prior in the table's first column) is fitted on K trials, `bc.value_of_trials` (with the tie "
             "prior `bc.value_of_trials_tie`) predicts the choice after K_new more "
             "trials, and the model is refitted on K + K_new trials from the same law. Predicted: the mean of "
             "the predicted P(correct choice) and of the expected P(best) of the choice; realised: how often the "
             "refit's choice (largest posterior mean elasticity) was truly best (+- 1 binomial standard error), "
             "and the refit's mean P(best) of its choice.", "",
             "| prior | corr | regime | K | K_new | replications | predicted P(correct) | realised P(correct) | "
             "gap, points | predicted E[P(best)] | realised mean P(best) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    if "prior" not in results:  # results written before the tie prior was offered
        results = results.assign(prior="pooled")
    for (prior, corr, regime, k, n), g in results.groupby(["prior", "corr", "regime", "trials", "new_trials"],
                                                          sort=False):
        freq = g["correct"].mean()
        se = np.sqrt(freq * (1 - freq) / len(g))
        gap = 100 * (g["predicted_p_correct"].mean() - freq)
        lines.append(f"| {prior} | {corr:g} | {regime} | {k} | {n} | {len(g)} | "
                     f"{g['predicted_p_correct'].mean():.3f} | "
                     f"{freq:.3f} +- {se:.3f} | {gap:+.1f} | {g['predicted_p_best'].mean():.3f} | "
                     f"{g['p_best_after'].mean():.3f} |")
    per_rep = results.groupby(["prior", "corr", "regime", "trials", "rep"])
    lines += ["", f"Median seconds per replication (all its fits, on 2 cores shared with other studies): "
              f"{per_rep['seconds'].first().median():.0f}; fits that raised a warning of any kind (at "
              f"{_draws(results)}; e.g. R-hat above 1.01 for a hyperparameter): "
              f"{int((results['warnings'] > 0).sum())} of {len(results)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    from bayes_cmma.fitting.joint import LATENT_PRIORS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=100)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--regime", default="spread")
    parser.add_argument("--corr", type=float, default=0.8)
    parser.add_argument("--new", type=int, nargs="+", default=[20, 80])
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--tune", type=int, default=400)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--prior", default="pooled", choices=["pooled", "tie"],
                        help="the joint model's elasticity prior (tie: bc.value_of_trials_tie predicts)")
    parser.add_argument("--metric-corr-eta", type=float, default=None,
                        help="LKJ concentration of the metrics' correlation (default: bc.fit_joint's)")
    parser.add_argument("--latent-prior", default="slopes", choices=LATENT_PRIORS,
                        help="the joint model's latent prior (bc.fit_joint(latent_prior=...)); lkj with --prior tie")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "more_trials_check")
    parser.add_argument("--summarise", nargs="*", type=Path, metavar="RESULTS_CSV",
                        help="only write summary.md (in --out) from results.csv, or from these files merged")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.csv"
    if args.summarise:
        pd.concat([pd.read_csv(p) for p in args.summarise], ignore_index=True).to_csv(path, index=False)
    if args.summarise is None:
        rows = []
        for rep in range(args.sims):
            rows += one_replication(args.corr, args.regime, args.trials, args.new, rep, args.seed, args.draws,
                                    args.tune, args.prior, args.metric_corr_eta, args.latent_prior)
            pd.DataFrame(rows).to_csv(path, index=False)
            print(f"rep {rep}: {rows[-1]['seconds']:.1f} s", flush=True)
    (args.out / "summary.md").write_text(summarise(pd.read_csv(path)))
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
