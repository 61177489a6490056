"""Standardisation and the map back to the original scale, on a fake posterior (no sampling)."""

import numpy as np
import pytest
import xarray as xr

from bayes_cmma.fitting.bayes import _log_likelihood, _to_original_scale
from bayes_cmma.fitting.model import standardise, trial_loglik_numpy
from bayes_cmma.inputs.data import metric_design


def _fake_raw(rng, n_teams, P, chains=2, draws=5):
    n_packed = P * (P + 1) // 2
    packed = rng.normal(0, 0.2, (chains, draws, n_packed))
    diag = np.cumsum(np.arange(1, P + 1)) - 1  # positions of diagonal entries in the packed vector
    packed[..., diag] = np.abs(packed[..., diag]) + 0.5
    return xr.Dataset(
        {
            "beta_std": (("chain", "draw", "power"), rng.normal(size=(chains, draws, P))),
            "alpha": (("chain", "draw", "team", "power"), rng.normal(size=(chains, draws, n_teams, P))),
            "kpi_mean": (("chain", "draw", "team"), rng.normal(size=(chains, draws, n_teams))),
            "pi_mean": (("chain", "draw"), rng.normal(size=(chains, draws))),
            "pi_sd": (("chain", "draw"), rng.uniform(0.1, 1, (chains, draws))),
            "metric_chol": (("chain", "draw", "metric_chol_dim_0"), packed),
            "residual_sd": (("chain", "draw"), rng.uniform(0.1, 1, (chains, draws))),
        },
        coords={"chain": np.arange(chains), "draw": np.arange(draws)},
    )


def test_whitening_is_exact_and_undone(synthetic):
    data, _ = synthetic
    design = metric_design(data, "y", "m", 2)
    std = standardise(design)
    # z = x B' with B = blockdiag(1/s0, L^-1): undo it
    back = np.column_stack([std.z[:, 0] * std.kpi_scale, std.z[:, 1:] @ std.L.T])
    np.testing.assert_allclose(back, design.z, rtol=1e-12)
    # pooled within-team covariance of the whitened metric block is the identity
    m = std.z[:, 1:]
    means = np.array([m[design.team_idx == g].mean(0) for g in range(len(design.teams))])
    dev = m - means[design.team_idx]
    np.testing.assert_allclose(dev.T @ dev / (len(m) - len(design.teams)), np.eye(2), atol=1e-6)


@pytest.mark.parametrize("pooled", [True, False])
def test_original_scale_loglik_equals_standardised_minus_jacobian(synthetic, pooled):
    """Per-trial log-lik computed on the original scale with the back-transformed parameters
    equals the standardised one plus log|det B|: checks every back-transform at once."""
    data, _ = synthetic
    design = metric_design(data, "y", "m", 2)
    std = standardise(design)
    raw = _fake_raw(np.random.default_rng(0), len(design.teams), 2)
    if not pooled:  # fewer than 4 teams: independent team effects, no pi_mean / pi_sd
        raw = raw.drop_vars(["pi_mean", "pi_sd"])
    post = _to_original_scale(raw, design, std)
    sd = post["metric_sd"].values
    cov = post["metric_corr"].values * sd[..., :, None] * sd[..., None, :]
    direct = trial_loglik_numpy(
        design.z, design.S, design.team_idx, post["beta"].values, post["alpha"].values,
        post["pi"].values, np.linalg.cholesky(cov), post["residual_sd"].values,
    )
    np.testing.assert_allclose(_log_likelihood(raw, design, std), direct, rtol=1e-8)
    # kpi_mean = beta' alpha + pi on the original scale too
    eta = np.einsum("cdtp,cdp->cdt", post["alpha"].values, post["beta"].values) + post["pi"].values
    np.testing.assert_allclose(post["kpi_mean"].values, eta, rtol=1e-9, atol=1e-12)
    assert ("pi_sd" in post) == pooled


def test_loglik_in_blocks_of_draws_equals_all_at_once(synthetic, monkeypatch):
    """Large K x draws is evaluated in blocks of draws; the blocks must not mix draws or trials."""
    import bayes_cmma.fitting.bayes as fitting

    data, _ = synthetic
    design = metric_design(data, "y", "m", 2)
    std = standardise(design)
    raw = _fake_raw(np.random.default_rng(4), len(design.teams), 2, chains=3, draws=7)
    whole = _log_likelihood(raw, design, std)
    K, d = std.z.shape
    monkeypatch.setattr(fitting, "LOGLIK_BLOCK_ENTRIES", 4 * K * d * d)  # 4 draws per block: 21 = 5 x 4 + 1
    blocked = _log_likelihood(raw, design, std)
    assert blocked.shape == (3, 7, K)
    np.testing.assert_array_equal(blocked, whole)
