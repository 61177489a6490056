"""Never replace good results with bad ones: arguments checked before any work, interrupts, fuzzed flags.

Bad arguments go through the real command line (a subprocess): exit status 2, one ``error:`` line,
no traceback, nothing written. Interrupts are sent to a real process at each stage (compiling,
sampling, writing the report) whose output folder holds a previous good run; the folder's bytes
must not change.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_output import unwrap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bayes_cmma as bc
from bayes_cmma.cli import SEED_MAX, main
from bayes_cmma.errors import AssumptionWarning
from bayes_cmma.studies.synthetic import simulate_summaries


def _cli(args, cwd, **kw):
    return subprocess.run([sys.executable, "-m", "bayes_cmma.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A small trial table with covariances (30 trials, 2 teams, linear DRF)."""
    folder = tmp_path_factory.mktemp("guard")
    data, _ = simulate_summaries(np.random.default_rng(4), n_trials=30, n_teams=2, beta=(1.5,))
    ds = data.dataset
    rows = [{"trial": t, "team": team, "quantity": q, "estimate": float(ds["estimate"].sel(trial=t, quantity=q)),
             "std_error": float(ds["std_error"].sel(trial=t, quantity=q))}
            for t, team in zip(ds["trial"].values, ds["team"].values, strict=True) for q in ("y", "m")]
    pd.DataFrame(rows).to_csv(folder / "trials.csv", index=False)
    cov = [{"trial": t, "quantity_1": "y", "quantity_2": "m",
            "covariance": float(ds["covariance"].sel(trial=t, quantity="y", quantity_other="m"))}
           for t in ds["trial"].values]
    pd.DataFrame(cov).to_csv(folder / "cov.csv", index=False)
    return folder


def _fit_args(table, *extra):
    return ["fit", table / "trials.csv", "--cov", table / "cov.csv", "--kpi", "y", "--metric", "m", "--degree", "1",
            *extra]


def _one_error_line(result, message):
    lines = [ln for ln in unwrap(result.stderr).splitlines() if ln.startswith("error:")]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lift", "0"], "--lift must be a positive number"),
        (["--lift", "-0.5"], "--lift must be a positive number (0.1 = +10%), got -0.5. The ranking asks"),
        (["--draws", "0"], "--draws must be a positive integer, got 0"),
        (["--chains", "0"], "--chains must be a positive integer, got 0"),
        (["--tune", "-3"], "--tune must be a positive integer, got -3"),
        (["--degree", "0"], "--degree must be an integer from 1 to 5, got 0"),
        (["--degree", "7"], "--degree must be an integer from 1 to 5, got 7"),
        (["--seed", "-1"], f"--seed must be an integer from 0 to {SEED_MAX}"),
        (["--seed", str(2**64)], f"--seed must be an integer from 0 to {SEED_MAX}"),
        (["--kpi-baseline", "0"], "--kpi-baseline must be a non-zero number"),
        (["--at", "m=abc"], "'abc' is not a number"),
        (["--out", "/proc/bayes_cmma_out"], "cannot write in '/proc'"),
    ],
)
def test_bad_fit_arguments_stop_before_any_work(table, tmp_path, extra, message):
    result = _cli([*_fit_args(table), "--out", tmp_path / "out", *extra], cwd=tmp_path)
    _one_error_line(result, message)
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_other_commands_share_the_ranges(table, tmp_path):
    ols = _cli(["ols", table / "trials.csv", "--kpi", "y", "--metric", "m", "--degree", "7"], cwd=tmp_path)
    _one_error_line(ols, "--degree must be an integer from 1 to 5, got 7")
    cmp_ = _cli(["compare", table / "trials.csv", "--kpi", "y", "--metric", "m", "--degrees", "1", "9"], cwd=tmp_path)
    _one_error_line(cmp_, "--degrees must be an integer from 1 to 5, got 9")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    demo = _cli(["demo", "--out", a_file], cwd=tmp_path)
    _one_error_line(demo, "exists and is not a folder")
    under = _cli(["demo", "--out", a_file / "sub"], cwd=tmp_path)
    _one_error_line(under, "is not a folder")
    assert a_file.read_text() == "x"


def test_a_folder_as_trial_table_says_it_is_a_directory(table, tmp_path):
    folder = tmp_path / "csvs"
    folder.mkdir()
    (folder / "a.csv").write_text((table / "trials.csv").read_text())
    for path in (folder, tmp_path / "empty"):
        path.mkdir(exist_ok=True)
        result = _cli(["fit", path, "--kpi", "y", "--metric", "m", "--out", tmp_path / "out"], cwd=tmp_path)
        _one_error_line(result, "is a directory without Parquet files; give a CSV or Parquet file")


def test_version(tmp_path):
    result = _cli(["--version"], cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"bayes-cmma {bc.__version__}"


def test_a_kpi_without_variation_is_warned_about():
    data, _ = simulate_summaries(np.random.default_rng(1), n_trials=20, n_teams=2, beta=(1.0,))
    ds = data.dataset.copy(deep=True)
    ds["estimate"].loc[{"quantity": "y"}] = 2.5
    flat = bc.TrialData(dataset=ds, extra=data.extra)
    with pytest.warns(AssumptionWarning, match="the KPI 'y' has the same estimate \\(2.5\\) in every trial"):
        bc.metric_design(flat, "y", "m", 1, warn_filled=False)


class _Reached(Exception):
    """Raised by the patched fit: argument and data handling are over, sampling would start."""


@pytest.fixture
def no_sampling(monkeypatch):
    def fake_fit(*args, **kwargs):
        raise _Reached

    monkeypatch.setattr("bayes_cmma.fitting.bayes.fit", fake_fit)


def test_a_non_positive_current_level_is_warned_about(table, tmp_path, capsys, no_sampling):
    with pytest.raises(_Reached):
        main([*map(str, _fit_args(table)), "--at", "m=-1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "warning: --at m=-1: a current metric level of below 0" in unwrap(err)


_numbers = st.one_of(st.integers(-3, 3), st.sampled_from(["0", "-1", "1e309", "nan", "inf", "-inf", "2.5", "abc", "",
                                                          str(2**64), "18446744073709551615", "1e-300"]))
_flags = st.sampled_from(["--lift", "--draws", "--tune", "--chains", "--seed", "--degree", "--kpi-baseline", "--at",
                          "--model", "--metric", "--kpi", "--out", "--cov"])


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(_flags, _numbers), max_size=4))
def test_fuzzed_fit_arguments_end_in_a_fit_or_one_error(table, tmp_path, capsys, no_sampling, pairs):
    """Any combination of flags (repeated, missing values, out of range, odd strings) either reaches the sampler
    or exits with status 2 and one error line; never an uncaught exception (exit status 1)."""
    argv = [*map(str, _fit_args(table)), "--out", str(tmp_path / "out")]
    for flag, value in pairs:
        value = str(value)
        if flag == "--at":
            value = f"m={value}"
        elif flag == "--out":
            value = str(tmp_path / f"o{value}")
        argv += [flag, value]
    try:
        code = main(argv)
    except _Reached:
        return
    except SystemExit as exc:  # argparse: a malformed command line
        assert exc.code == 2
        return
    finally:
        err = capsys.readouterr().err
    assert code == 2, err
    assert len([ln for ln in unwrap(err).splitlines() if ln.startswith("error:")]) == 1, err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupt_when(args, cwd, marker: str, delay: float) -> subprocess.CompletedProcess:
    """Start the CLI, wait for ``marker`` on its stderr, wait ``delay`` s, send SIGINT to its process group."""
    proc = subprocess.Popen([sys.executable, "-m", "bayes_cmma.cli", *map(str, args)], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    seen = []
    deadline = time.monotonic() + 240
    for line in proc.stderr:
        seen.append(line)
        if marker in line:
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGINT)
            break
        assert time.monotonic() < deadline, "".join(seen)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(seen) + err)


@pytest.mark.mcmc
def test_ctrl_c_at_any_stage_leaves_the_previous_output_untouched(table, tmp_path):
    out = tmp_path / "out"
    good = _cli([*_fit_args(table), "--at", "m=1.0", "--kpi-baseline", "10", "--draws", "200", "--tune", "200",
                 "--chains", "2", "--out", out], cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    before = _snapshot(out)
    assert {"summary.csv", "m.nc", "report.html"} <= set(before)
    again = [*_fit_args(table), "--at", "m=1.0", "--kpi-baseline", "10", "--seed", "7", "--out", out]
    for marker, delay, extra in (("compiling", 0.5, []), ("sampling", 0.4, ["--draws", "20000", "--tune", "2000"]),
                                 ("writing report.html", 0.5, ["--draws", "300"])):
        result = _interrupt_when([*again, *extra], tmp_path, marker, delay)
        assert result.returncode == 130, (marker, result.stderr)
        assert "interrupted; no output was written or the previous output is unchanged." in result.stderr
        assert "Traceback" not in result.stderr and "nan" not in result.stdout.lower(), marker
        assert _snapshot(out) == before, marker
        assert not list(tmp_path.glob(".out.tmp-*")), marker


def test_a_trace_that_is_not_a_posterior_is_refused():
    import xarray as xr

    from bayes_cmma.errors import SamplingError
    from bayes_cmma.fitting.sampling import check_trace

    def trace(values):
        post = xr.Dataset({"beta_std": (("chain", "draw", "p"), values)},
                          coords={"chain": range(values.shape[0]), "draw": range(values.shape[1])})
        return xr.DataTree.from_dict({"posterior": post})

    good = np.zeros((2, 5, 1))
    check_trace(trace(good), draws=5, chains=2, label="'m'")
    with pytest.raises(SamplingError, match="returned 2 chain\\(s\\) x 5 draw\\(s\\) instead of 2 x 10"):
        check_trace(trace(good), draws=10, chains=2, label="'m'")
    stopped = good.copy()
    stopped[1, 3:] = np.nan  # the second chain stopped early
    message = r"sampling 'm': 2 NaN or infinite value\(s\) of 'beta_std' in chain\(s\) 1"
    with pytest.raises(SamplingError, match=message):
        check_trace(trace(stopped), draws=5, chains=2, label="'m'")


def test_an_interrupted_command_ignores_further_ctrl_c_until_it_exits(tmp_path):
    """After Ctrl-C the process ends with 130: SIGINT stays ignored through finalisation (not reset to kill)."""
    code = (
        "import atexit, os, signal, sys\n"
        "import bayes_cmma.cli as cli\n"
        "def interrupted(args):\n"
        "    raise KeyboardInterrupt\n"
        "cli._dispatch = interrupted\n"
        "def late():\n"
        "    print('ignored:', signal.getsignal(signal.SIGINT) is signal.SIG_IGN, file=sys.stderr)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "atexit.register(late)\n"
        "sys.argv = ['bayes-cmma', 'ols', 'trials.csv', '--kpi', 'y', '--metric', 'm']\n"
        "raise SystemExit(cli.main())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert "ignored: True" in proc.stderr and "interrupted; no output was written" in proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
