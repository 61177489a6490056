"""Does borrowing from confounded observational slopes help the north-star choice, and when does it hurt?

Trial summaries of a KPI and three metrics from the joint law of
``bayes_cmma.checks.ranking_calibration`` (correlation 0.8 between the metrics' effects, the KPI
driven by the first; 4 teams), K trials, with the metrics' levels set so that the true elasticities
are (0.8, 1, 0.6) times the second's (``--relative``): the best metric is the second, a proxy whose
slope the trials identify less well than the first's. The observational slopes (what ``bayes-cmma
summarize --observational-out`` reports from unit-level logs) are simulated at the trial-level
estimand with a relative bias: metric j's is beta_j (1 + b s_j) with s = (+1, -1, 0) (``--signs``)
and standard error 0.005 beta_j (millions of units). b is the DGP's knob for unit-level
confounding: 0 (none), 0.05 (small), 0.24 (the paper's level: its observational slope is 4.95 for a
true 4). From b = 0.11 the biased slopes rank the first metric first (0.8 x 1.24 > 1 x 0.76 at the
paper's level), so the observational-only choice is wrong.

Estimators, each choosing the metric with the largest posterior (or point) elasticity:

* ``trials_independent``, ``trials_pooled``: the joint model on the trials alone (independent and
  pooled elasticity priors; pooled is ``fit --joint``'s default);
* ``observational``: the observational slopes alone;
* ``fused``: the joint model with ``elasticity_prior="observational"`` (a commensurate prior
  centred on the observational slopes with a learned bias scale), at ``--bias-scale`` values;
* ``fused_harmonic`` (with ``--bias-prior harmonic``, which with ``--fused-only`` adds only these
  rows): the same with ``observational_bias_prior="harmonic"`` (kappa^2 uniform on [0, 2^2]);
* ``decision_value`` (with ``--decision-value``, which adds only these rows, no fits): the metric
  with the highest model-free decision value (``bc.decision_value``), which ignores the levels.

Measures per setting: regret (the true elasticity lost by the choice, relative to the best one's),
P(correct choice), and for the Bayesian fits the bias and 94%-interval coverage of each slope.

Usage: ``python benchmarks/fusion_check.py --sims 60 --trials 10 20 50 [--bias 0 0.05 0.24]
[--bias-scale 0.5] [--bias-prior harmonic --fused-only] [--shard 0/2]
[--out benchmarks/results/fusion_check]``; ``--summarise``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _resume import append_rows, done_keys

ROOT = Path(__file__).resolve().parents[1]
CORR = 0.8
SETTINGS = {"relative": (0.8, 1.0, 0.6), "signs": (1.0, -1.0, 0.0)}


def make_truth():
    """The candidates' truth with the study's relative elasticities (levels a_j = relative_j / slope_j)."""
    from bayes_cmma.checks.ranking_calibration import CandidateTruth, candidate_truth

    base = candidate_truth(CORR, "spread")
    levels = np.asarray(SETTINGS["relative"]) / base.beta
    return CandidateTruth(base.metrics, base.beta, dict(zip(base.metrics, levels.tolist(), strict=True)),
                          base.baseline, base.lift)


def _fit(bc, data, truth, prior, spec, seed, draws, obs=None, scale=None, bias_prior="halfnormal"):
    kw = {} if obs is None else {"observational": obs, "observational_bias_scale": scale,
                                 "observational_bias_prior": bias_prior}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = bc.fit_joint(data, "y", truth.metrics, at=truth.at, elasticity_prior=prior, model=spec, seed=seed,
                         draws=draws, tune=draws, chains=4, cores=1, **kw)
    beta = f.beta.transpose("chain", "draw", "metric").values.reshape(-1, len(truth.metrics))
    return beta, len(caught)


def one(K: int, rep: int, seed: int, biases: list[float], scales: list[float], draws: int,
        bias_prior: str = "halfnormal", fused_only: bool = False) -> list[dict]:
    import bayes_cmma as bc
    from bayes_cmma.checks.ranking_calibration import simulate_candidates
    from bayes_cmma.fitting.bayes import resolve_spec
    from bayes_cmma.fitting.spec import replace_spec

    truth = make_truth()
    rng = np.random.default_rng([seed, K, rep])
    data = simulate_candidates(rng, truth, metric_corr=CORR, n_trials=K)
    spec = replace_spec(resolve_spec(1), team_effects="non_centred")
    levels = np.array([truth.at[m] for m in truth.metrics])
    e_true = truth.elasticity
    best = int(np.argmax(e_true))
    fit_seed = int(rng.integers(2**31))

    def row(name, bias, beta_draws=None, point=None, n_warn=0, seconds=0.0):
        est = beta_draws.mean(axis=0) if beta_draws is not None else point
        choice = int(np.argmax(est * levels))
        out = {"trials": K, "rep": rep, "bias": bias, "estimator": name, "choice": choice, "correct": choice == best,
               "regret": float((e_true[best] - e_true[choice]) / e_true[best]), "warnings": n_warn,
               "seconds": seconds}
        for j, m in enumerate(truth.metrics):
            out[f"beta_{m}"] = float(est[j])
            if beta_draws is not None:
                lo, hi = np.quantile(beta_draws[:, j], [0.03, 0.97])
                out[f"covered_{m}"] = bool(lo <= truth.beta[j] <= hi)
        return out

    rows = []
    for prior in () if fused_only else ("independent", "pooled"):
        t0 = time.perf_counter()
        beta, n = _fit(bc, data, truth, prior, spec, fit_seed, draws)
        rows += [row(f"trials_{prior}", b, beta, n_warn=n, seconds=time.perf_counter() - t0) for b in biases]
    for b in biases:
        slopes = truth.beta * (1 + b * np.asarray(SETTINGS["signs"]))
        obs = {m: (float(s), 0.005 * float(t)) for m, s, t in zip(truth.metrics, slopes, truth.beta, strict=True)}
        if not fused_only:
            rows.append(row("observational", b, point=slopes))
        for scale in [None] if bias_prior == "harmonic" else scales:
            t0 = time.perf_counter()
            beta, n = _fit(bc, data, truth, "observational", spec, fit_seed, draws, obs, scale, bias_prior)
            name = "fused_harmonic" if bias_prior == "harmonic" else f"fused_{scale:g}"
            rows.append(row(name, b, beta, n_warn=n, seconds=time.perf_counter() - t0))
    return rows


def decision_value_rows(K: int, rep: int, seed: int, biases: list[float]) -> list[dict]:
    """The metric with the largest cross-fitted decision value, on the same simulated trials as :func:`one`."""
    import bayes_cmma as bc
    from bayes_cmma.checks.ranking_calibration import simulate_candidates

    truth = make_truth()
    rng = np.random.default_rng([seed, K, rep])
    data = simulate_candidates(rng, truth, metric_corr=CORR, n_trials=K)
    table = bc.decision_value(data, "y", truth.metrics, seed=rep, composite=False).table
    choice = truth.metrics.index(str(table[table["kind"] == "metric"]["value"].idxmax()))
    e_true = truth.elasticity
    best = int(np.argmax(e_true))
    return [{"trials": K, "rep": rep, "bias": b, "estimator": "decision_value", "choice": choice,
             "correct": choice == best, "regret": float((e_true[best] - e_true[choice]) / e_true[best]),
             "warnings": 0, "seconds": 0.0} for b in biases]


def summarise(results: pd.DataFrame) -> str:
    truth = make_truth()
    metrics = truth.metrics
    lines = ["# Fusing observational slopes with the trials: regret and calibration", "",
             "Generated by `benchmarks/fusion_check.py` from `results.csv` (law and estimators in the script's "
             "docstring). Regret: the true elasticity lost by the chosen metric, relative to the best's, mean "
             "over replications (with its standard error); 'vs trials' compares with `trials_independent` "
             "(negative = less regret). Slope bias and 94% coverage are means over the three metrics "
             f"(true slopes {', '.join(f'{b:g}' for b in truth.beta)}; relative true elasticities "
             f"{', '.join(f'{r:g}' for r in SETTINGS['relative'])}; bias signs "
             f"{', '.join(f'{v:+g}' for v in SETTINGS['signs'])}).", ""]
    lines += ["| K | observational bias | estimator | replications | regret (se) | vs trials | P(correct) "
              "| slope bias (m1, m2, m3) | 94% coverage | fit warnings | seconds per fit |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (K, bias), g in results.groupby(["trials", "bias"]):
        base = g[g["estimator"] == "trials_independent"]["regret"].mean()
        for name, h in g.groupby("estimator", sort=False):
            n = len(h)
            reg = h["regret"].mean()
            se = h["regret"].std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
            if name == "trials_independent" or not np.isfinite(base):
                rel = "—"
            elif base == 0:
                rel = "same" if reg == 0 else "worse (base 0)"
            else:
                rel = f"{100 * (reg - base) / base:+.0f}%"
            columns = [f"beta_{m}" for m in metrics]
            bias_txt = "—" if any(c not in h or h[c].isna().all() for c in columns) else ", ".join(
                f"{(h[c] - t).mean():+.3f}" for c, t in zip(columns, truth.beta, strict=True))
            cover = [c for c in (f"covered_{m}" for m in metrics) if c in h and h[c].notna().all()]
            cov_txt = f"{h[cover].to_numpy(dtype=float).mean():.0%}" if cover else "—"
            lines.append(f"| {K} | {bias:g} | {name} | {n} | {reg:.3f} ({se:.3f}) | {rel} | {h['correct'].mean():.2f} "
                         f"| {bias_txt} | {cov_txt} | {h['warnings'].mean():.2f} | {h['seconds'].mean():.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sims", type=int, default=60)
    ap.add_argument("--trials", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--bias", type=float, nargs="+", default=[0.0, 0.05, 0.24])
    ap.add_argument("--bias-scale", type=float, nargs="+", default=[0.5])
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--shard", default="0/1", help="i/n: run replications with rep % n == i")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/fusion_check"))
    ap.add_argument("--summarise", action="store_true")
    ap.add_argument("--decision-value", action="store_true", help="add only the decision_value rows (no fits)")
    ap.add_argument("--relative", type=float, nargs=3, default=SETTINGS["relative"],
                    help="true elasticities relative to the largest (default 0.8 1 0.6)")
    ap.add_argument("--signs", type=float, nargs=3, default=SETTINGS["signs"],
                    help="direction of each metric's observational bias (default +1 -1 0)")
    ap.add_argument("--bias-prior", choices=["halfnormal", "harmonic"], default="halfnormal",
                    help="prior of the fused fits' bias scale kappa (harmonic: rows fused_harmonic, in "
                         "results_harmonic*.csv)")
    ap.add_argument("--fused-only", action="store_true", help="fit only the fused arms (the others are on file)")
    args = ap.parse_args()
    SETTINGS.update(relative=tuple(args.relative), signs=tuple(args.signs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    i, n = (int(x) for x in args.shard.split("/"))
    stem = "results" if args.bias_prior == "halfnormal" else f"results_{args.bias_prior}"
    path = out / (f"{stem}_shard{i}.csv" if n > 1 else f"{stem}.csv")
    if args.decision_value:
        rows = [r for rep in range(args.sims) for K in args.trials for r in decision_value_rows(K, rep, args.seed,
                                                                                                 args.bias)]
        pd.DataFrame(rows).to_csv(out / "results_decision_value.csv", index=False)
    elif not args.summarise:
        done = done_keys(path, ("trials", "rep"))
        for rep in range(args.sims):
            if rep % n != i:
                continue
            for K in args.trials:
                if (K, rep) in done:
                    continue
                t0 = time.perf_counter()
                append_rows(path, one(K, rep, args.seed, args.bias, args.bias_scale, args.draws, args.bias_prior,
                                      args.fused_only))
                print(f"K={K} rep={rep}: {time.perf_counter() - t0:.0f} s", flush=True)
    parts = sorted(out.glob("results*.csv"))
    results = pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)
    results = results.drop_duplicates(["trials", "rep", "bias", "estimator"])
    (out / "summary.md").write_text(summarise(results))
    print(summarise(results))


if __name__ == "__main__":
    main()
