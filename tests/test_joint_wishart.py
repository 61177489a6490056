"""The joint model's inverse-Wishart latent prior (``fit_joint(latent_prior="wishart")``): its prior
against the inverse-Wishart's closed-form marginals, the slopes it derives, the trial density it
shares with the other latent priors, one fit whose slopes follow the sample ones, and bad input."""

import numpy as np
import pymc as pm
import pytest
from scipy import stats

import bayes_cmma as bc
from bayes_cmma.checks.ranking_calibration import candidate_truth, simulate_candidates, within_team_slopes
from bayes_cmma.errors import BayesCMMAError
from bayes_cmma.fitting.joint import WISHART_SCALE, build_joint_model, standardise_joint
from bayes_cmma.fitting.model import unpack_chol
from bayes_cmma.fitting.spec import replace_spec, spec_for_degree
from bayes_cmma.inputs.data import joint_design

TRUTH = candidate_truth(0.3, "near_tie")


@pytest.fixture(scope="module")
def table():
    return simulate_candidates(np.random.default_rng(3), TRUTH, metric_corr=0.3, n_trials=20)


def _model(table, elasticity_prior="independent"):
    design = joint_design(table, "y", TRUTH.metrics)
    spec = replace_spec(spec_for_degree(1), team_effects="non_centred")
    return build_joint_model(spec, len(design.teams), standardise_joint(design), design.team_idx,
                             elasticity_prior=elasticity_prior, latent_prior="wishart"), design


def _latent_cov(chol_packed, beta, residual_sd, J):
    """G over (m_1..m_J, y) from the stored metric factor, marginal slopes and residual sd, per draw."""
    C = np.stack([unpack_chol(c, J) for c in chol_packed])
    sigma = C @ np.swapaxes(C, 1, 2)
    c = np.diagonal(sigma, axis1=1, axis2=2) * beta  # Cov(m_j, y) = beta_j Var(m_j)
    w = np.linalg.solve(C, c[..., None])[..., 0]  # C^-1 c = C' gamma
    var_y = (w * w).sum(axis=1) + residual_sd**2
    G = np.zeros((len(beta), J + 1, J + 1))
    G[:, :J, :J], G[:, :J, J], G[:, J, :J], G[:, J, J] = sigma, c, c, var_y
    return G


def test_the_prior_is_inverse_wishart_with_uniform_correlations(table):
    """Drawn through the model, G has the IW(J + 2, s I) marginals: every variance InvGamma(1, s / 2)
    (a 1 x 1 block of IW(nu, s) over p variables is IW(nu - p + 1, s)), every correlation uniform on
    (-1, 1) (a 2 x 2 block has nu - p + 2 = 3 degrees of freedom), and a marginal slope G_yj / G_jj
    given G_jj normal around 0 with variance G_y|j / s, whose standardised form is Student's t with
    3 degrees of freedom times sqrt(1 / 3). Kolmogorov-Smirnov against each closed form, 20,000 draws."""
    model, _ = _model(table)
    names = ["metric_chol", "beta_std", "residual_sd"]
    with model:
        draws = dict(zip(names, pm.draw([model[n] for n in names], draws=20_000, random_seed=7), strict=True))
    G = _latent_cov(draws["metric_chol"], draws["beta_std"], draws["residual_sd"], 3)
    for i in range(4):
        assert stats.kstest(G[:, i, i], stats.invgamma(1.0, scale=WISHART_SCALE / 2).cdf).pvalue > 0.01
    sd = np.sqrt(np.diagonal(G, axis1=1, axis2=2))
    for i, j in [(0, 1), (1, 2), (0, 3), (2, 3)]:
        rho = G[:, i, j] / (sd[:, i] * sd[:, j])
        assert stats.kstest(rho, stats.uniform(-1, 2).cdf).pvalue > 0.01
    # the slope of y on m_1 given the 2 x 2 block: (b - 0) sqrt(s) / sqrt(G_y|1) ~ N(0, 1) exactly
    b = G[:, 0, 3] / G[:, 0, 0]
    cond = G[:, 3, 3] - G[:, 0, 3] ** 2 / G[:, 0, 0]
    np.testing.assert_allclose(b, draws["beta_std"][:, 0], rtol=1e-9)
    assert stats.kstest(b * np.sqrt(WISHART_SCALE / cond), stats.norm.cdf).pvalue > 0.01


def test_the_trial_density_and_gradient_are_finite_and_the_model_has_no_potential(table):
    model, _ = _model(table)
    point = model.initial_point()
    assert np.isfinite(model.compile_logp()(point))
    assert np.all(np.isfinite(model.compile_dlogp()(point)))
    assert not any("uniform_kpi_corr" in p.name for p in model.potentials if p.name)
    assert {"bartlett_c", "bartlett_z"} <= {v.name for v in model.free_RVs}


def test_a_fit_s_slopes_follow_the_sample_slopes_without_measurement_noise():
    """With standard errors of 0.01-0.02 the posterior mean of each marginal slope is the sample slope
    (within-team covariance over variance) up to the prior's s against the scatter (about 0.1 / 25) and
    Monte Carlo error; the latent LKJ prior's proxies were 0.05-0.07 low here (docs: checks.md)."""
    truth = candidate_truth(0.8, "near_tie")
    data = simulate_candidates(np.random.default_rng([2026, 0]), truth, metric_corr=0.8, n_trials=50,
                               se_range=(0.01, 0.02))
    sample = within_team_slopes(data, truth.metrics)[1]
    fit = bc.fit_joint(data, "y", truth.metrics, at=truth.at, elasticity_prior="independent",
                       latent_prior="wishart", seed=1, draws=500, tune=500, chains=2, cores=1)
    post = fit.beta.mean(("chain", "draw")).values
    sd = fit.beta.std(("chain", "draw")).values
    assert fit.posterior.attrs["latent_prior"] == "wishart"
    np.testing.assert_array_less(np.abs(post - sample), np.maximum(0.02, 0.3 * sd))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"latent_prior": "wishart"}, "latent_prior='wishart'.*'pooled'.*'independent' or 'tie'"),
        ({"latent_prior": "wishart", "elasticity_prior": "tie", "metric_corr_eta": 0.5},
         "metric_corr_eta is an LKJ concentration; latent_prior='wishart' has no LKJ prior \\(got "
         "metric_corr_eta=0.5\\)"),
    ],
)
def test_bad_settings_fail_before_any_compile(table, kwargs, match):
    with pytest.raises(BayesCMMAError, match=match):
        bc.fit_joint(table, "y", TRUTH.metrics, at=TRUTH.at, **kwargs)


def test_the_ranking_and_report_say_the_wishart_prior():
    import xarray as xr

    from bayes_cmma.fitting.joint import rank_tree
    from bayes_cmma.reporting.outputs import ranking_frame
    from bayes_cmma.reporting.report import _pairing_sentence

    rng = np.random.default_rng(0)
    post = xr.Dataset({"beta": (("chain", "draw", "metric"), 1.0 + 0.1 * rng.normal(size=(1, 200, 3)))},
                      coords={"chain": [0], "draw": range(200), "metric": TRUTH.metrics})
    tree = xr.DataTree.from_dict({"posterior": post})
    tree.attrs.update({"elasticity_prior": "independent", "latent_prior": "wishart"})
    e = post["beta"].transpose("metric", "chain", "draw") * 0.01
    ranking = rank_tree(tree, e, {"m1": 1.0, "m2": 1.0, "m3": 1.0}, 0.1, 10.0)
    assert set(ranking_frame(ranking)["latent_prior"]) == {"wishart"}
    assert "an inverse-Wishart prior over the KPI's and metrics' covariance" in _pairing_sentence(ranking)
