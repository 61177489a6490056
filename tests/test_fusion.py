"""Borrowing from observational slopes (the joint model's commensurate prior): the prior's moments,
a small fit that borrows when the logs agree and lets go when they do not, bad input."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pymc as pm
import pytest
from cli_output import unwrap

import bayes_cmma as bc
from bayes_cmma.checks.ranking_calibration import candidate_truth, simulate_candidates
from bayes_cmma.cli import main
from bayes_cmma.errors import BayesCMMAError, DataError
from bayes_cmma.fitting.bayes import resolve_spec
from bayes_cmma.fitting.joint import build_joint_model, standardise_joint
from bayes_cmma.fitting.spec import replace_spec
from bayes_cmma.inputs.data import joint_design

TRUTH = candidate_truth(0.8, "spread")


@pytest.fixture(scope="module")
def data():
    return simulate_candidates(np.random.default_rng(5), TRUTH, metric_corr=0.8, n_trials=30)


def test_the_prior_of_the_slopes_is_centred_on_the_observational_ones(data):
    """b_j = o_j + sqrt(kappa^2 + v_j^2) z_j: mean o_j, variance E[kappa^2] + v_j^2 = s^2 + v_j^2."""
    design = joint_design(data, "y", TRUTH.metrics)
    std = standardise_joint(design)
    o, v, s = np.array([0.9, -0.4, 0.2]), np.array([0.01, 0.3, 0.05]), 0.25
    model = build_joint_model(resolve_spec(1), 4, std, design.team_idx, None, "observational", None, (o, v, s))
    n = 40_000
    draws = pm.draw([model["beta_std"], model["observational_bias_sd"]], draws=n, random_seed=3)
    beta, kappa = draws
    se_mean = np.sqrt(s**2 + v**2) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(beta.mean(axis=0) - o), 5 * se_mean)
    var = beta.var(axis=0)
    # the sample variance of a scale mixture of normals: sd about sqrt((E[x^4] - var^2) / n), E[x^4] = 3 E[(k^2+v^2)^2]
    fourth = 3 * np.mean((kappa[:, None] ** 2 + v**2) ** 2, axis=0)
    np.testing.assert_array_less(np.abs(var - (s**2 + v**2)), 5 * np.sqrt((fourth - var**2) / n))
    assert abs(np.mean(kappa**2) - s**2) < 5 * np.std(kappa**2) / np.sqrt(n)


def test_the_harmonic_bias_prior_is_flat_on_the_bias_variance(data):
    """kappa^2 ~ Uniform(0, s^2): E[kappa^2] = s^2 / 2, P(kappa^2 < s^2 / 4) = 1/4, and Var(b_j) = s^2 / 2 + v_j^2."""
    design = joint_design(data, "y", TRUTH.metrics)
    std = standardise_joint(design)
    o, v, s = np.array([0.9, -0.4, 0.2]), np.array([0.01, 0.3, 0.05]), 1.5
    model = build_joint_model(resolve_spec(1), 4, std, design.team_idx, None, "observational", None,
                              (o, v, s, "harmonic"))
    n = 40_000
    beta, kappa = pm.draw([model["beta_std"], model["observational_bias_sd"]], draws=n, random_seed=3)
    k2 = kappa**2
    assert k2.max() <= s**2
    assert abs(k2.mean() - s**2 / 2) < 5 * (s**2 / np.sqrt(12)) / np.sqrt(n)
    assert abs(np.mean(k2 < s**2 / 4) - 0.25) < 5 * np.sqrt(0.25 * 0.75 / n)
    fourth = 3 * np.mean((k2[:, None] + v**2) ** 2, axis=0)
    var = beta.var(axis=0)
    np.testing.assert_array_less(np.abs(var - (s**2 / 2 + v**2)), 5 * np.sqrt((fourth - var**2) / n))


@pytest.mark.mcmc
def test_borrows_when_the_logs_agree_and_lets_go_when_they_do_not(data):
    spec = replace_spec(resolve_spec(1), team_effects="non_centred")
    kw = dict(at=TRUTH.at, elasticity_prior="observational", model=spec, seed=4, draws=500, tune=500, chains=2,
              cores=1)
    agree = {m: (float(b), 0.005) for m, b in zip(TRUTH.metrics, TRUTH.beta, strict=True)}
    far = {m: (float(b) + 5.0, 0.005) for m, b in zip(TRUTH.metrics, TRUTH.beta, strict=True)}
    with warnings.catch_warnings():  # a short test fit may warn about R-hat; the assertions check the numbers
        warnings.simplefilter("ignore", bc.ConvergenceWarning)
        near_fit = bc.fit_joint(data, "y", TRUTH.metrics, observational=agree, **kw)
        far_fit = bc.fit_joint(data, "y", TRUTH.metrics, observational=far, **kw)
    near = near_fit.beta
    # logs that agree with the truth: the slopes sit near it (the logs are far more precise than 30 trials)
    np.testing.assert_allclose(near.mean(("chain", "draw")).values, TRUTH.beta, atol=0.15)
    # logs 5 off: the bias scale grows and the trials, not the logs, place the slopes
    far_beta = far_fit.beta.mean(("chain", "draw")).values
    assert np.all(np.abs(far_beta - (TRUTH.beta + 5.0)) > 2.5), far_beta
    kappa = far_fit.posterior["posterior"]["observational_bias_sd"].median(("chain", "draw")).values
    kappa_near = near_fit.posterior["posterior"]["observational_bias_sd"].median(("chain", "draw")).values
    assert np.all(kappa > 3 * kappa_near), (kappa, kappa_near)
    assert far_fit.posterior.attrs["elasticity_prior"] == "observational"
    assert "m1=6 (se 0.005)" in far_fit.posterior.attrs["observational_slopes"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"elasticity_prior": "observational"}, BayesCMMAError, "give observational="),
        ({"observational": {"m1": (1, 0.1)}}, BayesCMMAError, "only with elasticity_prior='observational', not "
                                                              "'pooled'"),
        ({"elasticity_prior": "observational", "observational": {"m1": (1, 0.1)}}, DataError,
         r"no observational slope for metric\(s\) 'm2', 'm3'"),
        ({"elasticity_prior": "observational", "observational": {"m1": (1, 0.1), "m2": (1, 0), "m3": (1, 1)}},
         DataError, "observational slope of 'm2': .* standard error positive"),
        ({"elasticity_prior": "observational", "observational": {"m1": (1, 1), "m2": (1, 1), "m3": (1, 1)},
          "observational_bias_scale": 0.0}, BayesCMMAError, "observational_bias_scale must be a positive number"),
        ({"elasticity_prior": "observational", "observational": {"m1": (1, 1), "m2": (1, 1), "m3": (1, 1)},
          "observational_bias_prior": "cauchy"}, BayesCMMAError,
         "observational_bias_prior must be one of halfnormal, harmonic, got 'cauchy'"),
        ({"observational_bias_prior": "harmonic"}, BayesCMMAError,
         "their bias prior and parametrization are used only with elasticity_prior='observational', not 'pooled'"),
        ({"observational_parametrization": "centred"}, BayesCMMAError,
         "their bias prior and parametrization are used only with elasticity_prior='observational', not 'pooled'"),
        ({"elasticity_prior": "observational", "observational": {"m1": (1, 1), "m2": (1, 1), "m3": (1, 1)},
          "observational_parametrization": "center"}, BayesCMMAError,
         "observational_parametrization must be one of non_centred, centred, got 'center'"),
    ],
)
def test_bad_input_stops_before_sampling(data, kwargs, error, message):
    with pytest.raises(error, match=message):
        bc.fit_joint(data, "y", TRUTH.metrics, at=TRUTH.at, **kwargs)


def test_a_table_of_degree_two_is_refused(data):
    table = pd.DataFrame({"team": "all", "metric": ["m1", "m1"], "power": [1, 2], "estimate": [1.0, 0.1],
                          "std_error": [0.1, 0.1], "cov_power_1": [0.01, 0.0], "cov_power_2": [0.0, 0.01]})
    with pytest.raises(DataError, match="regresses the KPI on powers of 'm1' up to 2; .* --degree 1"):
        bc.fit_joint(data, "y", TRUTH.metrics, at=TRUTH.at, elasticity_prior="observational", observational=table)


def test_teams_slopes_are_combined_by_inverse_variance():
    from bayes_cmma.inputs.observational import observational_slopes

    table = pd.DataFrame({"team": ["a", "b", "a", "b"], "metric": ["m1", "m1", "m2", "m2"], "power": 1,
                          "estimate": [1.0, 2.0, 0.5, 0.5], "std_error": [0.1, 0.2, 0.1, 0.1]})
    est, se = observational_slopes(table, ["m1", "m2"])
    np.testing.assert_allclose(est, [(1 / 0.01 + 2 / 0.04) / (1 / 0.01 + 1 / 0.04), 0.5])
    np.testing.assert_allclose(se, [(1 / 0.01 + 1 / 0.04) ** -0.5, 0.1 / np.sqrt(2)])


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--observational", "obs.csv"], "--joint observational and --observational FILE go together"),
     (["--joint", "observational"], "--joint observational and --observational FILE go together")],
)
def test_command_line_pairs_the_prior_and_its_file(tmp_path, capsys, extra, message, data):
    trials = tmp_path / "t.csv"
    ds = data.dataset
    pd.DataFrame([{"trial": t, "team": g, "quantity": q, "estimate": float(ds["estimate"].sel(trial=t, quantity=q)),
                   "std_error": float(ds["std_error"].sel(trial=t, quantity=q))}
                  for t, g in zip(ds["trial"].values, ds["team"].values, strict=True)
                  for q in ds["quantity"].values]).to_csv(trials, index=False)
    out = tmp_path / "out"
    argv = ["fit", str(trials), "--kpi", "y", "--metric", "m1", "--metric", "m2", "--metric", "m3", "--degree", "1",
            "--kpi-baseline", "10", *[f"--at={m}={v}" for m, v in TRUTH.at.items()], "--out", str(out)]
    if extra[0] == "--observational":
        argv += ["--joint", "pooled"]
    code = main([*argv, *[str(tmp_path / e) if e.endswith(".csv") else e for e in extra]])
    err = unwrap(capsys.readouterr().err)
    assert code == 2 and re.search(message, err), err
    assert not out.exists()
