"""Command line: ``bayes-cmma demo | fit | report | compare | ols | summarize | simulate | calibrate | sensitivity``.

A user mistake prints one ``error: ...`` line (no traceback) and exits with status 2; nothing is
written. Warnings print as ``warning: ...`` lines on stderr.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import textwrap
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bayes_cmma.errors import AssumptionWarning, BayesCMMAError, ConvergenceWarning, DataError
from bayes_cmma.fitting import interrupts

if TYPE_CHECKING:
    from bayes_cmma.baselines.ols import OLSResult
    from bayes_cmma.checks.assumptions import RelevanceCheck
    from bayes_cmma.decisions.fusion import FusionChoice
    from bayes_cmma.fitting.bayes import CMMAResult
    from bayes_cmma.fitting.spec import ModelSpec
    from bayes_cmma.inputs.data import TrialData

PROB = 0.94
#: nutpie takes an unsigned 64-bit seed.
SEED_MAX = 2**64 - 1
#: Degrees of the polynomial DRF every command accepts (the spec's range).
DEGREES = (1, 5)


#: Terminal output is wrapped to this many columns.
WIDTH = 100


def wrap(text: str, indent: str = "  ") -> str:
    """``text`` wrapped at :data:`WIDTH` columns, continuation lines indented (paragraphs kept)."""
    return "\n".join(
        textwrap.fill(line, WIDTH, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False)
        for line in str(text).splitlines()
    )


def _say(text: str = "", file=None) -> None:
    print(wrap(text), file=file or sys.stdout, flush=True)


def _status(msg: str) -> None:
    print(wrap(f"[bayes-cmma] {msg}"), file=sys.stderr, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(wrap(f"warning: {message}"), file=sys.stderr, flush=True)


def _parse_at(items: Sequence[str] | None, flag: str = "--at") -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise BayesCMMAError(f"{flag} {item!r} is not METRIC=VALUE (e.g. {flag} ndcg=0.0021).")
        try:
            number = float(value)
        except ValueError:
            raise BayesCMMAError(f"{flag} {item!r}: {value!r} is not a number.") from None
        if not np.isfinite(number):
            raise BayesCMMAError(f"{flag} {item!r}: the value must be finite.")
        if name.strip() in out:
            raise BayesCMMAError(f"{flag} gives metric {name.strip()!r} twice; give it once.")
        out[name.strip()] = number
    return out


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("trials", help="trial table (CSV or Parquet): trial, team, quantity, estimate, std_error")
    p.add_argument("--cov", help="within-trial covariance table: trial, quantity_1, quantity_2, covariance")
    p.add_argument("--kpi", required=True, help="the KPI quantity, e.g. gmv")
    p.add_argument("--metric", action="append", required=True, help="a candidate metric (repeat for several)")


def _add_fit_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--degree", type=int,
                   help="degree of the polynomial DRF (bundled spec of that degree; default: the highest power "
                        "every metric has in the table, at most 3)")
    g.add_argument("--model", help="bundled model (linear, quadratic, cubic) or a TOML spec file")
    p.add_argument("--at", action="append", metavar="METRIC=VALUE",
                   help="current per-unit value of a metric, for elasticity and ranking (repeat)")
    p.add_argument("--lift", type=float, default=0.1, help="relative metric lift (default 0.1 = +10%%)")
    p.add_argument("--kpi-baseline", type=float, default=None,
                   help="KPI level to divide the KPI gain by (default: mu(m), the paper's convention)")
    p.add_argument("--seed", type=int, default=1, help="sampler seed (default 1)")
    p.add_argument("--draws", type=int, help="posterior draws per chain (default: the spec's)")
    p.add_argument("--tune", type=int, help="warm-up draws per chain (default: the spec's)")
    p.add_argument("--chains", type=int, help="chains (default: the spec's)")
    p.add_argument("--target-accept", type=float,
                   help="NUTS target acceptance, between 0 and 1 (default: the spec's, 0.9); raise it (0.95, "
                        "0.99) when the fit reports divergent transitions")


def build_parser() -> argparse.ArgumentParser:
    from bayes_cmma import __version__

    parser = argparse.ArgumentParser(
        prog="bayes-cmma",
        description="Bayesian causal meta-mediation analysis: which metric should be the north star?",
    )
    parser.add_argument("--version", action="version", version=f"bayes-cmma {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit the embedded example data and write the outputs")
    demo.add_argument("--out", default="bayes_cmma_demo", help="output folder (default ./bayes_cmma_demo)")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--draws", type=int)
    demo.add_argument("--tune", type=int)
    demo.add_argument("--chains", type=int)
    demo.add_argument("--target-accept", type=float, help="NUTS target acceptance (default 0.9)")
    demo.add_argument("--no-report", action="store_true", help="do not write report.html")
    fitp = sub.add_parser("fit", help="fit one model per metric and rank the metrics")
    _add_data_args(fitp)
    _add_fit_args(fitp)
    fitp.add_argument("--out", default="bayes_cmma_out", help="output folder (default ./bayes_cmma_out)")
    fitp.add_argument("--no-report", action="store_true", help="do not write report.html")
    fitp.add_argument("--joint", nargs="?", const="pooled",
                      choices=["pooled", "independent", "observational", "tie"], default=None,
                      help="rank from one joint model of every metric (linear DRFs; needs --degree 1, --at and "
                           "--kpi-baseline): 'pooled' (default) pools the metrics' elasticities, 'independent' "
                           "does not, 'observational' borrows from the observational slopes of --observational, "
                           "'tie' gives prior probability 0.5 to equal elasticities (P(best) is then far less "
                           "overconfident on near ties, and less confident elsewhere; docs: checks.md). Without it, "
                           "the separate fits' draws are paired as if independent")
    fitp.add_argument("--p-tie", type=float, default=None,
                      help="with --joint tie: the prior probability that the metrics' elasticities are equal "
                           "(default 0.5)")
    fitp.add_argument("--metric-corr-eta", type=float, default=None,
                      help="with --joint: the LKJ concentration of the prior on the metrics' correlation (default "
                           "1, uniform), or with --latent-prior lkj on the KPI's and metrics' correlation (default "
                           "0.5). 0.5 pulls proxy metrics' slopes less towards 0; with --joint tie it made P(best) "
                           "better calibrated on near ties with 20-50 trials, but without --latent-prior lkj the "
                           "model's own simulation-based check samples worse (docs: checks.md, 'Is P(best) "
                           "calibrated?')")
    fitp.add_argument("--latent-prior", choices=["slopes", "lkj", "wishart"], default=None,
                      help="with --joint independent or tie: 'slopes' (default) puts the normal prior on the slopes "
                           "and an LKJ prior on the metrics' correlation; 'lkj' one LKJ prior over the KPI's and "
                           "metrics' correlation (--metric-corr-eta is then its concentration, default 0.5), whose "
                           "prior draws never pair nearly collinear metrics with unrelated slopes (docs: model.md, "
                           "'The latent LKJ prior'); 'wishart' an inverse-Wishart prior over their covariance, which "
                           "does not pull proxy metrics' slopes towards 0 (better on near ties, but its composite "
                           "north star weighs the proxies too much; no --metric-corr-eta; docs: model.md, 'The "
                           "inverse-Wishart latent prior')")
    fitp.add_argument("--observational",
                      help="with --joint observational: the observational table of degree 1 (bayes-cmma summarize "
                           "--degree 1 --observational-out), whose slopes the prior borrows from as far as the "
                           "trials agree")
    fitp.add_argument("--observational-bias-prior", choices=["halfnormal", "harmonic"], default=None,
                      help="with --joint observational: the prior of the observational bias scale, HalfNormal "
                           "(default) or harmonic (flat on the bias variance: Stein's prior; borrows less from "
                           "clean logs and is pulled less by confounded ones)")
    fitp.add_argument("--observational-parametrization", choices=["non_centred", "centred"], default=None,
                      help="with --joint observational: how the sampler sees the slopes around the logs' (the "
                           "same model): non_centred (default) or centred, which sampled better with 50 trials "
                           "and worse with 10 (docs: checks.md, 'SBC of the observational prior')")
    fitp.add_argument("--observational-slope", action="append", metavar="METRIC=VALUE",
                      help="the logs' partial slope of the KPI on a metric (repeat for every metric): also write "
                           "fusion.csv, how far the composite launch rule leans on them by Stein's rule (as "
                           "`decision-value --observational-slope`; a report section). Not the joint prior's "
                           "--observational table")
    fitp.add_argument("--observational-partial", metavar="FILE",
                      help="instead of --observational-slope: the partial-slope table of `summarize "
                           "--observational-partial-out` (the teams combined by precision)")
    nst = sub.add_parser("northstar", help="the best composite of the metrics for a future trial of a given size "
                         "(from the joint model of `fit --joint`)")
    nst.add_argument("fit_dir", help="the --out folder of `bayes-cmma fit --joint`")
    size = nst.add_mutually_exclusive_group()
    size.add_argument("--future-size", type=float, nargs="+",
                      help="future trial sizes relative to a median past trial (default 0.25 1 4 16)")
    size.add_argument("--future-n", type=float, nargs="+",
                      help="future trial sizes in units per arm (needs n_treated/n_control in the trial table)")
    nst.add_argument("--criterion", choices=["sign", "correlation"], default="sign",
                     help="sign (default): maximise P(sign of the composite's ATE = sign of the true KPI effect); "
                          "correlation: maximise their correlation")
    nst.add_argument("--team", help="the future trial's team (default: a team in proportion to its past trials)")
    nst.add_argument("--out", help="folder for northstar.csv and northstar.png (default FIT_DIR)")
    dv = sub.add_parser("decision-value", help="how much KPI each metric's launch decisions collect, estimated "
                        "from the trials alone (cross-fitted, data fission; no model)")
    _add_data_args(dv)
    dv.add_argument("--folds", type=int, default=5, help="cross-fitting folds for the composite (default 5)")
    dv.add_argument("--tau", type=float, default=1.0,
                    help="data-fission strength: decisions see (1 + tau^2) times today's measurement variance "
                         "(default 1); 0 decides and scores on the same ATEs (biased, for comparison)")
    dv.add_argument("--repeats", type=int, default=50, help="fission draws averaged per trial (default 50)")
    dv.add_argument("--threshold", type=float, default=0.0,
                    help="launch when the north star's ATE exceeds this many standard errors (default 0)")
    dv.add_argument("--within-trial-correlation", type=float, default=0.0,
                    help="correlation assumed for within-trial covariance pairs --cov does not give (default 0)")
    dv.add_argument("--seed", type=int, default=1, help="seed of the folds and fission draws (default 1)")
    dv.add_argument("--interval", choices=["skew-corrected", "t"], default="skew-corrected",
                    help="95%% intervals: Student's t corrected for the skewness of the trials' contributions "
                         "(default), or plain Student's t")
    dv.add_argument("--out", default="decision_value.csv", help="table to write (default ./decision_value.csv)")
    dv.add_argument("--observational-slope", action="append", metavar="METRIC=VALUE",
                    help="the logs' partial slope of the KPI on a metric (repeat for every metric): also choose how "
                         "far the composite launch rule leans on them (--fusion-select)")
    dv.add_argument("--observational-partial", metavar="FILE",
                    help="instead of --observational-slope: the partial-slope table of `summarize "
                         "--observational-partial-out` (the teams combined by precision)")
    dv.add_argument("--fusion-select", choices=["stein", "significant", "best", "per-metric"], default="stein",
                    help="with --observational-slope: borrow from the logs as much as their disagreement with the "
                         "trials allows (stein, default: James-Stein shrinkage towards the logs), keep a strength "
                         "above 0 only when its gain in decision value over the trials alone exceeds one standard "
                         "error (significant), take the strength with the best decision value (best), or pull "
                         "each metric's weight towards the logs by its own amount, chosen by the gradient of the "
                         "decision value and kept only when significant (per-metric)")
    dv.add_argument("--fusion-out", default="fusion.csv",
                    help="with --observational-slope: the decision value per fusion strength (default ./fusion.csv)")
    rep = sub.add_parser("report", help="one self-contained HTML report of a fit folder")
    rep.add_argument("fit_dir", help="the --out folder of `bayes-cmma fit` or `demo`")
    rep.add_argument("--out", help="HTML file to write (default FIT_DIR/report.html)")
    cmp_ = sub.add_parser("compare", help="choose the DRF degree by leave-one-trial-out ELPD (PSIS-LOO + refits)")
    _add_data_args(cmp_)
    cmp_.add_argument("--degrees", type=int, nargs="+", default=[1, 2, 3], help="degrees to compare (default 1 2 3)")
    cmp_.add_argument("--model", help="bundled spec or TOML whose priors/sampler are used at every degree")
    cmp_.add_argument("--seed", type=int, default=1, help="sampler seed (default 1)")
    cmp_.add_argument("--draws", type=int, help="posterior draws per chain (default: the spec's)")
    cmp_.add_argument("--tune", type=int, help="warm-up draws per chain (default: the spec's)")
    cmp_.add_argument("--chains", type=int, help="chains (default: the spec's)")
    cmp_.add_argument("--max-refits", type=int, default=20,
                      help="exact LOO refits per degree for trials with Pareto k > 0.7 (default 20)")
    cmp_.add_argument("--out", help="folder for compare.csv, top_coefficient.csv and pareto_k.csv")
    ols = sub.add_parser("ols", help="frequentist estimators on the trial summaries (the paper's OLS, or "
                         "errors-in-variables peers) with nested Wald tests")
    _add_data_args(ols)
    ols.add_argument("--degree", type=int, default=1, help="degree of the polynomial DRF (default 1)")
    ols.add_argument("--method", choices=["ols", "tc", "liml"], default="ols",
                     help="ols: the paper's Algorithm 1 (ignores measurement error; default); tc: total covariance "
                          "= Fuller's method-of-moments errors-in-variables regression; liml: LIML as total least "
                          "squares (assumes no trial-level KPI residual). tc and liml use the standard errors "
                          "and --cov")
    ols.add_argument("--within-trial-correlation", type=float, default=None,
                     help="tc/liml: correlation assumed for within-trial covariance pairs --cov does not give "
                          "(default 0, with a warning)")
    summ = sub.add_parser("summarize", help="unit-level logs to trial summaries (trial table + covariance table)")
    summ.add_argument("units", nargs="+",
                      help="unit-level table(s) (CSV or Parquet files, or Parquet folders), one row per unit")
    summ.add_argument("--trial", default="trial", help="trial id column (default trial)")
    summ.add_argument("--team", default="team", help="team column (default team; --team '' for none)")
    summ.add_argument("--treatment", default="treated", help="0/1 treatment column (default treated)")
    summ.add_argument("--kpi", required=True, help="KPI column")
    summ.add_argument("--metric", action="append", required=True, help="metric column (repeat for several)")
    summ.add_argument("--degree", type=int, default=3, help="summarise powers 1..degree of each metric (default 3)")
    summ.add_argument("--out", required=True, help="trial table to write (.csv or .parquet)")
    summ.add_argument("--cov-out", required=True, help="covariance table to write (.csv or .parquet)")
    summ.add_argument("--observational-out",
                      help="also write the observational table (.csv or .parquet): per team and metric, the "
                           "within-arm regression of the KPI on the metric's powers (confounded; docs: input.md)")
    summ.add_argument("--observational-partial-out",
                      help="also write the partial-slope table (.csv or .parquet): per team, the within-arm regression "
                           "of the KPI on every metric at once (for decision-value --observational-partial)")
    summ.add_argument("--observational-arms", choices=["control", "both", "treatment"], default="control",
                      help="arms whose units enter the observational regression (default control)")
    summ.add_argument("--engine", choices=["pandas", "dask"], default="pandas",
                      help="pandas: one file at a time in this process (default); dask: partition by partition")
    summ.add_argument("--scheduler",
                      help="with --engine dask: a Dask scheduler address (tcp://HOST:8786) to run on an existing "
                           "cluster; 'threads', 'processes' or 'synchronous' for Dask's local schedulers; default: "
                           "a local cluster of one single-threaded worker process per core")
    summ.add_argument("--workers", type=int, help="with --engine dask and no --scheduler: local worker processes "
                      "(default: one per core)")
    aug = sub.add_parser("augment", help="causal data augmentation along a DAG (ADMGDA): a weighted table")
    aug.add_argument("data", help="table to augment (CSV or Parquet), one row per observation")
    aug.add_argument("--dag", required=True, help="the causal graph, e.g. \"team->ndcg; ndcg->gmv; team->gmv\"")
    aug.add_argument("--theta", type=float, default=1e-2,
                     help="drop extensions whose weight relative to an observed row is <= theta (default 0.01)")
    aug.add_argument("--kernel", action="append", metavar="COLUMN=KIND",
                     help="gaussian (Silverman's bandwidth) or categorical for a column (repeat); default: "
                          "gaussian for numbers, categorical otherwise")
    aug.add_argument("--roots", choices=["joint", "independent"], default="joint",
                     help="parentless variables drawn together from the rows (default) or independently")
    aug.add_argument("--max-rows", type=int, default=2_000_000,
                     help="stop with an error when more rows would survive a step (default 2000000)")
    aug.add_argument("--out", required=True, help="weighted table to write (.csv or .parquet), column 'weight'")
    sens = sub.add_parser("sensitivity", help="how the ranking changes if assumption A3 fails (a rho sweep)")
    _add_data_args(sens)
    _add_fit_args(sens)
    sens.add_argument("--rho", type=float, nargs="+", default=None,
                      help="assumed correlations between a trial's direct KPI effect and its metric effect "
                           "(default -0.6 -0.4 -0.2 0 0.2 0.4 0.6; 0 is always added)")
    sens.add_argument("--out", default="bayes_cmma_sensitivity",
                      help="output folder (default ./bayes_cmma_sensitivity)")
    cal = sub.add_parser("calibrate", help="simulation-based calibration (SBC) of the Bayesian model")
    cal.add_argument("--model", default="cubic", help="bundled spec name, TOML spec or degree (default cubic)")
    cal.add_argument("--sims", type=int, default=200, help="simulations (default 200)")
    cal.add_argument("--trials", type=int, default=60, help="trials per simulated data set (default 60)")
    cal.add_argument("--teams", type=int, default=4, help="teams (default 4)")
    cal.add_argument("--seed", type=int, default=2018)
    cal.add_argument("--informative-precision", type=float, default=0.0, metavar="KAPPA",
                     help="simulate data NOT from the model: each trial's measurement covariance grows like "
                          "exp(2 KAPPA s_k) with its standardised latent metric level s_k (a robustness check "
                          "of the spec's measurement model; default 0)")
    cal.add_argument("--out", required=True, help="folder for ranks.csv and summary.md")
    sim = sub.add_parser("simulate", help="the paper's simulation study (Tables 1-3) with the Bayesian model added, "
                                          "or the fusion study of launch rules leaning on observational logs")
    sim.add_argument("--study", required=True,
                     help="table1, table2, table3, small_k, fusion, or a study TOML file (docs: simulation.md)")
    sim.add_argument("--sims", type=int, help="replications per setting (default: the study's, 100; fusion 200)")
    sim.add_argument("--n-per", type=int, nargs="+", help="units per trial (overrides the study's)")
    sim.add_argument("--n-trials", type=int, nargs="+", help="trials per data set (overrides the study's)")
    sim.add_argument("--estimators", nargs="+",
                     help="subset of liml 2sls sobel_iv lsem cmma_ols summary_tc summary_liml admgda bayes; for "
                          "--study fusion the launch rules, a subset of trials observational stein significant "
                          "best per_metric driver (with trials)")
    sim.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    sim.add_argument("--seed", type=int, help="base seed (default: the study's)")
    sim.add_argument("--draws", type=int, help="posterior draws per chain of each Bayesian fit (default 1000)")
    sim.add_argument("--tune", type=int, help="warm-up draws per chain (default 1000)")
    sim.add_argument("--chains", type=int, help="chains per Bayesian fit (default 4)")
    sim.add_argument("--target-accept", type=float, help="NUTS target acceptance of each Bayesian fit (default 0.9)")
    sim.add_argument("--out", required=True, help="results folder (rerun with the same arguments to resume)")
    return parser


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def joint_options(**given: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`bayes_cmma.fit_joint` that ``fit --joint`` was given (None: not given)."""
    return {k: v for k, v in given.items() if v is not None}


def run_fit(
    trials_path: str | Path,
    cov_path: str | Path | None,
    kpi: str,
    metrics: list[str],
    *,
    model: str | int | None,
    at: dict[str, float],
    lift: float,
    kpi_baseline: float | None,
    seed: int,
    out: str | Path,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    trials_data: TrialData | None = None,
    report: bool = True,
    target_accept: float | None = None,
    joint: str | None = None,
    observational: str | Path | None = None,
    p_tie: float | None = None,
    observational_bias_prior: str | None = None,
    fusion_slopes: dict[str, float] | None = None,
    observational_parametrization: str | None = None,
    metric_corr_eta: float | None = None,
    latent_prior: str | None = None,
) -> int:
    """Everything ``fit`` and ``demo`` do; returns the exit status.

    ``joint`` (an ``elasticity_prior`` of :func:`bayes_cmma.fit_joint`) ranks the metrics from the joint
    model instead of pairing the separate fits' draws; ``p_tie`` is the tie prior's prior probability;
    ``observational_bias_prior`` the observational prior's prior of the bias scale (and
    ``observational_parametrization`` how its slopes are sampled); ``metric_corr_eta`` the joint
    model's LKJ concentration on the metrics' correlation; ``latent_prior`` its latent prior
    (``"slopes"``, ``"lkj"`` or ``"wishart"``); ``fusion_slopes``
    (the logs' partial slopes per metric) adds the decision-focused fusion (``fusion.csv``).
    """
    from bayes_cmma.baselines.ols import cmma_ols_design
    from bayes_cmma.checks import checking
    from bayes_cmma.checks.assumptions import relevance_check
    from bayes_cmma.decisions import derived
    from bayes_cmma.fitting.bayes import fit, resolve_spec
    from bayes_cmma.fitting.measurement import for_spec
    from bayes_cmma.fitting.spec import replace_spec
    from bayes_cmma.inputs import data as data_mod
    from bayes_cmma.reporting import outputs
    from bayes_cmma.reporting import report as report_mod

    t_start = time.perf_counter()
    trials = trials_data if trials_data is not None else data_mod.read_trials(trials_path, cov_path)
    degree_note = ""
    if model is None:
        model = data_mod.default_degree(trials, metrics)
        degree_note = (f" (the highest power every metric has in the table, at most {data_mod.DEFAULT_MAX_DEGREE}; "
                       "--degree or --model to choose)")
    spec = resolve_spec(model)
    if target_accept is not None:
        spec = replace_spec(spec, sampler={"target_accept": target_accept})
    for m in at:
        if m not in metrics:
            raise BayesCMMAError(
                f"--at names metric {m!r}, which is not fitted; fitted metrics: {', '.join(metrics)}."
            )
    for m, value in at.items():
        if value <= 0:
            warnings.warn(
                f"--at {m}={value:g}: a current metric level of {'0' if value == 0 else 'below 0'}. Most metrics "
                "(NDCG, MRR, rates, averages of non-negative values) cannot be there; the elasticity is then the "
                f"KPI change for moving {m} from {value:g} to {value * (1 + lift):g}, which may not mean what you "
                "want. Give the metric's average in the control arms.",
                AssumptionWarning,
                stacklevel=2,
            )
    if not np.isfinite(lift) or lift == 0:
        raise BayesCMMAError(f"--lift must be a non-zero number (0.1 = +10%), got {lift}.")
    if kpi_baseline is not None and (not np.isfinite(kpi_baseline) or kpi_baseline == 0):
        raise BayesCMMAError(f"--kpi-baseline must be a non-zero number, got {kpi_baseline}.")
    for name, value in (("--draws", draws), ("--tune", tune), ("--chains", chains)):
        if value is not None and value < 1:
            raise BayesCMMAError(f"{name} must be a positive integer, got {value}.")
    if joint is not None:
        _check_joint(spec.degree, metrics, at, kpi_baseline)
    if p_tie is not None:
        if joint != "tie":
            raise BayesCMMAError(f"--p-tie is the tie prior's probability; it goes with --joint tie, not "
                                 f"{'no --joint' if joint is None else '--joint ' + joint}.")
        from bayes_cmma.decisions.ties import SPREAD_SCALE, check_tie_prior

        check_tie_prior(p_tie, SPREAD_SCALE)  # the CLI keeps the default spread scale
    if metric_corr_eta is not None:
        if joint is None:
            raise BayesCMMAError("--metric-corr-eta is the joint model's LKJ concentration; it goes with --joint.")
        from bayes_cmma.fitting.joint import check_metric_corr_eta

        check_metric_corr_eta(metric_corr_eta, "--metric-corr-eta")
    if latent_prior is not None:
        if joint is None:
            raise BayesCMMAError("--latent-prior is the joint model's prior; it goes with --joint independent or "
                                 "--joint tie.")
        from bayes_cmma.fitting.joint import LATENT_ELASTICITY_PRIORS

        if latent_prior != "slopes" and joint not in LATENT_ELASTICITY_PRIORS:
            raise BayesCMMAError(f"--latent-prior {latent_prior} goes with --joint independent or --joint tie, not "
                                 f"--joint {joint}: it has no explicit prior on the slopes to build that one on.")
        if latent_prior == "wishart" and metric_corr_eta is not None:
            raise BayesCMMAError("--metric-corr-eta is an LKJ concentration; --latent-prior wishart has no LKJ prior. "
                                 "Leave it out, or use --latent-prior lkj.")
    if (joint == "observational") != (observational is not None):
        raise BayesCMMAError("--joint observational and --observational FILE go together: the observational prior "
                             "borrows from that file's slopes.")
    for flag, value in (("--observational-bias-prior", observational_bias_prior),
                        ("--observational-parametrization", observational_parametrization)):
        if value is not None and joint != "observational":
            raise BayesCMMAError(f"{flag} is the observational prior's setting; it goes with --joint observational, "
                                 f"not {'no --joint' if joint is None else '--joint ' + joint}.")
    obs_table = None
    if observational is not None:
        from bayes_cmma.inputs.observational import observational_slopes, read_observational

        obs_table = read_observational(observational)
        observational_slopes(obs_table, metrics)  # every metric has a linear slope: checked before sampling
    fusion = None
    if fusion_slopes is not None:  # no model involved: run it (and refuse its input) before sampling
        from bayes_cmma.decisions.fusion import decision_focused_fusion, fusion_frame

        _status("how far the composite launch rule leans on the logs (bc.decision_focused_fusion)")
        fusion = decision_focused_fusion(trials, kpi, metrics, fusion_slopes, seed=seed,
                                         within_trial_correlation=spec.within_trial_correlation)
    # validate every design up front (fit() does it again, cheaply) so errors come before sampling
    ols_results, checks, measured, partial = {}, {}, {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in metrics:
            design = data_mod.metric_design(trials, kpi, m, spec.degree, spec.within_trial_correlation)
            if not design.complete:
                partial[m] = (design.n_trials, int((~design.observed.all(axis=1)).sum()))
            ols_results[m] = cmma_ols_design(design)
            checks[m] = relevance_check(design)
            measured[m] = for_spec(design, spec).measurement
    n_teams = len(trials.teams)
    _status(f"{len(trials.trials)} trials, {n_teams} team(s); KPI {kpi!r}; metrics {', '.join(metrics)}; "
            f"model {spec.name!r} (degree {spec.degree}){degree_note}")
    for label in dict.fromkeys(measured.values()):
        _status(f"measurement covariance: {label}")
    for m, (n, n_partial) in partial.items():
        _status(f"{m}: {n_partial} of {n} trials report only some of ({kpi}, {m} powers): the Bayesian model uses "
                f"what each reports; the OLS and the A4 check use the {n - n_partial} that report all")
    result = fit(trials, kpi, metrics, spec, seed=seed, draws=draws, tune=tune, chains=chains,
                 progress_bar=sys.stderr.isatty(), progress=_status)

    summary = outputs.summary_frame(result, prob=PROB)
    files = {"summary.csv": lambda p: summary.to_csv(p, index=False)}
    ranking = None
    elast = None
    northstar_table = None
    more_table = None
    crossing: dict[str, float] = {}
    rankable = not (spec.degree == 1 and kpi_baseline is None)
    draws_arg = draws
    ranking_ds = None
    if at and all(m in at for m in metrics):
        draws = result.elasticity(at, lift=lift, baseline=kpi_baseline)
        elast = outputs.elasticity_frame(result, at, lift, kpi_baseline, prob=PROB, draws=draws)
        if kpi_baseline is None:
            crossing = baseline_crossing(result, at)
        rank_draws = draws
        if joint is not None:
            from bayes_cmma.fitting.joint import fit_joint

            options = joint_options(p_tie=p_tie, observational_bias_prior=observational_bias_prior,
                                    observational_parametrization=observational_parametrization,
                                    metric_corr_eta=metric_corr_eta, latent_prior=latent_prior)
            joint_fit = fit_joint(trials, kpi, metrics, at=at, elasticity_prior=joint, model=spec, seed=seed,
                                  observational=obs_table, **options,
                                  draws=draws_arg, tune=tune, chains=chains, target_accept=target_accept,
                                  progress_bar=sys.stderr.isatty(), progress=_status)
            ranking_ds = joint_fit.ranking(at, lift=lift, baseline=kpi_baseline)
            rank_draws = joint_fit.elasticity(at, lift=lift, baseline=kpi_baseline)
            files[report_mod.JOINT_FILE] = lambda p: joint_fit.posterior.to_netcdf(p, engine="h5netcdf")
            from bayes_cmma.decisions.northstar import northstar, northstar_frame

            _status("the best composite north star (bc.northstar)")
            northstar_table = northstar_frame(northstar(joint_fit), prob=PROB)
            files[report_mod.NORTHSTAR_FILE] = lambda p: northstar_table.to_csv(p, index=False)
        else:
            ranking_ds = derived.rank_metrics(draws)
        if rankable:
            ranking = outputs.ranking_frame(ranking_ds)
            files["ranking.csv"] = lambda p: ranking.to_csv(p, index=False)
            if len(metrics) > 1:
                from bayes_cmma.decisions.more_trials import value_frame, value_of_trials, value_of_trials_tie

                value = (value_of_trials_tie(joint_fit.tie_posterior(at, lift=lift, baseline=kpi_baseline),
                                             len(trials.trials), seed=seed) if joint == "tie"
                         else value_of_trials(rank_draws, len(trials.trials), seed=seed))
                more_table = value_frame(value)
                files[report_mod.MORE_TRIALS_FILE] = lambda p: more_table.to_csv(p, index=False)
        grids = {m: np.linspace(0.0, 2.0 * at[m], 41) for m in metrics}
        drf_table = outputs.drf_frame(result, grids, prob=PROB)
        files["elasticity.csv"] = lambda p: elast.to_csv(p, index=False)
        files["drf.csv"] = lambda p: drf_table.to_csv(p, index=False)
    decision_table = None
    if len(metrics) > 1:
        from bayes_cmma.decisions.decision_value import decision_value

        try:
            decision_table = decision_value(trials, kpi, metrics, seed=seed, warn_filled=False,  # the fit warns
                                            within_trial_correlation=spec.within_trial_correlation).table.reset_index()
        except DataError as exc:
            _status(f"no model-free decision value: {exc}")
        else:
            files[report_mod.DECISION_VALUE_FILE] = lambda p: decision_table.to_csv(p, index=False)
    fusion_table = None
    if fusion is not None:
        fusion_table = fusion_frame(fusion)
        files[report_mod.FUSION_FILE] = lambda p: fusion_table.to_csv(p, index=False)
    ols_table = _ols_frame(ols_results)
    files["ols.csv"] = lambda p: ols_table.to_csv(p, index=False)
    assumptions = _assumption_frame(checks, result)
    files["assumptions.csv"] = lambda p: assumptions.to_csv(p, index=False)
    for m, f in result.fits.items():
        files[f"{m}.nc"] = (lambda tree: lambda p: tree.to_netcdf(p, engine="h5netcdf"))(f.posterior)
    loos = {m: checking.loo(f.posterior) for m, f in result.fits.items()}  # the report's and the terminal's
    record = report_mod.run_record(kpi, metrics, at, lift, kpi_baseline, spec.name, seed,
                                   joint if ranking_ds is not None and joint is not None else None)
    files[report_mod.RUN_FILE] = lambda p: Path(p).write_text(json.dumps(record, indent=2))
    if report:
        _status("writing report.html")
        inputs = report_mod.ReportInputs(
            trees={m: f.posterior for m, f in result.fits.items()}, kpi=kpi, at=at or None, lift=lift,
            baseline=kpi_baseline, ols=ols_table, assumptions=assumptions, loo=loos,
            ranking=ranking_ds if joint is not None else None, northstar=northstar_table, more_trials=more_table,
            decision_value=decision_table, fusion=fusion_table,
            summaries={m: f.summary for m, f in result.fits.items()})
        page = report_mod.render_report(inputs)
        files["report.html"] = lambda p: Path(p).write_text(page, encoding="utf-8")
    written = outputs.write_atomically(out, files)

    for m, res in loos.items():  # the report's Pareto k warning, in the terminal too
        bad = checking.influential_trials(res)
        if bad:
            warnings.warn(checking.pareto_k_message(m, bad), ConvergenceWarning, stacklevel=1)
    _print_report(result, spec, summary, elast, ranking, ols_results, at, lift, kpi_baseline, crossing)
    if ranking_ds is not None and ranking_ds.attrs.get("observational_bias_sd"):
        attrs = ranking_ds.attrs
        _say(f"The joint model's slopes borrow from the observational slopes ({attrs['observational_slopes']}) "
             f"as far as the trials agree; learned bias sd (median) per metric: "
             f"{attrs['observational_bias_sd']}. Small against the slope: it borrowed; large: the trials "
             "decided.")
    if decision_table is not None:
        _print_decision_value(decision_table.set_index("candidate"), kpi)
    if fusion is not None:
        _print_fusion(fusion, "stein")
    if more_table is not None:
        _print_more_trials(more_table)
    if northstar_table is not None:
        _print_northstar(northstar_table)
    _print_assumptions(assumptions)
    _say(f"\nWrote {', '.join(str(p) for p in written)}")
    print(f"Done in {time.perf_counter() - t_start:.1f} s.")
    return 0


def baseline_crossing(result: CMMAResult, at: dict[str, float]) -> dict[str, float]:
    """Share of draws with mu(m) <= 0 at each metric's current value, for metrics where it is above 0.

    With the default baseline mu(m), such draws put a denominator near or below 0 into the relative
    gain: its posterior mean is then unstable (it jumped from 0.070 to 0.096 between two fits of a
    20-trial table whose medians agreed), so the CLI warns and reports medians.
    """
    from bayes_cmma.decisions import derived

    out = {}
    for m, fit_m in result.fits.items():
        mu = derived.drf(fit_m.beta, [float(at[m])]).values
        share = float(np.mean(mu <= 0))
        if share > 0:
            out[m] = share
            warnings.warn(
                f"{m}: the DRF at the current value, mu({at[m]:g}), is <= 0 in {100 * share:.1f}% of the draws, so "
                f"the relative gain divides by a baseline that crosses 0; its posterior mean is unstable and the "
                "median is reported instead. Give the KPI's level with --kpi-baseline.",
                AssumptionWarning, stacklevel=2)
    return out


def _assumption_frame(checks: dict[str, RelevanceCheck], result: CMMAResult) -> pd.DataFrame:
    """A4 per metric: Cochran's Q test (data) and the posterior reliability of a trial's metric ATE."""
    from bayes_cmma.checks.assumptions import posterior_reliability

    rows = []
    for m, check in checks.items():
        rel = posterior_reliability(result[m].posterior).values.ravel()
        lo, hi = np.quantile(rel, [(1 - PROB) / 2, (1 + PROB) / 2])
        rows.append({**check.to_dict(), "reliability_mean": rel.mean(), f"reliability_eti{100 * PROB:g}_lower": lo,
                     f"reliability_eti{100 * PROB:g}_upper": hi})
    return pd.DataFrame(rows)


def _print_assumptions(table: pd.DataFrame) -> None:
    pct = f"{100 * PROB:g}"
    _say("\nAssumption A4 (trials move the metric differently within teams; weak if Cochran's Q p >= 0.001 "
         "or I^2 < 0.1), per metric:")
    print(f"  {'metric':>8}  {'Q p-value':>9}  {'F = Q/df':>8}  {'I^2':>5}  {'posterior reliability':<22}  verdict")
    for _, r in table.iterrows():
        verdict = "WEAK: the DRF is driven by the prior" if r["weak"] else "ok"
        reliability = (f"{r['reliability_mean']:.2f} [{r[f'reliability_eti{pct}_lower']:.2f}, "
                       f"{r[f'reliability_eti{pct}_upper']:.2f}]")
        print(f"  {r['metric']:>8}  {format_p_value(r['p_value']):>9}  {r['f_stat']:>8.1f}  {r['i2']:>5.2f}  "
              f"{reliability:<22}  {verdict}")


def _ols_frame(ols_results: dict[str, OLSResult]) -> pd.DataFrame:
    parts = []
    for m, r in ols_results.items():
        t = r.coefficient_table().reset_index()
        t.insert(0, "metric", m)
        parts.append(t)
    return pd.concat(parts, ignore_index=True)


def format_estimate(mean: float, lower: float, upper: float, digits: int = 4) -> str:
    """``mean [lower, upper]`` on one scale: ``digits`` significant digits for the largest magnitude.

    Fixed notation when the largest magnitude is in [1e-3, 1e6), else every number in units of a
    common power of ten (``0.169 [-0.795, 1.110] x 1e6``), so a row never mixes notations.
    """
    values = np.array([mean, lower, upper], dtype=float)
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    exponent = int(np.floor(np.log10(top)))
    if -3 <= exponent < 6:
        decimals = max(digits - 1 - exponent, 0)
        a, b, c = (f"{v:.{decimals}f}" for v in values)
        return f"{a} [{b}, {c}]"
    scaled = values / 10.0**exponent
    a, b, c = (f"{v:.{digits - 1}f}" for v in scaled)
    return f"{a} [{b}, {c}] x 1e{exponent}"


def format_p_value(p: float) -> str:
    """Two significant digits; below double precision's resolution ``< 1e-16`` instead of ``0``."""
    return "< 1e-16" if p < 1e-16 else f"{p:.2g}"


#: How the terminal and the report name what produced the ranking (``ranking.csv``'s ``pairing``).
PAIRING_WORDS = {
    "independent": "the separate per-metric fits, their draws paired as if independent (fit --joint ranks "
                   "from one joint model)",
    "joint": "one joint model of every metric (fit --joint; joint.nc)",
}


def _say_recommendation(ranking: pd.DataFrame) -> None:
    """The recommended metric, what produced the ranking and, with the tie prior, P(tie)."""
    best = ranking.iloc[0]
    _say(f"\nRecommended north-star metric: {best['metric']} (P(best) = {best['p_best']:.2f}, "
         f"expected regret {best['expected_regret']:.3g}).")
    _say(f"The ranking comes from {PAIRING_WORDS.get(best.get('pairing', 'independent'), 'separate fits')}.")
    if "p_tie" in best:
        _say(f"P(the metrics' elasticities tie) = {best['p_tie']:.2f} under the tie prior (prior "
             f"{best['prior_p_tie']:.2f}); a tie shares P(best) equally, so P(best) near 1/{len(ranking)} means "
             "the trials cannot tell the metrics apart.")


def _check_joint(degree: int, metrics: list[str], at: dict[str, float], kpi_baseline: float | None) -> None:
    """What ``fit --joint`` needs, checked before anything is sampled."""
    if degree != 1:
        raise BayesCMMAError(f"--joint fits linear DRFs; the model has degree {degree}. Add --degree 1 (or drop "
                             "--joint to rank the separate fits).")
    if len(metrics) < 2:
        raise BayesCMMAError("--joint ranks 2 or more metrics; give several --metric.")
    if "joint" in metrics:
        raise BayesCMMAError("a metric named 'joint' would share joint.nc with the joint model's posterior; rename "
                             "the metric in the trial table to use --joint.")
    missing = [m for m in metrics if m not in at]
    if missing:
        raise BayesCMMAError(f"--joint ranks at the metrics' current levels: give --at {missing[0]}=VALUE for "
                             "every metric.")
    bad = [m for m in metrics if not at[m] > 0]
    if bad:
        raise BayesCMMAError(f"--joint needs positive metric levels; --at {bad[0]}={at[bad[0]]:g}.")
    if kpi_baseline is None:
        raise BayesCMMAError("--joint fits linear DRFs, which rank only with a KPI level: give --kpi-baseline.")


def _print_report(
    result: CMMAResult,
    spec: ModelSpec,
    summary: pd.DataFrame,
    elast: pd.DataFrame | None,
    ranking: pd.DataFrame | None,
    ols_results: dict[str, OLSResult],
    at: dict[str, float],
    lift: float,
    kpi_baseline: float | None,
    crossing: dict[str, float] | None = None,
) -> None:
    """The answer first (recommendation, then the metric table), the DRF coefficients after."""
    lo, hi = f"eti{100 * PROB:g}_lb", f"eti{100 * PROB:g}_ub"
    pct = f"{100 * PROB:g}"
    crossing = crossing or {}
    _say(f"\nBayesian CMMA, KPI {result.kpi!r}, model {spec.name!r} (degree {spec.degree}); {pct}% credible "
         "intervals; OLS = the paper's Algorithm 1 (95% CI).")
    if elast is None:
        _say("\nNo elasticity or ranking: give every metric's current value with --at METRIC=VALUE.")
    else:
        if ranking is None:
            _say("\nNo ranking: with a linear DRF and the baseline mu(m) every metric's relative gain equals the "
                 "lift, whatever the data. Give the KPI's level with --kpi-baseline (or fit a higher degree) to "
                 "rank the metrics.")
        elif len(ranking) == 1:
            _say(f"\nOne metric ({ranking.iloc[0]['metric']}): nothing to rank; its KPI gain is below.")
        else:
            _say_recommendation(ranking)
        base = "mu(m)" if kpi_baseline is None else f"{kpi_baseline:g}"
        _say(f"\nRelative {result.kpi} gain for a {100 * lift:+g}% lift of each metric at its current value "
             f"(gain / {base}; the paper's 'elasticity'), and the point elasticity m mu'(m) / {base} (the "
             "relative gain per relative lift as the lift goes to 0):")
        ranks = ranking.set_index("metric") if ranking is not None and len(ranking) > 1 else None
        header = f"  {'metric':>8} {'at':>9}  {'gain, % (' + pct + '% CI)':<27} {'point elasticity':<24}"
        print((header + ("  P(best)  E[rank]" if ranks is not None else "")).rstrip())
        for _, row in elast.iterrows():
            m = row["metric"]
            centre = row["median"] if m in crossing else row["mean"]
            band = format_estimate(100 * centre, 100 * row[f"eti{pct}_lower"], 100 * row[f"eti{pct}_upper"], digits=3)
            point = format_estimate(row["point_elasticity_mean"] if m not in crossing
                                    else row["point_elasticity_median"],
                                    row[f"point_elasticity_eti{pct}_lower"], row[f"point_elasticity_eti{pct}_upper"],
                                    digits=3)
            line = f"  {m:>8} {row['at']:>9.4g}  {band + (' *' if m in crossing else ''):<27} {point:<24}"
            if ranks is not None:
                line += f"  {ranks.loc[m, 'p_best']:>7.2f}  {ranks.loc[m, 'expected_rank']:>7.2f}"
            print(line.rstrip())
        if crossing:
            _say("  * median, not mean: mu(m) <= 0 in some draws (see the warning); give --kpi-baseline.")
    _say("\nDRF coefficients (original scale), posterior mean and OLS:")
    for m, _fit in result.fits.items():
        rows = summary[(summary["metric"] == m) & summary["parameter"].str.startswith("beta[")]
        ols = ols_results[m].coefficient_table()
        for p, (_, row) in enumerate(rows.iterrows(), start=1):
            o = ols.iloc[-spec.degree + p - 1]
            print(f"  {m:>8} beta_{p}: {format_estimate(row['mean'], row[lo], row[hi]):<36} "
                  f"OLS {format_estimate(o['estimate'], o['ci95_lower'], o['ci95_upper'])}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bayes-cmma``."""
    entry_point = argv is None  # the process's own command (console script, python -m), not a caller's call
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        # PyTensor's C backend looks for BLAS at import; bayes_cmma compiles with numba (nutpie), so
        # this one message is noise for the user.
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS", category=UserWarning)
        # the toolkit's own warnings are messages for the user: always print them, never raise
        for category in (ConvergenceWarning, AssumptionWarning):
            warnings.simplefilter("always", category)
        try:
            with interrupts.catching():
                check_args(args)
                return _dispatch(args)
        except BayesCMMAError as exc:
            print(wrap(f"error: {exc}"), file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            if entry_point:
                # The process is ending with status 130. Python resets SIGINT to the OS default when it
                # finalises, so a further Ctrl-C (or one still queued) would kill it with -SIGINT instead;
                # ignore SIGINT from here on, which finalisation keeps.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            if args.command == "simulate":
                print(f"interrupted; every finished replication is kept in {args.out}/results.csv. Rerun the "
                      "same command to continue.", file=sys.stderr)
            else:
                print("interrupted; no output was written or the previous output is unchanged.", file=sys.stderr)
            return 130


def check_writable(path: str | Path, flag: str = "--out", folder: bool = True) -> None:
    """Fail now, not after the fit, when ``path`` cannot be written: create and remove a probe file.

    The outputs go through a temporary folder beside the target (see :mod:`bayes_cmma.reporting.outputs`), so
    the target's parent (or its nearest existing ancestor, where missing folders will be created)
    must be writable, and the target itself when it exists.
    """
    import os
    import tempfile

    target = Path(path).absolute()
    if target.exists() and folder and not target.is_dir():
        raise BayesCMMAError(f"{flag} {str(path)!r} exists and is not a folder; give a folder name.")
    if target.is_dir() and not folder:
        raise BayesCMMAError(f"{flag} {str(path)!r} is a folder; give a file name.")
    places = [target] if target.is_dir() else []
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise BayesCMMAError(f"{flag} {str(path)!r}: {str(parent)!r} is not a folder.")
    places.append(parent)
    for place in places:
        try:
            fd, probe = tempfile.mkstemp(prefix=".bayes_cmma-probe-", dir=place)
            os.close(fd)
            os.remove(probe)
        except OSError as exc:
            raise BayesCMMAError(
                f"{flag} {str(path)!r}: cannot write in {str(place)!r} ({exc.strerror or exc}); choose a folder you "
                "can write to."
            ) from exc


def check_args(args: argparse.Namespace) -> None:
    """Every argument's range, and that the outputs can be written, before any data is read.

    Raises :class:`BayesCMMAError` naming the argument and its valid range.
    """
    cmd = args.command
    counts = ["draws", "tune", "chains", "sims", "workers"] + (["trials", "teams"] if cmd == "calibrate" else [])
    for name in counts:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise BayesCMMAError(f"--{name} must be a positive integer, got {value}.")
    if getattr(args, "max_refits", None) is not None and args.max_refits < 0:
        raise BayesCMMAError(f"--max-refits must be 0 or more, got {args.max_refits}.")
    seed = getattr(args, "seed", None)
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise BayesCMMAError(f"--seed must be an integer from 0 to {SEED_MAX} (2^64 - 1), got {seed}.")
    lo, hi = DEGREES
    for degree in [getattr(args, "degree", None), *(getattr(args, "degrees", None) or [])]:
        if degree is not None and not lo <= degree <= hi:
            flag = "--degrees" if cmd == "compare" else "--degree"
            raise BayesCMMAError(f"{flag} must be an integer from {lo} to {hi}, got {degree}.")
    lift = getattr(args, "lift", None)
    if lift is not None and not (np.isfinite(lift) and lift > 0):
        raise BayesCMMAError(
            f"--lift must be a positive number (0.1 = +10%), got {lift}. The ranking asks which metric's raise "
            "helps the KPI most; for the effect of a cut use bc.elasticity(beta, at, lift=-0.1) in Python."
        )
    baseline = getattr(args, "kpi_baseline", None)
    if baseline is not None and not (np.isfinite(baseline) and baseline != 0):
        raise BayesCMMAError(f"--kpi-baseline must be a non-zero number, got {baseline}.")
    if getattr(args, "at", None) is not None:
        _parse_at(args.at)
    target_accept = getattr(args, "target_accept", None)
    if target_accept is not None and not 0 < target_accept < 1:
        raise BayesCMMAError(f"--target-accept must be between 0 and 1, got {target_accept}.")
    for rho in getattr(args, "rho", None) or []:
        if not -1 < rho < 1:
            raise BayesCMMAError(f"--rho values must be strictly between -1 and 1, got {rho}.")
    if cmd == "summarize":
        check_writable(args.out, "--out", folder=False)
        check_writable(args.cov_out, "--cov-out", folder=False)
        for flag in ("observational_out", "observational_partial_out"):
            if getattr(args, flag) is not None:
                check_writable(getattr(args, flag), "--" + flag.replace("_", "-"), folder=False)
    elif cmd == "decision-value":
        check_writable(args.out, "--out", folder=False)
        if args.observational_slope or args.observational_partial:
            check_writable(args.fusion_out, "--fusion-out", folder=False)
            if Path(args.fusion_out).resolve() == Path(args.out).resolve():
                raise BayesCMMAError("--out and --fusion-out name the same file; give different files.")
    elif getattr(args, "out", None) is not None and cmd not in ("report",):
        check_writable(args.out)
    elif cmd == "report" and args.out is not None:
        check_writable(args.out, "--out", folder=False)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from bayes_cmma.datasets import load_example

        ex = load_example()
        _status("embedded example: simulated search A/B tests (docs: input.md, 'Example data')")
        return run_fit(None, None, ex.kpi, ex.metrics, model="quadratic", at=ex.at, lift=0.1,
                       kpi_baseline=ex.kpi_baseline, seed=args.seed, out=args.out, draws=args.draws,
                       tune=args.tune, chains=args.chains, trials_data=ex.trials, report=not args.no_report,
                       target_accept=args.target_accept)
    if args.command == "fit":
        model = args.model if args.model is not None else args.degree
        return run_fit(args.trials, args.cov, args.kpi, args.metric, model=model, at=_parse_at(args.at),
                       lift=args.lift, kpi_baseline=args.kpi_baseline, seed=args.seed, out=args.out,
                       draws=args.draws, tune=args.tune, chains=args.chains, report=not args.no_report,
                       target_accept=args.target_accept, joint=args.joint, observational=args.observational,
                       p_tie=args.p_tie, observational_bias_prior=args.observational_bias_prior,
                       fusion_slopes=_fusion_slopes(args),
                       observational_parametrization=args.observational_parametrization,
                       metric_corr_eta=args.metric_corr_eta, latent_prior=args.latent_prior)
    if args.command == "report":
        return run_report(args)
    if args.command == "northstar":
        return run_northstar(args)
    if args.command == "decision-value":
        return run_decision_value(args)
    if args.command == "compare":
        return run_compare(args)
    if args.command == "ols":
        return run_ols(args.trials, args.cov, args.kpi, args.metric, args.degree, args.method,
                       args.within_trial_correlation)
    if args.command == "summarize":
        return run_summarize(args)
    if args.command == "simulate":
        return run_simulate(args)
    if args.command == "calibrate":
        return run_calibrate(args)
    if args.command == "sensitivity":
        return run_sensitivity(args)
    if args.command == "augment":
        return run_augment(args)
    raise AssertionError(args.command)


def run_report(args: argparse.Namespace) -> int:
    from bayes_cmma.reporting.report import write_report

    _status(f"reading {args.fit_dir}")
    target = write_report(args.fit_dir, args.out)
    print(f"Wrote {target}")
    return 0


def _print_more_trials(table: pd.DataFrame) -> None:
    """How the choice would firm up with more trials like the past ones (a preposterior approximation)."""
    from bayes_cmma.decisions.more_trials import TIE_NOTE, trials_needed_sentence, under_tie_prior

    tie = under_tie_prior(table)
    _say("\nWith more trials like these (a preposterior approximation" + (" under the tie prior" if tie else "")
         + "; docs: model.md, 'The value of more trials'):")
    print(f"  {'new trials':>10}  {'P(choice truly best)':>20}  {'expected regret':>15}  "
          f"{'expected P(best)':>16}")
    for _, row in table.iterrows():
        print(f"  {int(row['new_trials']):>10}  {row['p_correct']:>20.2f}  {row['expected_regret']:>15.3g}  "
              f"{row['expected_p_best']:>16.2f}")
    if tie:
        _say(f"  {TIE_NOTE}")
    _say(f"  {trials_needed_sentence(table)}")


def _print_northstar(table: pd.DataFrame) -> None:
    """The composite's weights and its score beside the best single metric's, per future size."""
    from bayes_cmma.decisions.northstar import format_weights

    criterion = str(table["criterion"].iloc[0])
    score = "P(sign agrees with the true KPI effect)" if criterion == "sign" else "corr with the true KPI effect"
    _say(f"\nBest composite north star: weights on each metric's ATE in units of its sd across the trials "
         f"(unit length, {100 * PROB:g}% HDI; score = {score}), per future trial size (1 = a median past trial):")
    for size, g in table.groupby("future_size", sort=True):
        singles = g[g["candidate"] != "composite"]
        comp = g[g["candidate"] == "composite"].iloc[0]
        best = singles.loc[singles["score_mean"].idxmax()]
        n = g["n_per_arm"].iloc[0]
        label = f"{size:.3g}" + (f" ({n:,.0f}/arm)" if np.isfinite(n) else "")
        _say(f"  size {label}: {format_weights(singles)}; score {comp['score_mean']:.3f} vs {best['candidate']} alone "
             f"{best['score_mean']:.3f}")
        if "lead" in g:  # older northstar.csv files have no relative weights
            _say(f"    relative to {g['lead'].iloc[0]} (= 1; median, {100 * PROB:g}% CI): "
                 f"{format_weights(singles, relative=True)}")


def _print_decision_value(table: pd.DataFrame, kpi: str) -> None:
    """Each north star's decision value (KPI collected per trial by launching on it), best first."""
    factor = float(table["measurement_variance_factor"].iloc[0])
    _say(f"\nModel-free check, decision value: the true {kpi} effect collected per trial by "
         "launching when the north star moves up, estimated from the trials alone (cross-fitted, data fission "
         f"at {factor:g}x today's measurement variance; 95% CI; "
         "docs: model.md, 'Decision value from the trials'):")
    rows = table.sort_values("value", ascending=False)
    width = max(len(str(c)) for c in rows.index)
    print(f"  {'north star':<{width}}  {'value per trial':>28}  {'launched':>8}  {'vs best':>20}")
    for name, row in rows.iterrows():
        value = format_estimate(row["value"], row["ci_lower"], row["ci_upper"], digits=3)
        vs = "best" if row["difference"] == 0 else f"{row['difference']:+.2g} (se {row['difference_se']:.2g})"
        print(f"  {name!s:<{width}}  {value:>28}  {row['launch_rate']:>8.0%}  {vs:>20}")


def _fusion_slopes(args: argparse.Namespace) -> dict[str, float] | None:
    """The logs' partial slopes of ``--observational-slope`` or ``--observational-partial`` (None: neither),
    checked against ``--metric`` (``fit`` and ``decision-value``)."""
    if args.observational_slope and args.observational_partial:
        raise BayesCMMAError("give the logs' slopes once: --observational-slope or --observational-partial.")
    if not (args.observational_slope or args.observational_partial):
        return None
    metrics = list(args.metric)
    if len(metrics) < 2:
        raise BayesCMMAError(f"the logs' slopes (--observational-slope/--observational-partial) weigh the metrics "
                             f"of a composite launch rule, which needs 2 or more metrics; got only {metrics[0]!r}.")
    if args.observational_partial:
        from bayes_cmma.inputs.observational import partial_slopes

        return partial_slopes(args.observational_partial, metrics)
    slopes = _parse_at(args.observational_slope, flag="--observational-slope")
    unknown = sorted(set(slopes) - set(metrics))
    if unknown:
        raise BayesCMMAError(f"--observational-slope names {', '.join(map(repr, unknown))}, not a fitted metric; "
                             f"fitted metrics: {', '.join(metrics)}.")
    return slopes


def _print_fusion(fusion: FusionChoice, select: str) -> None:
    """The fusion's curve, its choice and the chosen rule's weights."""
    _say("\nHow far the composite launch rule should lean on the logs' slopes (fusion strength: 0 = the trials "
         "alone, inf = the logs alone), by its cross-fitted decision value per trial (docs: model.md, "
         "'Decision-focused fusion'):")
    for _, row in fusion.curve.iterrows():
        mark = "  <- chosen" if row["fusion_strength"] == fusion.strength else ""
        print(f"  {row['fusion_strength']:>8g}  {row['value']:.4g} (se {row['std_error']:.2g}); vs the first "
              f"{row['difference']:+.2g} (se {row['difference_se']:.2g}){mark}")
    J = len(fusion.weights)
    if select == "stein":
        _say(f"  chosen by Stein's rule: the logs' disagreement with the trials D^2 = {fusion.disagreement:.3g} "
             f"(about {J} if the logs are right), so the share borrowed is min(1, {J - 2}/D^2)"
             + (": with 2 metrics, none" if J == 2 else ""))
    _say("  its weights on the metrics' ATEs (unit length): "
         + ", ".join(f"{m} {w:+.3g}" for m, w in fusion.weights.items()))


def run_decision_value(args: argparse.Namespace) -> int:
    """``bayes-cmma decision-value``: the cross-fitted decision value of each metric from the trial table."""
    from bayes_cmma.decisions.decision_value import decision_value
    from bayes_cmma.inputs.data import read_trials
    from bayes_cmma.reporting.outputs import write_files_atomically

    if not -1 < args.within_trial_correlation < 1:
        raise BayesCMMAError(f"--within-trial-correlation must be strictly between -1 and 1, got "
                             f"{args.within_trial_correlation}.")
    slopes = _fusion_slopes(args)
    if slopes is not None and args.tau == 0:
        raise BayesCMMAError("the logs' slopes (--observational-slope/--observational-partial) choose the fusion "
                             "strength by the fission-scored decision value, which needs --tau above 0 (default 1).")
    trials = read_trials(args.trials, args.cov)
    result = decision_value(trials, args.kpi, args.metric, folds=args.folds, tau=args.tau, repeats=args.repeats,
                            threshold=args.threshold, seed=args.seed,
                            within_trial_correlation=args.within_trial_correlation, interval=args.interval)
    files = {args.out: _writer(result.table.reset_index(), args.out)}
    fusion = bilevel = None
    if slopes is not None and args.fusion_select == "per-metric":
        from bayes_cmma.decisions.bilevel import bilevel_frame, bilevel_fusion

        bilevel = bilevel_fusion(trials, args.kpi, args.metric, slopes, folds=args.folds, tau=args.tau,
                                 repeats=args.repeats, seed=args.seed,
                                 within_trial_correlation=args.within_trial_correlation)
        files[args.fusion_out] = _writer(bilevel_frame(bilevel), args.fusion_out)
    elif slopes is not None:
        from bayes_cmma.decisions.fusion import decision_focused_fusion, fusion_frame

        fusion = decision_focused_fusion(trials, args.kpi, args.metric, slopes, folds=args.folds,
                                         tau=args.tau, repeats=args.repeats, seed=args.seed,
                                         within_trial_correlation=args.within_trial_correlation,
                                         select=args.fusion_select)
        files[args.fusion_out] = _writer(fusion_frame(fusion), args.fusion_out)
    written, *more = write_files_atomically(files)
    _print_decision_value(result.table, args.kpi)
    if not result.weights.empty:
        mean = result.weights.mean()
        _say("  composite weights (standardised, mean over folds): "
             + ", ".join(f"{m} {w:+.2f}" for m, w in mean.items()))
    if fusion is not None:
        _print_fusion(fusion, args.fusion_select)
    if bilevel is not None:
        _say("\nEach metric's pull towards the logs' slopes (0 = the trials alone), chosen by the gradient of the "
             "cross-fitted decision value through the inner fit (docs: model.md, 'Decision-focused fusion'):")
        for name, row in bilevel.table.iterrows():
            print(f"  {name:>7}  {row['value']:.4g} (se {row['std_error']:.2g}); vs the trials "
                  f"{row['difference']:+.2g} (se {row['difference_se']:.2g})")
        _say("  optimised pulls: " + ", ".join(f"{m} {v:.3g}" for m, v in bilevel.optimised.items())
             + ("; kept (gain above one standard error)" if bilevel.kept
                else "; not kept (gain not above one standard error): the trials alone"))
        _say("  its weights on the metrics' ATEs (unit length): "
             + ", ".join(f"{m} {w:+.3g}" for m, w in bilevel.weights.items()))
    _say(f"\nWrote {', '.join(str(p) for p in [written, *more])}")
    return 0


def run_northstar(args: argparse.Namespace) -> int:
    from bayes_cmma.decisions.northstar import northstar, northstar_frame
    from bayes_cmma.reporting import outputs
    from bayes_cmma.reporting.plots import northstar_plot
    from bayes_cmma.reporting.report import JOINT_FILE, NORTHSTAR_FILE, read_joint

    folder = Path(args.fit_dir)
    path = folder / JOINT_FILE
    if not folder.is_dir():
        raise BayesCMMAError(f"{folder} is not a folder; give the --out folder of `bayes-cmma fit --joint`.")
    if not path.exists():
        raise BayesCMMAError(f"{folder} has no {JOINT_FILE}: the composite needs the joint model; fit with "
                             "`bayes-cmma fit --degree 1 --joint ...`.")
    _status(f"reading {path}")
    tree = read_joint(path)
    result = northstar(tree, args.future_size, future_n=args.future_n, criterion=args.criterion, team=args.team)
    table = northstar_frame(result, prob=PROB)
    fig = northstar_plot(table, args.criterion, str(tree.attrs.get("kpi", "KPI")))
    out = Path(args.out) if args.out is not None else folder
    written = outputs.write_atomically(out, {NORTHSTAR_FILE: lambda p: table.to_csv(p, index=False),
                                             "northstar.png": lambda p: fig.savefig(p, dpi=100)}, stale=())
    _print_northstar(table)
    _say(f"\nWrote {', '.join(str(p) for p in written)}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from bayes_cmma.checks.compare import compare_degrees
    from bayes_cmma.inputs.data import read_trials
    from bayes_cmma.reporting import outputs

    if len(args.metric) != 1:
        raise BayesCMMAError(f"compare takes one --metric at a time, got {len(args.metric)}: {args.metric}.")
    for name, value in (("--draws", args.draws), ("--tune", args.tune), ("--chains", args.chains)):
        if value is not None and value < 1:
            raise BayesCMMAError(f"{name} must be a positive integer, got {value}.")
    trials = read_trials(args.trials, args.cov)
    _status(f"{len(trials.trials)} trials; KPI {args.kpi!r}; metric {args.metric[0]!r}; degrees "
            f"{' '.join(map(str, sorted(set(args.degrees))))}")
    result = compare_degrees(trials, args.kpi, args.metric[0], args.degrees, args.model, seed=args.seed,
                             draws=args.draws, tune=args.tune, chains=args.chains, max_refits=args.max_refits,
                             progress=_status)
    if args.out:
        table = result.table.reset_index()
        files = {"compare.csv": lambda p: table.to_csv(p, index=False),
                 "top_coefficient.csv": lambda p: result.top_coefficient.to_csv(p, index=False),
                 "pareto_k.csv": lambda p: result.pareto_k.to_csv(p, index=False)}
        written = outputs.write_atomically(args.out, files, stale=list(files))
    print(f"\nLOO comparison of DRF degrees for {args.metric[0]!r} (ELPD of each trial's ATEs on the KPI and on "
          f"the metric's powers up to {max(args.degrees)}, the same numbers for every degree; weight = stacking):\n")
    print(result)
    print(f"\nTop coefficient of each degree ({100 * PROB:g}% intervals):")
    print(result.top_coefficient.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nRecommended degree: {result.recommended}")
    if args.out:
        print(f"\nWrote {', '.join(str(p) for p in written)}")
    return 0


def run_sensitivity(args: argparse.Namespace) -> int:
    """``bayes-cmma sensitivity``: elasticities and ranking over a grid of assumed A3 correlations."""
    from bayes_cmma.checks.sensitivity import DEFAULT_RHOS, a3_sensitivity
    from bayes_cmma.inputs import data as data_mod
    from bayes_cmma.reporting.outputs import write_atomically

    at = _parse_at(args.at)
    missing = [m for m in args.metric if m not in at]
    if missing:
        raise BayesCMMAError(f"give every metric's current value: --at {missing[0]}=VALUE (the ranking needs it).")
    rhos = args.rho if args.rho is not None else list(DEFAULT_RHOS)
    for name, value in (("--draws", args.draws), ("--tune", args.tune), ("--chains", args.chains)):
        if value is not None and value < 1:
            raise BayesCMMAError(f"{name} must be a positive integer, got {value}.")
    trials = data_mod.read_trials(args.trials, args.cov)
    model = args.model if args.model is not None else args.degree
    _status(f"A3 sensitivity: {len(set([0.0, *rhos]))} assumed correlations x {len(args.metric)} metric(s), "
            "one compiled model")
    res = a3_sensitivity(trials, args.kpi, args.metric, at, rhos, model, lift=args.lift,
                         baseline=args.kpi_baseline, seed=args.seed, draws=args.draws, tune=args.tune,
                         chains=args.chains)
    from bayes_cmma.reporting.plots import sensitivity_plot

    fig = sensitivity_plot(res.table, res.tipping_point, kpi=args.kpi)
    written = write_atomically(args.out, {"sensitivity.csv": lambda p: res.table.to_csv(p, index=False),
                                          "sensitivity.png": lambda p: fig.savefig(p, dpi=110, format="png")})
    print(f"\nElasticity of {args.kpi} (mean) and P(best) by assumed correlation rho between a trial's direct "
          "KPI effect and its metric effect (A3 says rho = 0):")
    lo = next(c for c in res.table.columns if c.endswith("_lower"))
    hi = next(c for c in res.table.columns if c.endswith("_upper"))
    for r, g in res.table.groupby("rho"):
        cells = "   ".join(f"{row['metric']} {_fmt(row['elasticity_mean'])} [{_fmt(row[lo])}, {_fmt(row[hi])}] "
                           f"P(best) {row['p_best']:.2f}" for _, row in g.iterrows())
        print(f"  rho {r:+.2f}: {cells}")
    print("\n" + res.summary())
    print(f"\nWrote {', '.join(map(str, written))}")
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    """``bayes-cmma calibrate``: SBC ranks and uniformity tests, written atomically to ``--out``."""
    import shlex

    from bayes_cmma.checks.calibration import run_sbc, sbc_report
    from bayes_cmma.fitting.bayes import resolve_spec
    from bayes_cmma.reporting.outputs import write_atomically

    for name in ("sims", "trials", "teams"):
        if getattr(args, name) < 1:
            raise BayesCMMAError(f"--{name} must be a positive integer, got {getattr(args, name)}.")
    model = int(args.model) if str(args.model).isdigit() else args.model
    spec = resolve_spec(model)
    if args.trials < spec.degree + args.teams + 1:
        raise BayesCMMAError(f"--trials {args.trials} is too few for degree {spec.degree} with {args.teams} teams; "
                             f"give at least {spec.degree + args.teams + 1}.")
    step = max(1, args.sims // 10)

    def progress(i: int, n: int) -> None:
        if i % step == 0 or i == n:
            _status(f"{i}/{n} simulations")

    _status(f"SBC of model {spec.name!r}: {args.sims} simulations of {args.trials} trials, {args.teams} teams")
    if not np.isfinite(args.informative_precision) or args.informative_precision < 0:
        raise BayesCMMAError(f"--informative-precision must be a number >= 0, got {args.informative_precision}.")
    result = run_sbc(spec, sims=args.sims, n_trials=args.trials, n_teams=args.teams, seed=args.seed,
                     informative_precision=args.informative_precision, progress=progress)
    command = "bayes-cmma " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["calibrate"] else ""
    report = sbc_report(result, command)
    from bayes_cmma.reporting.plots import sbc_rank_histograms

    fig = sbc_rank_histograms(result.ranks, result.n_draws)
    written = write_atomically(args.out, {
        "ranks.png": lambda p: fig.savefig(p, dpi=100, format="png"),
        "ranks.csv": lambda p: result.ranks.to_csv(p, index=False),
        "uniformity.csv": lambda p: result.tests.to_csv(p, index=False),
        "summary.md": lambda p: p.write_text(report),
    })
    print(report)
    print(f"Wrote {', '.join(map(str, written))}")
    return 0


def _writer(frame: pd.DataFrame, target: str):
    if target.lower().endswith((".parquet", ".pq")):
        return lambda p: frame.to_parquet(p, index=False)
    return lambda p: frame.to_csv(p, index=False)


def run_augment(args: argparse.Namespace) -> int:
    """``bayes-cmma augment``: a weighted augmented table drawn along a DAG."""
    from bayes_cmma.augmentation.augment import augment, parse_dag
    from bayes_cmma.inputs.data import _read_table
    from bayes_cmma.reporting.outputs import write_files_atomically

    if not 0 < args.theta < 1:
        raise BayesCMMAError(f"--theta must be a number in (0, 1), got {args.theta}.")
    if args.max_rows < 1:
        raise BayesCMMAError(f"--max-rows must be a positive integer, got {args.max_rows}.")
    kernels = {}
    for item in args.kernel or []:
        column, sep, kind = item.partition("=")
        if not sep or not column.strip() or kind.strip() not in ("gaussian", "categorical"):
            raise BayesCMMAError(f"--kernel {item!r}: write COLUMN=gaussian or COLUMN=categorical.")
        kernels[column.strip()] = kind.strip()
    dag = parse_dag(args.dag)
    check_writable(args.out, folder=False)
    frame = _read_table(args.data, "data")
    _status(f"augmenting {len(frame)} rows along {dag}")
    out = augment(frame, dag, theta=args.theta, kernels=kernels, roots=args.roots, max_rows=args.max_rows)
    info = out.attrs["augmentation"]
    (written,) = write_files_atomically({args.out: _writer(out, args.out)})
    steps = ", ".join(f"{k} {v}" for k, v in info["rows_per_step"].items())
    print(f"{len(frame)} rows -> {len(out)} weighted rows (rows after each step: {steps}); the rows kept carry "
          f"{100 * info["retained_mass"]:.3g}% of the factorisation's probability mass. Wrote {written}.")
    return 0


def run_summarize(args: argparse.Namespace) -> int:
    """``bayes-cmma summarize``: per-trial ATEs, standard errors and covariances from unit-level logs."""
    from bayes_cmma.inputs.summarizer import summarize_files
    from bayes_cmma.reporting.outputs import write_files_atomically

    if args.degree < 1:
        raise BayesCMMAError(f"--degree must be at least 1, got {args.degree}.")
    targets = [("--out", args.out), ("--cov-out", args.cov_out)] + [
        (flag, path) for flag, path in (("--observational-out", args.observational_out),
                                        ("--observational-partial-out", args.observational_partial_out)) if path]
    for i, (flag, path) in enumerate(targets):
        for other, path2 in targets[:i]:
            if Path(path).resolve() == Path(path2).resolve():
                raise BayesCMMAError(f"{other} and {flag} name the same file; give different files.")
    if args.engine != "dask" and (args.scheduler or args.workers):
        raise BayesCMMAError("--scheduler and --workers apply to --engine dask only; add --engine dask.")
    if args.workers is not None and args.workers < 1:
        raise BayesCMMAError(f"--workers must be at least 1, got {args.workers}.")
    kwargs = dict(kpi=args.kpi, metrics=args.metric, degree=args.degree, trial=args.trial, team=args.team or None,
                  treatment=args.treatment, engine=args.engine,
                  observational=args.observational_arms if args.observational_out or args.observational_partial_out
                  else None, partial=bool(args.observational_partial_out))
    if args.engine == "dask":
        from bayes_cmma.inputs.dask_engine import dask_scheduler

        with dask_scheduler(args.scheduler, workers=args.workers):
            trials, cov, n_units, *obs = summarize_files(args.units, **kwargs)
    else:
        trials, cov, n_units, *obs = summarize_files(args.units, **kwargs)
    files = {args.out: _writer(trials, args.out), args.cov_out: _writer(cov, args.cov_out)}
    extra = []
    for path, table, what in ((args.observational_out, obs[0] if obs else None, "observational regression"),
                              (args.observational_partial_out, obs[-1] if len(obs) > 1 else None, "partial slopes")):
        if path:
            files[path] = _writer(table, path)
            extra.append(f" and {path} ({len(table)} rows, the {what} in the {args.observational_arms} arm(s))")
    written = write_files_atomically(files)
    n_trials = trials["trial"].nunique()
    print(f"{n_trials} trials, {n_units} units: wrote {written[0]} ({len(trials)} rows) and "
          f"{written[1]} ({len(cov)} rows){''.join(extra)}.")
    print(f"Next: bayes-cmma fit {written[0]} --cov {written[1]} --kpi {args.kpi} "
          + " ".join(f"--metric {m}" for m in args.metric) + f" --degree {args.degree}")
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    """``bayes-cmma simulate``: run (or resume) a simulation study and print its tables."""
    import dataclasses
    import shlex

    from bayes_cmma.studies.runner import run_study
    from bayes_cmma.studies.study import builtin_study, load_study

    for name in ("sims", "draws", "tune", "chains", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BayesCMMAError(f"--{name} must be a positive integer, got {value}.")
    for name in ("n_per", "n_trials"):
        for value in getattr(args, name) or []:
            if value < (4 if name == "n_per" else 2):
                raise BayesCMMAError(f"--{name.replace('_', '-')} values must be at least "
                                     f"{4 if name == 'n_per' else 2}, got {value}.")
    if args.study == "fusion":
        return _run_fusion_study(args)
    if args.study.endswith(".toml") or Path(args.study).is_file():
        study = load_study(args.study)
        for flag, values in (("--n-per", args.n_per), ("--n-trials", args.n_trials)):
            if values and len(values) != 1:
                raise BayesCMMAError(f"a study file takes one value of {flag} (it replaces that setting in every "
                                     f"[[settings]] entry), got {len(values)}: {values}.")
        if args.n_per or args.n_trials:
            settings = tuple(
                dataclasses.replace(s, sim=s.sim.replace(**({"n_per": args.n_per[0]} if args.n_per else {}),
                                                           **({"n_trials": args.n_trials[0]} if args.n_trials else {})))
                for s in study.settings
            )
            study = dataclasses.replace(study, settings=settings)
    else:
        study = builtin_study(args.study, n_per=args.n_per, n_trials=args.n_trials)
    changes: dict = {}
    if args.sims is not None:
        changes["sims"] = args.sims
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.estimators:
        changes["estimators"] = tuple(args.estimators)
    bayes = {k: getattr(args, k) for k in ("draws", "tune", "chains", "target_accept") if getattr(args, k) is not None}
    if bayes:
        changes["bayes"] = {**study.bayes, **bayes}
    study = dataclasses.replace(study, **changes)
    command = "bayes-cmma " + " ".join(shlex.quote(a) for a in args.argv)
    n_set = len(study.settings)
    _status(f"study {study.name!r}: {n_set} setting(s) x {study.sims} replications; estimators "
            f"{', '.join(study.estimators)}; {args.workers} worker(s); results in {args.out}")
    run = run_study(study, args.out, workers=args.workers, progress=True, command=command)
    print(run.tables)
    per_rep = run.wall_s * args.workers / run.n_new if run.n_new else float("nan")
    print(f"{run.n_new} new replication(s) in {run.wall_s:.1f} s ({per_rep:.2f} s per replication per worker); "
          f"{run.n_skipped} were already done. Tables: {run.out_dir / 'summary.md'}, {run.out_dir / 'summary.csv'}; "
          f"rows: {run.out_dir / 'results.csv'}.")
    return 0


def _run_fusion_study(args: argparse.Namespace) -> int:
    """``bayes-cmma simulate --study fusion``: the launch rules' regret with and without the logs."""
    import shlex

    from bayes_cmma.studies.fusion_study import FusionStudy
    from bayes_cmma.studies.runner import run_study

    unused = [f"--{name.replace('_', '-')}" for name in ("n_per", "draws", "tune", "chains", "target_accept")
              if getattr(args, name) is not None]
    if unused:
        raise BayesCMMAError(f"{', '.join(unused)} do(es) not apply to --study fusion: its rules are closed-form "
                             "(no unit-level data, no sampling); give --n-trials, --estimators, --sims, --seed, "
                             "--workers.")
    changes: dict = {k: getattr(args, k) for k in ("sims", "seed") if getattr(args, k) is not None}
    if args.n_trials:
        changes["n_trials"] = tuple(args.n_trials)
    if args.estimators:
        changes["estimators"] = tuple(args.estimators)
    study = FusionStudy(**changes)
    command = "bayes-cmma " + " ".join(shlex.quote(a) for a in args.argv)
    _status(f"study 'fusion': {len(study.settings)} setting(s) x {study.sims} replications x {len(study.biases)} "
            f"biases; rules {', '.join(study.estimators)}; {args.workers} worker(s); results in {args.out}")
    run = run_study(study, args.out, workers=args.workers, progress=True, command=command)
    print(run.tables)
    per_rep = run.wall_s * args.workers / run.n_new if run.n_new else float("nan")
    print(f"{run.n_new} new replication(s) in {run.wall_s:.1f} s ({per_rep:.2f} s per replication per worker); "
          f"{run.n_skipped} were already done. Tables: {run.out_dir / 'summary.md'}, {run.out_dir / 'summary.csv'}; "
          f"rows: {run.out_dir / 'results.csv'}.")
    return 0


def run_ols(trials_path: str, cov_path: str | None, kpi: str, metrics: list[str], degree: int,
            method: str = "ols", within_trial_correlation: float | None = None) -> int:
    """``bayes-cmma ols``: coefficient table and nested Wald tests per metric, for the chosen estimator."""
    import pandas as pd

    from bayes_cmma.baselines.eiv import summary_estimate
    from bayes_cmma.baselines.ols import cmma_ols
    from bayes_cmma.inputs.data import read_trials

    if degree < 1:
        raise BayesCMMAError(f"--degree must be at least 1, got {degree}.")
    if within_trial_correlation is not None and not -1 < within_trial_correlation < 1:
        raise BayesCMMAError(f"--within-trial-correlation must be strictly between -1 and 1, got "
                             f"{within_trial_correlation}.")
    trials = read_trials(trials_path, cov_path)
    if method == "ols" and (cov_path is not None or within_trial_correlation is not None):
        print("note: the OLS ignores measurement error, so --cov and --within-trial-correlation do not change it; "
              "--method tc or liml use them.")
    titles = {
        "ols": "CMMA OLS (Algorithm 1): {kpi} on {m} powers 1..{d}, intercept and team dummies",
        "tc": "Total covariance (Fuller's method-of-moments errors-in-variables): {kpi} on {m} powers 1..{d} "
              "within teams, measurement error subtracted",
        "liml": "LIML (total least squares on the whitened scatter): {kpi} on {m} powers 1..{d} within teams; "
                "assumes no trial-level KPI residual",
    }
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        for m in metrics:
            if method == "ols":
                r = cmma_ols(trials, kpi, m, degree)
            else:
                r = summary_estimate(trials, kpi, m, degree, method, within_trial_correlation)
            extra = f"; LIML kappa = {r.sigma2:.4f}" if method == "liml" else ""
            print(titles[method].format(kpi=kpi, m=m, d=degree) + f"; n = {r.nobs}, residual df = {r.df_resid}{extra}")
            table = r.coefficient_table()
            table.index.name = None
            print(table.to_string(float_format=lambda x: f"{x:.6g}", formatters={"p_value": format_p_value}))
            print("\nNested Wald tests" + ("" if method == "ols" else " (sandwich covariance)") + ":")
            tests = r.wald_tests()
            p_columns = {c: format_p_value for c in tests.columns if c.startswith("p_value")}
            print(tests.to_string(index=False, float_format=lambda x: f"{x:.6g}", formatters=p_columns))
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
