"""Simulation-based calibration: the simulator matches the model's marginal covariance, the
uniformity test separates uniform from skewed ranks, a tiny SBC run, and the CLI's bad input."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from bayes_cmma.checks.calibration import (
    _scalars,
    _simulate,
    _template,
    _z_score,
    run_sbc,
    sbc_report,
    uniformity,
    z_moments,
)
from bayes_cmma.cli import main
from bayes_cmma.fitting.model import unpack_chol
from bayes_cmma.fitting.spec import spec_for_degree


def test_simulated_summaries_have_the_model_covariance():
    """z_k - mean ~ N(0, A Omega A' + S_k + diag(sigma_u^2, 0, ...)), the marginal the model integrates."""
    design, S = _template(60, 4, spec_for_degree(2), seed=1)
    K = 40_000
    big = replace(design, z=np.zeros((K, 3)), team_idx=np.zeros(K, dtype=int))
    S_big = np.broadcast_to(S[0], (K, 3, 3))
    truth = {"beta_std": np.array([0.7, -0.4]), "alpha": np.array([[0.3, -1.0]]), "kpi_mean": np.array([2.0]),
             "metric_chol": np.array([1.2, 0.3, 0.8]), "residual_sd": np.array(0.5)}
    z = _simulate(truth, big, S_big, 2, np.random.default_rng(0))
    chol = unpack_chol(truth["metric_chol"], 2)
    AL = np.vstack([(chol.T @ truth["beta_std"])[None], chol])  # A chol = [(chol' beta)'; chol]
    want = AL @ AL.T + S[0]
    want[0, 0] += 0.25
    np.testing.assert_allclose(z.mean(0), [2.0, 0.3, -1.0], atol=4 * np.sqrt(np.diag(want) / K).max())
    np.testing.assert_allclose(np.cov(z, rowvar=False), want, rtol=0.05, atol=0.02)


def test_simulated_summaries_carry_the_a3_correlation():
    """With a prior on the A3 correlation the truth's rho enters the simulator: the covariance is the
    one built from the joint law of (m, u) with Corr(u, m_1) = rho (as in test_model_logp)."""
    design, S = _template(60, 4, spec_for_degree(2), seed=1)
    K = 40_000
    big = replace(design, z=np.zeros((K, 3)), team_idx=np.zeros(K, dtype=int))
    S_big = np.broadcast_to(S[0], (K, 3, 3))
    truth = {"beta_std": np.array([0.7, -0.4]), "alpha": np.array([[0.3, -1.0]]), "kpi_mean": np.array([2.0]),
             "metric_chol": np.array([1.2, 0.3, 0.8]), "residual_sd": np.array(0.9),
             "direct_effect_corr": np.array(0.6)}
    z = _simulate(truth, big, S_big, 2, np.random.default_rng(0))
    chol = unpack_chol(truth["metric_chol"], 2)
    omega = chol @ chol.T
    beta = truth["beta_std"]
    joint = np.zeros((3, 3))  # (m_1, m_2, u)
    joint[:2, :2] = omega
    joint[:2, 2] = joint[2, :2] = 0.6 * 0.9 * omega[:, 0] / np.sqrt(omega[0, 0])
    joint[2, 2] = 0.81
    T = np.array([[beta[0], beta[1], 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    want = T @ joint @ T.T + S[0]
    np.testing.assert_allclose(np.cov(z, rowvar=False), want, rtol=0.05, atol=0.02)
    # the spec's fixed value is used when the truth has none; 0 reproduces the A3 model
    z0 = _simulate({k: v for k, v in truth.items() if k != "direct_effect_corr"}, big, S_big, 2,
                   np.random.default_rng(0), a3_corr=0.6)
    np.testing.assert_allclose(z0, z)


def test_scalars_read_beta_and_the_metric_sds():
    draw = {"beta_std": np.array([1.0, 2.0]), "metric_chol": np.array([2.0, 1.0, 4.0]), "residual_sd": 0.3,
            "kpi_mean": np.array([1.0, 2.0]), "alpha": np.zeros((2, 2))}
    out = _scalars(draw, 2)
    # beta is sampled on the internal scale; chol = [[2, 0], [1, 4]] gives the sds 2 and sqrt(17)
    np.testing.assert_allclose([out["beta[1]"], out["beta[2]"]], [1.0, 2.0])
    np.testing.assert_allclose([out["metric_sd[1]"], out["metric_sd[2]"]], [2.0, np.sqrt(17.0)])
    assert "pi_sd" not in out  # no pooling parameters in the draw: none recorded


def test_uniformity_test_tells_uniform_from_skewed():
    rng = np.random.default_rng(3)
    uniform = pd.DataFrame({"parameter": "a", "rank": rng.integers(0, 101, 400)})
    skewed = pd.DataFrame({"parameter": "b", "rank": np.minimum(rng.integers(0, 101, 400), 60)})
    t = uniformity(pd.concat([uniform, skewed]), n_draws=100).set_index("parameter")
    assert t.loc["a", "p_value"] > 0.01 and t.loc["b", "p_value"] < 1e-6
    assert sum(map(int, t.loc["a", "bins"].split())) == 400


def test_z_moments_are_calibrated_for_exact_posteriors_and_flag_shift_and_spread():
    """Normal-normal conjugate model: theta ~ N(0, 1), y ~ N(theta, 0.5^2) -> posterior N(0.8 y, 0.2).

    With exact posterior draws E[z] = 0 and E[z^2] = 1 (up to 1/ESS); a posterior shifted by half an
    sd, or one 30% too narrow, must be flagged.
    """
    rng = np.random.default_rng(11)
    n, draws = 400, 400
    theta = rng.standard_normal(n)
    y = theta + 0.5 * rng.standard_normal(n)
    mean, sd = 0.8 * y, np.sqrt(0.2)
    exact = np.array([_z_score(mean[i] + sd * rng.standard_normal(draws), theta[i]) for i in range(n)])
    shifted = np.array([_z_score(mean[i] + 0.5 * sd + sd * rng.standard_normal(draws), theta[i]) for i in range(n)])
    narrow = np.array([_z_score(mean[i] + 0.7 * sd * rng.standard_normal(draws), theta[i]) for i in range(n)])
    good = z_moments(exact)
    assert abs(good["z_mean"]) < 0.15 and abs(good["z2_mean"] - 1) < 0.2
    assert good["z_mean_p"] > 0.01 and good["z2_p"] > 0.01
    assert z_moments(shifted)["z_mean_p"] < 1e-4
    bad = z_moments(narrow)
    assert bad["z2_mean"] > 1.6 and bad["z2_p"] < 1e-4


def test_z_moments_without_any_defined_z_are_undefined_not_an_error():
    out = z_moments(np.array([np.nan, np.nan]))
    assert all(np.isnan(v) for v in out.values())


def test_z_score_of_known_draws():
    assert _z_score(np.array([1.0, 2.0, 3.0]), 4.0) == pytest.approx(2.0)  # (4 - 2) / sd 1
    assert np.isnan(_z_score(np.ones(5), 1.0))  # no spread: undefined, not inf


@pytest.mark.mcmc
def test_tiny_sbc_run_records_a_rank_per_parameter_and_simulation():
    res = run_sbc(spec_for_degree(1), sims=3, n_trials=20, n_teams=4, draws=100, tune=100, thin=2, seed=5)
    assert res.n_draws == 100
    assert set(res.ranks["sim"]) == {0, 1, 2}
    assert set(res.ranks["parameter"]) == {"beta[1]", "metric_sd[1]", "residual_sd", "kpi_mean[0]", "alpha[0,1]",
                                           "pi_mean", "pi_sd"}
    assert res.ranks["rank"].between(0, 100).all()
    assert np.isfinite(res.ranks["z"]).all() and (res.ranks["ess_bulk"] > 0).all()
    assert {"z_mean", "z2_p", "ess_median"} <= set(res.tests.columns)
    report = sbc_report(res)
    assert "| mean z (p) | mean z^2 (p) | ESS median (min) |" in report
    low = int((res.ranks.groupby("sim")["ess_bulk"].min() < 100).sum())
    assert f"bulk ESS is below 100 (chains disagree or stick): {low} of 3" in report


@pytest.mark.parametrize(("args", "message"), [
    (["--sims", "0"], "--sims must be a positive integer"),
    (["--trials", "5", "--model", "cubic"], "--trials 5 is too few for degree 3 with 4 teams"),
    (["--model", "nonsense"], "nonsense"),
    (["--informative-precision", "-1"], "--informative-precision must be a number >= 0, got -1.0"),
    (["--informative-precision", "nan"], "--informative-precision must be a number >= 0, got nan"),
])
def test_calibrate_bad_input(args, message, tmp_path, capsys):
    code = main(["calibrate", *args, "--out", str(tmp_path / "sbc")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "sbc").exists()


@pytest.mark.mcmc
def test_calibrate_cli_writes_ranks_tests_and_histograms(tmp_path, capsys):
    out = tmp_path / "sbc"
    assert main(["calibrate", "--model", "linear", "--sims", "2", "--trials", "12", "--informative-precision",
                 "0.5", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ranks.csv", "ranks.png", "summary.md", "uniformity.csv"]
    text = capsys.readouterr().out
    assert "Simulation-based calibration: model 'linear'" in text
    assert "Data NOT from the model" in text and "kappa = 0.5" in text
    assert (out / "ranks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
