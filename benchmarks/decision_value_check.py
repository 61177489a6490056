"""Is the model-free decision-value estimate (``bc.decision_value``) unbiased, and do its intervals cover?

Trial summaries of a KPI ``y`` and three metrics from a known law (per trial k of team g):
latent metric effects m_k ~ MvNormal(alpha_g, Omega) (sd 0.5, correlation 0.8 between metrics),
KPI effect y_k = m_k1 + pi_g + u_k (u sd 0.2: only the first metric drives the KPI), observed
ATEs z_k ~ MvNormal((y_k, m_k), S_k) with standard errors around (0.3; 0.2, 0.25, 0.5) and
within-trial error correlation 0.6 between every pair (the KPI and the metrics come from the same
users). The team means are fixed, so the population of trials is fixed too.

Per replication, with the trials' true effects known, the estimand of each candidate north star:

* conditional: (1/K) sum_k Phi(w'm_k / sqrt((1 + tau^2) w'S_k,mm w)) y_k, the expected KPI effect its
  launch decisions collect on these trials when decisions see (1 + tau^2) S_k (w = the metric's unit
  vector, or the composite's weights learned without trial k);
* population (single metrics only, whose rule does not depend on the data): the same expectation
  over the whole population of trials (Monte Carlo, 400,000 trials).

Reported per trial count K and candidate: the mean error of the estimate against each estimand in
Monte Carlo standard errors (target: within 2), the coverage of its 95% interval (the table's
skew-corrected one, and Student's t with K - 1 degrees of freedom beside it), the mean sample skewness
of the per-trial contributions, and the same for
``tau = 0`` (no fission: decide and score on the same ATEs) against its own estimand (decisions at
today's noise), which is biased because the KPI's and the metrics' errors correlate.

Usage: ``python benchmarks/decision_value_check.py --sims 2000 --trials 10 20 50 [--threshold 0]
[--out benchmarks/results/decision_value_check]``; ``--summarise`` rewrites ``summary.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _resume import append_rows, done_keys
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["m1", "m2", "m3"]
ALPHA = np.array([[0.3, 0.25, 0.2], [-0.1, -0.05, 0.0], [0.2, 0.1, 0.3], [0.0, 0.05, -0.05]])
PI = np.array([0.1, -0.1, 0.0, 0.05])
SE = np.array([0.3, 0.2, 0.25, 0.5])
ERROR_CORR = 0.6
OMEGA = 0.25 * (0.2 * np.eye(3) + 0.8 * np.ones((3, 3)))


def draw_truth(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Team, true (y, m) (n, 4) and measurement covariances (n, 4, 4) of n trials from the law."""
    team = np.arange(n) % len(ALPHA)
    m = ALPHA[team] + rng.standard_normal((n, 3)) @ np.linalg.cholesky(OMEGA).T
    y = m[:, 0] + PI[team] + rng.normal(0, 0.2, n)
    se = SE * rng.uniform(0.7, 1.3, (n, 4))
    R = ERROR_CORR * np.ones((4, 4)) + (1 - ERROR_CORR) * np.eye(4)
    return team, np.column_stack([y, m]), se[:, :, None] * se[:, None, :] * R


def population_values(factor: float, threshold: float = 0.0, n: int = 400_000) -> np.ndarray:
    """Each single metric's population decision value when decisions see ``factor`` times S and launch
    above ``threshold`` of their standard errors."""
    _, theta, S = draw_truth(np.random.default_rng(12345), n)
    return np.array([np.mean(stats.norm.cdf(theta[:, 1 + j] / np.sqrt(factor * S[:, 1 + j, 1 + j]) - threshold)
                             * theta[:, 0])
                     for j in range(3)])


def table(team, z, S):
    from bayes_cmma.inputs.data import trial_frames

    return trial_frames([f"k{k:03d}" for k in range(len(z))], ["y", *METRICS], z, S, teams=[f"g{t}" for t in team])


def one(K: int, rep: int, seed: int, pop: dict[float, np.ndarray], threshold: float = 0.0) -> list[dict]:
    import bayes_cmma as bc
    from bayes_cmma.decisions.decision_value import fold_labels, mean_interval

    rng = np.random.default_rng([seed, K, rep])
    team, theta, S = draw_truth(rng, K)
    z = theta + np.einsum("kij,kj->ki", np.linalg.cholesky(S), rng.standard_normal((K, 4)))
    data = bc.read_trials(*table(team, z, S))
    out = []
    for tau in (1.0, 0.0):
        res = bc.decision_value(data, "y", METRICS, tau=tau, seed=rep, repeats=50, folds=5, threshold=threshold)
        factor = 1 + tau**2
        # the composite's raw weights per trial: those of its fold (standardised weights / scale)
        scale = z[:, 1:].std(axis=0, ddof=1)
        raw = res.weights.values / scale
        fold = fold_labels(K, 5, np.random.default_rng(rep))
        w_trial = raw[fold]
        for name in [*METRICS, "composite"]:
            if name == "composite":
                w = w_trial
            else:
                w = np.zeros((K, 3))
                w[:, METRICS.index(name)] = 1.0
            sd = np.sqrt(factor * np.einsum("ki,kij,kj->k", w, S[:, 1:, 1:], w))
            cond = float(np.mean(stats.norm.cdf(np.einsum("ki,ki->k", w, theta[:, 1:]) / sd - threshold)
                                 * theta[:, 0]))
            row = res.table.loc[name]
            contributions = res.per_trial.sel(candidate=name).values
            t_lower, t_upper = mean_interval(contributions, method="t")
            skew = float(stats.skew(contributions))
            popv = float(pop[factor][METRICS.index(name)]) if name != "composite" else np.nan
            out.append({"trials": K, "rep": rep, "tau": tau, "threshold": threshold, "candidate": name,
                        "estimate": row["value"],
                        "std_error": row["std_error"], "ci_lower": row["ci_lower"], "ci_upper": row["ci_upper"],
                        "t_lower": float(t_lower), "t_upper": float(t_upper), "skewness": skew,
                        "conditional": cond, "population": popv})
    return out


def _coverage(h: pd.DataFrame, estimand: str) -> str:
    """Coverage of ``estimand`` by the skew-corrected interval, and (in brackets) by Student's t."""
    hit = {k: np.mean((h[f"{lo}"] <= h[estimand]) & (h[estimand] <= h[f"{hi}"]))
           for k, (lo, hi) in {"skew": ("ci_lower", "ci_upper"), "t": ("t_lower", "t_upper")}.items()}
    return f"{hit['skew']:.1%} ({hit['t']:.1%})"


def summarise(results: pd.DataFrame) -> str:
    lines = ["# Decision value from the trials: bias and coverage", "",
             "Generated by `benchmarks/decision_value_check.py` from `results.csv` "
             f"({results['rep'].nunique()} replications per setting; law in the script's docstring"
             + (f"; launching above {results['threshold'].iloc[0]:g} standard errors"
                if results.get("threshold", pd.Series([0.0])).iloc[0] else "") + "). "
             "Error = estimate - estimand; 'in MCSE' = mean error / its Monte Carlo standard error "
             "(target: within 2 for fission); coverage of the table's 95% interval, skew-corrected (Hall's "
             "transformation with t quantiles, the default), and in brackets of Student's t interval "
             "(value +- t(0.975, K - 1) se).", ""]
    for tau, g in results.groupby("tau", sort=False):
        title = ("With data fission (tau = 1; decisions see 2 x today's measurement variance)" if tau > 0 else
                 "Without fission (tau = 0; decide and score on the same ATEs), against the value at today's noise")
        lines += [f"## {title}", "",
                  "| K | candidate | mean estimate | mean error (conditional) | in MCSE | coverage (conditional) "
                  "| mean error (population) | in MCSE | coverage (population) | mean se | sd of estimate "
                  "| mean skewness of the contributions |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for (K, cand), h in g.groupby(["trials", "candidate"], sort=False):
            n = len(h)
            err_c = h["estimate"] - h["conditional"]
            cov_c = _coverage(h, "conditional")
            mc_c = err_c.std(ddof=1) / np.sqrt(n)
            if h["population"].notna().all():
                err_p = h["estimate"] - h["population"]
                mc_p = err_p.std(ddof=1) / np.sqrt(n)
                pop = f"{err_p.mean():+.4f} | {err_p.mean() / mc_p:+.1f} | {_coverage(h, 'population')}"
            else:
                pop = "— | — | —"
            lines.append(f"| {K} | {cand} | {h['estimate'].mean():.4f} | {err_c.mean():+.4f} | "
                         f"{err_c.mean() / mc_c:+.1f} | {cov_c} | {pop} | {h['std_error'].mean():.4f} | "
                         f"{h['estimate'].std(ddof=1):.4f} | {h['skewness'].mean():+.2f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sims", type=int, default=2000)
    ap.add_argument("--trials", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/decision_value_check"))
    ap.add_argument("--threshold", type=float, default=0.0,
                    help="launch above this many standard errors (bc.decision_value(threshold=...)); default 0")
    ap.add_argument("--summarise", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.csv"
    if not args.summarise:
        pop = {f: population_values(f, args.threshold) for f in (1.0, 2.0)}
        done = done_keys(path, ("trials", "rep"))
        for K in args.trials:
            rows, t0 = [], time.perf_counter()
            for rep in range(args.sims):
                if (K, rep) not in done:
                    rows += one(K, rep, args.seed, pop, args.threshold)
                if len(rows) >= 800 or rep == args.sims - 1:
                    append_rows(path, rows)
                    rows = []
            print(f"K={K}: {time.perf_counter() - t0:.0f} s", flush=True)
    results = pd.read_csv(path)
    (out / "summary.md").write_text(summarise(results))
    print(summarise(results))


if __name__ == "__main__":
    main()
