"""Is P(best) calibrated? Rankings on data with a known best metric, per design (arm).

For each replication: simulate trial summaries of a KPI and 3 metrics from a known joint law
(``bayes_cmma.checks.ranking_calibration``: the KPI driven by the first metric, metrics correlated
``--corr`` across trials), fit every arm to the same table and rank the metrics at the law's
current levels with its KPI baseline. Arms (``--arms``):

- ``separate``: the per-metric linear models (``bc.fit``), draws paired as if independent;
- ``joint_pooled``: the joint model with partial pooling of the elasticities (``bc.fit_joint``);
- ``joint_independent``: the joint model with independent priors on the slopes;
- ``joint_tie``: the joint model ranked under the tie prior (``bayes_cmma.decisions.ties``);
- ``joint_tie_deshrunk``: the same with the priors that shrink the proxies' slopes taken out (LKJ eta
  1, and the det R factor cancelled; ``benchmarks/joint_slope_shrinkage.py``). An experiment, not a
  model option: it patches the model in the worker, so run it alone (``--arms joint_tie_deshrunk``).

``--metric-corr-eta X`` fits the joint arms with LKJ concentration X on the metrics' correlation
(``bc.fit_joint(metric_corr_eta=X)``; default 1 since it replaced 2, with which the committed
``pbest_calibration_joint*`` and ``pbest_calibration_tie*`` results were made: rerun those with
``--metric-corr-eta 2``). LKJ(eta) has density proportional to det(R)^(eta - 1), so the de-shrunk
experiment's cancelled det R makes LKJ(1) an LKJ(0) (improper), and eta < 1 favours strong
correlations (proper for any eta > 0).

``--latent-prior lkj`` fits the joint arms with one LKJ prior over the KPI's and metrics' correlation
(``bc.fit_joint(latent_prior="lkj")``; the arms ``joint_independent`` and ``joint_tie`` only), and
``--metric-corr-eta`` is then that prior's concentration. ``--latent-prior wishart`` fits them with the
inverse-Wishart latent prior instead (``bc.fit_joint(latent_prior="wishart")``; no ``--metric-corr-eta``).

``--team-effects independent`` fits every arm with the spec's ``team_effects = "independent"`` (team
effects not pooled; for the separate fits, whose pooled team effects pull a proxy's slope towards the
between-team relation: docs/checks.md, "The inverse-Wishart latent prior").

``--tie-settings P:S ...`` ranks the ``joint_tie`` arm's fit under each tie prior (prior probability of
a tie P, spread scale S; ``bc.fit_joint(p_tie=P, tie_spread_scale=S)``), one arm per setting named
``joint_tie p=P s=S``. The tie prior acts only on the ranking, so one fit serves every setting (the
ranking of a fit made with those settings is the same). A sensitivity study, not a way to tune the
default: settings chosen by it are confirmed on other tables before they are trusted.

Then bin every metric's P(best) and compare with how often it was truly best, per arm.

Writes ``results.csv`` (one row per replication and metric), ``summary.md`` (reliability table
per setting and the chosen metric's overconfidence) and ``reliability.png``.

Usage: ``python benchmarks/pbest_calibration.py --sims 200 --trials 50 --corr 0.8 --regime near_tie
[--arms separate joint_pooled joint_independent] [--workers 2] [--draws 500]
[--out benchmarks/results/pbest_calibration]`` (several values per option
make a grid of settings); ``--summarise --out DIR`` rewrites DIR's summary from its ``results.csv``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


ARMS = ("separate", "joint_pooled", "joint_independent", "joint_tie", "joint_tie_deshrunk")
LABELS = {"separate": "separate fits, independent pairing", "joint_pooled": "joint model, pooled elasticities",
          "joint_independent": "joint model, independent priors", "joint_tie": "joint model, tie prior",
          "joint_tie_deshrunk": "joint model, tie prior, correlation priors de-shrunk (experiment)"}


def tie_arm(p_tie: float, spread_scale: float) -> str:
    """The arm of the joint_tie fit ranked under the tie prior (p_tie, spread_scale)."""
    return f"joint_tie p={p_tie:g} s={spread_scale:g}"


def _label(arm: str) -> str:
    if arm in LABELS:
        return LABELS[arm]
    p_tie, scale = re.fullmatch(r"joint_tie p=(\S+) s=(\S+)", arm).groups()  # an arm of tie_arm
    return f"{LABELS['joint_tie']}, p_tie {p_tie}, spread scale {scale}"


def _tie_setting(text: str) -> tuple[float, float]:
    try:
        p_tie, scale = (float(v) for v in text.split(":"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--tie-settings takes P:S pairs such as 0.25:1, got {text!r}") from exc
    return p_tie, scale


def _deshrunk_spec():
    """The linear spec, after patching the joint model to cancel det R (this process); fitted with LKJ eta 1."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from joint_slope_shrinkage import _patch_jacobian

    from bayes_cmma.fitting import joint
    from bayes_cmma.fitting.spec import parse_spec, spec_for_degree

    if not getattr(joint, "_deshrunk", False):
        _patch_jacobian()
        joint._deshrunk = True
    return parse_spec(spec_for_degree(1).to_dict(), source="deshrunk")


def one_replication(setting: dict, rep: int, seed: int, draws: int, tune: int, arms: tuple[str, ...] = ("separate",),
                    metric_corr_eta: float | None = None, latent_prior: str = "slopes",
                    tie_settings: tuple[tuple[float, float], ...] = (), team_effects: str = "auto") -> list[dict]:
    import bayes_cmma as bc
    from bayes_cmma.checks.ranking_calibration import candidate_truth, simulate_candidates
    from bayes_cmma.errors import AssumptionWarning, ConvergenceWarning
    from bayes_cmma.fitting.spec import replace_spec, spec_for_degree

    # the bundled spec as before unless asked (so earlier runs regenerate), else the linear spec with it
    spec = None if team_effects == "auto" else replace_spec(spec_for_degree(1), team_effects=team_effects)
    key = hashlib.sha256(repr(sorted(setting.items())).encode()).digest()
    rng = np.random.default_rng([seed, int.from_bytes(key[:4], "little"), rep])
    truth = candidate_truth(setting["corr"], setting["regime"])
    data = simulate_candidates(rng, truth, metric_corr=setting["corr"], n_trials=setting["trials"])
    fit_seed = int(rng.integers(2**31))  # the same for every arm; arms are paired on one table
    rows = []
    for arm in arms:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            if arm == "separate":
                result = bc.fit(data, "y", truth.metrics, model=spec or 1, seed=fit_seed, draws=draws, tune=tune,
                                chains=4, cores=1)
                betas = {m: result[m].beta.values[..., 0].ravel() for m in truth.metrics}
            else:
                model, options = spec, {} if metric_corr_eta is None else {"metric_corr_eta": metric_corr_eta}
                if latent_prior != "slopes":
                    options["latent_prior"] = latent_prior
                if arm == "joint_tie_deshrunk":
                    model, options = _deshrunk_spec(), {"metric_corr_eta": 1.0}
                    if spec is not None:  # --team-effects applies to this arm too
                        model = replace_spec(model, team_effects=team_effects)
                result = bc.fit_joint(data, "y", truth.metrics, at=truth.at, elasticity_prior=arm.split("_")[1],
                                      model=model, **options,
                                      seed=fit_seed, draws=draws, tune=tune, chains=4, cores=1)
                betas = {m: result.beta.sel(metric=m).values.ravel() for m in truth.metrics}
            seconds = time.perf_counter() - t0
        flagged = sum(issubclass(w.category, (ConvergenceWarning, AssumptionWarning)) for w in caught)
        if arm == "joint_tie" and tie_settings:
            rankings = {}
            for p_tie, scale in tie_settings:  # the tie prior acts at ranking time: one fit, several settings
                rankings[tie_arm(p_tie, scale)] = result.ranking(truth.at, lift=truth.lift, baseline=truth.baseline,
                                                                 p_tie=p_tie, tie_spread_scale=scale)
        else:
            rankings = {arm: result.ranking(truth.at, lift=truth.lift, baseline=truth.baseline)}
        for (label, ranking), (j, m) in itertools.product(rankings.items(), enumerate(truth.metrics)):
            beta = betas[m]
            rows.append({**setting, "arm": label, "rep": rep, "metric": m,
                         "p_best": float(ranking["p_best"].sel(metric=m)), "is_best": m == truth.best,
                         "true_elasticity": float(truth.elasticity[j]), "beta_true": float(truth.beta[j]),
                         "beta_mean": float(beta.mean()), "beta_sd": float(beta.std()), "warnings": flagged,
                         "p_tie": float(ranking.attrs.get("p_tie", np.nan)),
                         "seconds": seconds})
    return rows


def main() -> None:
    from bayes_cmma.fitting.joint import LATENT_PRIORS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sims", type=int, default=200)
    parser.add_argument("--trials", type=int, nargs="+", default=[50])
    parser.add_argument("--corr", type=float, nargs="+", default=[0.8])
    parser.add_argument("--regime", nargs="+", default=["near_tie"], choices=["near_tie", "spread"])
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--arms", nargs="+", default=["separate"], choices=ARMS)
    parser.add_argument("--metric-corr-eta", type=float, default=None,
                        help="LKJ concentration of the metrics' correlation in the joint arms (default: the spec's)")
    parser.add_argument("--latent-prior", default="slopes", choices=LATENT_PRIORS,
                        help="the joint arms' latent prior (bc.fit_joint(latent_prior=...))")
    parser.add_argument("--team-effects", default="auto", choices=["auto", "independent"],
                        help="the spec's team_effects for every arm (independent: not pooled)")
    parser.add_argument("--tie-settings", nargs="+", type=_tie_setting, default=[], metavar="P:S",
                        help="rank the joint_tie arm under each tie prior (prior P(tie) P, spread scale S)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pbest_calibration"))
    parser.add_argument("--summarise", action="store_true",
                        help="only rewrite summary.md and reliability.png from --out's results.csv")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.summarise:  # only the summary and the figure, from the folder's results.csv
        old = (out / "summary.md").read_text().splitlines()[2] if (out / "summary.md").exists() else ""
        provenance = old[:old.index(" min.") + 5] if old.startswith("Command:") and " min." in old else (
            "From the folder's `results.csv`.")
        print(write_summary(pd.read_csv(out / "results.csv"), out, provenance))
        return
    from bayes_cmma.fitting.parallel import worker_pool

    grid = itertools.product(args.trials, args.corr, args.regime)
    settings = [{"trials": k, "corr": c, "regime": r} for k, c, r in grid]
    tasks = [(s, rep) for s in settings for rep in range(args.sims)]
    start = time.perf_counter()
    rows: list[dict] = []
    with worker_pool(args.workers) as pool:
        futures = [pool.submit(one_replication, s, rep, args.seed, args.draws, args.tune, tuple(args.arms),
                               args.metric_corr_eta, args.latent_prior, tuple(args.tie_settings), args.team_effects)
                   for s, rep in tasks]
        for i, f in enumerate(futures, 1):
            rows += f.result()
            if i % 20 == 0:
                print(f"{i}/{len(tasks)} replications, {time.perf_counter() - start:.0f} s", flush=True)
    results = pd.DataFrame(rows)
    results.to_csv(out / "results.csv", index=False)
    wall = time.perf_counter() - start
    cmd = (f"python benchmarks/pbest_calibration.py --sims {args.sims} --trials {' '.join(map(str, args.trials))} "
           f"--corr {' '.join(map(str, args.corr))} --regime {' '.join(args.regime)} --draws {args.draws} "
           f"--tune {args.tune} --seed {args.seed} --workers {args.workers} --arms {' '.join(args.arms)}"
           + ("" if args.metric_corr_eta is None else f" --metric-corr-eta {args.metric_corr_eta:g}")
           + ("" if args.latent_prior == "slopes" else f" --latent-prior {args.latent_prior}")
           + ("" if args.team_effects == "auto" else f" --team-effects {args.team_effects}")
           + ("" if not args.tie_settings else " --tie-settings " + " ".join(f"{p:g}:{s:g}"
                                                                              for p, s in args.tie_settings)))
    print(write_summary(results, out, f"Command: `{cmd}`; {len(tasks)} replications in {wall / 60:.1f} min."))


def write_summary(results: pd.DataFrame, out: Path, provenance: str) -> str:
    """``summary.md`` (reliability tables, the chosen metric, each metric's slope bias) and ``reliability.png``."""
    from bayes_cmma.checks.ranking_calibration import chosen_metric_summary, reliability_table

    if "arm" not in results:  # results written before the joint arms existed
        results = results.assign(arm="separate")
    present = list(dict.fromkeys(results["arm"]))
    arms = [a for a in ARMS if a in present] + [a for a in present if a not in ARMS]
    settings = [dict(zip(("trials", "corr", "regime"), key, strict=True))
                for key in results[["trials", "corr", "regime"]].drop_duplicates().itertuples(index=False)]
    lines = ["# P(best) calibration: " + "; ".join(_label(a) for a in arms), "",
             f"{provenance} Each replication simulates "
             "trial summaries from a known law (`bayes_cmma.checks.ranking_calibration`: 4 teams, the KPI driven "
             "by the first metric), fits every arm to that table and ranks the three metrics with the KPI "
             "baseline. Median seconds per replication and arm: "
             + ", ".join(f"{a} {results.loc[results['arm'] == a, 'seconds'].median():.1f}" for a in arms)
             + ".", ""]
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(settings), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(settings), squeeze=False)[0])
    for ax, s in zip(axes, settings, strict=True):
        ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=0.8, label="calibrated")
        for i, arm in enumerate(arms):
            sel = results[(results["trials"] == s["trials"]) & (results["corr"] == s["corr"])
                          & (results["regime"] == s["regime"]) & (results["arm"] == arm)]
            table = reliability_table(sel["p_best"].to_numpy(), sel["is_best"].to_numpy())
            chosen = chosen_metric_summary(sel)
            warned = int((sel.groupby("rep")["warnings"].max() > 0).sum())
            z_abs = float(np.mean(np.abs(sel["beta_mean"] - sel["beta_true"]) / sel["beta_sd"]))
            big = table[table["n"] >= 100]
            worst = float(big["gap"].abs().max()) if len(big) else float("nan")
            lines += [f"## K = {s['trials']}, metric correlation {s['corr']}, {s['regime'].replace('_', ' ')}: "
                      f"{_label(arm)}", "",
                      f"The metric with the highest P(best): mean P(best) **{chosen['mean_p_best']:.2f}**, truly "
                      f"best in **{100 * chosen['truly_best']:.0f}%** (+- {100 * chosen['truly_best_se']:.1f}) of "
                      f"{chosen['replications']} replications: mean P(best) minus truly best "
                      f"{100 * chosen['overconfidence']:+.1f} points. Largest |gap| in a bin of >= 100 cases: "
                      f"{100 * worst:.1f} points. Replications with a convergence or assumption warning: {warned}. "
                      "Each metric's own slope: "
                      f"mean |posterior mean - truth| / posterior sd = {z_abs:.2f} (about 0.8 when calibrated).", "",
                      "| P(best) bin | cases | mean P(best) | truly best | 95% interval | gap |",
                      "|---|---|---|---|---|---|"]
            for _, r in table[table["n"] > 0].iterrows():
                lines.append(f"| {r['lower']:.1f}-{r['upper']:.1f} | {int(r['n'])} | {r['mean_p_best']:.2f} | "
                             f"{r['frequency_best']:.2f} | [{r['ci_lower']:.2f}, {r['ci_upper']:.2f}] | "
                             f"{r['gap']:+.2f} |")
            lines.append("")
            err = sel["beta_mean"] - sel["beta_true"]
            bias = err.groupby(sel["metric"]).agg(["mean", "std", "size"])
            lines += ["Each metric's slope: mean error of the posterior mean (its Monte Carlo se) / true slope: "
                      + ", ".join(f"{m} {r['mean']:+.3f} ({r['std'] / np.sqrt(r['size']):.3f}) / "
                                  f"{sel.loc[sel['metric'] == m, 'beta_true'].iloc[0]:g}" for m, r in bias.iterrows())
                      + ".", ""]
            shown = table[table["n"] > 0]
            ax.errorbar(shown["mean_p_best"] + 0.006 * i, shown["frequency_best"],
                        yerr=[shown["frequency_best"] - shown["ci_lower"], shown["ci_upper"] - shown["frequency_best"]],
                        fmt="o", color=f"C{i}", ms=4, label=_label(arm))
        ax.set_xlabel("P(best) given (bin mean)")
        ax.set_ylabel("share truly best (95% interval)")
        ax.set_title(f"K = {s['trials']}, corr {s['corr']}, {s['regime'].replace('_', ' ')}", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8)
    fig.savefig(out / "reliability.png", dpi=90)
    lines += ["![reliability](reliability.png)", ""]
    (out / "summary.md").write_text("\n".join(lines))
    return "\n".join(lines)



if __name__ == "__main__":
    main()
