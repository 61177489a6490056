"""Simulation-based calibration of the joint model (``bayes_cmma.fitting.joint``), and P(best) under its prior.

As ``bayes-cmma calibrate`` does for the per-metric model (``bayes_cmma.checks.calibration``): the
run works on the internal scale. A template table (``ranking_calibration.simulate_candidates``:
``--trials`` trials, 4 teams, 3 metrics) gives the measurement covariances, standardised once;
each simulation draws every parameter from the joint model's prior, simulates the trials' ATEs
from the model, fits it with the identity transform and records the rank of each true value among
thinned posterior draws. Ranks must be uniform (chi-square per parameter, and E[z] = 0,
E[z^2] = 1 for z = (truth - posterior mean) / posterior sd).

It also bins every metric's posterior P(best) (the metric with the largest b_j w_j, i.e. the largest
elasticity) against whether it is best under the drawn truth: under the prior, a calibrated model
gives a calibrated P(best) by construction, so this checks the ranking code end to end.

Writes ``ranks.csv``, ``pbest.csv``, ``summary.md``. Usage:
``python benchmarks/sbc_joint.py --sims 100 --prior pooled [--workers 2] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
THIN = 10
SCALARS = ("residual_sd", "pi_mean", "pi_sd")


def _template(trials: int):
    from bayes_cmma.checks.ranking_calibration import candidate_truth, simulate_candidates
    from bayes_cmma.fitting.joint import rank_weights, standardise_joint
    from bayes_cmma.inputs.data import joint_design

    truth = candidate_truth(0.8, "near_tie")
    table = simulate_candidates(np.random.default_rng(2026), truth, metric_corr=0.8, n_trials=trials)
    design = joint_design(table, "y", truth.metrics)
    std = standardise_joint(design)
    return design, std, rank_weights(truth.at, truth.metrics, std)


def _spec(eta: float | None = None):
    from bayes_cmma.fitting.joint import TARGET_ACCEPT
    from bayes_cmma.fitting.spec import parse_spec, replace_spec, spec_for_degree

    spec = spec_for_degree(1)
    if eta is not None:  # the LKJ concentration of the metrics' correlation
        raw = spec.to_dict()
        raw["priors"]["metric_corr_eta"] = float(eta)
        spec = parse_spec(raw, source=f"metric_corr_eta={eta:g}")
    spec = replace_spec(spec, team_effects="non_centred")
    return replace_spec(spec, sampler={**spec.sampler, "target_accept": TARGET_ACCEPT})


def prior_draws(prior: str, trials: int, n: int, seed: int, eta: float | None = None) -> dict[str, np.ndarray]:
    import pymc as pm

    from bayes_cmma.fitting.joint import build_joint_model
    from bayes_cmma.fitting.model import Standardised

    design, std, w = _template(trials)
    zero = Standardised(np.zeros_like(std.z), std.S, 1.0, np.eye(std.z.shape[1] - 1))
    model = build_joint_model(_spec(eta), len(design.teams), zero, design.team_idx, elasticity_prior=prior, weights=w)
    names = ["beta_std", "alpha", "kpi_mean", "metric_chol", "residual_sd", "pi_mean", "pi_sd"]
    with model:
        values = pm.draw([model[v] for v in names], draws=n, random_seed=seed)
    return dict(zip(names, values, strict=True))


def one_simulation(prior: str, trials: int, sim: int, truth: dict[str, np.ndarray], seed: int, draws: int,
                   tune: int, eta: float | None = None) -> tuple[list[dict], list[dict]]:
    import arviz_stats as azs
    import xarray as xr

    from bayes_cmma.fitting import sampling
    from bayes_cmma.fitting.joint import compiled_joint_model, partial_coefficients
    from bayes_cmma.fitting.model import Standardised, unpack_chol

    design, std, w = _template(trials)
    J = design.degree
    rng = np.random.default_rng([seed, sim])
    chol = unpack_chol(truth["metric_chol"], J)
    sigma = chol @ chol.T
    b = truth["beta_std"]
    c = np.diag(sigma) * b
    G = np.block([[np.array([[c @ np.linalg.solve(sigma, c) + truth["residual_sd"] ** 2]]), c[None, :]],
                  [c[:, None], sigma]])
    mean = np.column_stack([truth["kpi_mean"], truth["alpha"]])[design.team_idx]
    z = np.stack([rng.multivariate_normal(mean[k], G + std.S[k]) for k in range(len(mean))])
    data = Standardised(z, std.S, 1.0, np.eye(J))
    compiled, _ = compiled_joint_model(_spec(eta), design, data, prior, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trace = sampling.sample(compiled, draws=draws, tune=tune, chains=4, cores=1, seed=int(rng.integers(2**31)),
                                target_accept=0.99, adaptation="low_rank", progress_bar=False)
    post = trace["posterior"].to_dataset()
    n_div = int(trace["sample_stats"]["diverging"].values.sum())
    beta = post["beta_std"].values.reshape(-1, J)
    chol_post = unpack_chol(post["metric_chol"].values.reshape(beta.shape[0], -1), J)
    quantities = {f"beta[{j + 1}]": (beta[:, j], b[j]) for j in range(J)}
    gamma = partial_coefficients(beta, chol_post)
    gamma_true = partial_coefficients(b, chol)
    quantities.update({f"partial_beta[{j + 1}]": (gamma[:, j], gamma_true[j]) for j in range(J)})
    for name in SCALARS:
        if name in post:
            quantities[name] = (post[name].values.ravel(), float(truth[name]))
    quantities["kpi_mean[1]"] = (post["kpi_mean"].values.reshape(beta.shape[0], -1)[:, 0], truth["kpi_mean"][0])
    rows = []
    for name, (x, true) in quantities.items():
        ess = float(azs.ess(xr.DataArray(x.reshape(4, -1), dims=("chain", "draw"))).values)
        rows.append({"sim": sim, "parameter": name, "rank": int(np.sum(x[::THIN] < true)), "truth": float(true),
                     "z": float((true - x.mean()) / x.std()), "ess_bulk": ess, "divergences": n_div})
    ranked = beta * w
    best = np.argmax(ranked, axis=1)
    p_best = np.bincount(best, minlength=J) / len(best)
    true_best = int(np.argmax(b * w))
    pbest = [{"sim": sim, "metric": j + 1, "p_best": float(p_best[j]), "is_best": j == true_best} for j in range(J)]
    return rows, pbest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sims", type=int, default=100)
    parser.add_argument("--prior", default="pooled", choices=["pooled", "independent"])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--metric-corr-eta", type=float, default=None,
                        help="LKJ concentration of the metrics' correlation (default: the linear spec's)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sbc_joint"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from bayes_cmma.checks.calibration import uniformity
    from bayes_cmma.checks.ranking_calibration import reliability_table
    from bayes_cmma.fitting.parallel import worker_pool

    truths = prior_draws(args.prior, args.trials, args.sims, args.seed, args.metric_corr_eta)
    start = time.perf_counter()
    ranks: list[dict] = []
    pbest: list[dict] = []
    with worker_pool(args.workers) as pool:
        futures = [pool.submit(one_simulation, args.prior, args.trials, i, {k: v[i] for k, v in truths.items()},
                               args.seed, args.draws, args.tune, args.metric_corr_eta) for i in range(args.sims)]
        for i, f in enumerate(futures, 1):
            r, p = f.result()
            ranks += r
            pbest += p
            if i % 10 == 0:
                print(f"{i}/{args.sims} simulations, {time.perf_counter() - start:.0f} s", flush=True)
    ranks_df, pbest_df = pd.DataFrame(ranks), pd.DataFrame(pbest)
    ranks_df.to_csv(out / "ranks.csv", index=False)
    pbest_df.to_csv(out / "pbest.csv", index=False)
    n_draws = 4 * args.draws // THIN
    table = uniformity(ranks_df, n_draws)
    rel = reliability_table(pbest_df["p_best"].to_numpy(), pbest_df["is_best"].to_numpy(),
                            edges=np.linspace(0, 1, 6))
    div = ranks_df.groupby("sim")["divergences"].first()
    cmd = (f"python benchmarks/sbc_joint.py --sims {args.sims} --prior {args.prior} --trials {args.trials} "
           f"--draws {args.draws} --tune {args.tune} --seed {args.seed} --workers {args.workers}"
           + ("" if args.metric_corr_eta is None else f" --metric-corr-eta {args.metric_corr_eta:g}"))
    lines = [f"# SBC of the joint model ({args.prior} elasticity prior)", "",
             f"Command: `{cmd}`; {args.sims} simulations in {(time.perf_counter() - start) / 60:.1f} min. "
             f"{args.trials} trials, 4 teams, 3 metrics; 4 chains x {args.draws} draws, thinned by {THIN}: ranks "
             f"0..{n_draws}. Simulations with divergent transitions: {int((div > 0).sum())} (median "
             f"{int(div.median())}, max {int(div.max())}). Smallest chi-square p-value: "
             f"{table['p_value'].min():.3f} over {len(table)} quantities.", "",
             "| quantity | sims | chi2 (9 df) | p | E[z] | p | E[z^2] | p | median ESS | rank counts |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['parameter']} | {r['sims']} | {r['chi2']:.1f} | {r['p_value']:.3f} | {r['z_mean']:+.2f} | "
                     f"{r['z_mean_p']:.3f} | {r['z2_mean']:.2f} | {r['z2_p']:.3f} | {r['ess_median']:.0f} | "
                     f"{r['bins']} |")
    lines += ["", "P(best) under the prior (each metric of each simulation; bins of 0.2):", "",
              "| P(best) bin | cases | mean P(best) | truly best | 95% interval |", "|---|---|---|---|---|"]
    for _, r in rel[rel["n"] > 0].iterrows():
        lines.append(f"| {r['lower']:.1f}-{r['upper']:.1f} | {int(r['n'])} | {r['mean_p_best']:.2f} | "
                     f"{r['frequency_best']:.2f} | [{r['ci_lower']:.2f}, {r['ci_upper']:.2f}] |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
