"""The P(best) calibration harness: the simulated law's truth, and the reliability tables (no sampling)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_cmma.checks.ranking_calibration import (
    REGIMES,
    candidate_truth,
    chosen_metric_summary,
    reliability_table,
    simulate_candidates,
    within_team_slopes,
)


@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_truth_has_the_regime_s_relative_elasticities(regime):
    truth = candidate_truth(0.8, regime)
    np.testing.assert_allclose(truth.elasticity / truth.elasticity[0], REGIMES[regime], rtol=1e-12)
    np.testing.assert_allclose(truth.beta, [1.0, 0.8, 0.8])
    assert truth.best == ("m2" if regime == "near_tie" else "m1")
    with pytest.raises(ValueError, match="regime must be one of"):
        candidate_truth(0.8, "tied")
    with pytest.raises(ValueError, match="metric_corr must be in"):
        candidate_truth(1.0, regime)


def test_simulated_trials_have_the_true_marginal_slopes():
    """With many trials and tiny standard errors the within-team least-squares slope of the KPI on each
    metric alone is b Omega_1j / Omega_jj (the per-metric model's beta), not the generating b."""
    corr = 0.6
    truth = candidate_truth(corr, "spread")
    data = simulate_candidates(np.random.default_rng(0), truth, metric_corr=corr, n_trials=20000,
                               se_range=(1e-3, 2e-3), residual_sd=0.1)
    ds = data.dataset
    team = ds["team"].values
    y = ds["estimate"].sel(quantity="y").values
    for j, m in enumerate(truth.metrics):
        x = ds["estimate"].sel(quantity=m).values
        frame = pd.DataFrame({"x": x, "y": y, "team": team})
        centred = frame[["x", "y"]] - frame.groupby("team")[["x", "y"]].transform("mean")
        slope = float((centred["x"] * centred["y"]).sum() / (centred["x"] ** 2).sum())
        assert slope == pytest.approx(truth.beta[j], abs=0.02), m


def test_reliability_table_of_calibrated_and_of_overconfident_probabilities():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 40000)
    calibrated = reliability_table(p, rng.uniform(0, 1, p.size) < p)
    assert calibrated["n"].sum() == p.size and len(calibrated) == 10
    assert np.all(np.abs(calibrated["gap"]) < 0.03)
    c = calibrated
    inside = (c["ci_lower"] <= c["mean_p_best"]) & (c["mean_p_best"] <= c["ci_upper"])
    assert inside.sum() >= 8  # 95% intervals: all but a bin or two
    # the truth is half as extreme as the probabilities say: high bins over-, low bins under-confident
    shrunk = reliability_table(p, rng.uniform(0, 1, p.size) < 0.5 + 0.5 * (p - 0.5))
    assert shrunk["gap"].iloc[-1] < -0.15 and shrunk["gap"].iloc[0] > 0.15
    # P(best) = 1 falls in the last bin, empty bins are reported with n = 0
    edge = reliability_table(np.array([1.0, 0.05]), np.array([True, False]))
    assert edge["n"].iloc[-1] == 1 and edge["n"].iloc[0] == 1 and edge["n"].iloc[1:-1].sum() == 0


def test_chosen_metric_summary():
    results = pd.DataFrame({"rep": [0, 0, 1, 1, 2, 2], "metric": ["a", "b"] * 3,
                            "p_best": [0.7, 0.3, 0.4, 0.6, 0.9, 0.1],
                            "is_best": [True, False, True, False, True, False]})
    s = chosen_metric_summary(results)
    assert s["replications"] == 3
    assert s["mean_p_best"] == pytest.approx((0.7 + 0.6 + 0.9) / 3)
    assert s["truly_best"] == pytest.approx(2 / 3)
    assert s["overconfidence"] == pytest.approx((0.7 + 0.6 + 0.9) / 3 - 2 / 3)


def test_within_team_slopes_against_least_squares_and_moments():
    """Without deconvolution each slope is numpy's least-squares slope of the KPI on the metric with
    team dummies, and the correlation numpy's of the team-demeaned metrics; with it, the moments are
    the within-team covariance over K - teams minus the mean error covariance."""
    truth = candidate_truth(0.5, "spread")
    data = simulate_candidates(np.random.default_rng(8), truth, metric_corr=0.5, n_trials=24)
    ds = data.dataset
    q = list(data.quantities)
    z = ds["estimate"].values
    team = ds["team"].values.astype(str)
    dummies = (team[:, None] == np.unique(team)[None, :]).astype(float)
    corr, slopes = within_team_slopes(data, truth.metrics)
    for j, m in enumerate(truth.metrics):
        X = np.column_stack([z[:, q.index(m)], dummies])
        np.testing.assert_allclose(slopes[j], np.linalg.lstsq(X, z[:, q.index("y")], rcond=None)[0][0], rtol=1e-10)
    demeaned = z - dummies @ np.linalg.lstsq(dummies, z, rcond=None)[0]
    np.testing.assert_allclose(corr, np.corrcoef(demeaned[:, 1:].T), rtol=1e-10)
    _, mom = within_team_slopes(data, truth.metrics, deconvolve=True)
    cov = demeaned.T @ demeaned / (24 - 4) - ds["covariance"].values.mean(axis=0)
    np.testing.assert_allclose(mom, cov[0, 1:] / np.diag(cov)[1:], rtol=1e-10)
