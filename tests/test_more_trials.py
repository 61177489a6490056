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
