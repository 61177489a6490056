"""Decision-focused fusion of a composite launch rule: regret on new trials against the observational bias.

Trial summaries of a KPI and three metrics (the law of ``bayes_cmma.checks.ranking_calibration``:
team means of the metric effects ~ N(0, 1), correlation 0.8 between the metrics' effects within a
team, 4 teams; the KPI driven by the first metric alone, so the true partial slopes are (1, 0, 0);
trial residual sd 0.3; standard errors 0.2-0.5, within-trial error correlation 0.3), with team direct
effects on the KPI of sd ``--direct-sd`` (default 0: the logs can see everything that drives the KPI;
0.5 as in that module: part of the KPI effect is a direct effect no unit-level regression sees).
The logs' partial slopes are o = (1, 0, 0) + b (-1, +1, 0): the unit-level confounding moves weight
from the metric that drives the KPI to a correlated proxy; b = 0 (none), 0.05, 0.24 (the paper's
relative bias), 0.5, 1 (the logs point at the proxy alone).

The decision: launch a trial when its composite w' m_hat > 0. Its value on a new trial of the same
law, decided on that trial's own ATEs, is Phi(w'm / sd(w'm_hat)) y; the oracle launches when y > 0.
Regret = (oracle value - the rule's value) / oracle value, averaged over 20,000 new trials per
replication. Rules:

* ``trials``: the trials' composite alone (fusion strength 0);
* ``observational``: the logs' slopes alone, adjusted to the trials' noise (fusion strength inf);
* ``decision_focused``: ``bc.decisions.fusion.decision_focused_fusion``, the strength chosen by the
  cross-fitted decision value on the trials (``select="best"``);
* ``decision_focused_significant``: the same with ``select="significant"`` (a strength above 0 only
  when its paired gain over the trials alone exceeds one standard error);
* ``stein``: ``decision_focused_fusion``'s default (``select="stein"``), the James-Stein share of the logs
  from their disagreement with the trials (no decision value involved), D^2 with the HC3 sandwich;
* ``stein_hc1``: the same with the HC1 sandwich (the default before HC3; its D^2 is about twice
  chi-square_3 under clean logs at 10 trials, so it borrowed less);
* ``bilevel``: ``bc.bilevel_fusion`` with ``keep="always"``, a pull towards the logs per metric chosen by
  the gradient of the smoothed cross-fitted decision value through the inner ridge fit;
* ``bilevel_significant``: the same with its default ``keep="significant"``;
* ``metric_1``: the metric that drives the KPI, alone (a reference the trials do not know).

The law and seeds are those of ``bayes-cmma simulate --study fusion`` (``bayes_cmma.studies.fusion_study``,
which has the rules a user can choose); this script adds rules kept for comparison (``stein_hc1``,
``bilevel`` without its significance check) and the table of D^2.

Usage: ``python benchmarks/fusion_launch_check.py --sims 500 --trials 10 20 50
[--out benchmarks/results/fusion_launch_check]``; ``--summarise``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _resume import append_rows, done_keys
from scipy import stats

from bayes_cmma.studies.fusion_study import BIAS_SHIFT, FUSION_BIASES, draw_trials, launch_regret

ROOT = Path(__file__).resolve().parents[1]
BIASES = FUSION_BIASES
SHIFT = BIAS_SHIFT


J, TEAMS = 3, 4  # draw_trials is the law of ``bayes-cmma simulate --study fusion`` (same draws, same seeds)


def one(K: int, rep: int, seed: int, direct_sd: float) -> list[dict]:
    import bayes_cmma as bc
    from bayes_cmma.decisions.bilevel import bilevel_fusion
    from bayes_cmma.decisions.fusion import (
        _stein_from,
        decision_focused_fusion,
        disagreement,
        fused_weights,
        stein_strength,
    )
    from bayes_cmma.inputs.data import joint_design, trial_frames

    metrics = ["m1", "m2", "m3"]
    rng = np.random.default_rng([seed, K, rep])
    alpha, pi = rng.normal(0, 1, (TEAMS, J)), rng.normal(0, direct_sd, TEAMS) if direct_sd else np.zeros(TEAMS)
    team = np.arange(K) % TEAMS
    theta, S = draw_trials(rng, team, alpha, pi)
    z = theta + np.einsum("kij,kj->ki", np.linalg.cholesky(S), rng.standard_normal((K, J + 1)))
    data = bc.read_trials(*trial_frames([f"k{k:03d}" for k in range(K)], ["y", *metrics], z, S,
                                        teams=[f"g{t}" for t in team]))
    prng = np.random.default_rng([seed, K, rep, 1])
    new, S_new = draw_trials(prng, prng.integers(0, TEAMS, 20_000), alpha, pi)
    y, m, S_mm = new[:, 0], new[:, 1:], S_new[:, 1:, 1:]
    design = joint_design(data, "y", metrics)
    rows = []
    base = {"trials": K, "rep": rep}
    w_trials = fused_weights(design.z, design.S, np.ones(3), 0.0)
    for b in BIASES:
        o = np.array([1.0, 0.0, 0.0]) + b * SHIFT
        choice = decision_focused_fusion(data, "y", metrics, dict(zip(metrics, o, strict=True)), seed=rep,
                                         repeats=20, select="best")
        strict = decision_focused_fusion(data, "y", metrics, dict(zip(metrics, o, strict=True)), seed=rep,
                                         repeats=20, select="significant")
        slopes = dict(zip(metrics, o, strict=True))
        free = bilevel_fusion(data, "y", metrics, slopes, seed=rep, repeats=20, keep="always")
        kept = bilevel_fusion(data, "y", metrics, slopes, seed=rep, repeats=20)
        rules = {"trials": (w_trials, np.nan), "observational": (fused_weights(design.z, design.S, o, np.inf), np.nan),
                 "decision_focused": (choice.weights.values, choice.strength),
                 "decision_focused_significant": (strict.weights.values, strict.strength),
                 "stein": (fused_weights(design.z, design.S, o, stein := stein_strength(design.z, design.S, o)), stein),
                 "stein_hc1": (fused_weights(design.z, design.S, o, hc1 := _stein_from(
                     disagreement(design.z, design.S, o, sandwich="hc1"), J)), hc1),
                 "bilevel": (free.weights.values, float(free.pulls.mean())),
                 "bilevel_significant": (kept.weights.values, float(kept.pulls.mean())),
                 "metric_1": (np.array([1.0, 0.0, 0.0]), np.nan)}
        for name, (w, strength) in rules.items():
            rows.append(base | {"direct_sd": direct_sd, "bias": b, "rule": name,
                                "regret": launch_regret(w, y, m, S_mm), "strength": strength})
    return rows


def summarise(results: pd.DataFrame) -> str:
    lines = ["# Decision-focused fusion of a composite launch rule: regret on new trials", "",
             "Generated by `benchmarks/fusion_launch_check.py` from `results.csv` "
             f"({results['rep'].nunique()} replications per setting; law and rules in the script's docstring). "
             "Regret: the share of the oracle's KPI gain a launch rule loses on new trials, mean over replications "
             "(its standard error); 'vs trials' is the change against the trials' composite alone.", "",
             "| direct-effect sd | K | observational bias | rule | regret (se) | vs trials | median chosen strength "
             "(bilevel: mean pull) |",
             "|---|---|---|---|---|---|---|"]
    for (direct, K, b), g in results.groupby(["direct_sd", "trials", "bias"]):
        base = g[g["rule"] == "trials"]["regret"].mean()
        for name, h in g.groupby("rule", sort=False):
            n = len(h)
            reg = h["regret"].mean()
            se = h["regret"].std(ddof=1) / np.sqrt(n)
            vs = "—" if name == "trials" else f"{100 * (reg - base) / base:+.0f}%"
            strength = f"{h['strength'].median():g}" if h["strength"].notna().any() else "—"
            lines.append(f"| {direct:g} | {K} | {b:g} | {name} | {reg:.4f} ({se:.4f}) | {vs} | {strength} |")
    lines += ["", "## The disagreement D^2 of the Stein rules", "",
              "D^2 = (J - 2) / s from the chosen strength lambda = s / (1 - s) (J = 3; s = 1, D^2 <= 1, counts as 1, "
              "which does not move a median above 1). With clean logs and no direct effects (bias 0, direct-effect "
              f"sd 0) the logs are right and D^2 should be about chi-square with 3 degrees of freedom: median "
              f"{stats.chi2.median(3):.2f}.", "",
              "| direct-effect sd | K | observational bias | median D^2, HC3 (stein) | median D^2, HC1 (stein_hc1) |",
              "|---|---|---|---|---|"]
    for (direct, K, b), g in results.groupby(["direct_sd", "trials", "bias"]):
        med = {}
        for rule in ("stein", "stein_hc1"):
            lam = g.loc[g["rule"] == rule, "strength"].to_numpy()
            med[rule] = f"{np.median(1.0 / (1.0 - 1.0 / (1.0 + lam))):.2f}" if len(lam) else "—"  # 1 / s
        lines.append(f"| {direct:g} | {K} | {b:g} | {med['stein']} | {med['stein_hc1']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sims", type=int, default=500)
    ap.add_argument("--trials", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--direct-sd", type=float, nargs="+", default=[0.0, 0.5])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/fusion_launch_check"))
    ap.add_argument("--summarise", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.csv"
    if not args.summarise:
        done = done_keys(path, ("direct_sd", "trials", "rep"))
        for direct in args.direct_sd:
            for K in args.trials:
                t0, rows = time.perf_counter(), []
                for rep in range(args.sims):
                    if (direct, K, rep) not in done:
                        rows += one(K, rep, args.seed, direct)
                    if len(rows) >= 2000 or rep == args.sims - 1:
                        append_rows(path, rows)
                        rows = []
                print(f"direct sd {direct:g}, K={K}: {time.perf_counter() - t0:.0f} s", flush=True)
    results = pd.read_csv(path)
    (out / "summary.md").write_text(summarise(results))
    print(summarise(results))


if __name__ == "__main__":
    main()
