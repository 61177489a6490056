"""`bayes-cmma summarize` and `bayes-cmma simulate`: happy paths and bad input (one error line, exit 2)."""

import re

import numpy as np
import pandas as pd
import pytest
from cli_output import unwrap

import bayes_cmma as bc
from bayes_cmma.cli import main
from bayes_cmma.studies.simulate import SimulationSettings, simulate_units


@pytest.fixture
def units_file(tmp_path):
    units = simulate_units(SimulationSettings(n_trials=6, n_per=50), np.random.default_rng(3)).units
    path = tmp_path / "units.csv"
    units.to_csv(path, index=False)
    return path, units


def _bad(capsys, argv, message, *not_written):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in unwrap(err).splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(message, lines[0]), lines[0]
    for p in not_written:
        assert not p.exists()
    assert not any(p.name.startswith(".") and ".tmp" in p.name for p in not_written[0].parent.iterdir()) \
        if not_written else True


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_summarize_writes_the_trial_format(units_file, tmp_path, capsys, ext):
    path, units = units_file
    out, cov = tmp_path / f"trials.{ext}", tmp_path / f"cov.{ext}"
    code = main(["summarize", str(path), "--kpi", "y", "--metric", "m", "--degree", "2",
                 "--out", str(out), "--cov-out", str(cov)])
    assert code == 0
    assert "6 trials, 300 units" in capsys.readouterr().out
    got = bc.read_trials(out, cov)
    want = bc.read_trials(*bc.summarize_units(units, kpi="y", metrics=["m"], degree=2))
    np.testing.assert_allclose(got.dataset["covariance"].values, want.dataset["covariance"].values, rtol=1e-12)
    assert got.quantities == ["y", "m", "m^2"] and got.teams == ["team1", "team2", "team3"]


def test_summarize_bad_input(units_file, tmp_path, capsys):
    path, units = units_file
    out, cov = tmp_path / "trials.csv", tmp_path / "cov.csv"
    tail = ["--out", str(out), "--cov-out", str(cov)]
    _bad(capsys, ["summarize", str(path), "--kpi", "gmv", "--metric", "m", *tail], "missing column.*'gmv'", out, cov)
    bad = units.copy()
    bad.loc[bad["trial"] == "t002", "treated"] = 0
    p2 = tmp_path / "one_arm.csv"
    bad.to_csv(p2, index=False)
    _bad(capsys, ["summarize", str(p2), "--kpi", "y", "--metric", "m", *tail],
         "trial 't002' has 0 unit\\(s\\) in its treatment arm", out, cov)
    bad = units.copy()
    bad.loc[5, "treated"] = 3
    bad.to_csv(p2, index=False)
    _bad(capsys, ["summarize", str(p2), "--kpi", "y", "--metric", "m", *tail], "'treated' must be 0", out, cov)
    bad = units.copy()
    bad.loc[bad.index[-1], "m"] = np.nan
    bad.to_csv(p2, index=False)
    _bad(capsys, ["summarize", str(p2), "--kpi", "y", "--metric", "m", *tail], "non-finite.*trial 't005'", out, cov)
    _bad(capsys, ["summarize", str(tmp_path / "nope.csv"), "--kpi", "y", "--metric", "m", *tail],
         "does not exist", out, cov)
    _bad(capsys, ["summarize", str(path), "--kpi", "y", "--metric", "m", "--out", str(out), "--cov-out", str(out)],
         "same file", out)
    _bad(capsys, ["summarize", str(path), "--kpi", "y", "--metric", "m", "--degree", "0", *tail],
         "--degree must be an integer from 1 to 5, got 0", out, cov)


def test_simulate_prints_the_table_and_resumes(tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["simulate", "--study", "small_k", "--sims", "2", "--estimators", "cmma_ols", "liml", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| cmma_ols |" in text and "| liml |" in text and "K=10,N_per=200" in text
    assert main(argv) == 0
    assert "0 new replication(s)" in capsys.readouterr().out
    assert "Command: `bayes-cmma simulate --study small_k --sims 2" in (out / "summary.md").read_text()
    assert len(pd.read_csv(out / "results.csv")) == 2 * 2 * 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--study", "table9"], "unknown study 'table9'"),
        (["--study", "table1", "--workers", "0"], "--workers must be a positive integer"),
        (["--study", "table1", "--sims", "0"], "--sims must be a positive integer"),
        (["--study", "table1", "--n-per", "2"], "--n-per values must be at least 4"),
        (["--study", "table1", "--estimators", "ols"], "unknown estimator 'ols'"),
        (["--study", "table3", "--estimators", "liml"], "linear DRF only"),
        (["--study", "table2", "--n-per", "200", "500"], "'table2' takes one value of --n-per"),
        (["--study", "table3", "--n-trials", "50", "100"], "'table3' takes one value of --n-trials"),
        (["--study", "table1", "--n-trials", "1"], "--n-trials values must be at least 2"),
        (["--study", "table1", "--target-accept", "1.2"], "--target-accept must be between 0 and 1, got 1.2"),
    ],
)
def test_simulate_bad_input(extra, message, tmp_path, capsys):
    out = tmp_path / "study"
    _bad(capsys, ["simulate", *extra, "--out", str(out)], message)
    assert not (out / "results.csv").exists()


def test_simulate_bad_study_file(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text("[base]\nn_trails = 10\n")
    _bad(capsys, ["simulate", "--study", str(f), "--out", str(tmp_path / "o")], "Did you mean 'n_trials'")
    f.write_text("sims = 2\n")
    _bad(capsys, ["simulate", "--study", str(f), "--n-per", "100", "200", "--out", str(tmp_path / "o")],
         "a study file takes one value of --n-per")
