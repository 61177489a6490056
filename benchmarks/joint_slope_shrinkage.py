"""Why the joint model's proxy slopes come out low: the same tables without (or with) measurement noise.

The P(best) studies (``pbest_calibration.py``) show the joint model's marginal slopes of the proxy
metrics (m2, m3: correlated 0.8 with m1, which drives the KPI) about 0.06-0.09 below their true 0.8
at K = 50, while m1's is unbiased. In that law a proxy's slope is b corr(m1, m_j), so anything that
pulls the metrics' latent correlation towards 0 pulls the proxies' slopes down. This script fits the
joint model (independent slope prior) to tables from the near-tie law with standard errors of
0.01-0.02 (no measurement error to speak of), and compares the posterior means of the correlation
and the slopes with the sample values of the same tables (team means removed). Variants:

- ``default``: the joint model's LKJ eta 2 (its default until the default became 1);
- ``jacobian``: plus a potential -log det R (R the metrics' correlation matrix). With the slopes
  parametrised by beta and a flat prior on them, the posterior of Sigma carries an extra factor
  det R against a flat prior on gamma = Sigma^-1 diag(Sigma) beta (the regression the data pin
  down); this cancels it;
- ``jacobian_eta1``: that and LKJ eta 1;
- ``eta1``: today's joint model (LKJ eta 1, slopes parametrisation, no patch);
- ``latent``: the latent LKJ prior (``fit_joint(latent_prior="lkj")``, its default eta 0.5);
- ``wishart``: the inverse-Wishart latent prior (``fit_joint(latent_prior="wishart")``);
- ``separate``: the per-metric fits (``bc.fit``), which have no prior on the metrics' correlation;
- ``separate_unpooled``, ``eta1_unpooled``, ``wishart_unpooled``: the same with independent team effects
  (the spec's ``team_effects = "independent"``: pi_g ~ the wide ``pi_mean`` prior, N(0, 5) on the
  internal scale)
  instead of pi_g ~ N(pi_mean, pi_sd), so that the teams' KPI means say nothing about the slopes. In
  this law a proxy's team means are unrelated to the KPI's (the KPI's follow the driver's), so with
  pooled team effects the between-team relation, about 0, may pull a proxy's slope down.

``--noisy`` keeps the P(best) study's standard errors (0.2-0.5, errors correlated 0.3) and ``--corr``
sets the metrics' correlation, to ask the same question where the P(best) study found the proxies'
slopes low (K = 20, corr 0.3). The sample values are then method-of-moments ones: the within-team
covariance (divided by K - teams) minus the trials' mean error covariance. With ``separate`` among
the variants the summary also gives each variant's posterior mean minus the separate fits', paired
by table.

Writes ``results.csv`` (one row per table and variant) and ``summary.md``.

Usage: ``python benchmarks/joint_slope_shrinkage.py [--tables 12] [--trials 50] [--corr 0.8] [--noisy]
[--variants ...] [--out benchmarks/results/joint_slope_shrinkage]``
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("default", "jacobian", "jacobian_eta1", "eta1", "latent", "wishart", "separate", "separate_unpooled",
            "eta1_unpooled", "wishart_unpooled")
#: Ranges of the standard errors: the P(best) study's (``--noisy``) and the noise-free ones (the default).
NOISY, NOISE_FREE = (0.2, 0.5), (0.01, 0.02)


def _patch_jacobian() -> None:
    """Add -log det R to every joint model built from now on (this process only)."""
    import pymc as pm
    import pytensor.tensor as pt

    from bayes_cmma.fitting import joint

    original = joint.build_joint_model

    def build(spec, n_teams, data, *args, **kwargs):
        model = original(spec, n_teams, data, *args, **kwargs)
        J = data.z.shape[1] - 1
        with model:
            chol = pm.math.expand_packed_triangular(J, model["metric_chol"], lower=True)
            sd = pt.sqrt((chol * chol).sum(axis=1))
            pm.Potential("jacobian", -(2 * pt.log(pt.diag(chol)).sum() - 2 * pt.log(sd).sum()))
        return model

    joint.build_joint_model = build
    joint.clear_compiled_cache()


def run_variant(variant: str, tables: int, trials: int, seed: int, metric_corr: float = 0.8,
                noisy: bool = False) -> list[dict]:
    import bayes_cmma as bc
    from bayes_cmma.checks.ranking_calibration import candidate_truth, simulate_candidates, within_team_slopes
    from bayes_cmma.fitting.spec import parse_spec, spec_for_degree

    if variant.startswith("jacobian"):
        _patch_jacobian()
    label, variant = variant, variant.removesuffix("_unpooled")
    raw = spec_for_degree(1).to_dict() | ({"team_effects": "independent"} if label != variant else {})
    spec = parse_spec(raw, source=variant)
    eta = 1.0 if variant.endswith("eta1") else 2.0  # LKJ concentration of the joint model (2 until it became 1)
    options = ({"latent_prior": "lkj"} if variant == "latent" else {"latent_prior": "wishart"}
               if variant == "wishart" else {"metric_corr_eta": eta})
    truth = candidate_truth(metric_corr, "near_tie")
    rows = []
    for k in range(tables):
        data = simulate_candidates(np.random.default_rng([seed, k]), truth, metric_corr=metric_corr, n_trials=trials,
                                   se_range=NOISY if noisy else NOISE_FREE)
        corr, slope = within_team_slopes(data, truth.metrics, deconvolve=noisy)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if variant == "separate":
                fits = bc.fit(data, "y", truth.metrics, model=spec, seed=1, draws=500, tune=500, chains=2, cores=1)
                pb = np.array([float(fits[m].beta.values[..., 0].mean()) for m in truth.metrics])
                pc = np.full((len(truth.metrics),) * 2, np.nan)
            else:
                fit = bc.fit_joint(data, "y", truth.metrics, at=truth.at, elasticity_prior="independent", model=spec,
                                   **options, seed=1, draws=500, tune=500, chains=2, cores=1)
                post = fit.posterior["posterior"]
                pc = post["metric_corr"].mean(("chain", "draw")).values
                pb = post["beta"].mean(("chain", "draw")).values
        for j, m in enumerate(truth.metrics):
            other = (j + 1) % 3
            rows.append({"variant": label, "table": k, "metric": m, "beta_true": truth.beta[j],
                         "beta_sample": slope[j], "beta_posterior_mean": pb[j],
                         "corr_pair": f"{m}-{truth.metrics[other]}", "corr_sample": corr[j, other],
                         "corr_posterior_mean": pc[j, other], "warnings": len(caught),
                         "seconds": time.perf_counter() - t0})
    return rows


def summarise(results: pd.DataFrame, command: str, metric_corr: float = 0.8, noisy: bool = False) -> str:
    title = ("with the P(best) study's measurement noise" if noisy else "on tables without measurement noise")
    sample = ("method-of-moments values of the same tables (within-team covariance minus the mean error covariance)"
              if noisy else "the same tables with team means removed")
    lines = [f"# The joint model's proxy slopes {title}", "",
             f"Command: `{command}`. Near-tie law of `bayes_cmma.checks.ranking_calibration` (metrics correlated "
             f"{metric_corr:g} within teams, the KPI driven by m1), standard errors "
             f"{'-'.join(f'{x:g}' for x in (NOISY if noisy else NOISE_FREE))}, joint model with the independent "
             f"slope prior, 2 chains x 500 draws. Sample values: {sample}. Means over "
             "tables; in brackets the Monte Carlo se of the mean difference.", "",
             "| variant | metric | true slope | sample slope | posterior mean slope | posterior - sample | "
             "pair | sample corr | posterior mean corr | posterior - sample |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (variant, metric), g in results.groupby(["variant", "metric"], sort=False):
        db = g["beta_posterior_mean"] - g["beta_sample"]
        dc = g["corr_posterior_mean"] - g["corr_sample"]
        n = np.sqrt(len(g))
        lines.append(f"| {variant} | {metric} | {g['beta_true'].iloc[0]:g} | {g['beta_sample'].mean():.3f} | "
                     f"{g['beta_posterior_mean'].mean():.3f} | {db.mean():+.3f} ({db.std() / n:.3f}) | "
                     f"{g['corr_pair'].iloc[0]} | {g['corr_sample'].mean():.3f} | "
                     f"{g['corr_posterior_mean'].mean():.3f} | {dc.mean():+.3f} ({dc.std() / n:.3f}) |")
    if "separate" in set(results["variant"]):
        lines += ["", "Posterior mean slope minus the separate fits', paired by table:", "",
                  "| variant | " + " | ".join(results["metric"].unique()) + " |",
                  "|---|" + "---|" * results["metric"].nunique()]
        wide = results.pivot_table(index=["table", "metric"], columns="variant", values="beta_posterior_mean")
        for variant in [v for v in results["variant"].unique() if v != "separate"]:
            d = (wide[variant] - wide["separate"]).unstack("metric")
            lines.append(f"| {variant} | " + " | ".join(f"{d[m].mean():+.3f} ({d[m].std() / np.sqrt(len(d)):.3f})"
                                                        for m in results["metric"].unique()) + " |")
    fits = results.groupby(["variant", "table"]).first()
    lines += ["", f"{len(fits)} fits, median {fits['seconds'].median():.1f} s; fits with a warning of any kind: "
              f"{int((fits['warnings'] > 0).sum())}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=12)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--corr", type=float, default=0.8, help="the metrics' correlation within teams")
    parser.add_argument("--noisy", action="store_true", help="the P(best) study's standard errors (0.2-0.5)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "joint_slope_shrinkage")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # a fresh process per variant: the jacobian patch must not leak into the default fits
    with ProcessPoolExecutor(max_workers=min(2, len(args.variants)), max_tasks_per_child=1,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        n = len(args.variants)
        parts = list(pool.map(run_variant, args.variants, [args.tables] * n, [args.trials] * n, [args.seed] * n,
                              [args.corr] * n, [args.noisy] * n))
    results = pd.DataFrame([r for part in parts for r in part])
    results.to_csv(args.out / "results.csv", index=False)
    command = (f"python benchmarks/joint_slope_shrinkage.py --tables {args.tables} --trials {args.trials} "
               f"--seed {args.seed}{'' if args.corr == 0.8 else f' --corr {args.corr:g}'}"
               f"{' --noisy' if args.noisy else ''} --variants {' '.join(args.variants)}")
    (args.out / "summary.md").write_text(summarise(results, command, args.corr, args.noisy))
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
