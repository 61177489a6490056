"""Unit-level estimators (LIML, 2SLS, Sobel IV, LSEM) against hand computations with full dummies.

The module partials the trial fixed effects out and calls linearmodels; here every estimate is
recomputed from textbook formulas on the full design (trial dummies included), in numpy.
"""

import numpy as np
import pytest

from bayes_cmma.baselines.iv import unit_estimate
from bayes_cmma.errors import DataError
from bayes_cmma.studies.simulate import SimulationSettings, simulate_units


@pytest.fixture(scope="module")
def small():
    sim = simulate_units(SimulationSettings(n_trials=9, n_per=80), np.random.default_rng(12))
    u = sim.units
    trial = u["trial"].str[1:].astype(int).to_numpy()
    team = u["team"].str[4:].astype(int).to_numpy() - 1
    T = u["treated"].to_numpy(float)
    n, K, G = len(u), 9, 3
    D = np.zeros((n, K))
    D[np.arange(n), trial] = 1.0  # trial fixed effects
    TK = D * T[:, None]  # trial x treatment
    TG = np.zeros((n, G))
    TG[np.arange(n), team] = T  # team x treatment
    first_of_team = [0, 1, 2]  # trials 0, 1, 2 are the first of teams 1, 2, 3
    return u, u["y"].to_numpy(), u["m"].to_numpy(), D, TK, TG, T, first_of_team


def _proj(Z):
    return Z @ np.linalg.pinv(Z)


def _kclass(y, X, Z, kappa):
    """k-class estimator: (X'(I - k M_Z) X)^-1 X'(I - k M_Z) y."""
    n = len(y)
    A = np.eye(n) - kappa * (np.eye(n) - _proj(Z))
    return np.linalg.solve(X.T @ A @ X, X.T @ A @ y)


def _hc0_iv(y, X, Z, b):
    Xh = _proj(Z) @ X
    u = y - X @ b
    bread = np.linalg.inv(Xh.T @ Xh)
    meat = (Xh * u[:, None] ** 2).T @ Xh
    return bread @ meat @ bread


def _check_2sls(u, y, X, Z, name):
    b = _kclass(y, X, Z, 1.0)
    got = unit_estimate(u, name)
    assert got.estimate == pytest.approx(b[0], rel=1e-9)
    assert got.std_error == pytest.approx(np.sqrt(_hc0_iv(y, X, Z, b)[0, 0]), rel=1e-7)


def test_2sls_matches_textbook_formula(small):
    u, y, m, D, TK, TG, _, first = small
    excluded = np.delete(TK, first, axis=1)
    _check_2sls(u, y, np.column_stack([m, D, TG]), np.column_stack([excluded, D, TG]), "2sls")


def test_liml_matches_textbook_formula(small):
    u, y, m, D, TK, TG, _, first = small
    excluded = np.delete(TK, first, axis=1)
    exog = np.column_stack([D, TG])
    X = np.column_stack([m, exog])
    Z = np.column_stack([excluded, exog])
    W = np.column_stack([y, m])
    n = len(y)
    Mz = np.eye(n) - _proj(Z)
    Mx = np.eye(n) - _proj(exog)
    kappa = np.min(np.linalg.eigvals(np.linalg.solve(W.T @ Mz @ W, W.T @ Mx @ W)).real)
    assert kappa >= 1.0
    b = _kclass(y, X, Z, kappa)
    got = unit_estimate(u, "liml")
    assert got.estimate == pytest.approx(b[0], rel=1e-8)
    # LIML differs from 2SLS here (many instruments), so the test tells them apart
    assert abs(got.estimate - unit_estimate(u, "2sls").estimate) > 1e-4


def test_sobel_iv_has_one_common_direct_effect(small):
    u, y, m, D, TK, _, T, _ = small
    _check_2sls(u, y, np.column_stack([m, D, T]), np.column_stack([TK[:, 1:], D, T]), "sobel_iv")


def test_lsem_is_ols_with_trial_clustered_errors(small):
    u, y, m, D, TK, _, _, _ = small
    X = np.column_stack([m, TK, D])
    b = np.linalg.lstsq(X, y, rcond=None)[0]
    e = y - X @ b
    bread = np.linalg.inv(X.T @ X)
    trial = u["trial"].to_numpy()
    meat = sum(np.outer(X[trial == t].T @ e[trial == t], X[trial == t].T @ e[trial == t]) for t in np.unique(trial))
    V = bread @ meat @ bread
    got = unit_estimate(u, "lsem")
    assert got.estimate == pytest.approx(b[0], rel=1e-9)
    assert got.std_error == pytest.approx(np.sqrt(V[0, 0]), rel=1e-7)


def test_interval_is_normal_approximation(small):
    got = unit_estimate(small[0], "liml")
    lo, hi = got.interval(0.95)
    assert (hi - lo) / 2 == pytest.approx(1.959964 * got.std_error, rel=1e-6)


def test_bad_input_names_the_problem(small):
    with pytest.raises(DataError, match="unknown unit-level estimator 'ivreg'"):
        unit_estimate(small[0], "ivreg")
    with pytest.raises(DataError, match="missing column.*'m'"):
        unit_estimate(small[0].drop(columns="m"), "liml")
