"""Generate the embedded example data (run: ``python -m bayes_cmma.datasets.generate_example``).

Simulated unit-level logs of 190 search A/B tests run by 8 teams, summarised per trial with
:func:`bayes_cmma.inputs.summarizer.summarize_units`. Per trial k (team g) and user i in arm T_i:

* latent user relevance z1, z2, z3 ~ N(0, 1); metric levels are a search product's small per-user
  values, shifted additively per trial and by the treatment (as in the paper's DGP)::

      ndcg_i = 0.0020 + phi_k + 0.0004 z1_i + tau_k T_i
      mrr_i  = 0.0015 + 0.75 phi_k + 0.0003 (0.85 z1_i + 0.53 z2_i) + tau_mrr_k T_i
      map_i  = 0.0018 + 0.9 phi_k + 0.00035 (0.70 z1_i + 0.71 z3_i) + tau_map_k T_i

  with trial baselines phi_k ~ N(0, 0.0004) (trials run on segments with different levels),
  tau_k = team mean (N(5e-5, 4e-5)) + N(0, 8e-5), tau_mrr_k = 0.8 tau_k + N(0, 3e-5),
  tau_map_k = 0.6 tau_k + N(0, 4e-5);
* GMV per user ``gmv_i = 45 + theta_k + mu(ndcg_i) + gamma_g T_i + 6 (0.5 z1_i + 0.87 e_i)``
  with the true DRF ``mu(m) = 8000 m - 4e5 m^2`` (cubic term 0), theta_k ~ N(0, 2),
  team direct effects gamma_g ~ N(0, 0.15), e_i ~ N(0, 1).

Only ndcg acts on GMV; mrr and map are correlated proxies, so a good analysis should rank ndcg
first. Arm sizes are 1,500-6,000 users, so trial ATEs carry real measurement error with strongly
correlated KPI and metric errors (the z1 term).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bayes_cmma.inputs.summarizer import summarize_units

SEED = 20201
TEAMS = ["ranking", "query", "ads", "recs", "mobile", "web", "personalize", "infra"]
N_TRIALS = 190
TRUE_BETA = (8000.0, -4.0e5, 0.0)


def simulate_units(seed: int = SEED, n_trials: int = N_TRIALS, multiplicative: bool = False) -> pd.DataFrame:
    """Unit-level table: trial, team, treated, gmv, ndcg, mrr, map.

    ``multiplicative=True`` gives the variant used to probe misspecification
    (``benchmarks/misspecification.py``): trial baselines and treatment effects multiply the metric
    (log-normal, ``ndcg_i = 0.002 exp(phi_k + 0.35 z1_i + tau_k T_i)``, phi_k ~ N(0, 0.5),
    tau_k ~ N(0.02, 0.02) + N(0, 0.04)), so a trial's metric effects and their standard errors grow
    together. The shipped example is additive.
    """
    rng = np.random.default_rng(seed)
    team_p = np.array([0.2, 0.16, 0.14, 0.12, 0.11, 0.1, 0.09, 0.08])
    team = rng.choice(len(TEAMS), size=n_trials, p=team_p / team_p.sum())
    gamma = rng.normal(0.0, 0.15, len(TEAMS))
    phi = rng.normal(0.0, 0.0004, n_trials)
    tau = rng.normal(5e-5, 4e-5, len(TEAMS))[team] + rng.normal(0.0, 8e-5, n_trials)
    tau_mrr = 0.8 * tau + rng.normal(0.0, 3e-5, n_trials)
    tau_map = 0.6 * tau + rng.normal(0.0, 4e-5, n_trials)
    theta = rng.normal(0.0, 2.0, n_trials)
    n_arm = rng.integers(1500, 6001, size=(n_trials, 2))
    sizes = n_arm.sum(axis=1)
    k = np.repeat(np.arange(n_trials), sizes)
    treated = np.concatenate([np.repeat([0, 1], n) for n in n_arm])
    z1, z2, z3, e = rng.standard_normal((4, k.size))
    if multiplicative:
        phi_m = rng.normal(0.0, 0.5, n_trials)
        tau_m = rng.normal(0.02, 0.02, len(TEAMS))[team] + rng.normal(0.0, 0.04, n_trials)
        ndcg = 0.0020 * np.exp(phi_m[k] + 0.35 * z1 + tau_m[k] * treated)
        mrr = 0.0015 * np.exp(phi_m[k] + 0.35 * (0.85 * z1 + 0.53 * z2) + 0.8 * tau_m[k] * treated)
        map_ = 0.0018 * np.exp(phi_m[k] + 0.35 * (0.70 * z1 + 0.71 * z3) + 0.6 * tau_m[k] * treated)
    else:
        ndcg = 0.0020 + phi[k] + 0.0004 * z1 + tau[k] * treated
        mrr = 0.0015 + 0.75 * phi[k] + 0.0003 * (0.85 * z1 + 0.53 * z2) + tau_mrr[k] * treated
        map_ = 0.0018 + 0.9 * phi[k] + 0.00035 * (0.70 * z1 + 0.71 * z3) + tau_map[k] * treated
    mu = TRUE_BETA[0] * ndcg + TRUE_BETA[1] * ndcg**2 + TRUE_BETA[2] * ndcg**3
    gmv = 45.0 + theta[k] + mu + gamma[team[k]] * treated + 6.0 * (0.5 * z1 + 0.87 * e)
    return pd.DataFrame(
        {
            "trial": np.char.add("T", np.char.zfill((k + 1).astype(str), 3)),
            "team": np.asarray(TEAMS)[team[k]],
            "treated": treated,
            "gmv": gmv,
            "ndcg": ndcg,
            "mrr": mrr,
            "map": map_,
        }
    )


def main(out_dir: Path | None = None) -> None:
    out_dir = Path(__file__).parent if out_dir is None else Path(out_dir)
    units = simulate_units()
    trials, cov = summarize_units(units, kpi="gmv", metrics=["ndcg", "mrr", "map"], degree=3)
    trials.to_csv(out_dir / "example_trials.csv", index=False, float_format="%.10g")
    cov.to_csv(out_dir / "example_cov.csv", index=False, float_format="%.10g")
    control = units[units["treated"] == 0]
    at = {m: float(f"{control[m].mean():.3g}") for m in ("ndcg", "mrr", "map")}
    meta = [
        "# Metadata of the embedded example (written by generate_example.py; do not edit by hand).",
        'kpi = "gmv"',
        'metrics = ["ndcg", "mrr", "map"]',
        f"kpi_baseline = {float(f'{control["gmv"].mean():.4g}')}",
        "",
        "[at]  # current per-user metric levels (control-arm averages)",
        *(f"{m} = {v}" for m, v in at.items()),
        "",
        "[generator]",
        f"seed = {SEED}",
        f"n_trials = {N_TRIALS}",
        f"n_units = {len(units)}",
        f"true_drf_ndcg = [{', '.join(f'{b:g}' for b in TRUE_BETA)}]",
        'note = "simulated: only ndcg acts on gmv; mrr and map are correlated proxies"',
    ]
    (out_dir / "example.toml").write_text("\n".join(meta) + "\n", encoding="utf-8")
    print(f"wrote {len(trials)} trial rows, {len(cov)} covariance rows, {len(units)} units to {out_dir}")


if __name__ == "__main__":
    main()
