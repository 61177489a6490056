"""The PyMC model's log-density and gradient against a closed form (no sampling)."""

import numpy as np
import pytensor.tensor as pt
import pytest
from scipy import stats

from bayes_cmma.fitting.model import build_model, standardise, trial_loglik_numpy, unpack_chol
from bayes_cmma.fitting.spec import spec_for_degree
from bayes_cmma.inputs.data import metric_design


@pytest.fixture(scope="module")
def built(synthetic):
    data, _ = synthetic
    design = metric_design(data, "y", "m", 2)
    std = standardise(design)
    spec = spec_for_degree(2)
    model = build_model(spec, len(design.teams), std, design.team_idx)
    return design, std, spec, model


def _eta(model, point):
    """The team KPI means eta_g from the partially centred offset xi_g = eta_g - b' alpha_g."""
    return point["kpi_offset"] + point["alpha"] @ model["team_slope"].get_value()


def _offset(model, point, eta):
    return eta - point["alpha"] @ model["team_slope"].get_value()


def _random_point(model, rng):
    ip = model.initial_point()
    return {k: v + rng.normal(0, 0.3, size=np.shape(v)) for k, v in ip.items()}


def test_logp_equals_priors_plus_scipy_likelihood(built):
    design, std, _spec, model = built
    rng = np.random.default_rng(1)
    point = _random_point(model, rng)
    logp = model.compile_logp()(point)
    # closed form on the constrained values, plus log-Jacobians of the log/LKJ transforms
    beta_std = point["beta_std"]
    alpha = point["alpha"]
    pi_mean = point["pi_mean"]
    pi_sd = np.exp(point["pi_sd_log__"])
    kpi_mean = _eta(model, point)
    resid_sd = np.exp(point["residual_sd_log__"])
    packed = model.rvs_to_transforms[model["metric_chol"]].backward(
        pt.as_tensor(point["metric_chol_cholesky-cov-packed__"])
    ).eval()
    chol = unpack_chol(packed, 2)
    beta = beta_std  # beta is sampled on the internal scale
    lik = 0.0
    for k in range(design.n_trials):
        g = design.team_idx[k]
        mean = np.concatenate([[kpi_mean[g]], alpha[g]])
        A = np.vstack([beta, np.eye(2)])
        cov = A @ chol @ chol.T @ A.T + std.S[k]
        cov[0, 0] += resid_sd**2
        lik += stats.multivariate_normal(mean, cov).logpdf(std.z[k])
    priors = (
        stats.norm(0, 2).logpdf(beta_std).sum()
        + stats.norm(0, 5).logpdf(alpha).sum()
        + stats.norm(0, 5).logpdf(pi_mean)
        + stats.halfnorm(scale=1).logpdf(pi_sd) + np.log(pi_sd)
        + stats.norm(pi_mean + alpha @ beta, pi_sd).logpdf(kpi_mean).sum()
        + stats.halfnorm(scale=1).logpdf(resid_sd) + np.log(resid_sd)
    )
    # the LKJ-Cholesky prior is PyMC's own; isolate it from the model's point log-probabilities
    lkj = model.compile_logp(vars=[model["metric_chol"]])(point)
    np.testing.assert_allclose(logp, lik + priors + lkj, rtol=1e-9)
    # and the likelihood part alone equals the numpy per-trial form used for LOO
    ll = trial_loglik_numpy(std.z, std.S, design.team_idx, beta, alpha, kpi_mean - alpha @ beta, chol, resid_sd)
    np.testing.assert_allclose(ll.sum(), lik, rtol=1e-10)


def test_gradient_matches_finite_differences(built):
    *_, model = built
    rng = np.random.default_rng(2)
    point = _random_point(model, rng)
    logp = model.compile_logp()
    dlogp = model.compile_dlogp()
    grad = dlogp(point)
    names = [v.name for v in model.value_vars]
    sizes = [np.size(point[n]) for n in names]
    flat = np.concatenate([np.ravel(point[n]) for n in names])

    def f(x):
        parts, i = {}, 0
        for n, s in zip(names, sizes, strict=True):
            parts[n] = x[i : i + s].reshape(np.shape(point[n]))
            i += s
        return logp(parts)

    h = 1e-6
    for idx in rng.choice(flat.size, size=12, replace=False):
        e = np.zeros_like(flat)
        e[idx] = h
        fd = (f(flat + e) - f(flat - e)) / (2 * h)
        assert grad[idx] == pytest.approx(fd, rel=1e-5, abs=1e-5)


def test_non_centred_team_effects_are_the_same_model(built):
    """team_effects = "non_centred" samples z_g with eta_g = pi_mean + beta' alpha_g + pi_sd z_g. Its
    log-density at z equals the centred model's at the matching eta plus the Jacobian log(pi_sd) per team."""
    from bayes_cmma.fitting.spec import replace_spec

    design, std, spec, centred = built
    nc_spec = replace_spec(spec, team_effects="non_centred")
    assert nc_spec.structure_key() != spec.structure_key()  # a different compiled model
    nc = build_model(nc_spec, len(design.teams), std, design.team_idx)
    assert "team_z" in nc.named_vars and "kpi_mean" in nc.named_vars and "kpi_mean" not in nc.free_RVs
    rng = np.random.default_rng(7)
    point = _random_point(nc, rng)
    beta = point["beta_std"]
    pi_sd = np.exp(point["pi_sd_log__"])
    eta = point["pi_mean"] + point["alpha"] @ beta + pi_sd * point["team_z"]
    centred_point = {k: v for k, v in point.items() if k != "team_z"} | {"kpi_offset": _offset(centred, point, eta)}
    lp_nc = nc.compile_logp()(point)
    lp_c = centred.compile_logp()(centred_point)
    np.testing.assert_allclose(lp_nc, lp_c + len(design.teams) * np.log(pi_sd), rtol=1e-10)


def test_independent_team_effects_drop_the_pooling(built):
    """team_effects = "independent" with 4 teams: no pi_mean / pi_sd, pi_g = eta_g - beta' alpha_g ~ the
    pi_mean prior N(0, 5) each; the rest of the log-density is the pooled model's."""
    from bayes_cmma.fitting.model import sampled_vars
    from bayes_cmma.fitting.spec import replace_spec

    design, std, spec, pooled_model = built
    ind_spec = replace_spec(spec, team_effects="independent")
    assert ind_spec.structure_key() != spec.structure_key()  # a different compiled model
    model = build_model(ind_spec, len(design.teams), std, design.team_idx)
    assert not {"pi_mean", "pi_sd", "team_z"} & set(model.named_vars)
    assert sampled_vars(len(design.teams), team_effects="independent") == [
        "beta_std", "alpha", "kpi_mean", "metric_chol", "residual_sd"]
    point = _random_point(model, np.random.default_rng(5))
    beta, alpha, eta = point["beta_std"], point["alpha"], _eta(model, point)
    pooled_point = point | {"pi_mean": np.array(0.3), "pi_sd_log__": np.array(np.log(0.7))}
    pooled_terms = (stats.norm(0, 5).logpdf(0.3) + stats.halfnorm(scale=1).logpdf(0.7) + np.log(0.7)
                    + stats.norm(0.3 + alpha @ beta, 0.7).logpdf(eta).sum())
    want = pooled_model.compile_logp()(pooled_point) - pooled_terms + stats.norm(alpha @ beta, 5).logpdf(eta).sum()
    np.testing.assert_allclose(model.compile_logp()(point), want, rtol=1e-9)  # a difference of sums of ~700


def test_a3_correlation_matches_the_generative_construction(built):
    """direct_effect_corr = rho: the numpy log-density equals scipy's with the covariance built from
    the joint law of (m, u), Corr(u, m_1) = rho, Var(u) = sigma_u^2; the model graph agrees with it."""
    import pymc as pm

    design, std, _spec, model = built
    rng = np.random.default_rng(3)
    point = _random_point(model, rng)
    packed = model.rvs_to_transforms[model["metric_chol"]].backward(
        pt.as_tensor(point["metric_chol_cholesky-cov-packed__"])).eval()
    chol = unpack_chol(packed, 2)
    beta = point["beta_std"]
    alpha, eta = point["alpha"], _eta(model, point)
    sd_u = np.exp(point["residual_sd_log__"])
    rho = 0.6
    omega = chol @ chol.T
    joint = np.zeros((3, 3))  # (m_1, m_2, u)
    joint[:2, :2] = omega
    joint[:2, 2] = joint[2, :2] = rho * sd_u * omega[:, 0] / np.sqrt(omega[0, 0])
    joint[2, 2] = sd_u**2
    T = np.array([[beta[0], beta[1], 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # (y, m) = T (m, u) + mean
    latent = T @ joint @ T.T
    want = [stats.multivariate_normal(np.concatenate([[eta[g]], alpha[g]]), latent + std.S[k]).logpdf(std.z[k])
            for k, g in enumerate(design.team_idx)]
    got = trial_loglik_numpy(std.z, std.S, design.team_idx, beta, alpha, eta - alpha @ beta, chol, sd_u, a3_corr=rho)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # the compiled graph: only the likelihood depends on rho, so log-density differences must agree
    base = model.compile_logp()(point)
    with model:
        pm.set_data({"a3_corr": np.asarray(rho)})
    try:
        shifted = model.compile_logp()(point)
    finally:
        with model:
            pm.set_data({"a3_corr": np.asarray(0.0)})
    ll0 = trial_loglik_numpy(std.z, std.S, design.team_idx, beta, alpha, eta - alpha @ beta, chol, sd_u)
    np.testing.assert_allclose(shifted - base, np.sum(want) - ll0.sum(), rtol=1e-8)


def test_a3_prior_makes_rho_a_parameter_of_the_same_model(built):
    """direct_effect_corr = { dist = "uniform", lower, upper }: the log-density at (theta, rho) equals
    the fixed-rho model's at theta plus the uniform density 1 / (upper - lower) (no Jacobian); the
    numpy log-likelihood takes one rho per draw."""
    import pymc as pm

    from bayes_cmma.fitting.model import A3_VAR, sampled_vars
    from bayes_cmma.fitting.spec import replace_spec

    design, std, spec, fixed = built
    prior_spec = replace_spec(spec, direct_effect_corr={"dist": "uniform", "lower": -0.4, "upper": 0.5})
    assert prior_spec.direct_effect_corr_prior == (-0.4, 0.5)
    assert prior_spec.structure_key() != spec.structure_key()  # rho is sampled: another compiled model
    model = build_model(prior_spec, len(design.teams), std, design.team_idx)
    assert A3_VAR in [v.name for v in model.free_RVs] and A3_VAR in sampled_vars(len(design.teams), True)
    rng = np.random.default_rng(5)
    point = _random_point(fixed, rng)
    for rho in (-0.3, 0.0, 0.45):
        with fixed:
            pm.set_data({"a3_corr": np.asarray(rho)})
        try:
            want = fixed.compile_logp(jacobian=False)(point) - np.log(0.9)
        finally:
            with fixed:
                pm.set_data({"a3_corr": np.asarray(0.0)})
        got = model.compile_logp(jacobian=False)(point | {f"{A3_VAR}_interval__": _logit01(rho, -0.4, 0.5)})
        np.testing.assert_allclose(got, want, rtol=1e-10)
    # per-draw rho in numpy: the same as one rho at a time
    packed = fixed.rvs_to_transforms[fixed["metric_chol"]].backward(
        pt.as_tensor(point["metric_chol_cholesky-cov-packed__"])).eval()
    chol = unpack_chol(packed, 2)
    beta = point["beta_std"]
    alpha, eta, sd_u = point["alpha"], _eta(fixed, point), np.exp(point["residual_sd_log__"])
    rhos = np.array([-0.3, 0.0, 0.45])
    many = trial_loglik_numpy(std.z, std.S, design.team_idx, np.tile(beta, (3, 1)), np.tile(alpha, (3, 1, 1)),
                              np.tile(eta - alpha @ beta, (3, 1)), np.tile(chol, (3, 1, 1)), np.full(3, sd_u),
                              a3_corr=rhos)
    for i, rho in enumerate(rhos):
        one = trial_loglik_numpy(std.z, std.S, design.team_idx, beta, alpha, eta - alpha @ beta, chol, sd_u,
                                 a3_corr=rho)
        np.testing.assert_allclose(many[i], one, rtol=1e-12)


def _logit01(x, lower, upper):
    """PyMC's interval transform: the unconstrained value of x in (lower, upper)."""
    u = (x - lower) / (upper - lower)
    return np.log(u) - np.log1p(-u)


def test_lower_degree_on_more_powers_is_the_nested_model(built, synthetic):
    """Degree 1 fitted to data with 2 metric powers (how compare scores degrees on the same numbers)
    is the degree-2 model with beta_2 = 0: the same log-density at beta_2 = 0 (internal scale), except for
    the beta_std prior of the absent beta_2 (a N(0, 2) density at 0)."""
    design, std, _spec, full = built
    nested = build_model(spec_for_degree(1), len(design.teams), std, design.team_idx)
    rng = np.random.default_rng(4)
    point = _random_point(full, rng)
    point["beta_std"] = np.array([point["beta_std"][0], 0.0])
    # the same team KPI means eta: each model's offset is eta - b' alpha with its own slope b (team_slope)
    beta = point["beta_std"]
    eta = _eta(full, point)
    small = dict(point, beta_std=beta[:1], kpi_offset=_offset(nested, point, eta))
    assert nested.initial_point()["beta_std"].shape == (1,)
    lp_full = full.compile_logp()(point)
    lp_nested = nested.compile_logp()(small)
    assert lp_nested == pytest.approx(lp_full - stats.norm(0, 2).logpdf(0.0), rel=1e-10)
    # and the original-scale beta of the nested fit has beta_2 = 0 exactly
    from bayes_cmma.fitting.model import pad_beta

    b = pad_beta(np.array([[0.7]]), 2)
    assert b[0, 1] == 0.0 and b[0, 0] != 0.0
    assert (b @ np.linalg.inv(std.L))[0, 1] == 0.0


def test_partial_centring_changes_the_geometry_not_the_model(built):
    """team_slope b: the log-density at (xi = eta - b' alpha, ...) is the same for every b, and b is the
    within-team least-squares slope of the observed KPI ATEs on the metric powers (0 beyond the degree)."""
    import pymc as pm

    from bayes_cmma.fitting.model import team_slope

    design, std, _spec, model = built
    rng = np.random.default_rng(9)
    point = _random_point(model, rng)
    eta = _eta(model, point)
    b0 = model["team_slope"].get_value().copy()
    values = []
    try:
        for b in (np.zeros(2), np.array([0.3, -2.0]), b0):
            with model:
                pm.set_data({"team_slope": b})
            values.append(model.compile_logp()(point | {"kpi_offset": eta - point["alpha"] @ b}))
    finally:
        with model:
            pm.set_data({"team_slope": b0})
    np.testing.assert_allclose(values, values[0], rtol=1e-12)
    # the slope itself, against least squares with team dummies
    D = np.eye(len(design.teams))[design.team_idx]
    X = np.column_stack([D, std.z[:, 1:]])
    coef = np.linalg.lstsq(X, std.z[:, 0], rcond=None)[0]
    np.testing.assert_allclose(b0, coef[-2:], rtol=1e-9)
    first = team_slope(std.z, design.team_idx, 1)
    coef1 = np.linalg.lstsq(X[:, :-1], std.z[:, 0], rcond=None)[0]
    np.testing.assert_allclose(first, [coef1[-1], 0.0], rtol=1e-9)
    assert np.all(team_slope(np.zeros_like(std.z), design.team_idx, 2) == 0.0)  # undefined: the eta form
