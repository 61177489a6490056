"""The paper's unit-level DGP (bayes_cmma.studies.simulate): moments for a fixed seed, what each violation changes."""

import numpy as np
import pandas as pd
import pytest

from bayes_cmma.errors import BayesCMMAError
from bayes_cmma.studies.simulate import SimulationSettings, simulate_units


def _within(units: pd.DataFrame, col: str) -> pd.Series:
    """Deviation from the (trial, arm) mean."""
    return units[col] - units.groupby(["trial", "treated"])[col].transform("mean")


def test_shape_labels_and_treatment_share():
    sim = simulate_units(SimulationSettings(n_trials=30, n_per=400), np.random.default_rng(0))
    u = sim.units
    assert list(u.columns) == ["trial", "team", "treated", "m", "y"]
    assert len(u) == 30 * 400 and u["trial"].nunique() == 30
    assert sorted(u["team"].unique()) == ["team1", "team2", "team3"]
    # teams in turn: trial k belongs to team k mod 3
    assert u.drop_duplicates("trial")["team"].tolist()[:4] == ["team1", "team2", "team3", "team1"]
    assert set(u["treated"].unique()) == {0, 1}
    assert abs(u["treated"].mean() - 0.5) < 0.01


def test_unit_level_moments_match_the_dgp():
    # beta = 0 and no slope innovation: within a control arm, M = phi + M*, Y = theta + Y*
    s = SimulationSettings(n_trials=40, n_per=2000, beta=(0.0,), random_slope=False)
    u = simulate_units(s, np.random.default_rng(1)).units
    ctrl = u[u["treated"] == 0]
    dm, dy = _within(ctrl, "m"), _within(ctrl, "y")
    assert dm.std() == pytest.approx(3.0, rel=0.01)
    assert dy.std() == pytest.approx(3.0, rel=0.01)
    assert np.corrcoef(dm, dy)[0, 1] == pytest.approx(0.95, abs=0.003)
    # treated arm of M has the extra eps_tau innovation: var 9 + 0.25
    dm_t = _within(u[u["treated"] == 1], "m")
    assert dm_t.var() == pytest.approx(9.25, rel=0.02)


def test_trial_effects_follow_the_truth():
    s = SimulationSettings(n_trials=60, n_per=4000)
    sim = simulate_units(s, np.random.default_rng(2))
    means = sim.units.groupby(["trial", "treated"])[["m", "y"]].mean().unstack()
    ate_m = (means[("m", 1)] - means[("m", 0)]).to_numpy()
    tau = sim.truth["tau"]
    # se of an ATE on M is about 3 * sqrt(4 / 4000) ~ 0.095
    assert np.abs(ate_m - tau).max() < 0.5
    assert np.abs(np.mean(ate_m - tau)) < 0.05
    # within-team spread U(-3, 3): tau - team mean is in [-3, 3] with sd ~ sqrt(3)
    spread = tau - np.asarray(s.tau_team)[sim.truth["team_idx"]]
    assert np.all(np.abs(spread) <= 3.0) and spread.std() == pytest.approx(np.sqrt(3), rel=0.25)
    # KPI ATE = 4 tau + gamma (+ noise): the linear DRF and team direct effects
    ate_y = (means[("y", 1)] - means[("y", 0)]).to_numpy()
    resid = ate_y - 4 * ate_m - sim.truth["gamma"]
    assert abs(resid.mean()) < 0.15


def test_a4_removes_within_team_variation_of_tau():
    sim = simulate_units(SimulationSettings(n_trials=12, n_per=10, violation="A4"), np.random.default_rng(3))
    tau, team = sim.truth["tau"], sim.truth["team_idx"]
    np.testing.assert_allclose(tau, np.array([0.5, 1.0, 2.5])[team])
    base = simulate_units(SimulationSettings(n_trials=12, n_per=10), np.random.default_rng(3))
    assert np.ptp(base.truth["tau"][base.truth["team_idx"] == 0]) > 0.5


def test_a3_direct_effect_correlates_with_the_effect_on_m():
    s = SimulationSettings(n_trials=4000, n_per=4, violation="A3")
    sim = simulate_units(s, np.random.default_rng(4))
    spread = sim.truth["tau"] - np.asarray(s.tau_team)[sim.truth["team_idx"]]
    delta = sim.truth["delta"]
    assert np.corrcoef(delta, spread)[0, 1] == pytest.approx(0.8, abs=0.02)
    assert delta.std() == pytest.approx(1.0, rel=0.05)
    base = simulate_units(SimulationSettings(n_trials=50, n_per=4), np.random.default_rng(4))
    assert np.all(base.truth["delta"] == 0)


def test_a2_makes_the_unit_slope_depend_on_the_unit_level():
    # Y = theta + e M + Y* in a control arm: E[e M*] = 0.8 * 0.5 * 3 = 1.2 under A2, 0 otherwise
    common = dict(n_trials=40, n_per=2000, beta=(0.0,))
    for violation, expected in (("A2", 1.2), (None, 0.0)):
        sim = simulate_units(SimulationSettings(violation=violation, **common), np.random.default_rng(5))
        u = sim.units
        k = u["trial"].str[1:].astype(int).to_numpy()
        ctrl = (u["treated"] == 0).to_numpy()
        centred = u["y"].to_numpy()[ctrl] - sim.truth["theta"][k[ctrl]]
        # e M = e (phi + M*): average over trials of phi_k E[e] is 0
        assert centred.mean() == pytest.approx(expected, abs=0.06)


def test_same_seed_same_data():
    s = SimulationSettings(n_trials=5, n_per=20)
    a = simulate_units(s, np.random.default_rng(7)).units
    b = simulate_units(s, np.random.default_rng(7)).units
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"violation": "A5"}, "violation must be one of"),
        ({"n_per": 2}, "n_per must be at least 4"),
        ({"beta": ()}, "beta needs 1 to 5"),
        ({"corr_my": 1.0}, "corr_my must be in"),
        ({"tau_team": (1.0, 2.0)}, "same, non-zero length"),
        ({"n_trials": 1}, "n_trials must be at least 2"),
        ({"treat_prob": 1.0}, "treat_prob must be in"),
        ({"sd_m": -1.0}, "sd_m must be >= 0"),
    ],
)
def test_bad_settings(change, message):
    with pytest.raises(BayesCMMAError, match=message):
        SimulationSettings(**change)


def test_impossible_correlations_are_refused_when_simulating():
    # each pairwise correlation is valid but (M*, Y*, e) cannot have them all at once
    s = SimulationSettings(corr_my=-0.9, corr_e=0.9)
    with pytest.raises(BayesCMMAError, match="not a valid correlation matrix.*lower corr_e"):
        simulate_units(s, np.random.default_rng(0))


def test_replace_rejects_unknown_keys_with_a_hint():
    with pytest.raises(BayesCMMAError, match="Did you mean 'n_per'"):
        SimulationSettings().replace(n_pre=100)


def test_direct_spread_adds_an_independent_trial_level_kpi_residual():
    s = SimulationSettings(n_trials=600, n_per=20, direct_spread=1.5)
    sim = simulate_units(s, np.random.default_rng(3))
    extra = sim.truth["gamma"] - np.asarray(s.gamma_team)[sim.truth["team_idx"]]
    assert -1.5 <= extra.min() < -1.4 and 1.4 < extra.max() <= 1.5
    assert abs(np.corrcoef(extra, sim.truth["tau"])[0, 1]) < 0.1  # unrelated to the metric effect (A3 holds)
    assert "direct_spread" not in SimulationSettings().to_dict() and s.to_dict()["direct_spread"] == 1.5
    # the rest of the data set is drawn as without it
    base = simulate_units(s.replace(direct_spread=0.0), np.random.default_rng(3))
    np.testing.assert_array_equal(base.truth["tau"], sim.truth["tau"])
    np.testing.assert_array_equal(base.units["m"], sim.units["m"])
