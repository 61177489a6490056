"""Why the Bayesian model behaves as it does in the simulation study (README, issue 3 findings).

Three experiments on data sets of the built-in studies (same seeds as ``bayes-cmma simulate``):

1. sigma_u: Table 1, N_per = 1000, replications 0-19. Posterior sd of beta with the default
   residual_sd prior and with residual_sd pinned near 0 (HalfNormal(0.001)); the DGP's sigma_u is 0.
2. cubic: Table 3's linear DRF (K = 100, N_per = 1000), replications 0-7, fitted with degree 3:
   default model; a 10x wider prior on beta_std; the same DGP with equal team means
   (tau_team = 1, 1, 1). Then the cubic model on data simulated from the model itself
   (Gaussian latent effects, beta = (1, 0.5, -0.3)), 4 data sets.
3. small K: ``small_k`` K = 10, replications 0-2: divergences and where they sit (metric_sd) at
   target_accept 0.9 and 0.99.

Run: ``python benchmarks/study_diagnostics.py`` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

import bayes_cmma as bc
from bayes_cmma.data import metric_design
from bayes_cmma.fitting import fit_design
from bayes_cmma.simulate import simulate_units
from bayes_cmma.spec import parse_spec, replace_spec, spec_for_degree
from bayes_cmma.study import Setting, builtin_study, replication_seed
from bayes_cmma.synthetic import simulate_summaries


def design(study, setting: Setting, rep: int, degree: int):
    sim = simulate_units(setting.sim, np.random.default_rng(replication_seed(study, setting, rep).spawn(2)[0]))
    trials, cov = bc.summarize_units(sim.units, kpi="y", metrics=["m"], degree=degree)
    return metric_design(bc.read_trials(trials, cov), "y", "m", degree, warn_filled=False)


def with_prior(spec, name: str, prior: dict):
    raw = spec.to_dict()
    raw["priors"][name] = prior
    return parse_spec(raw, source=f"{spec.source} with {name} = {prior}")


def fit(d, spec, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bc.ConvergenceWarning)
        return fit_design(d, spec, seed=1, check_convergence=False, **kw)


def sigma_u() -> None:
    st = builtin_study("table1")
    s = st.settings[2]
    base = spec_for_degree(1)
    pinned = with_prior(base, "residual_sd", {"dist": "halfnormal", "sigma": 0.001})
    sds = {"default": [], "pinned": []}
    for rep in range(20):
        d = design(st, s, rep, 1)
        for name, spec in (("default", base), ("pinned", pinned)):
            sds[name].append(float(fit(d, spec).beta.std()))
    print(f"1. sigma_u ({s.label}, 20 replications): mean posterior sd of beta "
          f"{np.mean(sds['default']):.4f} with the default prior, {np.mean(sds['pinned']):.4f} with sigma_u ~ 0")


def cubic() -> None:
    st = builtin_study("table3")
    s = st.settings[0]
    base = spec_for_degree(3)
    wide = with_prior(base, "beta_std", {"dist": "normal", "mu": 0.0, "sigma": 20.0})
    equal = Setting("equal tau_team", dataclasses.replace(s.sim, tau_team=(1.0, 1.0, 1.0)))
    runs = {"default": (s, base), "10x wider beta prior": (s, wide), "equal tau_team": (equal, base)}
    print(f"2. cubic fits to the linear DRF 4m ({s.label}: K = 100, N_per = 1000), 8 replications, mean beta:")
    for name, (setting, spec) in runs.items():
        means = [fit(design(st, setting, rep, 3), spec).beta.mean(("chain", "draw")).values for rep in range(8)]
        print(f"   {name:>22}: ({', '.join(f'{v:.4f}' for v in np.mean(means, axis=0))})")
    means = []
    for rep in range(4):
        data, _ = simulate_summaries(np.random.default_rng(100 + rep), n_trials=100, n_teams=3,
                                     beta=(1.0, 0.5, -0.3), se_range=(0.1, 0.3))
        means.append(fit(metric_design(data, "y", "m", 3, warn_filled=False), base).beta.mean(("chain", "draw")).values)
    print(f"   model-consistent data, true (1, 0.5, -0.3), 4 data sets: "
          f"({', '.join(f'{v:.3f}' for v in np.mean(means, axis=0))})")


def small_k() -> None:
    st = builtin_study("small_k")
    s = st.settings[0]
    print(f"3. {s.label}, replications 0-2: divergences and metric_sd (median; median at divergences)")
    for rep in range(3):
        d = design(st, s, rep, 1)
        for ta in (0.9, 0.99):
            f = fit(d, replace_spec(spec_for_degree(1), sampler={"target_accept": ta}))
            div = f.posterior["sample_stats"]["diverging"].values.astype(bool)
            sd = f.posterior["posterior"]["metric_sd"].values[..., 0]
            at_div = f"{np.median(sd[div]):.2f}" if div.any() else "-"
            print(f"   rep {rep}, target_accept {ta}: {int(div.sum())} divergences; metric_sd {np.median(sd):.2f}; "
                  f"at divergences {at_div}; beta {float(f.beta.mean()):.3f} (sd {float(f.beta.std()):.3f})")


if __name__ == "__main__":
    # PyTensor's C backend looks for BLAS when compiling; bayes_cmma compiles with numba (nutpie).
    warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS", category=UserWarning)
    sigma_u()
    cubic()
    small_k()
