"""Model-checking quantities (bayes_cmma.checks.checking) against closed forms, without sampling."""

import numpy as np
import pytest
from fakes import fake_fit, point_tree
from scipy import stats

from bayes_cmma.checks import checking
from bayes_cmma.errors import BayesCMMAError
from bayes_cmma.fitting.spec import replace_spec, spec_for_degree
from bayes_cmma.studies.synthetic import simulate_summaries

RESIDUAL_SD = 0.3  # simulate_summaries' default


@pytest.fixture(scope="module")
def big():
    """2000 model-consistent trials and the point-mass posterior at the true parameters."""
    data, truth = simulate_summaries(np.random.default_rng(3), n_trials=2000, n_teams=4, beta=(2.0, -1.0))
    return data, truth, point_tree(data, "y", "m", truth, RESIDUAL_SD)


@pytest.mark.parametrize("spec", [spec_for_degree(1), spec_for_degree(2),
                                  replace_spec(spec_for_degree(2), direct_effect_corr=0.5)],
                         ids=["linear", "quadratic", "quadratic-a3"])
def test_original_scale_loglik_equals_the_stored_standardised_one(synthetic, spec):
    """checking works on the original scale; the fit stores the standardised density minus its
    log-Jacobian. Both must be the same number for every draw and trial."""
    data, _ = synthetic
    fit = fake_fit(data, "y", "m", spec)
    ours = checking.pointwise_loglik(fit)
    stored = fit.posterior["log_likelihood"]["trial_ate"]
    assert ours.dims == ("chain", "draw", "trial")
    np.testing.assert_allclose(ours.values, stored.values, rtol=1e-10, atol=1e-10)


def test_block_density_is_the_marginal_normal(synthetic):
    data, truth = synthetic
    tree = point_tree(data, "y", "m", truth, RESIDUAL_SD, draws=2)
    ll = checking.pointwise_loglik(tree, quantities=[0, 1]).isel(chain=0, draw=0).values
    beta, alpha, pi = truth["beta"], truth["alpha"], truth["pi"]
    omega = truth["omega_chol"] @ truth["omega_chol"].T
    A = np.vstack([beta, np.eye(2)])
    G = A @ omega @ A.T
    G[0, 0] += RESIDUAL_SD**2
    z = tree["observed_data"]["trial_ate"].values
    S = tree["observed_data"]["measurement_cov"].values
    teams = list(tree["posterior"]["team"].values)
    for k in (0, 7, 55):
        g = teams.index(tree["constant_data"]["team"].values[k])
        mean = np.array([beta @ alpha[g] + pi[g], alpha[g, 0]])
        cov = (G + S[k])[:2, :2]
        assert ll[k] == pytest.approx(stats.multivariate_normal(mean, cov).logpdf(z[k, :2]), rel=1e-10)


def test_pit_is_uniform_and_ellipses_cover_at_the_truth(big):
    """With the posterior at the true parameters, each observed ATE is a draw from its predictive law."""
    _, _, tree = big
    pit = checking.pit(tree)
    assert pit.dims == ("trial", "quantity") and ((pit > 0) & (pit < 1)).all()
    for q in pit["quantity"].values:
        assert stats.kstest(pit.sel(quantity=q).values, "uniform").pvalue > 0.001, q
    mom = checking.predictive_moments(tree)
    resid = tree["observed_data"]["trial_ate"].values - mom["mean"].values
    maha = np.einsum("ki,kij,kj->k", resid, np.linalg.inv(mom["cov"].values), resid)
    inside = np.mean(maha <= stats.chi2.ppf(0.94, resid.shape[1]))
    assert abs(inside - 0.94) < 0.02  # binomial sd with 2000 trials: 0.005


def test_latent_effects_closed_form_and_shrinkage(big, synthetic):
    _data, truth, tree = big
    lat = checking.latent_effects(tree)
    z = tree["observed_data"]["trial_ate"].values
    S = tree["observed_data"]["measurement_cov"].values
    beta, alpha, pi = truth["beta"], truth["alpha"], truth["pi"]
    omega = truth["omega_chol"] @ truth["omega_chol"].T
    A = np.vstack([beta, np.eye(2)])
    G = A @ omega @ A.T
    G[0, 0] += RESIDUAL_SD**2
    teams = list(tree["posterior"]["team"].values)
    for k in (0, 11):
        g = teams.index(tree["constant_data"]["team"].values[k])
        mu = np.concatenate([[beta @ alpha[g] + pi[g]], alpha[g]])
        K = G @ np.linalg.inv(G + S[k])
        np.testing.assert_allclose(lat["mean"].values[k], mu + K @ (z[k] - mu), rtol=1e-9)
        np.testing.assert_allclose(lat["sd"].values[k], np.sqrt(np.diag(G - K @ G)), rtol=1e-7)
    # shrinkage helps: the posterior mean is closer to the true effects than the noisy observation
    true = np.column_stack([truth["y"], truth["m"]])
    assert np.mean((lat["mean"].values - true) ** 2) < 0.8 * np.mean((z - true) ** 2)


def test_latent_effects_follow_the_data_when_measurement_error_vanishes(synthetic):
    data, truth = synthetic
    tree = point_tree(data, "y", "m", truth, RESIDUAL_SD, draws=2)
    tree["observed_data"]["measurement_cov"] = tree["observed_data"]["measurement_cov"] * 1e-10
    lat = checking.latent_effects(tree)
    np.testing.assert_allclose(lat["mean"].values, tree["observed_data"]["trial_ate"].values, atol=1e-4)
    assert float(lat["sd"].max()) < 1e-4


def test_loo_flags_trials_where_pareto_smoothing_fails(synthetic):
    data, _ = synthetic
    fit = fake_fit(data, "y", "m", 2, draws=200)
    tree = fit.posterior.copy()
    ll = tree["log_likelihood"]["trial_ate"].copy()
    ll[:, :, 3] = -5.0  # every draw the same: PSIS cannot fit a tail ("All tail values are the same")
    tree["log_likelihood"] = tree["log_likelihood"].to_dataset().assign(trial_ate=ll)
    res = checking.loo(tree)
    k = res.pareto_k.values
    assert np.isinf(k[3]) and np.all(np.isfinite(np.delete(k, 3)))
    assert np.isfinite(res.elpd) and res.elpd_i.values[3] == pytest.approx(-5.0)


def test_inputs_must_be_a_fit_posterior(synthetic):
    with pytest.raises(BayesCMMAError, match="MetricFit or its posterior"):
        checking.pit(np.zeros(3))
    data, truth = synthetic
    tree = point_tree(data, "y", "m", truth, RESIDUAL_SD)
    with pytest.raises(BayesCMMAError, match="no 'observed_data' group"):
        checking.pit(tree.drop_nodes("observed_data"))
