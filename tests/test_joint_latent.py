"""The joint model's latent LKJ prior (``fit_joint(latent_prior="lkj")``): its trial density against
scipy, the slopes it derives, its factor on the KPI's correlations (which makes them uniform), the tie
ranking without a prior to divide out, and bad input. No sampling: the model compiles slowly."""

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest
import xarray as xr
from scipy import stats

import bayes_cmma as bc
from bayes_cmma.checks.ranking_calibration import candidate_truth, simulate_candidates
from bayes_cmma.decisions.ties import tie_posterior
from bayes_cmma.errors import BayesCMMAError
from bayes_cmma.fitting.joint import build_joint_model, rank_tree, standardise_joint, uniform_kpi_corr_exponent
from bayes_cmma.fitting.model import unpack_chol
from bayes_cmma.fitting.spec import replace_spec, spec_for_degree
from bayes_cmma.inputs.data import joint_design

TRUTH = candidate_truth(0.8, "near_tie")


@pytest.fixture(scope="module")
def table():
    return simulate_candidates(np.random.default_rng(3), TRUTH, metric_corr=0.8, n_trials=20)


@pytest.fixture(scope="module")
def design(table):
    return joint_design(table, "y", TRUTH.metrics)


def _model(design, eta=0.5, elasticity_prior="independent"):
    spec = replace_spec(spec_for_degree(1), team_effects="non_centred", metric_corr_eta=eta)
    return build_joint_model(spec, len(design.teams), standardise_joint(design), design.team_idx,
                             elasticity_prior=elasticity_prior, latent_prior="lkj")


def _values(model, point, names):
    outs = model.replace_rvs_by_values([model[n] for n in names])
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore", point_fn=True)
    return dict(zip(names, fn(point), strict=True))


def _latent(model, point, n):
    packed = model.rvs_to_transforms[model["latent_chol"]].backward(
        pt.as_tensor(point["latent_chol_cholesky-cov-packed__"])).eval()
    return unpack_chol(packed, n)


def test_trial_density_slopes_and_factor_against_numpy(design):
    """With G = L L' over (m_1..m_3, y): the trials' density is scipy's normal of (y, m) with covariance
    G + S_k, beta_j = G_yj / G_jj (each per-metric model's slope), the stored metric Cholesky factor
    and residual sd are L's blocks, and the factor is (1 - b) sum_j log(1 - rho_yj^2)."""
    model = _model(design)
    std = standardise_joint(design)
    rng = np.random.default_rng(4)
    ip = model.initial_point()
    point = {k: v + rng.normal(0, 0.4, size=np.shape(v)) for k, v in ip.items()}
    names = ["beta_std", "metric_chol", "residual_sd", "alpha", "kpi_mean", "trial_loglik", "uniform_kpi_corr"]
    v = _values(model, point, names)
    L = _latent(model, point, 4)
    G4 = L @ L.T  # order (m1, m2, m3, y)
    order = [3, 0, 1, 2]  # to (y, m1, m2, m3), the order of the trial data
    G = G4[np.ix_(order, order)]
    lik = sum(stats.multivariate_normal(np.concatenate([[v["kpi_mean"][g]], v["alpha"][g]]), G + std.S[k])
              .logpdf(std.z[k]) for k, g in enumerate(design.team_idx))
    np.testing.assert_allclose(v["trial_loglik"], lik, rtol=1e-9)
    np.testing.assert_allclose(v["beta_std"], G[0, 1:] / np.diag(G)[1:], rtol=1e-10)
    np.testing.assert_allclose(unpack_chol(v["metric_chol"], 3), L[:3, :3], rtol=1e-12)
    np.testing.assert_allclose(v["residual_sd"], L[3, 3], rtol=1e-12)
    sd = np.sqrt(np.diag(G4))
    rho = G4[:3, 3] / (sd[:3] * sd[3])
    b = 0.5 + (3 - 1) / 2
    np.testing.assert_allclose(v["uniform_kpi_corr"], (1 - b) * np.log1p(-rho**2).sum(), rtol=1e-10)
    assert model["uniform_kpi_corr"] in model.potentials
    assert np.all(np.isfinite(model.compile_dlogp()(point)))


def test_the_factor_makes_the_kpis_correlations_uniform_and_independent():
    """Under LKJ(eta) over 4 variables the KPI's correlation with a metric is Beta(b, b) on (-1, 1),
    E[rho^2] = 1 / (2b + 1); weighted by the factor it is uniform (E[rho^2] = 1/3, E|rho| = 1/2) and the
    KPI's correlations with two metrics are independent (E[rho_1^2 rho_2^2] = 1/9)."""
    for eta in (0.5, 1.0):
        chol = pm.draw(pm.LKJCorr.dist(n=4, eta=eta), draws=100_000, random_seed=1)  # PyMC 6: a Cholesky factor
        R = chol @ np.swapaxes(chol, 1, 2)
        np.testing.assert_allclose(np.diagonal(R, axis1=1, axis2=2), 1.0, rtol=1e-12)
        rho = R[:, :3, 3]
        b = eta + 1.0
        np.testing.assert_allclose((rho[:, 0] ** 2).mean(), 1 / (2 * b + 1), atol=0.004)
        w = np.exp(uniform_kpi_corr_exponent(3, eta) * np.log1p(-rho**2).sum(axis=1))
        w /= w.sum()
        np.testing.assert_allclose(w @ rho**2, [1 / 3] * 3, atol=0.006)
        np.testing.assert_allclose(w @ np.abs(rho), [0.5] * 3, atol=0.006)
        np.testing.assert_allclose(w @ (rho[:, 0] ** 2 * rho[:, 1] ** 2), 1 / 9, atol=0.004)


def test_the_tie_ranking_divides_out_no_prior_under_the_latent_prior():
    rng = np.random.default_rng(2)
    beta = 1.0 + 0.05 * rng.normal(size=(2, 400, 3))
    post = xr.Dataset({"beta": (("chain", "draw", "metric"), beta)},
                      coords={"chain": [0, 1], "draw": range(400), "metric": TRUTH.metrics})
    tree = xr.DataTree.from_dict({"posterior": post, "constant_data": xr.Dataset()})
    tree.attrs.update({"elasticity_prior": "tie", "latent_prior": "lkj", "seed": 9})
    at = {"m1": 1.0, "m2": 1.0, "m3": 1.0}
    e = post["beta"].transpose("metric", "chain", "draw") * 0.1 / 10.0
    ranking = rank_tree(tree, e, at, 0.1, 10.0)
    expected = tie_posterior(e, seed=9)
    np.testing.assert_allclose(ranking.attrs["p_tie"], expected.attrs["p_tie"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"latent_prior": "vine"}, "latent_prior must be one of slopes, lkj, wishart, got 'vine'"),
        ({"latent_prior": "lkj"}, "latent_prior='lkj'.*'pooled'.*'independent' or 'tie'"),
        ({"latent_prior": "lkj", "elasticity_prior": "observational", "observational": {"m1": (1, 0.1)}},
         "latent_prior='lkj'.*'observational'"),
    ],
)
def test_bad_latent_prior_fails_before_any_compile(table, kwargs, match):
    with pytest.raises(BayesCMMAError, match=match):
        bc.fit_joint(table, "y", TRUTH.metrics, at=TRUTH.at, **kwargs)


def test_fit_joint_passes_the_latent_prior_on(table, monkeypatch):
    from bayes_cmma.fitting import joint

    seen = []

    def fake_fit_once(design, spec, **kwargs):
        seen.append((kwargs["latent_prior"], spec.metric_corr_eta))
        raise RuntimeError("stop before sampling")

    monkeypatch.setattr(joint, "_fit_once", fake_fit_once)
    for kwargs in ({}, {"latent_prior": "lkj", "elasticity_prior": "tie"},
                   {"latent_prior": "lkj", "elasticity_prior": "tie", "metric_corr_eta": 2.0}):
        with pytest.raises(RuntimeError, match="stop before sampling"):
            bc.fit_joint(table, "y", TRUTH.metrics, at=TRUTH.at, model=replace_spec(
                spec_for_degree(1), team_effects="non_centred"), **kwargs)
    # each latent prior has its own default concentration: the one measured
    assert seen == [("slopes", 1.0), ("lkj", 0.5), ("lkj", 2.0)]


def test_ranking_table_and_report_say_the_latent_prior():
    from bayes_cmma.reporting.outputs import ranking_frame
    from bayes_cmma.reporting.report import _pairing_sentence

    rng = np.random.default_rng(0)
    post = xr.Dataset({"beta": (("chain", "draw", "metric"), 1.0 + 0.1 * rng.normal(size=(1, 200, 3)))},
                      coords={"chain": [0], "draw": range(200), "metric": TRUTH.metrics})
    e = post["beta"].transpose("metric", "chain", "draw") * 0.01
    for latent, says in (("lkj", True), (None, False)):
        tree = xr.DataTree.from_dict({"posterior": post})
        tree.attrs["elasticity_prior"] = "independent"
        if latent:
            tree.attrs["latent_prior"] = latent
        ranking = rank_tree(tree, e, {"m1": 1.0, "m2": 1.0, "m3": 1.0}, 0.1, 10.0)
        assert set(ranking_frame(ranking)["latent_prior"]) == {latent or "slopes"}
        assert ("one LKJ prior over the KPI's and metrics' correlation" in _pairing_sentence(ranking)) is says
