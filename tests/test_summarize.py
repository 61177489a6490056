"""Unit-level logs to trial summaries: against a direct numpy computation, stability, bad input."""

import numpy as np
import pandas as pd
import pytest

import bayes_cmma as bc
from bayes_cmma.errors import DataError


def _units(rng, offset=0.0, n_trials=4):
    rows = []
    for k in range(n_trials):
        n = 60 + 10 * k
        t = np.repeat([0, 1], n // 2)
        m = rng.gamma(2.0, 0.5, n) + 0.3 * t
        y = offset + 3 * m + rng.normal(0, 1, n)
        rows.append(pd.DataFrame({"trial": f"k{k}", "team": "a" if k % 2 else "b", "treated": t, "y": y, "m": m}))
    return pd.concat(rows, ignore_index=True)


def _direct(units, degree):
    """ATE and covariance per trial straight from numpy (two-pass np.cov per arm)."""
    out = {}
    for trial, g in units.groupby("trial"):
        vs = [np.column_stack([a["y"]] + [a["m"] ** p for p in range(1, degree + 1)])
              for _, a in g.groupby("treated")]
        ate = vs[1].mean(0) - vs[0].mean(0)
        cov = np.cov(vs[1], rowvar=False) / len(vs[1]) + np.cov(vs[0], rowvar=False) / len(vs[0])
        out[trial] = (ate, cov)
    return out


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_matches_numpy_per_trial(offset):
    units = _units(np.random.default_rng(0), offset=offset)
    trials, cov = bc.summarize_units(units, kpi="y", metrics=["m"], degree=3)
    data = bc.read_trials(trials, cov)
    names = ["y", "m", "m^2", "m^3"]
    for trial, (ate, c) in _direct(units, 3).items():
        est = data.dataset["estimate"].sel(trial=trial, quantity=names).values
        got = data.dataset["covariance"].sel(trial=trial, quantity=names, quantity_other=names).values
        np.testing.assert_allclose(est, ate, rtol=1e-9, atol=1e-9 * np.abs(ate).max())
        # with a 1e6 offset on the KPI the shifted sums still match the two-pass covariance
        np.testing.assert_allclose(got, c, rtol=1e-9)
    assert data.teams == ["a", "b"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda u: u.drop(columns="m"), "missing column.*'m'"),
        (lambda u: u.assign(treated=u["treated"].replace(1, 2)), "must be 0 \\(control\\) or 1"),
        (lambda u: u.assign(m=u["m"].where(u.index != 3, np.nan)), "non-finite KPI/metric value in trial 'k0'"),
        (lambda u: u[~((u["trial"] == "k1") & (u["treated"] == 1))], "trial 'k1' has 0 unit\\(s\\) in its treatment"),
        (lambda u: u[~((u["trial"] == "k2") & (u["treated"] == 0)) | (u.index == u[(u["trial"] == "k2")].index[0])],
         "trial 'k2' has 1 unit\\(s\\) in its control arm"),
        (lambda u: u.assign(m=u["m"].where(u["trial"] != "k3", 1.5)),
         "trial 'k3': 'm' does not vary within either arm"),
        (lambda u: u.assign(trial=u["trial"].where(u.index != 9, "  ")), "column 'trial' is missing or blank in 1 row"),
        (lambda u: u.assign(team=u["team"].where(u.index != 9, None)), "column 'team' is missing or blank"),
        (lambda u: u[(u["trial"] != "k1") | u.index.isin(u[u["trial"] == "k1"].groupby("treated").head(2).index)],
         "trial 'k1' has 4 units; the covariance of its 3 ATEs .* needs at least 5 units"),
    ],
)
def test_bad_unit_tables(change, message):
    units = _units(np.random.default_rng(1))
    with pytest.raises(DataError, match=message):
        bc.summarize_units(change(units), kpi="y", metrics=["m"], degree=2)
