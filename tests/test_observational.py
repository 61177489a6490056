"""The observational table: against numpy least squares with cell dummies, the paper's confounding bias in
closed form, the reader's checks, and the command."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from cli_output import unwrap

import bayes_cmma as bc
from bayes_cmma.cli import main
from bayes_cmma.errors import DataError
from bayes_cmma.inputs.observational import read_observational
from bayes_cmma.studies.simulate import SimulationSettings, simulate_units


def _units(seed=0, n_trials=6):
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_trials):
        n = 80 + 10 * k
        t = np.repeat([0, 1], n // 2)
        m = rng.gamma(2.0, 0.5, n) + 0.3 * t + 0.2 * k
        y = 5.0 + 3 * m - 0.4 * m**2 + rng.normal(0, 1, n) + k
        rows.append(pd.DataFrame({"trial": f"k{k}", "team": "a" if k % 2 else "b", "treated": t, "y": y, "m": m,
                                  "m2": rng.normal(0, 1, n)}))
    return pd.concat(rows, ignore_index=True)


@pytest.mark.parametrize("arms", ["control", "both"])
def test_matches_least_squares_with_a_dummy_per_trial_and_arm(arms):
    units = _units()
    _, _, obs = bc.summarize(units, kpi="y", metrics=["m", "m2"], degree=2, observational=arms)
    for team, g in units.groupby("team", sort=False):
        rows = g if arms == "both" else g[g["treated"] == 0]
        cells = pd.get_dummies(rows["trial"] + "/" + rows["treated"].astype(str)).to_numpy(float)
        for metric in ("m", "m2"):
            X = np.column_stack([rows[metric], rows[metric] ** 2, cells])
            coef, rss, *_ = np.linalg.lstsq(X, rows["y"].to_numpy(), rcond=None)
            df = len(rows) - X.shape[1]
            cov = rss[0] / df * np.linalg.inv(X.T @ X)[:2, :2]
            got = obs[(obs["team"] == team) & (obs["metric"] == metric)].sort_values("power")
            np.testing.assert_allclose(got["estimate"], coef[:2], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(got["std_error"], np.sqrt(np.diag(cov)), rtol=1e-9)
            np.testing.assert_allclose(got[["cov_power_1", "cov_power_2"]].to_numpy(), cov, rtol=1e-8, atol=1e-15)
            assert (got["n_units"] == len(rows)).all() and (got["n_cells"] == cells.shape[1]).all()


@pytest.mark.parametrize("corr", [0.95, 0.5, 0.0])
def test_the_observational_slope_carries_the_unit_level_confounding(corr):
    """In the paper's law the control-arm slope of Y on M is beta + corr(M*, Y*) sd_y / sd_m = 4 + corr."""
    sim = simulate_units(SimulationSettings(n_trials=30, n_per=2000, corr_my=corr, corr_e=0.0),
                         np.random.default_rng(1))
    _, _, obs = bc.summarize(sim.units, kpi="y", metrics="m", degree=1, observational="control")
    assert list(obs["team"]) == ["team1", "team2", "team3"]
    np.testing.assert_allclose(obs["estimate"], 4 + corr, atol=6 * obs["std_error"].max() + 0.02)


def test_without_a_team_column_one_regression_over_all_trials():
    units = _units().drop(columns="team")
    _, _, obs = bc.summarize(units, kpi="y", metrics="m", degree=1, team=None, observational="control")
    assert list(obs["team"]) == ["all"] and obs["n_cells"].iloc[0] == 6


def test_round_trip_through_the_reader(tmp_path):
    _, _, obs = bc.summarize(_units(), kpi="y", metrics=["m"], degree=3, observational="control")
    obs.to_csv(tmp_path / "obs.csv", index=False)
    back = read_observational(tmp_path / "obs.csv")
    pd.testing.assert_frame_equal(back[obs.columns], obs, check_dtype=False)


def _good():
    return bc.summarize(_units(), kpi="y", metrics=["m"], degree=2, observational="control")[2]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="std_error"), r"missing column\(s\) 'std_error'"),
        (lambda f: f.assign(std_error=-f["std_error"]), "std_error of team 'b', metric 'm' is -"),
        (lambda f: f.assign(estimate=["x", *f["estimate"].iloc[1:]]), "'estimate' of team 'b', metric 'm'"),
        (lambda f: f[f["power"] != 1], r"team 'b', metric 'm' has powers \[2\]"),
        (lambda f: f.drop(columns="cov_power_2"), "has 2 powers but not the columns cov_power_1, cov_power_2"),
        (lambda f: f.assign(cov_power_2=f["cov_power_2"] * 2), "must be symmetric with std_error"),
    ],
)
def test_reader_bad_input_names_the_team_and_metric(change, message):
    with pytest.raises(DataError, match=message):
        read_observational(change(_good()))


def test_bad_arms_and_too_few_units():
    with pytest.raises(DataError, match="observational arms must be one of control, both, treatment, got 'ctrl'"):
        bc.summarize(_units(), kpi="y", metrics="m", degree=1, observational="ctrl")
    units = _units()
    tiny = pd.concat([units[units["treated"] == 1], units[units["treated"] == 0].groupby("trial").head(2)])
    with pytest.raises(DataError, match="team 'b': 6 unit\\(s\\) in 3 .* too few .* 3 power\\(s\\) of 'm'"):
        bc.summarize(tiny, kpi="y", metrics="m", degree=3, observational="control")


def test_command_writes_the_observational_table(tmp_path, capsys):
    units = _units()
    units.to_csv(tmp_path / "u.csv", index=False)
    argv = ["summarize", str(tmp_path / "u.csv"), "--kpi", "y", "--metric", "m", "--degree", "2",
            "--out", str(tmp_path / "t.csv"), "--cov-out", str(tmp_path / "c.csv")]
    assert main([*argv, "--observational-out", str(tmp_path / "o.csv"), "--observational-arms", "both"]) == 0
    assert "the observational regression in the both arm(s)" in unwrap(capsys.readouterr().out)
    want = bc.summarize(units, kpi="y", metrics="m", degree=2, observational="both")[2]
    got = read_observational(tmp_path / "o.csv")
    np.testing.assert_allclose(got["estimate"], want["estimate"], rtol=1e-12)
    # the same file twice is one error, and nothing is written
    code = main([*argv[:-4], "--out", str(tmp_path / "t2.csv"), "--cov-out", str(tmp_path / "c2.csv"),
                 "--observational-out", str(tmp_path / "t2.csv")])
    err = unwrap(capsys.readouterr().err)
    assert code == 2 and re.search("--out and --observational-out name the same file", err), err
    assert not (tmp_path / "t2.csv").exists() and not (tmp_path / "c2.csv").exists()


def test_partial_slopes_match_least_squares_on_every_metric_at_once():
    from bayes_cmma.inputs.observational import partial_slopes

    units = _units()
    _, _, _, part = bc.summarize(units, kpi="y", metrics=["m", "m2"], degree=2, observational="control", partial=True)
    precision, weighted = 0, 0
    for team, g in units.groupby("team", sort=False):
        rows = g[g["treated"] == 0]
        cells = pd.get_dummies(rows["trial"]).to_numpy(float)
        X = np.column_stack([rows["m"], rows["m2"], cells])
        coef, rss, *_ = np.linalg.lstsq(X, rows["y"].to_numpy(), rcond=None)
        cov = rss[0] / (len(rows) - X.shape[1]) * np.linalg.inv(X.T @ X)[:2, :2]
        got = part[part["team"] == team].set_index("metric").loc[["m", "m2"]]
        np.testing.assert_allclose(got["estimate"], coef[:2], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got[["cov_m", "cov_m2"]].to_numpy(), cov, rtol=1e-8, atol=1e-15)
        precision = precision + np.linalg.inv(cov)
        weighted = weighted + np.linalg.inv(cov) @ coef[:2]
    combined = partial_slopes(part, ["m", "m2"])
    np.testing.assert_allclose([combined["m"], combined["m2"]], np.linalg.solve(precision, weighted), rtol=1e-9)


@pytest.mark.parametrize(
    ("change", "message"),
    [(lambda f: f.drop(columns="cov_m2"), r"missing column\(s\) 'cov_m2'"),
     (lambda f: f[~((f["team"] == "a") & (f["metric"] == "m2"))], r"team 'a' has no row for metric\(s\) 'm2'"),
     (lambda f: f.assign(cov_m=-1.0), "covariance positive definite")],
)
def test_partial_slopes_bad_input(change, message):
    from bayes_cmma.inputs.observational import partial_slopes

    part = bc.summarize(_units(), kpi="y", metrics=["m", "m2"], degree=1, observational="control", partial=True)[3]
    with pytest.raises(DataError, match=message):
        partial_slopes(change(part), ["m", "m2"])


def test_partial_needs_the_arms():
    with pytest.raises(DataError, match="partial=True needs observational="):
        bc.summarize(_units(), kpi="y", metrics="m", degree=1, partial=True)


def test_command_from_logs_to_a_fusion_strength(tmp_path, capsys):
    """summarize --observational-partial-out, then decision-value --observational-partial on its tables."""
    units = _units(n_trials=12)
    units.to_csv(tmp_path / "u.csv", index=False)
    assert main(["summarize", str(tmp_path / "u.csv"), "--kpi", "y", "--metric", "m", "--metric", "m2", "--degree",
                 "1", "--out", str(tmp_path / "t.csv"), "--cov-out", str(tmp_path / "c.csv"),
                 "--observational-partial-out", str(tmp_path / "p.csv")]) == 0
    assert "the partial slopes in the control arm(s)" in unwrap(capsys.readouterr().out)
    argv = ["decision-value", str(tmp_path / "t.csv"), "--cov", str(tmp_path / "c.csv"), "--kpi", "y", "--metric", "m",
            "--metric", "m2", "--out", str(tmp_path / "dv.csv"), "--fusion-out", str(tmp_path / "fu.csv")]
    assert main([*argv, "--observational-partial", str(tmp_path / "p.csv")]) == 0
    assert "<- chosen" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "fu.csv")) == 9
    code = main([*argv, "--observational-partial", str(tmp_path / "p.csv"), "--observational-slope", "m=1"])
    assert code == 2 and "give the logs' slopes once" in unwrap(capsys.readouterr().err)


def test_a_metric_constant_or_collinear_within_the_arms_is_named():
    units = _units()
    flat = units.assign(m=np.where(units["treated"] == 0, 1.0, units["m"]))  # varies only in the treated arms
    with pytest.raises(DataError, match="team 'b': 'm' does not vary within the trials' arms"):
        bc.summarize(flat, kpi="y", metrics="m", degree=1, observational="control")
    binary = units.assign(m=(units["m"] > units["m"].median()).astype(float))  # m^2 = m
    with pytest.raises(DataError, match="team 'b': the powers of 'm' are collinear within the arms"):
        bc.summarize(binary, kpi="y", metrics="m", degree=2, observational="control")
    twice = units.assign(m2=2.0 * units["m"])
    with pytest.raises(DataError, match="team 'b': the metrics are collinear within the arms"):
        bc.summarize(twice, kpi="y", metrics=["m", "m2"], degree=1, observational="control", partial=True)
    with pytest.raises(DataError, match="team 'b': 'm2' does not vary within the trials' arms; drop the metric"):
        bc.summarize(units.assign(m2=np.where(units["treated"] == 0, 3.0, units["m2"])), kpi="y", metrics=["m", "m2"],
                     degree=1, observational="control", partial=True)
