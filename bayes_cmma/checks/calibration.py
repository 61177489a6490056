"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari and Gelman, 2018).

Draw the parameters from the prior, simulate trial summaries from the model with them, fit, and
record the rank of each true value among the (thinned) posterior draws. If the sampler and the
model's code are right, every rank is uniform on 0..L.

The model's priors live on the internal (standardised) scale, which :func:`model.standardise`
derives from the data. So that the prior is the same in every simulation, SBC runs on that scale
directly: the measurement covariances S_k and the team layout come from a template data set
(standardised once), the simulated z_k are taken as already standardised, and each fit uses the
identity transform. This checks the likelihood, the priors, the reparameterisation and the
sampler, which is what SBC can check; the standardisation is a fixed linear map checked by
``tests/test_transform.py``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import pymc as pm
from scipy import stats

from bayes_cmma.errors import AssumptionWarning, SamplingError
from bayes_cmma.fitting import measurement, sampling
from bayes_cmma.fitting.model import (
    A3_VAR,
    Standardised,
    a3_terms,
    build_model,
    compiled_model,
    pooled,
    standardise,
    unpack_chol,
)
from bayes_cmma.fitting.spec import ModelSpec
from bayes_cmma.inputs.data import MetricDesign, metric_design


@dataclass
class SBCResult:
    """Ranks per simulation and parameter, and a chi-square uniformity test per parameter."""

    ranks: pd.DataFrame  # columns: sim, parameter, rank, z, ess_bulk, divergences, team_effects (used)
    n_draws: int  # L: ranks run 0..L
    tests: pd.DataFrame  # parameter, chi2, df, p_value, bins (list of counts), and the z-score moments
    wall_s: float
    spec: ModelSpec
    thin: int = 1  # ranks use every thin-th draw
    informative_precision: float = 0.0  # > 0: data not from the model (see simulations)
    failed: list[str] = field(default_factory=list)  # simulations whose sampler returned no posterior


#: Arm sizes of the SBC template's trials (uniform in this range, per arm).
TEMPLATE_ARM_SIZES = (200, 2000)


def _template(n_trials: int, n_teams: int, spec: ModelSpec, seed: int) -> tuple[MetricDesign, np.ndarray]:
    """A design with realistic measurement covariances and arm sizes, standardised once.

    Returns the design with its reported covariances on the internal scale, and the covariances the
    spec's measurement model makes of them (what the model's likelihood uses; pooling commutes with
    the linear standardisation).
    """
    from bayes_cmma.studies.synthetic import simulate_summaries

    beta = tuple([1.0, 0.5, -0.3, 0.2, -0.1][:spec.degree])
    data, _ = simulate_summaries(np.random.default_rng(seed), n_trials=n_trials, n_teams=n_teams, beta=beta,
                                 arm_sizes=TEMPLATE_ARM_SIZES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumptionWarning)
        design = metric_design(data, "y", "m", spec.degree)
    std = standardise(design)
    internal = replace(design, z=std.z, S=std.S)
    return internal, measurement.for_spec(internal, spec).S


def _prior_draws(spec: ModelSpec, design: MetricDesign, S: np.ndarray, n: int, seed: int) -> dict[str, np.ndarray]:
    d = design.z.shape[1]
    model = build_model(spec, len(design.teams), Standardised(np.zeros((design.n_trials, d)), S, 1.0, np.eye(d - 1)),
                        design.team_idx)
    with model, warnings.catch_warnings():
        # wanted here: the parameters' prior alone, without the likelihood (a Potential)
        warnings.filterwarnings("ignore", message="The effect of Potentials", category=UserWarning)
        prior = pm.sample_prior_predictive(draws=n, random_seed=seed)
    post = prior["prior"].to_dataset() if hasattr(prior, "to_dataset") else prior.prior
    return {v: post[v].values[0] for v in post.data_vars}


def _scalars(draw: dict[str, np.ndarray], degree: int) -> dict[str, np.ndarray]:
    """The scalar quantities whose ranks are recorded, from (possibly many) draws (leading axis)."""
    chol = unpack_chol(np.asarray(draw["metric_chol"]), degree)
    beta = np.asarray(draw["beta_std"])
    out = {f"beta[{p + 1}]": beta[..., p] for p in range(degree)}
    sd = np.sqrt(np.einsum("...ij,...ij->...i", chol, chol))
    out.update({f"metric_sd[{p + 1}]": sd[..., p] for p in range(degree)})
    out["residual_sd"] = np.asarray(draw["residual_sd"])
    out["kpi_mean[0]"] = np.asarray(draw["kpi_mean"])[..., 0]
    out["alpha[0,1]"] = np.asarray(draw["alpha"])[..., 0, 0]
    if "pi_sd" in draw:  # pooled team effects
        out["pi_mean"] = np.asarray(draw["pi_mean"])
        out["pi_sd"] = np.asarray(draw["pi_sd"])
    if A3_VAR in draw:
        out[A3_VAR] = np.asarray(draw[A3_VAR])
    return out


def _simulate(truth: dict[str, np.ndarray], design: MetricDesign, S: np.ndarray, degree: int,
              rng: np.random.Generator, a3_corr: float = 0.0) -> np.ndarray:
    """Trial summaries z_k from the model's marginal law; the A3 correlation is the truth's if it
    has a prior, else the spec's fixed ``a3_corr``. ``S`` (trial, d, d) is each trial's measurement
    covariance."""
    alpha, eta = truth["alpha"], truth["kpi_mean"]
    chol = unpack_chol(np.asarray(truth["metric_chol"]), degree)
    gamma = chol.T @ np.asarray(truth["beta_std"])  # A chol = [gamma'; chol]
    AL = np.vstack([gamma[None, :], chol])  # (d, P): the latent (y, m) covariance is AL AL'
    G = AL @ AL.T
    G[0, 0] += float(truth["residual_sd"]) ** 2
    rho = float(truth.get(A3_VAR, a3_corr))
    if rho:
        cross, extra = a3_terms(np.asarray(gamma), chol, np.asarray(float(truth["residual_sd"])), np.asarray(rho),
                                np.sqrt)
        G[0, 0] += extra
        G[0, 1:] += cross
        G[1:, 0] += cross
    mu = np.column_stack([eta, alpha])[design.team_idx]
    cov = G[None] + S
    return mu + np.einsum("kij,kj->ki", np.linalg.cholesky(cov), rng.standard_normal(mu.shape))


def _simulate_informative(truth: dict[str, np.ndarray], design: MetricDesign, S: np.ndarray, degree: int,
                          rng: np.random.Generator, kappa: float) -> tuple[np.ndarray, np.ndarray]:
    """Trial summaries whose measurement covariance grows with the trial's latent metric level.

    The latent effects are drawn explicitly (m_k ~ N(alpha_g, Omega), y_k = beta' m_k + pi_g + u_k),
    then S_k is multiplied by exp(2 kappa s_k), s_k = (m_k1 - alpha_g1) / omega_1, and
    z_k ~ N((y_k, m_k), S_k). Returns (z, the S_k used). Assumption A3 is taken to hold.
    """
    alpha, eta = np.asarray(truth["alpha"]), np.asarray(truth["kpi_mean"])
    chol = unpack_chol(np.asarray(truth["metric_chol"]), degree)
    beta = np.asarray(truth["beta_std"])
    g = design.team_idx
    K = len(g)
    m = alpha[g] + rng.standard_normal((K, degree)) @ chol.T
    y = eta[g] + (m - alpha[g]) @ beta + float(truth["residual_sd"]) * rng.standard_normal(K)
    level = (m[:, 0] - alpha[g, 0]) / chol[0, 0]
    S_true = S * np.exp(2.0 * kappa * level)[:, None, None]
    noise = np.einsum("kij,kj->ki", np.linalg.cholesky(S_true), rng.standard_normal((K, degree + 1)))
    return np.column_stack([y, m]) + noise, S_true


def simulations(
    spec: ModelSpec, sims: int, *, n_trials: int = 60, n_teams: int = 4, seed: int = 2018,
    informative_precision: float = 0.0,
) -> Iterator[tuple[int, dict[str, np.ndarray], MetricDesign]]:
    """The data sets of an SBC run, in order: ``(i, true parameters, design the fit is given)``.

    The same prior draws and random stream as :func:`run_sbc` with these arguments, so scripts
    can regenerate a committed run's data without fitting. Everything is on the internal scale: the
    template's covariances, standardised once, and made what the spec's measurement model uses
    (pooled by default).

    With ``informative_precision = kappa`` the data are *not* drawn from the model: each trial's
    measurement covariance grows with its latent metric level (:func:`_simulate_informative`), and
    the fit is given those covariances through the spec's measurement model. A per-trial model is
    then misspecified and a pooled one should stay close to calibrated.
    """
    design, S = _template(n_trials, n_teams, spec, seed)
    label = measurement.for_spec(design, spec).measurement
    priors = _prior_draws(spec, design, S, sims, seed)
    rng = np.random.default_rng(seed)
    for i in range(sims):
        truth = {k: v[i] for k, v in priors.items()}
        if informative_precision:
            z, S_true = _simulate_informative(truth, design, S, spec.degree, rng, informative_precision)
            reported = replace(design, z=z, S=S_true)
            yield i, truth, measurement.for_spec(reported, spec)
        else:
            z = _simulate(truth, design, S, spec.degree, rng, spec.direct_effect_corr)
            yield i, truth, replace(design, z=z, S=S, measurement=label)


def run_sbc(
    spec: ModelSpec,
    *,
    sims: int = 200,
    n_trials: int = 60,
    n_teams: int = 4,
    draws: int = 500,
    tune: int = 500,
    chains: int = 2,
    thin: int = 5,
    bins: int = 10,
    seed: int = 2018,
    informative_precision: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> SBCResult:
    """Simulation-based calibration of the model of ``spec`` on a template of ``n_trials`` trials.

    Ranks use every ``thin``-th draw, L = chains * draws / thin. Uniformity per parameter: a
    chi-square test of the ranks in ``bins`` equal bins. ``informative_precision`` > 0 simulates
    data whose measurement covariance grows with the latent metric level (see :func:`simulations`):
    a robustness check of the measurement model rather than a check of the code.
    """

    t0 = time.perf_counter()
    P = spec.degree
    rows: list[dict] = []
    failed: list[str] = []
    L = None
    for i, truth, sim_design in simulations(spec, sims, n_trials=n_trials, n_teams=n_teams, seed=seed,
                                            informative_precision=informative_precision):
        z, S = sim_design.z, sim_design.S
        teams = len(sim_design.teams)

        def sample(s: ModelSpec, sim_design=sim_design, z=z, S=S, i=i):
            compiled, _ = compiled_model(s, sim_design, Standardised(z, S, 1.0, np.eye(P)))
            return sampling.sample(compiled, draws=draws, tune=tune, chains=chains, cores=min(chains, 2),
                                   seed=seed + i, label=f"SBC simulation {i}", progress_bar=False,
                                   target_accept=float(s.sampler["target_accept"]))

        used = spec.team_effects
        try:
            if used == "auto":  # as fit_design does: centred, and non-centred too if centred diverges
                used = "centred"
                trace = sample(_with_team_effects(spec, "centred"))
                first = int(trace["sample_stats"]["diverging"].values.sum())
                if first and pooled(teams):
                    other = sample(_with_team_effects(spec, "non_centred"))
                    if int(other["sample_stats"]["diverging"].values.sum()) < first:
                        trace, used = other, "non_centred"
            else:
                trace = sample(spec)
        except SamplingError as exc:  # not a posterior: counted and reported, not ranked
            failed.append(f"simulation {i}: {exc}")
            if progress:
                progress(i + 1, sims)
            continue
        post = trace["posterior"].to_dataset()
        n_chains, n_draws = post.sizes["chain"], post.sizes["draw"]
        every = _scalars({k: post[k].values.reshape(-1, *post[k].shape[2:]) for k in post.data_vars}, P)
        div = int(trace["sample_stats"]["diverging"].values.sum())
        true = _scalars({k: np.asarray(v) for k, v in truth.items()}, P)
        for name, values in every.items():
            thinned = values[::thin]
            L = len(thinned)
            rows.append({"sim": i, "parameter": name, "rank": int(np.sum(thinned < true[name])),
                         "z": _z_score(values, true[name]),
                         "ess_bulk": _ess(values.reshape(n_chains, n_draws)), "divergences": div,
                         "team_effects": used})
        if progress:
            progress(i + 1, sims)
    ranks = pd.DataFrame(rows)
    return SBCResult(ranks=ranks, n_draws=int(L), tests=uniformity(ranks, int(L), bins),
                     wall_s=time.perf_counter() - t0, spec=spec, thin=thin,
                     informative_precision=informative_precision, failed=failed)


def _z_score(draws: np.ndarray, truth: float) -> float:
    """(truth - posterior mean) / posterior sd, from all draws."""
    sd = float(np.std(draws, ddof=1))
    return float((truth - np.mean(draws)) / sd) if sd > 0 else float("nan")


def _ess(draws: np.ndarray) -> float:
    """Bulk ESS of one scalar from (chain, draw) draws."""
    from arviz_stats.base import array_stats

    return float(array_stats.ess(draws, chain_axis=-2, draw_axis=-1, method="bulk"))


def _with_team_effects(spec: ModelSpec, team_effects: str) -> ModelSpec:
    from bayes_cmma.fitting.spec import replace_spec

    return replace_spec(spec, team_effects=team_effects)


def uniformity(ranks: pd.DataFrame, n_draws: int, bins: int = 10) -> pd.DataFrame:
    """Per parameter: a chi-square test that the ranks (0..n_draws) are uniform, in ``bins`` equal bins.

    When ``ranks`` has a ``z`` column (truth minus posterior mean, over posterior sd), the two
    moments calibration fixes exactly are tested too: E[z] = 0 (``z_mean``, t-test ``z_mean_p``)
    and E[z^2] = 1 (``z2_mean``, ``z2_p``; up to 1/ESS for Monte Carlo error). A shift or a wrong
    spread of the posterior shows there with more power than in binned ranks. With an ``ess_bulk``
    column, its median and minimum over simulations are reported.
    """
    edges = np.linspace(0, n_draws + 1, bins + 1)
    out = []
    for name, g in ranks.groupby("parameter", sort=False):
        counts = np.histogram(g["rank"], bins=edges)[0]
        expected = len(g) * np.diff(edges) / (n_draws + 1)
        chi2 = float(np.sum((counts - expected) ** 2 / expected))
        row = {"parameter": name, "sims": len(g), "chi2": chi2, "df": bins - 1,
               "p_value": float(stats.chi2.sf(chi2, bins - 1)), "bins": " ".join(map(str, counts))}
        if "z" in g:
            row.update(z_moments(g["z"].to_numpy(dtype=float)))
        if "ess_bulk" in g:
            row.update(ess_median=float(g["ess_bulk"].median()), ess_min=float(g["ess_bulk"].min()))
        out.append(row)
    return pd.DataFrame(out)


def z_moments(z: np.ndarray) -> dict[str, float]:
    """Mean of z and of z^2 over simulations, with two-sided p-values for E[z] = 0 and E[z^2] = 1.

    Both are large-sample t-tests (the standard error from the simulations' own spread), exact
    enough for the 100+ simulations of an SBC run. Simulations with an undefined z are dropped.
    """
    z = z[np.isfinite(z)]
    n = len(z)
    if n == 0:
        return {"z_mean": float("nan"), "z2_mean": float("nan"), "z_mean_p": float("nan"), "z2_p": float("nan")}
    out = {"z_mean": float(np.mean(z)), "z2_mean": float(np.mean(z**2))}
    if n < 3:
        return {**out, "z_mean_p": float("nan"), "z2_p": float("nan")}
    for key, x, target in (("z_mean_p", z, 0.0), ("z2_p", z**2, 1.0)):
        se = float(np.std(x, ddof=1)) / np.sqrt(n)
        out[key] = float(2 * stats.t.sf(abs(np.mean(x) - target) / se, n - 1)) if se > 0 else float("nan")
    return out


def sbc_report(result: SBCResult, command: str = "") -> str:
    """Markdown: settings, the uniformity test per parameter, divergences."""
    r = result.ranks
    per_sim = r.drop_duplicates("sim")["divergences"]
    lines = [
        f"# Simulation-based calibration: model {result.spec.name!r} (degree {result.spec.degree})",
        "",
        (f"{r['sim'].nunique()} simulations, ranks among L = {result.n_draws} thinned posterior draws; "
         f"{result.wall_s:.0f} s." + (f" Command: `{command}`" if command else "")),
        *([f"Data NOT from the model: each trial's measurement covariance grows with its latent metric level "
           f"(informative precision, kappa = {result.informative_precision:g}); the fit uses the spec's measurement "
           f"model ({result.spec.error_covariance}), so this checks its robustness, not the code.", ""]
          if result.informative_precision else []),
        *([f"Simulations whose sampler returned no complete posterior (not ranked): {len(result.failed)}: "
           + "; ".join(result.failed[:3]) + (" ..." if len(result.failed) > 3 else ""), ""]
          if result.failed else []),
        f"Fits with any divergence: {int((per_sim > 0).sum())} of {len(per_sim)} "
        f"(median over all fits: {per_sim.median():.0f} divergent transitions).",
        *([f"Fits where a recorded parameter's bulk ESS is below 100 (chains disagree or stick): "
           f"{int((r.groupby('sim')['ess_bulk'].min() < 100).sum())} of {len(per_sim)}; their ranks are less "
           "trustworthy (`python benchmarks/sbc_rank_checks.py ranks.csv --min-ess 100` repeats the checks "
           "without them)."] if "ess_bulk" in r else []),
        *([f"Team effects (spec `team_effects = \"auto\"`): non-centred kept in "
           f"{int((r.drop_duplicates('sim')['team_effects'] == 'non_centred').sum())} of {len(per_sim)} fits, "
           "after the centred fit diverged."] if result.spec.team_effects == "auto" and "team_effects" in r else []),
        "",
    ]
    t = result.tests
    moments = "z_mean" in t
    if moments:
        lines += ["| parameter | chi2 (df) | p-value | rank counts in 10 equal bins (low to high) "
                  "| mean z (p) | mean z^2 (p) | ESS median (min) |", "|---|---|---|---|---|---|---|"]
    else:
        lines += ["| parameter | chi2 (df) | p-value | rank counts in 10 equal bins (low to high) |",
                  "|---|---|---|---|"]
    for _, row in t.iterrows():
        line = f"| {row['parameter']} | {row['chi2']:.1f} ({row['df']}) | {row['p_value']:.3f} | {row['bins']} |"
        if moments:
            line += (f" {row['z_mean']:+.3f} ({row['z_mean_p']:.3f}) | {row['z2_mean']:.3f} ({row['z2_p']:.3f}) "
                     f"| {row['ess_median']:.0f} ({row['ess_min']:.0f}) |")
        lines.append(line)
    n_tests = len(t) * (3 if moments else 1)
    lines += ["", f"Uniform ranks give p-values spread over (0, 1); with {n_tests} p-values, one below 0.05 is "
              f"expected by chance about {0.05 * n_tests:.1f} times in this table."]
    if moments:
        lines += ["z = (true value - posterior mean) / posterior sd over all draws of a fit; a calibrated model has "
                  "E[z] = 0 and E[z^2] = 1 (up to 1/ESS), which test a shifted or too narrow/wide posterior more "
                  f"directly than binned ranks. Ranks use every {result.thin}-th draw (L = {result.n_draws}); "
                  "ESS is the bulk ESS of all draws."]
    return "\n".join(lines) + "\n"
