"""Command line: ``bayes-cmma demo | fit | ols``.

A user mistake prints one ``error: ...`` line (no traceback) and exits with status 2; nothing is
written. Warnings print as ``warning: ...`` lines on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bayes_cmma.errors import AssumptionWarning, BayesCMMAError, ConvergenceWarning

if TYPE_CHECKING:
    from bayes_cmma.data import TrialData
    from bayes_cmma.fit import CMMAResult
    from bayes_cmma.ols import OLSResult
    from bayes_cmma.spec import ModelSpec

PROB = 0.94


def _status(msg: str) -> None:
    print(f"[bayes-cmma] {msg}", file=sys.stderr, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _parse_at(items: Sequence[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise BayesCMMAError(f"--at {item!r} is not METRIC=VALUE (e.g. --at ndcg=0.0021).")
        try:
            number = float(value)
        except ValueError:
            raise BayesCMMAError(f"--at {item!r}: {value!r} is not a number.") from None
        if not np.isfinite(number):
            raise BayesCMMAError(f"--at {item!r}: the value must be finite.")
        if name.strip() in out:
            raise BayesCMMAError(f"--at gives metric {name.strip()!r} twice; give it once.")
        out[name.strip()] = number
    return out


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("trials", help="trial table (CSV or Parquet): trial, team, quantity, estimate, std_error")
    p.add_argument("--cov", help="within-trial covariance table: trial, quantity_1, quantity_2, covariance")
    p.add_argument("--kpi", required=True, help="the KPI quantity, e.g. gmv")
    p.add_argument("--metric", action="append", required=True, help="a candidate metric (repeat for several)")


def _add_fit_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--degree", type=int, help="degree of the polynomial DRF (bundled spec of that degree)")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayes-cmma",
        description="Bayesian causal meta-mediation analysis: which metric should be the north star?",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit the embedded example data and write the outputs")
    demo.add_argument("--out", default="bayes_cmma_demo", help="output folder (default ./bayes_cmma_demo)")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--draws", type=int)
    demo.add_argument("--tune", type=int)
    demo.add_argument("--chains", type=int)
    fitp = sub.add_parser("fit", help="fit one model per metric and rank the metrics")
    _add_data_args(fitp)
    _add_fit_args(fitp)
    fitp.add_argument("--out", default="bayes_cmma_out", help="output folder (default ./bayes_cmma_out)")
    ols = sub.add_parser("ols", help="the paper's OLS estimator (Algorithm 1) with nested Wald tests")
    _add_data_args(ols)
    ols.add_argument("--degree", type=int, default=1, help="degree of the polynomial DRF (default 1)")
    return parser


def _fmt(x: float) -> str:
    return f"{x:.4g}"


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
) -> int:
    """Everything ``fit`` and ``demo`` do; returns the exit status."""
    from bayes_cmma import data as data_mod
    from bayes_cmma import outputs
    from bayes_cmma.fit import fit, resolve_spec
    from bayes_cmma.ols import cmma_ols_design

    t_start = time.perf_counter()
    trials = trials_data if trials_data is not None else data_mod.read_trials(trials_path, cov_path)
    spec = resolve_spec(model)
    for m in at:
        if m not in metrics:
            raise BayesCMMAError(
                f"--at names metric {m!r}, which is not fitted; fitted metrics: {', '.join(metrics)}."
            )
    if not np.isfinite(lift) or lift == 0:
        raise BayesCMMAError(f"--lift must be a non-zero number (0.1 = +10%), got {lift}.")
    if kpi_baseline is not None and (not np.isfinite(kpi_baseline) or kpi_baseline == 0):
        raise BayesCMMAError(f"--kpi-baseline must be a non-zero number, got {kpi_baseline}.")
    for name, value in (("--draws", draws), ("--tune", tune), ("--chains", chains)):
        if value is not None and value < 1:
            raise BayesCMMAError(f"{name} must be a positive integer, got {value}.")
    # validate every design up front (fit() does it again, cheaply) so errors come before sampling
    ols_results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in metrics:
            ols_results[m] = cmma_ols_design(
                data_mod.metric_design(trials, kpi, m, spec.degree, spec.within_trial_correlation)
            )
    n_teams = len(trials.teams)
    _status(f"{len(trials.trials)} trials, {n_teams} team(s); KPI {kpi!r}; metrics {', '.join(metrics)}; "
            f"model {spec.name!r} (degree {spec.degree})")
    result = fit(trials, kpi, metrics, spec, seed=seed, draws=draws, tune=tune, chains=chains,
                 progress_bar=sys.stderr.isatty(), progress=_status)

    summary = outputs.summary_frame(result, prob=PROB)
    files = {"summary.csv": lambda p: summary.to_csv(p, index=False)}
    ranking = None
    elast = None
    if at and all(m in at for m in metrics):
        elast = outputs.elasticity_frame(result, at, lift, kpi_baseline, prob=PROB)
        ranking = outputs.ranking_frame(result.ranking(at, lift=lift, baseline=kpi_baseline))
        grids = {m: np.linspace(0.0, 2.0 * at[m], 41) for m in metrics}
        drf_table = outputs.drf_frame(result, grids, prob=PROB)
        files["elasticity.csv"] = lambda p: elast.to_csv(p, index=False)
        files["ranking.csv"] = lambda p: ranking.to_csv(p, index=False)
        files["drf.csv"] = lambda p: drf_table.to_csv(p, index=False)
    ols_table = _ols_frame(ols_results)
    files["ols.csv"] = lambda p: ols_table.to_csv(p, index=False)
    for m, f in result.fits.items():
        files[f"{m}.nc"] = (lambda tree: lambda p: tree.to_netcdf(p, engine="h5netcdf"))(f.posterior)
    written = outputs.write_atomically(out, files)

    _print_report(result, spec, summary, elast, ranking, ols_results, at, lift, kpi_baseline)
    print(f"\nWrote {', '.join(str(p) for p in written)}")
    print(f"Done in {time.perf_counter() - t_start:.1f} s.")
    return 0


def _ols_frame(ols_results: dict[str, OLSResult]) -> pd.DataFrame:
    parts = []
    for m, r in ols_results.items():
        t = r.coefficient_table().reset_index()
        t.insert(0, "metric", m)
        parts.append(t)
    return pd.concat(parts, ignore_index=True)


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
) -> None:
    lo, hi = f"eti{100 * PROB:g}_lb", f"eti{100 * PROB:g}_ub"
    print(f"\nBayesian CMMA, KPI {result.kpi!r}, model {spec.name!r} (degree {spec.degree}); "
          f"{100 * PROB:g}% credible intervals; OLS = the paper's Algorithm 1 (95% CI).")
    print("\nDRF coefficients (original scale):")
    for m, _fit in result.fits.items():
        rows = summary[(summary["metric"] == m) & summary["parameter"].str.startswith("beta[")]
        ols = ols_results[m].coefficient_table()
        for p, (_, row) in enumerate(rows.iterrows(), start=1):
            o = ols.iloc[-spec.degree + p - 1]
            print(f"  {m:>8} beta_{p}: {_fmt(row['mean'])} [{_fmt(row[lo])}, {_fmt(row[hi])}]"
                  f"   OLS {_fmt(o['estimate'])} [{_fmt(o['ci95_lower'])}, {_fmt(o['ci95_upper'])}]")
    if elast is None:
        print("\nNo elasticity or ranking: give every metric's current value with --at METRIC=VALUE.")
        return
    base = "mu(m)" if kpi_baseline is None else f"{kpi_baseline:g}"
    print(f"\nElasticity of {result.kpi} for a {100 * lift:+g}% lift of each metric at its current value "
          f"(gain / {base}):")
    ranks = ranking.set_index("metric")
    for _, row in elast.iterrows():
        m = row["metric"]
        print(f"  {m:>8} at {_fmt(row['at'])}: {_fmt(row['mean'])} [{_fmt(row[f'eti{100 * PROB:g}_lower'])}, "
              f"{_fmt(row[f'eti{100 * PROB:g}_upper'])}]   P(best) = {ranks.loc[m, 'p_best']:.2f}   "
              f"E[rank] = {ranks.loc[m, 'expected_rank']:.2f}")
    best = ranking.iloc[0]
    print(f"\nRecommended north-star metric: {best['metric']} "
          f"(P(best) = {best['p_best']:.2f}, expected regret {_fmt(best['expected_regret'])}).")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bayes-cmma``."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        # PyTensor's C backend looks for BLAS at import; bayes_cmma compiles with numba (nutpie), so
        # this one message is noise for the user.
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS", category=UserWarning)
        # the toolkit's own warnings are messages for the user: always print them, never raise
        for category in (ConvergenceWarning, AssumptionWarning):
            warnings.simplefilter("always", category)
        try:
            return _dispatch(args)
        except BayesCMMAError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted; no output was written or the previous output is unchanged.", file=sys.stderr)
            return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from bayes_cmma.datasets import load_example

        ex = load_example()
        _status("embedded example: simulated search A/B tests (see README, 'Example data')")
        return run_fit(None, None, ex.kpi, ex.metrics, model="quadratic", at=ex.at, lift=0.1,
                       kpi_baseline=ex.kpi_baseline, seed=args.seed, out=args.out, draws=args.draws,
                       tune=args.tune, chains=args.chains, trials_data=ex.trials)
    if args.command == "fit":
        model = args.model if args.model is not None else args.degree
        return run_fit(args.trials, args.cov, args.kpi, args.metric, model=model, at=_parse_at(args.at),
                       lift=args.lift, kpi_baseline=args.kpi_baseline, seed=args.seed, out=args.out,
                       draws=args.draws, tune=args.tune, chains=args.chains)
    if args.command == "ols":
        return run_ols(args.trials, args.cov, args.kpi, args.metric, args.degree)
    raise AssertionError(args.command)


def run_ols(trials_path: str, cov_path: str | None, kpi: str, metrics: list[str], degree: int) -> int:
    """``bayes-cmma ols``: coefficient table and nested Wald tests per metric."""
    import pandas as pd

    from bayes_cmma.data import read_trials
    from bayes_cmma.ols import cmma_ols

    if degree < 1:
        raise BayesCMMAError(f"--degree must be at least 1, got {degree}.")
    trials = read_trials(trials_path, cov_path)
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        for m in metrics:
            r = cmma_ols(trials, kpi, m, degree)
            print(f"CMMA OLS (Algorithm 1): {kpi} on {m} powers 1..{degree}, intercept and team dummies; "
                  f"n = {r.nobs}, residual df = {r.df_resid}")
            print(r.coefficient_table().to_string(float_format=lambda x: f"{x:.6g}"))
            print("\nNested Wald tests:")
            print(r.wald_tests().to_string(index=False, float_format=lambda x: f"{x:.6g}"))
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
