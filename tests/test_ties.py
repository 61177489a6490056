"""The tie prior of the joint ranking: its posterior against quadrature with two metrics, the prior
divided out, tied draws sharing ranks, bad input, and the ranking of a real fit."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import integrate, stats

import bayes_cmma as bc
from bayes_cmma.checks.ranking_calibration import candidate_truth, simulate_candidates
from bayes_cmma.decisions.derived import rank_metrics
from bayes_cmma.decisions.ties import likelihood_moments, restricted_loglik, tau_grid, tie_posterior
from bayes_cmma.errors import BayesCMMAError


def exact_draws(mean, cov, n, seed=0):
    """n draws whose sample mean and covariance (ddof 1) are exactly ``mean`` and ``cov``."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return np.asarray(mean) + z @ np.linalg.cholesky(cov).T


def as_elasticity(flat, chains=4):
    n, J = flat.shape
    return xr.DataArray(flat.reshape(chains, n // chains, J), dims=("chain", "draw", "metric"),
                        coords={"metric": [f"m{j + 1}" for j in range(J)]})


def quadrature(e_hat, V, p_tie, scale):
    """Two metrics, by hand: the contrast d = e1 - e2 carries everything about the spread tau.

    d_hat ~ N(d, v), d ~ N(0, 2 tau^2 L^2) given tau, d = 0 under the tie. Returns P(tie | data) and
    P(e1 > e2 | data) (a tie counts one half).
    """
    v = V[0, 0] + V[1, 1] - 2 * V[0, 1]
    d = e_hat[0] - e_hat[1]
    L = np.sqrt(np.mean(e_hat**2))

    def marginal(t):
        return stats.halfnorm.pdf(t, scale=scale) * stats.norm.pdf(d, 0, np.sqrt(v + 2 * (t * L) ** 2))

    def above(t):
        w = 2 * (t * L) ** 2
        mean, var = d * w / (w + v), w * v / (w + v)
        return marginal(t) * stats.norm.cdf(mean / np.sqrt(var))

    opts = dict(points=[1e-3, 1e-2, 0.1, 1.0], limit=400, epsabs=1e-13, epsrel=1e-10)
    slab = integrate.quad(marginal, 0, 40 * scale, **opts)[0]
    slab_above = integrate.quad(above, 0, 40 * scale, **opts)[0]
    tie = p_tie * stats.norm.pdf(d, 0, np.sqrt(v))
    z = tie + (1 - p_tie) * slab
    return tie / z, (0.5 * tie + (1 - p_tie) * slab_above) / z


@pytest.mark.parametrize(("e_hat", "p_tie", "scale"), [
    ([1.0, 1.02], 0.5, 1.0),   # a near tie: the tie is likely
    ([1.0, 0.7], 0.5, 1.0),    # apart by 1.3 se of the contrast
    ([1.0, 0.4], 0.3, 0.5),    # far apart
    ([0.2, -0.1], 0.8, 2.0),   # opposite signs, a level near 0
])
def test_two_metrics_against_quadrature(e_hat, p_tie, scale):
    e_hat = np.array(e_hat)
    V = np.array([[0.04, 0.015], [0.015, 0.03]])
    n = 400_000
    draws = as_elasticity(exact_draws(e_hat, V, n))
    out = tie_posterior(draws, p_tie=p_tie, spread_scale=scale, seed=1)
    p_tie_exact, p_above = quadrature(e_hat, V, p_tie, scale)
    # the grid (400 points) against adaptive quadrature
    assert out.attrs["p_tie"] == pytest.approx(p_tie_exact, abs=2e-4)
    ranking = rank_metrics(out["elasticity"])
    mcse = np.sqrt(p_above * (1 - p_above) / n)
    assert abs(float(ranking["p_best"].sel(metric="m1")) - p_above) < 4 * mcse + 2e-4
    assert float(out["tie"].mean()) == pytest.approx(p_tie_exact, abs=4 * np.sqrt(p_tie_exact / n) + 2e-4)


def test_tied_draws_are_equal_and_share_the_ranks():
    draws = as_elasticity(exact_draws([1.0, 1.01, 0.99], 0.02 * np.eye(3) + 0.01, 4000))
    out = tie_posterior(draws, seed=2)
    e = out["elasticity"].values.reshape(-1, 3)
    tied = out["tie"].values.ravel()
    assert tied.any() and not tied.all()
    assert np.all(e[tied] == e[tied][:, :1]) and np.all(np.ptp(e[~tied], axis=1) > 0)
    assert np.all(out["spread"].values.ravel()[tied] == 0)
    # three tied metrics and a clear order
    flat = np.array([[1.0, 1.0, 1.0], [3.0, 2.0, 1.0]]).T  # (metric, sample)
    ranking = rank_metrics(xr.DataArray(flat[:, None, :], dims=("metric", "chain", "draw"),
                                        coords={"metric": ["a", "b", "c"]}))
    np.testing.assert_allclose(ranking["p_rank"].values, [[2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6],
                                                          [1 / 6, 1 / 6, 2 / 3]])
    np.testing.assert_allclose(ranking["expected_rank"].values, [1.5, 2.0, 2.5])
    # two tied in first place, one below
    two = rank_metrics(xr.DataArray(np.array([[2.0], [2.0], [1.0]])[:, None, :], dims=("metric", "chain", "draw")))
    np.testing.assert_allclose(two["p_best"].values, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(two["expected_rank"].values, [1.5, 1.5, 3.0])


def test_three_metrics_without_tie_mass_against_importance_weights():
    """p_tie = 0, three metrics: P(best) against likelihood draws weighted by the spread prior's density.

    With mu flat, the prior density of e is proportional to the integral over tau of
    HalfNormal(tau) (tau L)^-(J-1) exp(-SS / (2 tau^2 L^2)), SS = sum_j (e_j - mean e)^2.
    """
    mean, V = np.array([1.0, 0.9, 0.7]), 0.01 * np.eye(3) + 0.005
    scale = 1.0
    lik = exact_draws(mean, V, 40_000, seed=4)
    L = np.sqrt(np.mean(mean**2))
    ss = ((lik - lik.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)

    def density(t):
        sd = max(t, 1e-12) * L
        return stats.halfnorm.pdf(t, scale=scale) * sd**-2.0 * np.exp(-ss / (2 * sd * sd))

    w = integrate.quad_vec(density, 0, 40 * scale, points=[1e-3, 1e-2, 0.1, 1.0], epsrel=1e-8)[0]
    w /= w.sum()
    best = lik.argmax(axis=1)
    want = np.array([w[best == j].sum() for j in range(3)])
    ess = 1 / np.sum(w**2)
    out = tie_posterior(as_elasticity(exact_draws(mean, V, 200_000)), p_tie=0.0, spread_scale=scale, seed=3)
    assert out.attrs["p_tie"] == 0.0 and not out["tie"].values.any()
    got = rank_metrics(out["elasticity"])["p_best"].values
    se = np.sqrt(want * (1 - want) / ess + got * (1 - got) / 200_000)
    assert ess > 5_000  # the weights are not degenerate (measured: about 9,900 of 40,000)
    assert np.all(np.abs(got - want) < 4 * se + 1e-3), (got, want, se)
    # and the shrinkage is real: the flat posterior's P(best) differs
    assert abs(rank_metrics(as_elasticity(lik))["p_best"].values[0] - got[0]) > 10 * se[0]


def test_the_fits_prior_is_divided_out():
    """Draws from prior x likelihood give back the likelihood's mean and covariance."""
    e_lik, V_lik = np.array([0.5, 0.4]), np.array([[0.02, 0.01], [0.01, 0.03]])
    prior_mean, prior_sd = np.array([0.0, 0.1]), np.array([0.3, 0.2])
    P = np.linalg.inv(V_lik) + np.diag(prior_sd**-2.0)
    post_cov = np.linalg.inv(P)
    post_mean = post_cov @ (np.linalg.inv(V_lik) @ e_lik + prior_mean / prior_sd**2)
    e_hat, V = likelihood_moments(exact_draws(post_mean, post_cov, 5000), prior_mean, prior_sd)
    np.testing.assert_allclose(e_hat, e_lik, rtol=1e-9)
    np.testing.assert_allclose(V, V_lik, rtol=1e-9)
    with pytest.raises(BayesCMMAError, match="say too little"):  # a prior narrower than the posterior
        likelihood_moments(exact_draws(post_mean, post_cov, 5000), prior_mean, np.array([0.05, 0.2]))


def test_grid_and_restricted_likelihood():
    t, mass = tau_grid(0.7)
    assert mass.sum() == pytest.approx(1.0, abs=1e-12) and np.all(np.diff(t) > 0) and t[0] < 1e-3
    # restricted likelihood: differences of log-densities of the contrasts, for two metrics
    e, V = np.array([0.3, 0.1]), np.array([[0.02, 0.005], [0.005, 0.01]])
    v = V[0, 0] + V[1, 1] - 2 * V[0, 1]
    spreads = np.array([0.0, 0.1, 0.5])
    got = restricted_loglik(e, V, spreads)
    want = stats.norm.logpdf(e[0] - e[1], 0, np.sqrt(v + 2 * spreads**2))
    np.testing.assert_allclose(got - got[0], want - want[0], rtol=1e-12)


def test_same_seed_same_draws():
    draws = as_elasticity(exact_draws([1.0, 1.05, 0.95], 0.02 * np.eye(3), 2000))
    a, b = tie_posterior(draws, seed=5), tie_posterior(draws, seed=5)
    np.testing.assert_array_equal(a["elasticity"].values, b["elasticity"].values)
    assert not np.array_equal(a["elasticity"].values, tie_posterior(draws, seed=6)["elasticity"].values)
    assert a["elasticity"].dims == draws.dims


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"p_tie": 1.0}, "must be in \\[0, 1\\), got 1.0"),
    ({"p_tie": -0.1}, "got -0.1"),
    ({"p_tie": float("nan")}, "p_tie"),
    ({"spread_scale": 0.0}, "spread scale must be a positive number, got 0.0"),
])
def test_bad_settings(kwargs, match):
    draws = as_elasticity(exact_draws([1.0, 0.9], 0.01 * np.eye(2), 400))
    with pytest.raises(BayesCMMAError, match=match):
        tie_posterior(draws, **kwargs)


def test_bad_draws():
    with pytest.raises(BayesCMMAError, match="2 or more metrics"):
        tie_posterior(as_elasticity(exact_draws([1.0, 0.9], 0.01 * np.eye(2), 400))[..., :1])
    bad = exact_draws([1.0, 0.9], 0.01 * np.eye(2), 400)
    bad[3, 1] = np.nan
    with pytest.raises(BayesCMMAError, match="non-finite"):
        tie_posterior(as_elasticity(bad))


def test_too_few_draws():
    with pytest.raises(BayesCMMAError, match="more draws than metrics \\(3 draws of 3 metrics\\)"):
        tie_posterior(xr.DataArray(np.eye(3)[None], dims=("chain", "draw", "metric")))


def test_fit_joint_refuses_a_student_t_slope_prior_with_the_tie_prior():
    from bayes_cmma.fitting.spec import parse_spec, spec_for_degree

    raw = spec_for_degree(1).to_dict()
    raw["priors"]["beta_std"] = {"dist": "studentt", "nu": 3.0, "mu": 0.0, "sigma": 2.0}
    truth = candidate_truth(0.8, "spread")
    data = simulate_candidates(np.random.default_rng(1), truth, metric_corr=0.8, n_trials=12)
    with pytest.raises(BayesCMMAError, match="divides out a normal prior.*'studentt'"):
        bc.fit_joint(data, "y", truth.metrics, at=truth.at, elasticity_prior="tie", model=parse_spec(raw, source="t"))


def test_fit_joint_refuses_tie_settings_without_the_tie_prior():
    truth = candidate_truth(0.8, "spread")
    data = simulate_candidates(np.random.default_rng(1), truth, metric_corr=0.8, n_trials=12)
    with pytest.raises(BayesCMMAError, match="only with elasticity_prior='tie'"):
        bc.fit_joint(data, "y", truth.metrics, at=truth.at, elasticity_prior="pooled", p_tie=0.3)
    with pytest.raises(BayesCMMAError, match="got 1.5"):
        bc.fit_joint(data, "y", truth.metrics, at=truth.at, elasticity_prior="tie", p_tie=1.5)


def test_ranking_frame_says_p_tie():
    from bayes_cmma.reporting.outputs import ranking_frame

    draws = as_elasticity(exact_draws([1.0, 1.01], 0.02 * np.eye(2), 400))
    ranking = rank_metrics(draws)
    ranking.attrs.update({"pairing": "joint", "elasticity_prior": "tie", "p_tie": 0.7, "prior_p_tie": 0.5})
    table = ranking_frame(ranking)
    assert set(table["p_tie"]) == {0.7} and set(table["prior_p_tie"]) == {0.5}
    assert "p_tie" not in ranking_frame(rank_metrics(draws)).columns
    from bayes_cmma.reporting.report import _pairing_sentence

    assert "probability that the metrics' elasticities are equal is 0.70 (prior 0.50)" in _pairing_sentence(ranking)


def test_terminal_says_p_tie(capsys):
    from bayes_cmma.cli import _say_recommendation

    ranking = pd.DataFrame({"metric": ["m2", "m1"], "p_best": [0.6, 0.4], "expected_rank": [1.4, 1.6],
                            "expected_regret": [0.0, 0.01], "pairing": "joint", "p_tie": 0.71, "prior_p_tie": 0.5})
    _say_recommendation(ranking)
    printed = " ".join(capsys.readouterr().out.split())
    assert "Recommended north-star metric: m2 (P(best) = 0.60" in printed
    assert "P(the metrics' elasticities tie) = 0.71 under the tie prior (prior 0.50)" in printed
    _say_recommendation(ranking.drop(columns=["p_tie", "prior_p_tie"]))
    assert "tie prior" not in capsys.readouterr().out
