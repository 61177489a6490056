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

With ``--prior observational`` the slopes' prior is the commensurate one of ``fit_joint``: b_j = o_j +
sqrt(kappa^2 + v_j^2) z_j around fixed observational slopes o = :data:`OBS_SLOPES` (internal scale)
with standard errors v = :data:`OBS_SE` (logs of many units: small), and kappa, the bias scale, is
ranked too (``observational_bias_sd``), under ``--bias-prior halfnormal`` (default) or ``harmonic``.
``--parametrization centred`` fits with the slopes sampled directly, b_j ~ N(o_j, kappa^2 + v_j^2),
instead of through z_j (the truths are drawn the same way either way, so the two runs share them).
SBC holds for any fixed o, as long as the simulation and the fit use the same.

``--latent-prior lkj`` checks ``fit_joint(latent_prior="lkj")`` (one LKJ prior over the KPI's and
metrics' correlation, with the KPI's correlations made uniform by a factor on the density; with
``--prior independent``). The factor is not a random variable that ``pm.draw`` sees, so the truths
are drawn from the plain LKJ and resampled with replacement in proportion to it (sampling-importance
resampling from :data:`SIR_POOL` times as many draws; its weights have finite variance).
``--latent-prior wishart`` checks ``fit_joint(latent_prior="wishart")`` (an inverse-Wishart prior over
the latent covariance, sampled by its Bartlett decomposition, which ``pm.draw`` draws directly).

``--realistic`` keeps drawing from the prior until ``--sims`` simulated tables look like real ones on
the internal scale (every column's within-team sd within a factor 3 of 1, :data:`UNIT_SCALE`) and
fits only those. The selection is on the data alone, so the ranks stay uniform under it if the model
and the sampler are right: it certifies the model on the tables users fit, where the prior's own
draws are often far off scale (nearly collinear metrics with unrelated slopes, columns with a spread
of hundreds). The summary says how many prior draws it took.

Writes ``ranks.csv``, ``pbest.csv``, ``summary.md``. Usage:
``python benchmarks/sbc_joint.py --sims 100 --prior pooled|independent|observational
[--bias-prior halfnormal|harmonic] [--realistic] [--workers 2] [--out DIR]``.
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
SCALARS = ("residual_sd", "pi_mean", "pi_sd", "observational_bias_sd")
#: The observational prior's fixed slopes and their standard errors (internal scale) in ``--prior observational``.
OBS_SLOPES = (0.6, 0.3, 0.1)
OBS_SE = (0.01, 0.01, 0.01)
#: Prior draws per kept truth in the importance resampling of ``--latent-prior lkj``.
SIR_POOL = 20


def _observational(prior: str, bias_prior: str, parametrization: str = "non_centred") -> tuple | None:
    """The ``observational`` tuple of ``build_joint_model`` for ``--prior observational`` (else None)."""
    if prior != "observational":
        return None
    from bayes_cmma.fitting.joint import BIAS_SD_SCALE, HARMONIC_BIAS_MAX

    scale = HARMONIC_BIAS_MAX if bias_prior == "harmonic" else BIAS_SD_SCALE
    return np.array(OBS_SLOPES), np.array(OBS_SE), scale, bias_prior, parametrization


def _template(trials: int):
    from bayes_cmma.checks.ranking_calibration import candidate_truth, simulate_candidates
    from bayes_cmma.fitting.joint import rank_weights, standardise_joint
    from bayes_cmma.inputs.data import joint_design

    truth = candidate_truth(0.8, "near_tie")
    table = simulate_candidates(np.random.default_rng(2026), truth, metric_corr=0.8, n_trials=trials)
    design = joint_design(table, "y", truth.metrics)
    std = standardise_joint(design)
    return design, std, rank_weights(truth.at, truth.metrics, std)


def _sir(values: dict[str, np.ndarray], J: int, n: int, eta: float, seed: int) -> dict[str, np.ndarray]:
    """Resample LKJ draws (``latent_chol`` over J metrics and the KPI) in proportion to the latent LKJ prior's
    factor on the KPI's correlations."""
    from bayes_cmma.fitting.joint import uniform_kpi_corr_exponent

    full = np.zeros((len(values["latent_chol"]), J + 1, J + 1))
    full[:, *np.tril_indices(J + 1)] = values["latent_chol"]
    G = full @ np.swapaxes(full, 1, 2)
    sd = np.sqrt(np.diagonal(G, axis1=1, axis2=2))
    rho = G[:, :J, J] / (sd[:, :J] * sd[:, J:])
    log_w = uniform_kpi_corr_exponent(J, eta) * np.log1p(-rho**2).sum(axis=1)
    w = np.exp(log_w - log_w.max())
    pick = np.random.default_rng([seed, 1]).choice(len(w), size=n, replace=True, p=w / w.sum())
    return {k: v[pick] for k, v in values.items()}


def _spec(eta: float | None = None):
    """The spec fit_joint uses: the linear one, non-centred, with the joint model's LKJ concentration."""
    from bayes_cmma.fitting.joint import METRIC_CORR_ETA, TARGET_ACCEPT
    from bayes_cmma.fitting.spec import replace_spec, spec_for_degree

    spec = replace_spec(spec_for_degree(1), team_effects="non_centred",
                        metric_corr_eta=METRIC_CORR_ETA if eta is None else float(eta))
    return replace_spec(spec, sampler={**spec.sampler, "target_accept": TARGET_ACCEPT})


def prior_draws(prior: str, trials: int, n: int, seed: int, eta: float | None = None,
                bias_prior: str = "halfnormal", latent_prior: str = "slopes") -> dict[str, np.ndarray]:
    import pymc as pm

    from bayes_cmma.fitting.joint import build_joint_model
    from bayes_cmma.fitting.model import Standardised

    design, std, w = _template(trials)
    zero = Standardised(np.zeros_like(std.z), std.S, 1.0, np.eye(std.z.shape[1] - 1))
    spec = _spec(eta)
    model = build_joint_model(spec, len(design.teams), zero, design.team_idx, elasticity_prior=prior, weights=w,
                              observational=_observational(prior, bias_prior), latent_prior=latent_prior)
    names = ["beta_std", "alpha", "kpi_mean", "metric_chol", "residual_sd", "pi_mean", "pi_sd"]
    if prior == "observational":
        names.append("observational_bias_sd")
    if latent_prior == "lkj":
        names.append("latent_chol")
    pool = n * SIR_POOL if latent_prior == "lkj" else n
    with model:
        values = dict(zip(names, pm.draw([model[v] for v in names], draws=pool, random_seed=seed), strict=True))
    if latent_prior == "lkj":
        values = _sir(values, design.degree, n, spec.metric_corr_eta, seed)
        del values["latent_chol"]
    return values


def simulate_table(design, std, truth: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The trials' ATEs (internal scale) under the drawn truth: z_k ~ N((eta_g, alpha_g), G + S_k)."""
    from bayes_cmma.fitting.model import unpack_chol

    J = design.degree
    chol = unpack_chol(truth["metric_chol"], J)
    sigma = chol @ chol.T
    c = np.diag(sigma) * truth["beta_std"]
    G = np.block([[np.array([[c @ np.linalg.solve(sigma, c) + truth["residual_sd"] ** 2]]), c[None, :]],
                  [c[:, None], sigma]])
    mean = np.column_stack([truth["kpi_mean"], truth["alpha"]])[design.team_idx]
    return np.stack([rng.multivariate_normal(mean[k], G + std.S[k]) for k in range(len(mean))])


def data_scale(z: np.ndarray, team_idx: np.ndarray) -> float:
    """The largest |log| of a column's within-team sd: 0 when every column has unit spread, as real
    tables have on the internal scale after standardisation (which divides by the sd across trials)."""
    centred = z.copy()
    for g in np.unique(team_idx):
        centred[team_idx == g] -= centred[team_idx == g].mean(axis=0)
    return float(np.max(np.abs(np.log(centred.std(axis=0)))))


def realistic_draws(prior: str, trials: int, n: int, seed: int, eta: float | None = None,
                    bias_prior: str = "halfnormal", latent_prior: str = "slopes", batch: int = 500,
                    limit: int = 100_000) -> tuple[dict[int, dict[str, np.ndarray]], int]:
    """The first ``n`` prior draws whose simulated table has ``data_scale`` <= :data:`UNIT_SCALE`.

    Returns {sim index: truth} (each table is simulated again in :func:`one_simulation` from the
    same seed, so it is the table tested here) and the number of prior draws examined.
    """
    design, std, _ = _template(trials)
    kept: dict[int, dict[str, np.ndarray]] = {}
    start = 0
    while len(kept) < n:
        if start >= limit:
            raise RuntimeError(f"only {len(kept)} of {limit} prior draws gave a real-looking table; lower --sims")
        # one batch per block of indices, seeded by the block: the same draws whatever n is
        truths = prior_draws(prior, trials, batch, seed + start, eta, bias_prior, latent_prior)
        for i in range(batch):
            truth = {k: v[i] for k, v in truths.items()}
            z = simulate_table(design, std, truth, np.random.default_rng([seed, start + i]))
            if data_scale(z, design.team_idx) <= UNIT_SCALE:
                kept[start + i] = truth
                if len(kept) == n:
                    return kept, start + i + 1
        start += batch
    return kept, start


def one_simulation(prior: str, trials: int, sim: int, truth: dict[str, np.ndarray], seed: int, draws: int, tune: int,
                   eta: float | None = None, bias_prior: str = "halfnormal",
                   parametrization: str = "non_centred", latent_prior: str = "slopes") -> tuple[list[dict], list[dict]]:
    import arviz_stats as azs
    import xarray as xr

    from bayes_cmma.fitting import sampling
    from bayes_cmma.fitting.joint import compiled_joint_model, partial_coefficients
    from bayes_cmma.fitting.model import Standardised, unpack_chol

    design, std, w = _template(trials)
    J = design.degree
    rng = np.random.default_rng([seed, sim])
    z = simulate_table(design, std, truth, rng)
    chol = unpack_chol(truth["metric_chol"], J)
    b = truth["beta_std"]
    data = Standardised(z, std.S, 1.0, np.eye(J))
    compiled, _ = compiled_joint_model(_spec(eta), design, data, prior, w,
                                       _observational(prior, bias_prior, parametrization), latent_prior)
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
        if name in post and name in truth:
            quantities[name] = (post[name].values.ravel(), float(truth[name]))
    quantities["kpi_mean[1]"] = (post["kpi_mean"].values.reshape(beta.shape[0], -1)[:, 0], truth["kpi_mean"][0])
    rows = []
    for name, (x, true) in quantities.items():
        ess = float(azs.ess(xr.DataArray(x.reshape(4, -1), dims=("chain", "draw"))).values)
        rows.append({"sim": sim, "parameter": name, "rank": int(np.sum(x[::THIN] < true)), "truth": float(true),
                     "z": float((true - x.mean()) / x.std()), "ess_bulk": ess, "divergences": n_div,
                     "data_scale": data_scale(z, design.team_idx)})
    ranked = beta * w
    best = np.argmax(ranked, axis=1)
    p_best = np.bincount(best, minlength=J) / len(best)
    true_best = int(np.argmax(b * w))
    pbest = [{"sim": sim, "metric": j + 1, "p_best": float(p_best[j]), "is_best": j == true_best} for j in range(J)]
    return rows, pbest


#: Tables whose every column has a within-team sd within a factor 3 of 1 (``data_scale`` <= log 3) look
#: like real tables on the internal scale; prior draws can give tables far from it.
UNIT_SCALE = float(np.log(3.0))


def _table(ranks: pd.DataFrame, n_draws: int) -> list[str]:
    from bayes_cmma.checks.calibration import uniformity

    table = uniformity(ranks, n_draws)
    lines = ["| quantity | sims | chi2 (9 df) | p | E[z] | p | E[z^2] | p | median ESS | rank counts |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['parameter']} | {r['sims']} | {r['chi2']:.1f} | {r['p_value']:.3f} | {r['z_mean']:+.2f} | "
                     f"{r['z_mean_p']:.3f} | {r['z2_mean']:.2f} | {r['z2_p']:.3f} | {r['ess_median']:.0f} | "
                     f"{r['bins']} |")
    return lines


def write_summary(ranks: pd.DataFrame, pbest: pd.DataFrame, out: Path, title: str, provenance: str,
                  n_draws: int) -> str:
    """``summary.md``: rank uniformity over every simulation and over those with unit-scale data; P(best)."""
    from bayes_cmma.checks.ranking_calibration import reliability_table

    per_sim = ranks.groupby("sim").agg(div=("divergences", "first"), ess=("ess_bulk", "min"),
                                       scale=("data_scale", "first"))
    unit = per_sim.index[per_sim["scale"] <= UNIT_SCALE]
    lines = [f"# {title}", "", provenance, "",
             f"Simulations with divergent transitions: {int((per_sim['div'] > 0).sum())} of {len(per_sim)} (median "
             f"{int(per_sim['div'].median())}, max {int(per_sim['div'].max())}); with a quantity at bulk ESS < 100: "
             f"{int((per_sim['ess'] < 100).sum())}.", "",
             "## Every simulation", "", *_table(ranks, n_draws), ""]
    if len(unit) < len(per_sim):  # with --realistic every table looks real: nothing to add
        lines += [f"## Simulations whose data look like a real table on the internal scale ({len(unit)} of "
                  f"{len(per_sim)})", "",
                  "Standardisation gives every column of a real table unit spread across trials; prior draws can "
                  "give a KPI column with a spread of hundreds (the marginal slopes' prior is independent of the "
                  "metrics' correlation, so nearly collinear metrics with unequal slopes imply a huge KPI variance). "
                  "Kept here: the tables whose every column has a within-team sd within a factor 3 of 1. The "
                  "selection is on the data alone, so ranks stay uniform under it if the model and sampler are right "
                  "(SBC's ranks are uniform given the data).", "",
                  f"Of these, with divergent transitions: {int((per_sim.loc[unit, 'div'] > 0).sum())}; with a "
                  f"quantity at bulk ESS < 100: {int((per_sim.loc[unit, 'ess'] < 100).sum())}.", "",
                  *_table(ranks[ranks["sim"].isin(unit)], n_draws), ""]
    rel = reliability_table(pbest["p_best"].to_numpy(), pbest["is_best"].to_numpy(), edges=np.linspace(0, 1, 6))
    lines += ["## P(best) under the prior", "",
              "Each metric of each simulation; bins of 0.2. Under the prior a calibrated model gives a calibrated "
              "P(best), so this checks the ranking code end to end.", "",
              "| P(best) bin | cases | mean P(best) | truly best | 95% interval |", "|---|---|---|---|---|"]
    for _, r in rel[rel["n"] > 0].iterrows():
        lines.append(f"| {r['lower']:.1f}-{r['upper']:.1f} | {int(r['n'])} | {r['mean_p_best']:.2f} | "
                     f"{r['frequency_best']:.2f} | [{r['ci_lower']:.2f}, {r['ci_upper']:.2f}] |")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def main() -> None:
    from bayes_cmma.fitting.joint import LATENT_PRIORS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sims", type=int, default=100)
    parser.add_argument("--prior", default="pooled", choices=["pooled", "independent", "observational"])
    parser.add_argument("--bias-prior", default="halfnormal", choices=["halfnormal", "harmonic"],
                        help="with --prior observational: the prior of the bias scale kappa")
    parser.add_argument("--parametrization", default="non_centred", choices=["non_centred", "centred"],
                        help="with --prior observational: how the fit samples the slopes around the logs' (the "
                             "prior draws are the same either way)")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--metric-corr-eta", type=float, default=None,
                        help="LKJ concentration of the metrics' correlation (default: the joint model's)")
    parser.add_argument("--latent-prior", default="slopes", choices=LATENT_PRIORS,
                        help="the joint model's latent prior (fit_joint(latent_prior=...)); lkj and wishart need "
                             "--prior independent")
    parser.add_argument("--realistic", action="store_true",
                        help="fit only prior draws whose simulated table looks real (every column's within-team "
                             "sd within a factor 3 of 1), until --sims are kept")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sbc_joint"))
    parser.add_argument("--summarise", action="store_true",
                        help="rewrite summary.md from --out's ranks.csv and pbest.csv (the run's other options "
                             "regenerate each table's data_scale if ranks.csv lacks it)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_draws = 4 * args.draws // THIN
    from bayes_cmma.fitting.joint import METRIC_CORR_ETA

    eta = METRIC_CORR_ETA if args.metric_corr_eta is None else args.metric_corr_eta
    obs = (f", {args.bias_prior} bias prior" + (", centred slopes" if args.parametrization == "centred" else "")
           if args.prior == "observational" else "")
    title = f"SBC of the joint model ({args.prior} elasticity prior{obs}, LKJ eta {eta:g} on the metrics' correlation)"
    cmd = (f"python benchmarks/sbc_joint.py --sims {args.sims} --prior {args.prior} --trials {args.trials} "
           + (f"--bias-prior {args.bias_prior} --parametrization {args.parametrization} "
              if args.prior == "observational" else "") +
           f"--draws {args.draws} --tune {args.tune} --seed {args.seed} --workers {args.workers}"
           + ("" if args.metric_corr_eta is None else f" --metric-corr-eta {args.metric_corr_eta:g}")
           + ("" if args.latent_prior == "slopes" else f" --latent-prior {args.latent_prior}")
           + (" --realistic" if args.realistic else ""))
    if args.latent_prior == "lkj":
        title = title.replace(" on the metrics' correlation",
                              " on the KPI's and metrics' correlation (latent LKJ prior)")
    elif args.latent_prior == "wishart":
        from bayes_cmma.fitting.joint import WISHART_SCALE

        title = title.replace(f", LKJ eta {eta:g} on the metrics' correlation",
                              f", inverse-Wishart IW(J + 2, {WISHART_SCALE:g} I) latent prior")
    if args.realistic:
        title += ", real-looking tables only"
    settings = (f"{args.trials} trials, 4 teams, 3 metrics; 4 chains x {args.draws} draws, thinned by {THIN}: ranks "
                f"0..{n_draws}.")
    if args.summarise:
        ranks_df, pbest_df = pd.read_csv(out / "ranks.csv"), pd.read_csv(out / "pbest.csv")
        if "data_scale" not in ranks_df:
            truths = prior_draws(args.prior, args.trials, int(ranks_df["sim"].max()) + 1, args.seed,
                                 args.metric_corr_eta, args.bias_prior)
            design, std, _ = _template(args.trials)
            scale = {i: data_scale(simulate_table(design, std, {k: v[i] for k, v in truths.items()},
                                                  np.random.default_rng([args.seed, i])), design.team_idx)
                     for i in ranks_df["sim"].unique()}
            ranks_df["data_scale"] = ranks_df["sim"].map(scale)
            ranks_df.to_csv(out / "ranks.csv", index=False)
        old = (out / "summary.md").read_text().splitlines()[2] if (out / "summary.md").exists() else ""
        provenance = old if old.startswith("Command:") else f"Command: `{cmd}`. {settings}"
        print(write_summary(ranks_df, pbest_df, out, title, provenance, n_draws))
        return
    from bayes_cmma.fitting.parallel import worker_pool

    start = time.perf_counter()
    if args.realistic:
        chosen, examined = realistic_draws(args.prior, args.trials, args.sims, args.seed, args.metric_corr_eta,
                                           args.bias_prior, args.latent_prior)
        settings += (f" Kept the first {args.sims} of {examined} prior draws whose table looks real "
                     f"({100 * args.sims / examined:.0f}%).")
    else:
        truths = prior_draws(args.prior, args.trials, args.sims, args.seed, args.metric_corr_eta, args.bias_prior,
                             args.latent_prior)
        chosen = {i: {k: v[i] for k, v in truths.items()} for i in range(args.sims)}
    ranks: list[dict] = []
    pbest: list[dict] = []
    with worker_pool(args.workers) as pool:
        futures = [pool.submit(one_simulation, args.prior, args.trials, i, truth, args.seed, args.draws, args.tune,
                               args.metric_corr_eta, args.bias_prior, args.parametrization, args.latent_prior)
                   for i, truth in chosen.items()]
        for i, f in enumerate(futures, 1):
            r, p = f.result()
            ranks += r
            pbest += p
            if i % 10 == 0:
                print(f"{i}/{args.sims} simulations, {time.perf_counter() - start:.0f} s", flush=True)
    ranks_df, pbest_df = pd.DataFrame(ranks), pd.DataFrame(pbest)
    ranks_df.to_csv(out / "ranks.csv", index=False)
    pbest_df.to_csv(out / "pbest.csv", index=False)
    provenance = (f"Command: `{cmd}`; {args.sims} simulations in {(time.perf_counter() - start) / 60:.1f} min. "
                  f"{settings}")
    print(write_summary(ranks_df, pbest_df, out, title, provenance, n_draws))


if __name__ == "__main__":
    main()
