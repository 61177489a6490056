"""The value of more trials: today's row by hand count, a two-metric closed form, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import integrate, stats

import bayes_cmma as bc
from bayes_cmma.decisions.more_trials import preposterior
from bayes_cmma.errors import BayesCMMAError


def _draws(mean, cov, n=1000, seed=0):
    rng = np.random.default_rng(seed)
    E = rng.multivariate_normal(mean, cov, size=(2, n))
    names = [f"m{j + 1}" for j in range(len(mean))]
    return xr.DataArray(np.moveaxis(E, -1, 0), dims=("metric", "chain", "draw"), coords={"metric": names})


def test_today_is_the_current_p_best_of_the_metric_with_the_largest_mean():
    da = _draws([1.0, 0.9, 0.5], np.diag([0.04, 0.04, 0.04]))
    out = bc.value_of_trials(da, 30, [0, 10])
    flat = da.transpose("chain", "draw", "metric").values.reshape(-1, 3)
    choice = np.argmax(flat.mean(axis=0))
    assert out["p_correct"].values[0] == pytest.approx(np.mean(np.argmax(flat, axis=1) == choice), abs=1e-12)
    truth_best = flat.max(axis=1)
    assert out["expected_regret"].values[0] == pytest.approx(np.mean(truth_best - flat[:, choice]), abs=1e-12)


def test_two_metrics_match_the_closed_form():
    """d = e1 - e2 ~ N(mu, s^2) today; after k trials the choice is sign(K mu + k d_hat), d_hat ~ N(d, s^2 K / k),
    so P(correct) = E_d[Phi(sign(d) (K mu + k d) / (s sqrt(K k)))]."""
    mu_d, s, K = 0.1, 0.2, 40
    cov = np.array([[0.03, 0.01], [0.01, 0.03]])  # Var(e1 - e2) = 0.04 = s^2
    rng = np.random.default_rng(3)
    E = rng.multivariate_normal([0.5 + mu_d, 0.5], cov, size=200_000)
    res = preposterior(E, K, [0, 20, 100], replicates=1, mc=200, rng=np.random.default_rng(4))

    def closed(k):
        if k == 0:
            return stats.norm.cdf(mu_d / s)

        def f(d):
            return stats.norm.pdf(d, mu_d, s) * stats.norm.cdf(np.sign(d) * (K * mu_d + k * d) / (s * np.sqrt(K * k)))

        return integrate.quad(f, -np.inf, 0)[0] + integrate.quad(f, 0, np.inf)[0]

    for i, k in enumerate([0, 20, 100]):
        assert res["p_correct"][i] == pytest.approx(closed(k), abs=4 * res["p_correct_mcse"][i] + 2e-3), k


def test_more_trials_help_and_the_expected_p_best_is_consistent():
    da = _draws([1.0, 0.95, 0.7], np.array([[0.02, 0.01, 0.0], [0.01, 0.02, 0.0], [0.0, 0.0, 0.02]]))
    out = bc.value_of_trials(da, 25, [0, 25, 100, 400], seed=2)
    assert np.all(np.diff(out["p_correct"].values) > 0)
    assert np.all(np.diff(out["expected_regret"].values) < 0)
    # on normal draws the approximation is exact: the expected P(best) after k trials is P(correct)
    np.testing.assert_allclose(out["expected_p_best"].values, out["p_correct"].values,
                               atol=float(4 * out["p_correct_mcse"].max()) + 0.01)
    again = bc.value_of_trials(da, 25, [0, 25, 100, 400], seed=2)
    assert again.identical(out)
    frame = bc.value_frame(out)
    assert list(frame["total_trials"]) == [25, 50, 125, 425]
    assert out.attrs["trials_needed"] in (-1, *out["new_trials"].values.tolist())


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((0,), {}, "n_trials must be a positive integer"),
        ((10, [0, -5]), {}, "whole numbers >= 0"),
        ((10, [2.5]), {}, "whole numbers >= 0"),
        ((10, []), {}, "whole numbers >= 0"),
        ((10,), {"target": 1.0}, "target must be a probability"),
        ((10,), {"replicates": 0}, "replicates must be a positive integer"),
    ],
)
def test_bad_arguments(args, kwargs, match):
    da = _draws([1.0, 0.9], np.eye(2) * 0.01)
    with pytest.raises(BayesCMMAError, match=match):
        bc.value_of_trials(da, *args, **kwargs)


def test_one_metric_or_non_finite_draws_are_refused():
    with pytest.raises(BayesCMMAError, match="2 or more metrics"):
        bc.value_of_trials(_draws([1.0], np.eye(1) * 0.01), 10)
    da = _draws([1.0, 0.9], np.eye(2) * 0.01)
    da[0, 0, 0] = np.nan
    with pytest.raises(BayesCMMAError, match="non-finite"):
        bc.value_of_trials(da, 10)
    tied = _draws([1.0, 0.9], np.eye(2) * 0.01)
    tied.values[1, :, ::3] = tied.values[0, :, ::3]  # every third draw a tie (dims metric, chain, draw)
    with pytest.raises(BayesCMMAError, match="tie exactly \\(the tie prior's draws\\)"):
        bc.value_of_trials(tied, 10)


def test_the_trials_needed_sentence_names_the_first_count_that_reaches_the_target():
    from bayes_cmma.decisions.more_trials import trials_needed_sentence

    frame = bc.value_frame(bc.value_of_trials(_draws([1.0, 0.95, 0.7], np.eye(3) * 0.01), 25, [0, 25, 100, 400]))
    first = int(frame.loc[frame["expected_p_best"] >= 0.9, "new_trials"].min())
    expected = f"About {first} more trials bring the expected P(best) of the choice to 0.9."
    assert trials_needed_sentence(frame) == expected
    assert "already 0.9 or more today" in trials_needed_sentence(frame.assign(expected_p_best=0.95))
    assert trials_needed_sentence(frame.assign(expected_p_best=0.5)).startswith("Even 400 more trials do not")


# --- under the tie prior (value_of_trials_tie) --------------------------------------------------------------------

def _tied(mean, cov, seed=0, p_tie=0.5):
    from bayes_cmma.decisions.ties import tie_posterior

    return tie_posterior(_draws(mean, cov, n=2000, seed=seed), p_tie=p_tie, seed=seed + 1)


COV3 = np.array([[0.010, 0.006, 0.004], [0.006, 0.012, 0.007], [0.004, 0.007, 0.015]])


def test_tie_grid_posterior_and_means_match_the_direct_formulas():
    """The vectorised grid (TieGrid) against tie_posterior's p_tie and the per-point formulas, row by row."""
    from bayes_cmma.decisions.ties import TieGrid, restricted_loglik, tau_grid

    tied = _tied([1.0, 1.03, 0.97], COV3)
    V, level = tied["likelihood_cov"].values, tied.attrs["level"]
    grid = TieGrid(V, level, 0.5, 1.0)
    rows = np.random.default_rng(5).normal(1.0, 0.15, size=(6, 3))
    post = grid.posterior(rows)
    assert grid.posterior(tied["likelihood_mean"].values[None])[0, 0] == pytest.approx(tied.attrs["p_tie"], rel=1e-9)
    t, mass = tau_grid(1.0)
    spread = np.concatenate([[0.0], t]) * level
    Vi = np.linalg.inv(V)
    one = np.ones(3)
    for r, e in enumerate(rows):
        with np.errstate(divide="ignore"):  # the grid's last cells have no HalfNormal mass in double precision
            log_post = np.log(np.concatenate([[0.5], 0.5 * mass])) + restricted_loglik(e, V, spread)
        direct = np.exp(log_post - log_post.max())
        np.testing.assert_allclose(post[r], direct / direct.sum(), rtol=1e-8, atol=1e-300)
        for k in (0, 1, 150, 400):
            if k == 0:
                expected = one * (one @ Vi @ e) / (one @ Vi @ one)
            else:
                cov = np.linalg.inv(Vi + (np.eye(3) - 1 / 3) / spread[k] ** 2)
                expected = cov @ Vi @ e
                np.testing.assert_allclose(grid.chol[k] @ grid.chol[k].T, cov, rtol=1e-6, atol=1e-12)
            np.testing.assert_allclose(grid.M[k] @ e, expected, rtol=1e-8)


@pytest.mark.parametrize("mean", [[1.0, 1.03, 0.97], [1.0, 0.9, 0.8]])
def test_tie_preposterior_is_coherent(mean):
    """Truth drawn from the tie posterior and an exact Bayes update under the same prior: the expected
    P(best) of the choice after K_new trials equals P(choice truly best) (both splitting ties), for every
    K_new; and today's P(correct) is the ranking's P(best) of the choice."""
    tied = _tied(mean, COV3, seed=2)
    out = bc.value_of_trials_tie(tied, 40, [0, 20, 200], seed=3)
    np.testing.assert_allclose(out["expected_p_best"].values, out["p_correct"].values,
                               atol=float(4 * out["p_correct_mcse"].max() + 0.01))
    ranking = bc.rank_metrics(tied["elasticity"])
    choice = int(np.argmax(tied["likelihood_mean"].values))  # the tie's mean map keeps the likelihood's order here
    assert out["p_correct"].values[0] == pytest.approx(float(ranking["p_best"].values[choice]), abs=0.01)
    assert out.attrs["method"].startswith("tie-prior")


def test_tie_preposterior_a_tie_stays_a_tie_while_regret_falls():
    near = bc.value_of_trials_tie(_tied([1.0, 1.01, 0.99], COV3 * 0.2, seed=4), 40, [0, 50, 500], seed=1)
    assert near["expected_p_best"].values[-1] < 0.6  # the tie's mass is not argued away by more trials
    assert near["expected_regret"].values[-1] < near["expected_regret"].values[0]
    assert near.attrs["trials_needed"] == -1
    apart = bc.value_of_trials_tie(_tied([1.0, 0.6, 0.3], COV3, seed=4), 40, [0, 50], seed=1)
    assert apart["p_correct"].values[0] > 0.99 and apart["expected_regret"].values[0] < 1e-3


def test_tie_preposterior_same_seed_same_numbers_and_bad_input():
    tied = _tied([1.0, 1.03, 0.97], COV3)
    a = bc.value_of_trials_tie(tied, 30, [0, 10], seed=7)
    b = bc.value_of_trials_tie(tied, 30, [0, 10], seed=7)
    xr.testing.assert_identical(a, b)
    with pytest.raises(BayesCMMAError, match="needs the output of tie_posterior"):
        bc.value_of_trials_tie(tied[["elasticity"]], 30)
    with pytest.raises(BayesCMMAError, match="n_trials must be a positive integer"):
        bc.value_of_trials_tie(tied, 0)
    with pytest.raises(BayesCMMAError, match="new_trials must be whole numbers"):
        bc.value_of_trials_tie(tied, 30, [-5])
    with pytest.raises(BayesCMMAError, match="Use value_of_trials_tie"):
        bc.value_of_trials(tied["elasticity"], 30)


def test_the_report_and_the_frame_say_which_preposterior_made_the_numbers():
    from bayes_cmma.reporting.report import _more_trials_section

    tie_frame = bc.value_frame(bc.value_of_trials_tie(_tied([1.0, 1.03, 0.97], COV3), 30, [0, 10], seed=1))
    normal_frame = bc.value_frame(bc.value_of_trials(_draws([1.0, 0.9], np.eye(2) * 0.01), 30, [0, 10]))
    assert tie_frame["method"].iloc[0].startswith("tie-prior")
    assert normal_frame["method"].iloc[0].startswith("normal preposterior")
    assert "if the metrics truly tie no number of trials separates them" in _more_trials_section(tie_frame)
    assert "truly tie" not in _more_trials_section(normal_frame)
