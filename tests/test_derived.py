"""DRF, elasticity and ranking against hand computations, on fake posteriors."""

import numpy as np
import pytest
import xarray as xr
from arviz_base import from_dict

import bayes_cmma as bc
from bayes_cmma.decisions.derived import rank_metrics, stack_metrics
from bayes_cmma.errors import AssumptionWarning, BayesCMMAError


def test_drf_from_published_coefficients():
    # the paper's Table 3 cubic: 4m + 0m^2 + 5m^3
    out = bc.drf([4.0, 0.0, 5.0], grid=[0.0, 0.5, 2.0])
    np.testing.assert_allclose(out.values, [0.0, 4 * 0.5 + 5 * 0.125, 8 + 40])
    assert out.dims == ("grid",)
    np.testing.assert_allclose(out["grid"].values, [0.0, 0.5, 2.0])


def test_elasticity_by_hand():
    beta = [8000.0, -4.0e5]
    m, lift = 0.002, 0.1
    mu = lambda x: 8000 * x - 4e5 * x**2  # noqa: E731
    assert float(bc.elasticity(beta, m, lift)) == pytest.approx((mu(0.0022) - mu(0.002)) / mu(0.002))
    assert float(bc.elasticity(beta, m, lift, baseline=60.0)) == pytest.approx((mu(0.0022) - mu(0.002)) / 60.0)


def test_linear_drf_with_mu_baseline_warns_that_it_cannot_rank():
    with pytest.warns(AssumptionWarning, match="equals the lift"):
        out = bc.elasticity([3.0], 0.5, lift=0.1)
    assert float(out) == pytest.approx(0.1)


def test_drf_keeps_sample_dims_of_posterior_draws():
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(2, 50, 3))
    tree = from_dict({"posterior": {"beta": draws}}, dims={"beta": ["power"]}, coords={"power": [1, 2, 3]})
    beta = tree["posterior"]["beta"]
    out = bc.drf(beta, grid=np.linspace(0, 1, 4))
    assert out.dims == ("chain", "draw", "grid")
    g = np.linspace(0, 1, 4)
    np.testing.assert_allclose(out.values, np.einsum("cdp,gp->cdg", draws, g[:, None] ** np.arange(1, 4)))


def test_bad_coefficients_and_lift_are_clear_errors():
    with pytest.raises(BayesCMMAError, match="finite"):
        bc.drf([1.0, np.nan], [0.1])
    with pytest.raises(BayesCMMAError, match="lift"):
        bc.elasticity([1.0, 2.0], 0.1, lift=0.0)


def _elasticities(values):
    """values: dict metric -> (chain, draw) array."""
    parts = [xr.DataArray(v, dims=("chain", "draw")) for v in values.values()]
    return stack_metrics(parts, list(values))


def test_ranking_on_a_known_posterior():
    rng = np.random.default_rng(1)
    n = 200_000
    a = rng.normal(1.0, 1.0, (1, n))
    b = rng.normal(0.0, 1.0, (1, n))
    c = np.full((1, n), -10.0)
    r = rank_metrics(_elasticities({"a": a, "b": b, "c": c}))
    # P(a > b) = Phi(1 / sqrt(2))
    from scipy.stats import norm

    p = norm.cdf(1 / np.sqrt(2))
    assert float(r["p_best"].sel(metric="a")) == pytest.approx(p, abs=0.005)
    assert float(r["p_best"].sel(metric="c")) == 0.0
    np.testing.assert_allclose(r["p_rank"].sum("rank").values, 1.0)
    np.testing.assert_allclose(r["p_rank"].sum("metric").values, 1.0)
    assert float(r["p_rank"].sel(metric="c", rank=3)) == 1.0
    assert float(r["expected_rank"].sel(metric="a")) == pytest.approx(1 + (1 - p), abs=0.005)
    # regret of b: E[max(a, b) - b] = E[(a - b)^+], a - b ~ N(1, 2)
    s = np.sqrt(2)
    expected = 1 * norm.cdf(1 / s) + s * norm.pdf(1 / s)
    assert float(r["expected_regret"].sel(metric="b")) == pytest.approx(expected, abs=0.01)
    # regret of c: E[max(a, b)] + 10 = E[b] + E[(a - b)^+] + 10
    assert float(r["expected_regret"].sel(metric="c")) == pytest.approx(10 + expected, abs=0.01)


def test_ranking_needs_metric_dim_and_matching_draws():
    with pytest.raises(BayesCMMAError, match="metric"):
        rank_metrics(xr.DataArray(np.zeros((1, 3)), dims=("chain", "draw")))
    with pytest.raises(BayesCMMAError, match="chain/draw"):
        stack_metrics([xr.DataArray(np.zeros((1, 3)), dims=("chain", "draw")),
                       xr.DataArray(np.zeros((1, 4)), dims=("chain", "draw"))], ["a", "b"])
