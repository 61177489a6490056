"""The joint model of every candidate metric: log-density against a closed form, its marginals, the
ranking from joint draws on a fake posterior, bad input, and one small real fit."""

import numpy as np
import pandas as pd
import pytensor.tensor as pt
import pytest
import xarray as xr
from scipy import stats

import bayes_cmma as bc
from bayes_cmma.checks.ranking_calibration import candidate_truth, simulate_candidates
from bayes_cmma.errors import BayesCMMAError, DataError
from bayes_cmma.fitting.joint import (
    JointFit,
    build_joint_model,
    partial_coefficients,
    rank_weights,
    standardise_joint,
)
from bayes_cmma.fitting.model import unpack_chol
from bayes_cmma.fitting.spec import replace_spec, spec_for_degree
from bayes_cmma.inputs.data import joint_design

TRUTH = candidate_truth(0.8, "spread")


@pytest.fixture(scope="module")
def table():
    return simulate_candidates(np.random.default_rng(7), TRUTH, metric_corr=0.8, n_trials=24)


@pytest.fixture(scope="module")
def design(table):
    return joint_design(table, "y", TRUTH.metrics)


def _point(model, rng):
    ip = model.initial_point()
    return {k: v + rng.normal(0, 0.3, size=np.shape(v)) for k, v in ip.items()}


def _values(model, point, names):
    outs = model.replace_rvs_by_values([model[n] for n in names])
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore", point_fn=True)
    return dict(zip(names, fn(point), strict=True))


def test_independent_team_effects_in_the_joint_model(design):
    """team_effects = "independent": no pi_mean / pi_sd, and pi_g = eta_g - gamma' alpha_g ~ N(0, 5) each
    (gamma the partial slopes), so the log-density is the likelihood plus the other priors plus that."""
    from bayes_cmma.fitting.joint import sampled_vars

    std = standardise_joint(design)
    spec = replace_spec(spec_for_degree(1), team_effects="independent")
    model = build_joint_model(spec, len(design.teams), std, design.team_idx, elasticity_prior="independent")
    assert not {"pi_mean", "pi_sd", "team_z"} & set(model.named_vars)
    assert "pi_sd" not in sampled_vars(len(design.teams), "independent", "independent")
    point = _point(model, np.random.default_rng(4))
    v = _values(model, point, ["beta_std", "alpha", "kpi_mean"])
    packed = model.rvs_to_transforms[model["metric_chol"]].backward(
        pt.as_tensor(point["metric_chol_cholesky-cov-packed__"])).eval()
    sigma = unpack_chol(packed, 3) @ unpack_chol(packed, 3).T
    gamma = np.linalg.solve(sigma, np.diag(sigma) * v["beta_std"])
    team_prior = stats.norm(v["alpha"] @ gamma, 5).logpdf(v["kpi_mean"]).sum()
    others = [rv for rv in model.free_RVs if rv.name != "kpi_offset"] + model.potentials
    np.testing.assert_allclose(model.compile_logp()(point), model.compile_logp(vars=others)(point) + team_prior,
                               rtol=1e-9)


@pytest.mark.parametrize("prior", ["independent", "pooled", "observational"])
def test_likelihood_equals_scipy_with_marginal_slopes(design, prior):
    std = standardise_joint(design)
    w = rank_weights(TRUTH.at, TRUTH.metrics, std)
    spec = replace_spec(spec_for_degree(1), team_effects="non_centred")
    obs = (np.array([0.7, 0.5, -0.2]), np.array([0.01, 0.2, 0.05]), 0.3)
    model = build_joint_model(spec, len(design.teams), std, design.team_idx, elasticity_prior=prior, weights=w,
                              observational=obs)
    point = _point(model, np.random.default_rng(3))
    v = _values(model, point, ["beta_std", "alpha", "kpi_mean", "residual_sd", "trial_loglik"])
    packed = model.rvs_to_transforms[model["metric_chol"]].backward(
        pt.as_tensor(point["metric_chol_cholesky-cov-packed__"])).eval()
    chol = unpack_chol(packed, 3)
    sigma = chol @ chol.T
    b = v["beta_std"]
    c = np.diag(sigma) * b  # Cov(y, m_j) = beta_j Var(m_j): beta is each metric's marginal slope
    G = np.block([[np.array([[c @ np.linalg.solve(sigma, c) + v["residual_sd"] ** 2]]), c[None, :]],
                  [c[:, None], sigma]])
    lik = sum(stats.multivariate_normal(np.concatenate([[v["kpi_mean"][g]], v["alpha"][g]]), G + std.S[k])
              .logpdf(std.z[k]) for k, g in enumerate(design.team_idx))
    np.testing.assert_allclose(v["trial_loglik"], lik, rtol=1e-9)
    # every per-metric model is a bivariate marginal: its slope Cov(y, m_j) / Var(m_j) is beta_j
    np.testing.assert_allclose(G[0, 1:] / np.diag(G)[1:], b, rtol=1e-12)
    if prior == "pooled":  # u_j = b_j w_j = mu + tau z_j: the pooled quantities are the ranked ones
        mu, tau = point["elasticity_mean"], np.exp(point["elasticity_sd_log__"])
        np.testing.assert_allclose(b * w, mu + tau * point["elasticity_z"], rtol=1e-12)
    if prior == "observational":  # b_j = o_j + sqrt(kappa^2 + v_j^2) z_j
        kappa = np.exp(point["observational_bias_sd_log__"])
        np.testing.assert_allclose(b, obs[0] + np.sqrt(kappa**2 + obs[1] ** 2) * point["observational_z"], rtol=1e-12)
        logp = model.compile_logp(vars=[model["observational_bias_sd"]], sum=True, jacobian=False)(point)
        np.testing.assert_allclose(logp, stats.halfnorm(scale=0.3).logpdf(kappa), rtol=1e-12)
    grad = model.compile_dlogp()(point)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("bias_prior", ["halfnormal", "harmonic"])
def test_centred_observational_slopes_are_the_same_posterior(design, bias_prior):
    """Sampling b_j ~ N(o_j, kappa^2 + v_j^2) directly (centred) is the non-centred model under the change
    of variables z_j = (b_j - o_j) / sqrt(kappa^2 + v_j^2): log densities differ by the Jacobian
    sum_j log sqrt(kappa^2 + v_j^2), at any point."""
    std = standardise_joint(design)
    spec = replace_spec(spec_for_degree(1), team_effects="non_centred")
    obs = (np.array([0.7, 0.5, -0.2]), np.array([0.01, 0.2, 0.05]), 0.3 if bias_prior == "halfnormal" else 2.0,
           bias_prior)
    models = {p: build_joint_model(spec, len(design.teams), std, design.team_idx, elasticity_prior="observational",
                                   observational=(*obs, p)) for p in ("non_centred", "centred")}
    assert "observational_z" in models["non_centred"].named_vars
    assert "observational_z" not in models["centred"].named_vars
    kappa_var = "observational_bias_sd_log__" if bias_prior == "halfnormal" else "observational_bias_u_interval__"
    rng = np.random.default_rng(5)
    for _ in range(3):
        point = _point(models["centred"], rng)
        kappa = _values(models["centred"], point, ["observational_bias_sd"])["observational_bias_sd"]
        spread = np.sqrt(kappa**2 + obs[1] ** 2)
        nc_point = {k: v for k, v in point.items() if k != "beta_std"} | {
            "observational_z": (point["beta_std"] - obs[0]) / spread}
        assert kappa_var in point
        lp = {p: models[p].compile_logp()(pt_) for p, pt_ in (("centred", point), ("non_centred", nc_point))}
        np.testing.assert_allclose(lp["centred"], lp["non_centred"] - np.log(spread).sum(), rtol=1e-10)
        b_nc = _values(models["non_centred"], nc_point, ["beta_std"])["beta_std"]
        np.testing.assert_allclose(b_nc, point["beta_std"], rtol=1e-12)


def test_a_troubled_observational_fit_suggests_the_other_parametrization():
    from bayes_cmma.checks.diagnostics import problems

    rng = np.random.default_rng(0)
    post = xr.Dataset({"observational_bias_sd": (("chain", "draw"), rng.normal(size=(4, 100)))})
    for used, other, diverging in (("non_centred", "centred", 3), ("centred", "non_centred", 1), (None, None, 2),
                                   ("non_centred", None, 0)):
        stats_ = xr.Dataset({"diverging": (("chain", "draw"), np.arange(400).reshape(4, 100) < diverging)})
        tree = xr.DataTree.from_dict({"posterior": post, "sample_stats": stats_})
        if used is not None:
            tree.attrs["observational_parametrization"] = used
        msgs = problems(tree)
        hint = [m for m in msgs if "--observational-parametrization" in m]
        if other is None:  # no observational prior, or nothing wrong: no hint
            assert not hint and len(msgs) == (1 if diverging else 0)
        else:
            assert f"{diverging} divergent transition(s)" in msgs[0]
            assert len(hint) == 1 and f"refit with --observational-parametrization {other} " in hint[0]


def test_metric_correlation_prior_is_lkj_with_the_joint_models_eta(design):
    """The joint model's prior on the metrics' correlation R is LKJ(metric_corr_eta) (density prop. to
    det R^(eta - 1)): between two points, the log-density of eta 1 and eta 3 differs by 2 log det R's change."""
    from bayes_cmma.fitting.joint import METRIC_CORR_ETA

    assert METRIC_CORR_ETA == 1.0
    std = standardise_joint(design)
    models = {eta: build_joint_model(replace_spec(spec_for_degree(1), team_effects="non_centred", metric_corr_eta=eta),
                                     len(design.teams), std, design.team_idx, elasticity_prior="independent")
              for eta in (1.0, 3.0)}
    rng = np.random.default_rng(11)
    points = [_point(models[1.0], rng) for _ in range(2)]

    def log_det_r(point):
        packed = models[1.0].rvs_to_transforms[models[1.0]["metric_chol"]].backward(
            pt.as_tensor(point["metric_chol_cholesky-cov-packed__"])).eval()
        chol = unpack_chol(packed, 3)
        sd = np.sqrt((chol * chol).sum(axis=1))
        return 2 * np.log(np.diag(chol)).sum() - 2 * np.log(sd).sum()

    logp = {eta: [m.compile_logp()(pt_) for pt_ in points] for eta, m in models.items()}
    change = (logp[3.0][1] - logp[1.0][1]) - (logp[3.0][0] - logp[1.0][0])
    np.testing.assert_allclose(change, 2.0 * (log_det_r(points[1]) - log_det_r(points[0])), rtol=1e-9)
    assert abs(log_det_r(points[1]) - log_det_r(points[0])) > 0.01  # the points differ in R


def test_fit_joint_replaces_the_specs_eta_and_records_it(table, monkeypatch):
    """fit_joint hands the joint model its own LKJ concentration, whatever the spec says, and the
    compiled-model cache keys on it."""
    from bayes_cmma.fitting import joint

    seen = []

    def fake_fit_once(design, spec, **kwargs):
        seen.append(spec.metric_corr_eta)
        raise RuntimeError("stop before sampling")

    monkeypatch.setattr(joint, "_fit_once", fake_fit_once)
    spec = replace_spec(spec_for_degree(1), metric_corr_eta=2.0, team_effects="non_centred")
    for kwargs in ({}, {"metric_corr_eta": 0.5}):
        with pytest.raises(RuntimeError, match="stop before sampling"):
            bc.fit_joint(table, "y", TRUTH.metrics, at=TRUTH.at, model=spec, **kwargs)
    assert seen == [1.0, 0.5]
    a = replace_spec(spec, metric_corr_eta=1.0).structure_key()
    assert a != replace_spec(spec, metric_corr_eta=0.5).structure_key()


def test_partial_coefficients_are_the_joint_regression():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(3, 3))
    sigma = A @ A.T + np.eye(3)
    gamma_true = np.array([0.5, -0.2, 0.1])
    c = sigma @ gamma_true
    beta = c / np.diag(sigma)
    np.testing.assert_allclose(partial_coefficients(beta, np.linalg.cholesky(sigma)), gamma_true, rtol=1e-12)


def test_rank_weights_make_u_proportional_to_the_ranked_quantity(design):
    std = standardise_joint(design)
    w = rank_weights(TRUTH.at, TRUTH.metrics, std)
    beta = np.array([0.3, 0.5, 0.7])
    b = beta * np.diag(std.L) / std.kpi_scale  # internal marginal slopes
    ratio = (b * w) / (beta * np.array([TRUTH.at[m] for m in TRUTH.metrics]))
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)
    assert np.isclose(np.exp(np.log(w).mean()), 1.0)


def _fake_fit(design, beta_draws):
    chains, draws, _ = beta_draws.shape
    post = xr.Dataset({"beta": (("chain", "draw", "metric"), beta_draws)},
                      coords={"chain": range(chains), "draw": range(draws), "metric": TRUTH.metrics})
    return JointFit(posterior=xr.DataTree.from_dict({"posterior": post}), spec=spec_for_degree(1), design=design,
                    elasticity_prior="pooled")


def test_ranking_uses_the_joint_draws(design):
    rng = np.random.default_rng(5)
    common = rng.normal(size=(2, 500, 1))
    draws = 1.0 + 0.1 * common + 0.02 * rng.normal(size=(2, 500, 3))  # strongly correlated across metrics
    fit = _fake_fit(design, draws)
    at = {"m1": 1.0, "m2": 1.01, "m3": 0.99}
    ranking = fit.ranking(at, baseline=10.0)
    gain = draws * np.array([1.0, 1.01, 0.99])
    expected = np.bincount(gain.reshape(-1, 3).argmax(axis=1), minlength=3) / 1000
    np.testing.assert_allclose(ranking["p_best"].values, expected)
    assert ranking.attrs["pairing"] == "joint"
    # pairing the same marginal draws at random (as separate fits do) gives another answer
    shuffled = np.stack([rng.permutation(gain[..., j].ravel()) for j in range(3)], axis=-1)
    independent = np.bincount(shuffled.argmax(axis=1), minlength=3) / 1000
    assert np.abs(independent - expected).max() > 0.05
    e = fit.elasticity(at, lift=0.1, baseline=10.0)
    np.testing.assert_allclose(e.sel(metric="m2").values, draws[..., 1] * 1.01 * 0.1 / 10.0)


def test_ranking_needs_a_baseline_and_every_level(design):
    fit = _fake_fit(design, np.ones((1, 4, 3)))
    with pytest.raises(BayesCMMAError, match="--kpi-baseline"):
        fit.ranking({"m1": 1, "m2": 1, "m3": 1})
    with pytest.raises(BayesCMMAError, match="m3"):
        fit.ranking({"m1": 1, "m2": 1}, baseline=1.0)
    with pytest.raises(BayesCMMAError, match="'zz'"):
        fit.ranking({"m1": 1, "m2": 1, "m3": 1, "zz": 1}, baseline=1.0)
    with pytest.raises(BayesCMMAError, match="was not fitted"):
        fit.metric_beta("zz")
    with pytest.raises(BayesCMMAError, match="tie_posterior needs a fit with elasticity_prior='tie'"):
        fit.tie_posterior({"m1": 1, "m2": 1, "m3": 1}, baseline=1.0)


def test_ranking_under_other_tie_settings_without_a_refit(design):
    """ranking(p_tie=..., tie_spread_scale=...) equals the ranking of a fit made with those settings,
    leaves the fit's own settings alone, and is refused by fits without the tie prior."""
    rng = np.random.default_rng(6)
    fit = _fake_fit(design, 1.0 + 0.05 * rng.normal(size=(2, 400, 3)))
    at = {"m1": 1.0, "m2": 1.0, "m3": 1.0}
    with pytest.raises(BayesCMMAError, match="only with elasticity_prior='tie'; this fit has 'pooled'"):
        fit.ranking(at, baseline=10.0, p_tie=0.2)
    fit.elasticity_prior = "tie"
    fit.posterior.attrs.update({"elasticity_prior": "tie", "latent_prior": "lkj", "seed": 4,
                                "tie_prior_p": 0.5, "tie_spread_scale": 1.0})
    fit.posterior["constant_data"] = xr.Dataset()
    own = fit.ranking(at, baseline=10.0)
    other = fit.ranking(at, baseline=10.0, p_tie=0.1, tie_spread_scale=0.5)
    assert (fit.posterior.attrs["tie_prior_p"], fit.posterior.attrs["tie_spread_scale"]) == (0.5, 1.0)
    np.testing.assert_array_equal(fit.ranking(at, baseline=10.0)["p_best"].values, own["p_best"].values)
    assert (own.attrs["prior_p_tie"], own.attrs["tie_spread_scale"]) == (0.5, 1.0)
    assert (other.attrs["prior_p_tie"], other.attrs["tie_spread_scale"]) == (0.1, 0.5)
    assert other.attrs["p_tie"] < own.attrs["p_tie"]  # less prior mass on the tie, less posterior mass
    fit.posterior.attrs.update({"tie_prior_p": 0.1, "tie_spread_scale": 0.5})
    refit = fit.ranking(at, baseline=10.0)
    np.testing.assert_array_equal(refit["p_best"].values, other["p_best"].values)
    assert refit.attrs["p_tie"] == other.attrs["p_tie"]
    with pytest.raises(BayesCMMAError, match="must be in \\[0, 1\\), got 1.5"):
        fit.ranking(at, baseline=10.0, p_tie=1.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metrics": ["m1"]}, "2 or more metrics"),
        ({"model": 3}, "degree 1"),
        ({"at": None}, "no metric levels"),
        ({"at": {"m1": 1.0, "m2": 1.0, "m3": -1.0}}, "'m3' is -1.0"),
        ({"at": {"m1": 1.0, "m2": 1.0}}, "m3"),
        ({"elasticity_prior": "flat"}, "pooled, independent, observational, tie"),
        ({"target_accept": 1.5}, "target_accept"),
        ({"metric_corr_eta": 0.0}, "metric_corr_eta.*positive.*got 0.0"),
        ({"metric_corr_eta": float("nan")}, "metric_corr_eta"),
        ({"metric_corr_eta": "1"}, "metric_corr_eta.*got '1'"),
    ],
)
def test_bad_arguments_fail_before_any_compile(table, kwargs, match):
    args = {"metrics": TRUTH.metrics, "at": TRUTH.at, **kwargs}
    with pytest.raises(BayesCMMAError, match=match):
        bc.fit_joint(table, "y", **args)


def test_joint_design_names_a_bad_quantity(table):
    with pytest.raises(DataError, match="metric 'nope' is not a quantity"):
        joint_design(table, "y", ["m1", "nope"])
    with pytest.raises(DataError, match="repeat"):
        joint_design(table, "y", ["m1", "m1"])
    with pytest.raises(DataError, match="KPI 'gmv'"):
        joint_design(table, "gmv", ["m1", "m2"])


def test_joint_design_names_a_metric_no_trial_links_to_the_kpi(table):
    ds = table.dataset
    teams = ds["team"].values.astype(str)
    rows = [{"trial": t, "team": teams[k], "quantity": q, "estimate": float(ds["estimate"].values[k, i]),
             "std_error": float(ds["std_error"].values[k, i])}
            for k, t in enumerate(table.trials) for i, q in enumerate(table.quantities)
            # m3 only in the first trial, which does not report the KPI
            if (q != "m3" or k == 0) and not (k == 0 and q == "y")]
    data = bc.read_trials(pd.DataFrame(rows))
    with pytest.raises(DataError, match="0 trial\\(s\\) report both the KPI 'y' and the metric 'm3'"):
        joint_design(data, "y", TRUTH.metrics)


def test_a_small_fit_recovers_the_slopes_and_is_reproducible(tmp_path):
    truth = candidate_truth(0.8, "spread")
    # two teams: independent team effects (no pi_sd funnel), so a short run converges
    data = simulate_candidates(np.random.default_rng(11), truth, metric_corr=0.8, n_trials=60, n_teams=2)
    # 1000 draws: at 300 per chain, 6 of 8 seeds left an R-hat above 1.01 (residual_sd, partial_beta, alpha;
    # the warning is an error here), at 500 1 of 8, at 1000 none of 8 (about 4 s per fit)
    kw = dict(at=truth.at, elasticity_prior="independent", seed=3, draws=1000, tune=1000, chains=4, cores=1)
    fit = bc.fit_joint(data, "y", truth.metrics, **kw)
    beta = fit.beta
    z = (beta.mean(("chain", "draw")).values - truth.beta) / beta.std(("chain", "draw")).values
    assert np.all(np.abs(z) < 3.5), z
    assert fit.posterior.attrs["model"] == "joint"
    assert fit.posterior["log_likelihood"]["trial_ate"].sizes["trial"] == 60
    again = bc.fit_joint(data, "y", truth.metrics, **kw)
    np.testing.assert_array_equal(again.beta.values, beta.values)
    ranking = fit.ranking(truth.at, baseline=truth.baseline)
    assert ranking["p_best"].sum() == pytest.approx(1.0)
    assert ranking.attrs["elasticity_prior"] == "independent"
    # the tie prior samples the same model (same draws for the same seed) and ranks under the tie prior
    tie = bc.fit_joint(data, "y", truth.metrics, **{**kw, "elasticity_prior": "tie"})
    np.testing.assert_array_equal(tie.beta.values, beta.values)
    tied = tie.ranking(truth.at, baseline=truth.baseline)
    assert tied.attrs["elasticity_prior"] == "tie" and tied.attrs["prior_p_tie"] == 0.5
    # elasticities 1 : 0.7 : 0.4 from 60 trials: no tie, and the same clear winner
    assert tied.attrs["p_tie"] < 0.01
    from bayes_cmma.decisions.derived import rank_metrics

    draws = tie.ranking_draws(truth.at, baseline=truth.baseline)
    np.testing.assert_array_equal(rank_metrics(draws)["p_best"].values, tied["p_best"].values)
    assert float(tied["p_best"].sel(metric="m1")) == pytest.approx(float(ranking["p_best"].sel(metric="m1")),
                                                                    abs=0.02)
    # the saved posterior ranks the same (report and `bayes-cmma report` read joint.nc)
    from bayes_cmma.reporting.report import joint_ranking, read_joint

    path = tmp_path / "joint.nc"
    tie.posterior.to_netcdf(path, engine="h5netcdf")
    again_ranked = joint_ranking(read_joint(path), truth.at, 0.1, truth.baseline)
    np.testing.assert_array_equal(again_ranked["p_best"].values, tied["p_best"].values)
    assert again_ranked.attrs["p_tie"] == tied.attrs["p_tie"]


def test_fit_command_ranks_from_the_joint_model(tmp_path, capsys):
    """``fit --joint`` end to end: ranking.csv and the terminal say the ranking is joint; joint.nc is written."""
    from bayes_cmma.cli import main

    truth = candidate_truth(0.8, "spread")
    data = simulate_candidates(np.random.default_rng(11), truth, metric_corr=0.8, n_trials=60, n_teams=2)
    ds = data.dataset
    teams = ds["team"].values.astype(str)
    rows = [{"trial": t, "team": teams[k], "quantity": q, "estimate": float(ds["estimate"].values[k, i]),
             "std_error": float(ds["std_error"].values[k, i])}
            for k, t in enumerate(data.trials) for i, q in enumerate(data.quantities)]
    pd.DataFrame(rows).to_csv(tmp_path / "trials.csv", index=False)
    cov = ds["covariance"].to_dataframe().reset_index().dropna()
    cov = cov[cov["quantity"] < cov["quantity_other"]].rename(
        columns={"quantity": "quantity_1", "quantity_other": "quantity_2"})[
        ["trial", "quantity_1", "quantity_2", "covariance"]]
    cov.to_csv(tmp_path / "cov.csv", index=False)
    out = tmp_path / "out"
    # the observational prior, borrowing from slopes as a degree-1 observational table gives them
    pd.DataFrame({"team": "all", "metric": truth.metrics, "power": 1, "estimate": truth.beta,
                  "std_error": 0.01}).to_csv(tmp_path / "obs.csv", index=False)
    argv = ["fit", str(tmp_path / "trials.csv"), "--cov", str(tmp_path / "cov.csv"), "--kpi", "y",
            *[a for m in truth.metrics for a in ("--metric", m)], "--degree", "1", "--joint", "observational",
            "--observational", str(tmp_path / "obs.csv"), "--observational-parametrization", "centred",
            *[a for m in truth.metrics for a in ("--at", f"{m}={truth.at[m]}")], "--kpi-baseline",
            str(truth.baseline), "--seed", "3", "--draws", "300", "--tune", "300", "--no-report", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "The ranking comes from one joint model" in " ".join(printed.split())
    assert "borrow from the observational slopes (m1=1 (se 0.01), m2=0.8" in " ".join(printed.split())
    ranking = pd.read_csv(out / "ranking.csv")
    assert set(ranking["pairing"]) == {"joint"} and set(ranking["elasticity_prior"]) == {"observational"}
    assert (out / "joint.nc").exists()
    assert xr.open_datatree(out / "joint.nc", engine="h5netcdf").attrs["observational_parametrization"] == "centred"
    assert ranking["p_best"].sum() == pytest.approx(1.0)
    # `bayes-cmma report` on the folder shows the same (joint) ranking, and says so
    from bayes_cmma.reporting.report import _answer, load_fit_dir

    inputs = load_fit_dir(out)
    assert inputs.ranking.attrs["pairing"] == "joint"
    np.testing.assert_allclose(inputs.ranking["p_best"].sel(metric=ranking["metric"].tolist()).values,
                               ranking["p_best"].values)
    text, _ = _answer(inputs)
    assert "one joint model of every metric (observational elasticity prior" in text
    assert "Its slopes borrow from the observational slopes of the logs" in text
    # the best composite north star: fit --joint writes it, the report reads it, `northstar` recomputes it
    from bayes_cmma.reporting.report import _northstar_section

    table = pd.read_csv(out / "northstar.csv")
    assert list(table["candidate"].unique()) == [*truth.metrics, "composite"]
    section = _northstar_section(inputs.northstar, "y")
    assert inputs.northstar is not None and "Weights over the metrics" in section
    lead = str(table["lead"].iloc[0])
    assert f"(per {lead} = 1)" in section
    assert "Best composite north star" in printed
    assert f"relative to {lead} (= 1; median, 94% CI):" in printed
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["northstar", str(out), "--future-size", "0.5", "8", "--criterion", "correlation", "--out",
                 str(tmp_path / "ns")]) == 0
    again = pd.read_csv(tmp_path / "ns" / "northstar.csv")
    assert sorted(again["future_size"].unique()) == [0.5, 8.0] and set(again["criterion"]) == {"correlation"}
    assert (tmp_path / "ns" / "northstar.png").exists()
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # the fit folder is untouched
    # the table has no arm sizes: a size in units per arm is refused, and nothing is written
    for bad, message in ((["--future-n", "1000"], "no arm sizes"), (["--future-size", "0"], "positive and finite"),
                         (["--team", "nope"], "team 'nope' is not in the fit")):
        assert main(["northstar", str(out), *bad, "--out", str(tmp_path / "ns2")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "ns2").exists()


def test_fit_command_with_the_tie_prior(tmp_path, capsys):
    """``fit --joint tie --p-tie``: the prior reaches the fit, ranking.csv and the terminal say P(tie), and the
    value of more trials is computed under the tie prior."""
    from bayes_cmma.cli import main

    truth = candidate_truth(0.8, "near_tie")
    data = simulate_candidates(np.random.default_rng(5), truth, metric_corr=0.8, n_trials=30, n_teams=2)
    ds = data.dataset
    teams = ds["team"].values.astype(str)
    pd.DataFrame([{"trial": t, "team": teams[k], "quantity": q, "estimate": float(ds["estimate"].values[k, i]),
                   "std_error": float(ds["std_error"].values[k, i])}
                  for k, t in enumerate(data.trials) for i, q in enumerate(data.quantities)]
                 ).to_csv(tmp_path / "trials.csv", index=False)
    out = tmp_path / "out"
    argv = ["fit", str(tmp_path / "trials.csv"), "--kpi", "y", *[a for m in truth.metrics for a in ("--metric", m)],
            "--degree", "1", "--joint", "tie", "--p-tie", "0.3",
            *[a for m in truth.metrics for a in ("--at", f"{m}={truth.at[m]}")], "--kpi-baseline",
            str(truth.baseline), "--seed", "3", "--draws", "300", "--tune", "300", "--no-report", "--out", str(out)]
    assert main(argv) == 0
    printed = " ".join(capsys.readouterr().out.split())
    ranking = pd.read_csv(out / "ranking.csv")
    assert set(ranking["elasticity_prior"]) == {"tie"} and set(ranking["prior_p_tie"]) == {0.3}
    p_tie = float(ranking["p_tie"].iloc[0])
    assert 0 < p_tie < 1
    assert f"P(the metrics' elasticities tie) = {p_tie:.2f} under the tie prior (prior 0.30)" in printed
    tree = xr.open_datatree(out / "joint.nc", engine="h5netcdf")
    assert tree.attrs["elasticity_prior"] == "tie" and float(tree.attrs["tie_prior_p"]) == 0.3
    assert ranking["p_best"].sum() == pytest.approx(1.0)
    # the value of more trials under the tie prior: its own preposterior, which updates the tie's probability
    more = pd.read_csv(out / "more_trials.csv")
    assert set(more["method"]) == {more["method"].iloc[0]} and more["method"].iloc[0].startswith("tie-prior")
    assert "(a preposterior approximation under the tie prior;" in printed
    assert "if the metrics truly tie no number of trials separates them" in printed
    assert more.loc[more["new_trials"] == 0, "p_correct"].iloc[0] == pytest.approx(ranking["p_best"].max(), abs=0.02)


@pytest.mark.parametrize(
    ("setup", "match"),
    [("missing", "is not a folder"), ("empty", "has no joint.nc"), ("corrupt", "cannot read the joint posterior")],
)
def test_northstar_command_bad_folders(tmp_path, capsys, setup, match):
    from bayes_cmma.cli import main

    folder = tmp_path / "fit"
    if setup != "missing":
        folder.mkdir()
    if setup == "corrupt":
        (folder / "joint.nc").write_text("not netcdf")
    assert main(["northstar", str(folder)]) == 2
    assert match in capsys.readouterr().err
    assert not (folder / "northstar.csv").exists()


def test_northstar_command_takes_one_size_option(tmp_path, capsys):
    from bayes_cmma.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["northstar", str(tmp_path), "--future-size", "1", "--future-n", "1000"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
