"""Does the composite north star recover the truly optimal weights? (issue: from a ranking to a decision)

For each replication: simulate trial summaries of a KPI and 3 metrics from a known joint law
(``bayes_cmma.checks.ranking_calibration.simulate_candidates``: the KPI driven by the first metric,
metrics correlated ``--corr`` across trials, 4 teams with their own means), fit the joint model
(``bc.fit_joint``, pooled elasticity prior at the law's levels) and compute ``bc.northstar`` for
future trials of several sizes. The future trial's measurement covariance is the fitted table's
median-trial covariance divided by the size, the same for the truth and the posterior, so that the
check is about the latent law. Per size it records:

- the true optimal weights (the same optimiser on the true law, standardised by the same scales as
  the posterior's: unit length on the ATEs divided by their sd across the trials) and whether each
  metric's 94% posterior interval covers its true weight, for the equal-tailed interval and for the
  highest-density interval (HDI, ``bc.northstar_frame``'s since it was measured here): a unit-length
  weight near 1 has a posterior piled up against 1, whose equal-tailed interval never reaches the
  bound;
- the true score of the composite with the posterior-median weights, of the true optimum, and of
  every single metric;
- the posterior-median weights, to show how they move with the future trial's size.

Writes ``results.csv`` (one row per replication, size and metric) and ``summary.md``.

Usage: ``python benchmarks/northstar_check.py --sims 100 --trials 20 50 --corr 0.8 [--criterion sign]
[--prior pooled|independent] [--latent-prior slopes|lkj|wishart] [--metric-corr-eta X]
[--se 0.2 0.5] [--draws 500] [--out benchmarks/results/northstar_check]``;
``--summarise A.csv B.csv`` merges results files into ``--out`` and writes ``summary.md``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SIZES = (0.0625, 0.25, 1.0, 4.0)


def one_replication(corr: float, trials: int, rep: int, seed: int, draws: int, tune: int, criterion: str,
                    prior: str = "pooled", se: tuple[float, float] = (0.2, 0.5), latent_prior: str = "slopes",
                    metric_corr_eta: float | None = None) -> list[dict]:
    import bayes_cmma as bc
    from bayes_cmma import dims
    from bayes_cmma.checks.ranking_calibration import candidate_truth, simulate_candidates
    from bayes_cmma.decisions import northstar as ns

    rng = np.random.default_rng([seed, int(corr * 1000), trials, rep])
    truth = candidate_truth(corr, "spread")
    data, law = simulate_candidates(rng, truth, metric_corr=corr, n_trials=trials, se_range=se, return_law=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = bc.fit_joint(data, "y", truth.metrics, at=truth.at, elasticity_prior=prior, latent_prior=latent_prior,
                           metric_corr_eta=metric_corr_eta, seed=int(rng.integers(2**31)), draws=draws, tune=tune,
                           chains=4, cores=1)
    seconds = time.perf_counter() - t0
    out = bc.northstar(fit, SIZES, criterion=criterion)
    tree = fit.posterior
    teams = [str(t) for t in tree["posterior"][dims.TEAM].values]
    order = [int(t.removeprefix("team")) for t in teams]
    mu_m, mu_y = law["mu_m"][order], law["mu_y"][order]
    counts = law["team_trials"][order].astype(float)
    tw = counts / counts.sum()
    ref = tree["constant_data"]["reference_covariance"].sel(
        {dims.QUANTITY: truth.metrics, dims.QUANTITY_OTHER: truth.metrics}).values
    scale = out["scale"].sel({dims.METRIC: truth.metrics}).values
    rows = []
    for size in SIZES:
        S_f = ref / size
        w_true, s_true, single_true = ns.optimal_weights(law["sigma"], law["c"], law["var_y"], mu_m, mu_y, S_f, tw,
                                                         criterion)
        w_true = w_true * scale / np.linalg.norm(w_true * scale)  # standardised as bc.northstar reports
        sub = out.sel({dims.FUTURE_SIZE: size})
        w = sub["weight"].stack(sample=dims.SAMPLE_DIMS).transpose("sample", dims.METRIC).values
        w_med = np.median(w, axis=0)
        s_hat = float(ns.score_weights(w_med / scale, law["sigma"], law["c"], law["var_y"], mu_m, mu_y, S_f, tw,
                                       criterion))
        lo, hi = np.quantile(w, [0.03, 0.97], axis=0)
        hdi = np.array([ns.weight_interval(w[:, j], 0.94) for j in range(w.shape[1])])  # as bc.northstar_frame
        lead = truth.metrics.index(str(sub["lead"].values))  # relative weights: over the posterior's lead metric
        rel = sub["relative_weight"].stack(sample=dims.SAMPLE_DIMS).transpose("sample", dims.METRIC).values
        rel_true = w_true / w_true[lead]
        rel_lo, rel_med, rel_hi = np.quantile(rel, [0.03, 0.5, 0.97], axis=0)
        for j, m in enumerate(truth.metrics):
            label = prior if latent_prior == "slopes" else f"{prior}, latent {latent_prior}"
            label += "" if metric_corr_eta is None else f" {metric_corr_eta:g}"
            rows.append({"prior": label, "se": f"{se[0]:g}-{se[1]:g}", "corr": corr, "trials": trials, "rep": rep,
                         "future_size": size, "metric": m,
                         "w_true": w_true[j], "w_median": w_med[j], "w_lower": lo[j], "w_upper": hi[j],
                         "covered": bool(lo[j] <= w_true[j] <= hi[j]), "w_hdi_lower": hdi[j, 0],
                         "w_hdi_upper": hdi[j, 1], "hdi_covered": bool(hdi[j, 0] <= w_true[j] <= hdi[j, 1]),
                         "lead": truth.metrics[lead],
                         "rel_true": rel_true[j], "rel_median": rel_med[j], "rel_lower": rel_lo[j],
                         "rel_upper": rel_hi[j], "rel_covered": bool(rel_lo[j] <= rel_true[j] <= rel_hi[j]),
                         "score_true_optimum": float(s_true),
                         "score_true_of_estimate": s_hat, "score_true_metric": single_true[j],
                         "warnings": len(caught), "seconds": seconds})
    return rows


def summarise(results: pd.DataFrame) -> str:
    lines = ["# Composite north star: recovery of the optimal weights", "",
             "Generated by `benchmarks/northstar_check.py` from `results.csv`; 94% equal-tailed intervals "
             "unless marked HDI (highest-density interval).", ""]
    lines += ["| elasticity prior | ATE standard errors | corr | K | future size | replications | coverage of w "
              "(m1 / m2 / m3) | coverage of w, HDI | coverage of w / w_lead (m1 / m2 / m3, over the replications "
              "where it is not the lead) | true w (mean) | "
              "posterior-median w (mean) | true score: optimum / estimate / best single metric | estimate >= best "
              "single |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    if "prior" not in results:
        results = results.assign(prior="pooled")
    results = results.assign(se=results["se"].fillna("0.2-0.5") if "se" in results else "0.2-0.5")
    for (prior, se, corr, k, size), g in results.groupby(["prior", "se", "corr", "trials", "future_size"]):
        cov = g.groupby("metric")["covered"].mean()
        if "hdi_covered" in g and g["hdi_covered"].notna().all():
            hdi = " / ".join(f"{100 * v:.0f}%" for v in g.groupby("metric")["hdi_covered"].mean().values)
        else:
            hdi = "not recorded"
        if "rel_covered" in g and g["rel_covered"].notna().all():
            free = g[g["metric"] != g["lead"]]
            n_reps = g["rep"].nunique()
            parts = []
            for m in sorted(g["metric"].unique()):
                hit = free.loc[free["metric"] == m, "rel_covered"]
                parts.append("lead" if hit.empty else f"{100 * hit.mean():.0f}%"
                             + ("" if len(hit) == n_reps else f" (of {len(hit)})"))
            rel = " / ".join(parts)
        else:
            rel = "not recorded"
        wt = g.groupby("metric")["w_true"].mean()
        wm = g.groupby("metric")["w_median"].mean()
        per_rep = g.groupby("rep").agg(opt=("score_true_optimum", "first"), est=("score_true_of_estimate", "first"),
                                       single=("score_true_metric", "max"))
        lines.append(
            f"| {prior} | {se} | {corr:g} | {k} | {size:g} | {len(per_rep)} | "
            f"{' / '.join(f'{100 * v:.0f}%' for v in cov.values)} | {hdi} | {rel} | "
            f"{' / '.join(f'{v:+.2f}' for v in wt.values)} | "
            f"{' / '.join(f'{v:+.2f}' for v in wm.values)} | {per_rep['opt'].mean():.3f} / {per_rep['est'].mean():.3f}"
            f" / {per_rep['single'].mean():.3f} | {100 * (per_rep['est'] >= per_rep['single'] - 1e-9).mean():.0f}% |")
    if "hdi_covered" in results and results["hdi_covered"].notna().all():
        lines += ["", "Over all future sizes: coverage of the true weight and mean width of the 94% interval, "
                  "equal-tailed (ETI) against highest-density (HDI), and where the ETI's misses fall (truth below its "
                  "lower end / above its upper end). Cases are replications x sizes (the sizes of one replication "
                  "share its fit).", "",
                  "| elasticity prior | ATE standard errors | corr | K | metric | cases | coverage: ETI / HDI | "
                  "width: ETI / HDI | ETI misses: below / above |", "|---|---|---|---|---|---|---|---|---|"]
        for (prior, se, corr, k, m), g in results.groupby(["prior", "se", "corr", "trials", "metric"]):
            lines.append(
                f"| {prior} | {se} | {corr:g} | {k} | {m} | {len(g)} | {100 * g['covered'].mean():.1f}% / "
                f"{100 * g['hdi_covered'].mean():.1f}% | {(g['w_upper'] - g['w_lower']).mean():.3f} / "
                f"{(g['w_hdi_upper'] - g['w_hdi_lower']).mean():.3f} | "
                f"{100 * (g['w_true'] < g['w_lower']).mean():.1f}% / "
                f"{100 * (g['w_true'] > g['w_upper']).mean():.1f}% |")
    keys = ["prior", "se", "corr", "trials", "rep"]
    secs = results.groupby(keys)["seconds"].first()
    lines += ["", f"Median seconds per replication (fit and northstar; medians over runs sharing 2 cores with other "
              f"studies): {secs.median():.1f}; replications whose fit raised a warning of any kind (at 500 draws per "
              f"chain, e.g. R-hat above 1.01 for a hyperparameter): "
              f"{int((results.groupby(keys)['warnings'].first() > 0).sum())} of {len(secs)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    from bayes_cmma.fitting.joint import LATENT_PRIORS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=40)
    parser.add_argument("--trials", type=int, nargs="+", default=[50])
    parser.add_argument("--corr", type=float, nargs="+", default=[0.8])
    parser.add_argument("--criterion", default="sign")
    parser.add_argument("--prior", default="pooled", choices=["pooled", "independent"],
                        help="the joint model's elasticity prior (the tie prior acts only on the ranking, so its "
                             "weights are those of independent)")
    parser.add_argument("--latent-prior", default="slopes", choices=LATENT_PRIORS,
                        help="bc.fit_joint(latent_prior=...): lkj puts one LKJ prior over the KPI and the metrics, "
                             "wishart an inverse-Wishart prior over their covariance (both with --prior independent)")
    parser.add_argument("--metric-corr-eta", type=float, default=None,
                        help="LKJ concentration (default: the model's, 1 for slopes and 0.5 for lkj)")
    parser.add_argument("--se", type=float, nargs=2, default=[0.2, 0.5], metavar=("LOW", "HIGH"),
                        help="range of the trials' ATE standard errors (latent sd 1; default 0.2 0.5)")
    parser.add_argument("--summarise", nargs="+", type=Path, metavar="RESULTS_CSV",
                        help="only write summary.md (in --out) from these results.csv files")
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "northstar_check")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summarise:
        frame = pd.concat([pd.read_csv(p) for p in args.summarise], ignore_index=True)
        frame.to_csv(args.out / "results.csv", index=False)
        (args.out / "summary.md").write_text(summarise(frame))
        print((args.out / "summary.md").read_text())
        return
    rows = []
    for corr in args.corr:
        for k in args.trials:
            for rep in range(args.sims):
                rows += one_replication(corr, k, rep, args.seed, args.draws, args.tune, args.criterion, args.prior,
                                        tuple(args.se), args.latent_prior, args.metric_corr_eta)
                frame = pd.DataFrame(rows)
                frame.to_csv(args.out / "results.csv", index=False)
                print(f"corr {corr} K {k} rep {rep}: {frame['seconds'].iloc[-1]:.1f} s", flush=True)
    (args.out / "summary.md").write_text(summarise(pd.DataFrame(rows)))
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
