"""The composite north star: closed forms, brute force, and the wrapper on a fake joint posterior."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import optimize, stats

import bayes_cmma as bc
from bayes_cmma.decisions import northstar as ns
from bayes_cmma.errors import BayesCMMAError


def _law(rng, J=3, T=3, zero_means=False):
    A = rng.normal(size=(J, J))
    sigma = A @ A.T + np.eye(J)
    c = rng.normal(size=J)
    var_y = c @ np.linalg.solve(sigma, c) + 0.5
    mu_m = np.zeros((T, J)) if zero_means else rng.normal(size=(T, J))
    mu_y = np.zeros(T) if zero_means else rng.normal(size=T) * 0.7
    tw = rng.dirichlet(np.ones(T))
    return sigma, c, var_y, mu_m, mu_y, tw


def test_bivariate_normal_cdf_matches_scipy_including_zero_arguments():
    rng = np.random.default_rng(0)
    h, k, rho = rng.normal(size=60) * 2, rng.normal(size=60) * 2, rng.uniform(-0.95, 0.95, 60)
    h[:4], k[2:6] = 0.0, 0.0
    ref = [stats.multivariate_normal([0, 0], [[1, r], [r, 1]]).cdf([a, b]) for a, b, r in zip(h, k, rho, strict=True)]
    np.testing.assert_allclose(ns.bvn_cdf(h, k, rho), ref, atol=1e-7)


def test_agreement_with_zero_means_is_the_arcsine_law():
    rho = np.linspace(-0.9, 0.9, 7)
    np.testing.assert_allclose(ns.agreement(0.0, 0.0, rho), 0.5 + np.arcsin(rho) / np.pi, atol=1e-10)


def test_agreement_gradient_matches_finite_differences():
    a, b, rho, eps = 0.4, -0.7, 0.35, 1e-6
    d_b, d_rho = ns._agreement_grad(np.array(a), np.array(b), np.array(rho))
    assert d_b == pytest.approx((ns.agreement(a, b + eps, rho) - ns.agreement(a, b - eps, rho)) / (2 * eps), rel=1e-5)
    assert d_rho == pytest.approx((ns.agreement(a, b, rho + eps) - ns.agreement(a, b, rho - eps)) / (2 * eps),
                                  rel=1e-5)


def test_sign_optimum_matches_a_brute_force_search_over_directions():
    rng = np.random.default_rng(1)
    sigma, c, var_y, mu_m, mu_y, tw = _law(rng, J=2)
    S = np.diag([0.7, 0.3])
    w, score, single = ns.optimal_weights(sigma, c, var_y, mu_m, mu_y, S, tw)
    theta = np.linspace(0.0, 2 * np.pi, 100_001)
    W = np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    grid = ns.score_weights(W, sigma, c, var_y, mu_m, mu_y, S, tw)
    best = W[np.argmax(grid)]
    assert score == pytest.approx(grid.max(), abs=1e-8)
    np.testing.assert_allclose(w, best, atol=2e-4)
    assert abs(np.linalg.norm(w) - 1) < 1e-12
    np.testing.assert_allclose(single, ns.score_weights(np.eye(2), sigma, c, var_y, mu_m, mu_y, S, tw), atol=1e-12)


def test_with_zero_means_the_sign_optimum_is_the_correlation_closed_form():
    rng = np.random.default_rng(2)
    sigma, c, var_y, mu_m, mu_y, tw = _law(rng, zero_means=True)
    S = 0.5 * np.eye(3)
    w_sign, s_sign, _ = ns.optimal_weights(sigma, c, var_y, mu_m, mu_y, S, tw)
    w_corr, s_corr, _ = ns.optimal_weights(sigma, c, var_y, mu_m, mu_y, S, tw, criterion="correlation")
    closed = np.linalg.solve(sigma + S, c)
    np.testing.assert_allclose(w_corr, closed / np.linalg.norm(closed), atol=1e-12)
    np.testing.assert_allclose(w_sign, w_corr, atol=1e-5)
    assert s_sign == pytest.approx(0.5 + np.arcsin(s_corr) / np.pi, abs=1e-9)


def test_correlation_optimum_with_team_means_beats_a_numerical_search():
    rng = np.random.default_rng(3)
    sigma, c, var_y, mu_m, mu_y, tw = _law(rng)
    S = 0.4 * np.eye(3)
    w, score, single = ns.optimal_weights(sigma, c, var_y, mu_m, mu_y, S, tw, criterion="correlation")
    found = optimize.minimize(lambda v: -ns.score_weights(v, sigma, c, var_y, mu_m, mu_y, S, tw, "correlation"),
                              x0=np.ones(3), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-13})
    assert score == pytest.approx(-found.fun, abs=1e-8)
    assert score == pytest.approx(float(ns.score_weights(w, sigma, c, var_y, mu_m, mu_y, S, tw, "correlation")))
    assert np.all(score >= single - 1e-12)


def test_composite_is_never_worse_than_a_single_metric_and_its_score_is_its_weights_score():
    rng = np.random.default_rng(4)
    D, J, T = 200, 3, 4
    A = rng.normal(size=(D, J, J))
    sigma = A @ np.swapaxes(A, -1, -2) + np.eye(J)
    c = rng.normal(size=(D, J))
    var_y = np.einsum("dj,dj->d", c, np.linalg.solve(sigma, c[..., None])[..., 0]) + 0.3
    mu_m, mu_y, tw = rng.normal(size=(D, T, J)), rng.normal(size=(D, T)), np.full(T, 0.25)
    w, score, single = ns.optimal_weights(sigma, c, var_y, mu_m, mu_y, 0.5 * np.eye(J), tw)
    assert w.shape == (D, J) and score.shape == (D,) and single.shape == (D, J)
    assert np.all(score >= single.max(axis=-1) - 1e-12)
    np.testing.assert_allclose(ns.score_weights(w, sigma, c, var_y, mu_m, mu_y, 0.5 * np.eye(J), tw), score,
                               atol=1e-10)


def test_noisier_future_trials_move_the_weight_to_the_less_noisy_metric():
    """y is driven by m1 only; m1 is measured with much more noise than m2 (correlated 0.8 with m1)."""
    sigma = np.array([[1.0, 0.8], [0.8, 1.0]])
    c = sigma[:, 0]
    var_y = 1.3
    S_ref = np.diag([1.0, 0.05])
    weights = [ns.optimal_weights(sigma, c, var_y, np.zeros((1, 2)), np.zeros(1), S_ref / r, np.ones(1))[0][0]
               for r in (0.25, 1.0, 4.0, 64.0)]
    assert np.all(np.diff(weights) > 0)  # m1's weight grows with the future trial's size
    assert weights[0] < 0.3 and weights[-1] > 0.9


def latent_law_closed_form():
    beta, sd, corr = np.array([0.5, -1.0]), np.array([2.0, 0.5]), np.array([[1.0, 0.3], [0.3, 1.0]])
    sigma, c, var_y = ns.latent_law(beta, sd, corr, np.array(0.7))
    return beta, sd, sigma, c, var_y


def test_latent_law_gives_the_marginal_slopes_back():
    beta, _, sigma, c, var_y = latent_law_closed_form()
    np.testing.assert_allclose(c / np.diag(sigma), beta)
    gamma = np.linalg.solve(sigma, c)
    assert var_y == pytest.approx(gamma @ sigma @ gamma + 0.49)


def _fake_joint(n_per_arm=float("nan"), teams=("a", "b"), counts=(30, 10), seed=5):
    rng = np.random.default_rng(seed)
    C, D, J = 2, 50, 3
    metrics = ["m1", "m2", "m3"]
    corr = np.broadcast_to(np.array([[1, 0.6, 0.5], [0.6, 1, 0.4], [0.5, 0.4, 1.0]]), (C, D, J, J))
    post = xr.Dataset(
        {"beta": (("chain", "draw", "metric"), rng.normal([1.0, 0.5, 0.2], 0.1, (C, D, J))),
         "metric_sd": (("chain", "draw", "metric"), rng.uniform(0.8, 1.2, (C, D, J))),
         "metric_corr": (("chain", "draw", "metric", "metric_other"), corr.copy()),
         "residual_sd": (("chain", "draw"), rng.uniform(0.2, 0.4, (C, D))),
         "alpha": (("chain", "draw", "team", "metric"), rng.normal(0.3, 0.1, (C, D, len(teams), J))),
         "kpi_mean": (("chain", "draw", "team"), rng.normal(0.2, 0.1, (C, D, len(teams))))},
        coords={"chain": [0, 1], "draw": np.arange(D), "metric": metrics, "metric_other": metrics,
                "team": list(teams)})
    q = ["y", *metrics]
    ref = 0.3 * np.eye(4) + 0.05
    const = xr.Dataset({"reference_covariance": (("quantity", "quantity_other"), ref),
                        "team_trials": ("team", np.array(counts))},
                       coords={"quantity": q, "quantity_other": q, "team": list(teams)},
                       attrs={"reference_n_per_arm": n_per_arm})
    obs = xr.Dataset({"trial_ate": (("trial", "quantity"), rng.normal(0.0, [1.0, 2.0, 0.5, 0.1], (40, 4)))},
                     coords={"trial": [f"t{k}" for k in range(40)], "quantity": q})
    return xr.DataTree.from_dict({"posterior": post, "constant_data": const, "observed_data": obs}), post, ref


def test_northstar_on_a_fake_joint_posterior_names_its_dims_and_scales_the_noise():
    tree, post, ref = _fake_joint()
    out = bc.northstar(tree, [0.5, 2.0])
    assert out["weight"].dims == ("future_size", "chain", "draw", "metric")
    assert out["score"].dims == ("future_size", "chain", "draw")
    assert out["metric_score"].dims == ("future_size", "chain", "draw", "metric")
    assert np.isnan(out["n_per_arm"]).all()
    # one draw by hand: team weights 30:10, the future trial's noise = reference / size
    i, d = 1, 7
    sigma, c, var_y = ns.latent_law(post["beta"].values[i, d], post["metric_sd"].values[i, d],
                                    post["metric_corr"].values[i, d], post["residual_sd"].values[i, d])
    w, score, single = ns.optimal_weights(sigma, c, var_y, post["alpha"].values[i, d], post["kpi_mean"].values[i, d],
                                          ref[1:, 1:] / 2.0, np.array([0.75, 0.25]))
    scale = tree["observed_data"]["trial_ate"].sel(quantity=["m1", "m2", "m3"]).std("trial", ddof=1).values
    np.testing.assert_allclose(out["scale"].values, scale)
    std_w = w * scale / np.linalg.norm(w * scale)
    np.testing.assert_allclose(out["weight"].values[1, i, d], std_w, atol=1e-6)
    raw = out["raw_weight"].values[1, i, d]  # on the ATEs as reported: the same direction as w
    np.testing.assert_allclose(raw / np.linalg.norm(raw), w, atol=1e-6)
    assert out["score"].values[1, i, d] == pytest.approx(score, abs=1e-10)
    np.testing.assert_allclose(out["metric_score"].values[1, i, d], single, atol=1e-12)
    one_team = bc.northstar(tree, [2.0], team="b")
    assert one_team.attrs["team"] == "b"
    assert not np.allclose(one_team["score"].values[0], out["score"].values[1])


def test_northstar_frame_has_a_row_per_size_and_candidate():
    tree, _, _ = _fake_joint(n_per_arm=1000.0)
    out = bc.northstar(tree, future_n=[500, 4000], criterion="correlation")
    np.testing.assert_allclose(out["future_size"].values, [0.5, 4.0])
    np.testing.assert_allclose(out["n_per_arm"].values, [500, 4000])
    frame = bc.northstar_frame(out)
    assert list(frame["candidate"]) == ["m1", "m2", "m3", "composite"] * 2
    assert set(frame["criterion"]) == {"correlation"}
    singles = frame[frame["candidate"] != "composite"]
    assert np.all(singles["weight_lower"] <= singles["weight_mean"])
    assert np.all(singles["weight_mean"] <= singles["weight_upper"])
    w2 = out["weight"].isel(future_size=1).sel(metric="m2").transpose("chain", "draw").values.ravel()
    row = singles[(singles["future_size"] == 4.0) & (singles["candidate"] == "m2")].iloc[0]
    assert (row["weight_lower"], row["weight_upper"]) == ns.weight_interval(w2, 0.94)
    assert np.all((singles["p_composite_better"] >= 0) & (singles["p_composite_better"] <= 1))
    comp = frame[frame["candidate"] == "composite"]
    assert np.all(comp["score_mean"].values >= singles.groupby("future_size")["score_mean"].max().values - 1e-12)
    # relative weights: each draw's weights over the leading metric's (largest posterior median |weight|)
    for i in range(2):
        w = out["weight"].isel(future_size=i)
        lead = str(out["lead"].values[i])
        assert lead == str(w["metric"].values[np.argmax(np.abs(w.median(("chain", "draw")).values))])
        np.testing.assert_allclose(out["relative_weight"].isel(future_size=i).values,
                                   (w / w.sel(metric=lead)).transpose(*w.dims).values, rtol=1e-12)
        rows = singles[singles["future_size"] == out["future_size"].values[i]].set_index("candidate")
        assert set(rows["lead"]) == {lead}
        assert rows.loc[lead, ["relative_weight_lower", "relative_weight_median", "relative_weight_upper"]].tolist() \
            == [1.0, 1.0, 1.0]
        rel = out["relative_weight"].isel(future_size=i).sel(metric="m2").values.ravel()
        assert rows.loc["m2", "relative_weight_median"] == pytest.approx(np.median(rel))
        assert rows.loc["m2", "relative_weight_lower"] == pytest.approx(np.quantile(rel, 0.03))
    assert comp["relative_weight_median"].isna().all()
    from bayes_cmma.reporting.plots import northstar_plot

    fig = northstar_plot(frame, "correlation", "gmv")
    assert "units per arm" in fig.axes[0].get_xlabel()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sizes": [1.0], "future_n": [100]}, "one way"),
        ({"future_n": [100]}, "no arm sizes"),
        ({"sizes": [0.0]}, "positive and finite; got 0"),
        ({"sizes": [float("inf")]}, "positive and finite"),
        ({"sizes": []}, "one or more"),
        ({"criterion": "rmse"}, "criterion must be one of sign, correlation"),
        ({"team": "zz"}, "team 'zz' is not in the fit; teams: a, b"),
    ],
)
def test_northstar_bad_arguments(kwargs, match):
    tree, _, _ = _fake_joint()
    with pytest.raises(BayesCMMAError, match=match):
        bc.northstar(tree, **kwargs)


def test_a_metric_without_spread_cannot_be_weighed():
    tree, _, _ = _fake_joint()
    obs = tree["observed_data"].to_dataset()
    obs["trial_ate"].loc[{"quantity": "m2"}] = 0.5
    tree["observed_data"] = xr.DataTree(obs)
    with pytest.raises(BayesCMMAError, match="metric 'm2' has no spread"):
        bc.northstar(tree)


def test_northstar_refuses_a_posterior_without_the_reference_covariance():
    _, post, _ = _fake_joint()
    with pytest.raises(BayesCMMAError, match="older bayes_cmma; refit"):
        bc.northstar(xr.DataTree.from_dict({"posterior": post}))
    with pytest.raises(BayesCMMAError, match="needs a joint posterior"):
        bc.northstar(xr.DataTree.from_dict({"posterior": post.drop_vars("metric_corr")}))


def test_reference_covariance_is_the_median_trial_of_the_pooled_form():
    from bayes_cmma.fitting.measurement import reference_covariance
    from bayes_cmma.inputs.data import MetricDesign

    rng = np.random.default_rng(6)
    U = np.array([[2.0, 0.3], [0.3, 1.0]])
    n = rng.integers(100, 1000, size=(9, 2))
    c = 1 / n[:, 0] + 1 / n[:, 1]
    design = MetricDesign(z=rng.normal(size=(9, 2)), S=c[:, None, None] * U, team_idx=np.zeros(9, dtype=int),
                          trials=[f"t{k}" for k in range(9)], teams=["all"], quantities=["y", "m"], kpi="y",
                          metric="m", degree=1, n_filled=0, arm_sizes=n)
    ref, n_ref = reference_covariance(design)
    np.testing.assert_allclose(ref, U * np.median(c))
    assert n_ref == pytest.approx(2 / np.median(c))
    # without arm sizes the scale comes from the metric's variance: the same matrix, no size in units
    ref_proxy, n_proxy = reference_covariance(MetricDesign(**{**design.__dict__, "arm_sizes": None}))
    np.testing.assert_allclose(ref_proxy, U * np.median(c))
    assert np.isnan(n_proxy)


def test_weight_interval_is_the_hdi_and_reaches_a_bound_where_the_density_piles_up():
    """A leading weight's draws pile up against 1: w = 1 - E, E ~ Exponential(scale). The 94% HDI is then
    [1 - scale * log(1 / 0.06), 1] (closed form); the equal-tailed interval ends at 1 - scale * log(1 / 0.97)
    and misses a true weight just below 1 that the HDI covers. A symmetric posterior gets about the
    equal-tailed interval."""
    n, scale = 100_000, 0.02
    u = (np.arange(n) + 0.5) / n  # an exact quantile grid: deterministic draws of the law
    w = 1.0 - scale * -np.log1p(-u)
    lo, hi = ns.weight_interval(w, 0.94)
    assert lo == pytest.approx(1.0 - scale * np.log(1 / 0.06), abs=1e-5)
    assert hi == pytest.approx(1.0, abs=1e-6)
    truth = 0.9995
    eti = np.quantile(w, [0.03, 0.97])
    assert eti[1] < truth <= hi
    assert eti[1] == pytest.approx(1.0 - scale * np.log(1 / 0.97), abs=1e-5)
    sym = 0.1 + 0.05 * stats.norm.ppf(u)
    np.testing.assert_allclose(ns.weight_interval(sym, 0.94), np.quantile(sym, [0.03, 0.97]), atol=1e-4)
