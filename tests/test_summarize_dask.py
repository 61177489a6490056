"""The summarizer on Dask (a 2-worker LocalCluster) and in chunks: same numbers, same errors as pandas."""

import logging
import re

import numpy as np
import pandas as pd
import pytest
from cli_output import unwrap

import bayes_cmma as bc
from bayes_cmma.cli import main
from bayes_cmma.errors import DataError
from bayes_cmma.inputs.summarizer import Columns, _pandas_moments, _tables, chunk_moments, merge_moments
from bayes_cmma.studies.simulate import SimulationSettings, simulate_units

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                 silence_logs=logging.CRITICAL) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def units():
    u = simulate_units(SimulationSettings(n_trials=9, n_per=300), np.random.default_rng(11)).units
    rng = np.random.default_rng(2)
    u["y"] = u["y"] + 1e6  # a KPI level far from 0: precision must survive
    u["m2"] = rng.gamma(2.0, 1e-3, len(u)) + 1e-4 * u["treated"]  # a second metric at NDCG-like scale
    return u.sample(frac=1.0, random_state=3).reset_index(drop=True)  # trials interleaved across partitions


def _compare(got, want, rtol=1e-9):
    for g, w in zip(got, want, strict=True):
        assert list(g.columns) == list(w.columns)
        for c in g.columns:
            if g[c].dtype.kind == "f":
                np.testing.assert_allclose(g[c].to_numpy(), w[c].to_numpy(), rtol=rtol, atol=0, err_msg=c)
            else:
                assert g[c].astype(str).tolist() == w[c].astype(str).tolist(), c


def test_dask_equals_pandas(client, units):
    kw = dict(kpi="y", metrics=["m", "m2"], degree=3)
    want = bc.summarize(units, **kw)
    got = bc.summarize(dd.from_pandas(units, npartitions=7), **kw)
    _compare(got, want)
    # trials keep the order in which they first appear, as on pandas
    assert got[0]["trial"].unique().tolist() == pd.unique(units["trial"]).tolist()


def test_dask_observational_table_equals_pandas(client, units):
    kw = dict(kpi="y", metrics=["m", "m2"], degree=2, observational="both", partial=True)
    want = bc.summarize(units, **kw)
    got = bc.summarize(dd.from_pandas(units, npartitions=7), **kw)
    _compare(got, want, rtol=1e-8)


def test_chunked_merge_matches_one_pass_and_numpy(units):
    """Blocks of 101 rows merged by Chan's update equal one block, and both equal np.cov per arm."""
    cols = Columns(kpi="y", metrics=("m",), degree=3)
    one = _tables(_pandas_moments(units, cols), cols)
    many = _tables(_pandas_moments(units, cols, block_rows=101), cols)
    _compare(many, one)
    # any grouping of the merge gives the same moments (associativity)
    parts = [chunk_moments(units.iloc[i:i + 500], cols, i) for i in range(0, len(units), 500)]
    left = merge_moments(merge_moments(*parts[:3]), *parts[3:])
    right = merge_moments(*parts[:2], merge_moments(*parts[2:]))
    _compare(_tables(left, cols), _tables(right, cols))
    trial = units["trial"].iloc[0]
    est = one[0][one[0]["trial"] == trial]["estimate"].to_numpy()
    arms = [np.column_stack([g["y"]] + [g["m"] ** p for p in (1, 2, 3)])
            for _, g in units[units["trial"] == trial].groupby("treated")]
    np.testing.assert_allclose(est, arms[1].mean(0) - arms[0].mean(0), rtol=1e-9)


def test_empty_partitions_are_harmless(client, units):
    # sorted by trial, 9 partitions of 300 rows: one trial each; dropping t004 empties its partition
    ordered = units.sort_values("trial", kind="stable").reset_index(drop=True)
    ddf = dd.from_pandas(ordered, npartitions=9, sort=True)
    ddf = ddf[ddf["trial"] != "t004"]
    assert 0 in ddf.map_partitions(len).compute().tolist()  # the test needs an empty partition
    kw = dict(kpi="y", metrics="m", degree=2)
    got = bc.summarize(ddf, **kw)
    want = bc.summarize(ddf.compute(), **kw)
    _compare(got, want)


def _split_team(u):
    u = u.copy()
    u.loc[u.index[(u["trial"] == "t002").to_numpy()][-1], "team"] = "other"
    return u


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda u: u.drop(columns="m"), "missing column.*'m'"),
        (lambda u: u.assign(treated=u["treated"].where(u.index != 17, 2)), "'treated' must be 0 \\(control\\) or 1"),
        (lambda u: u.assign(m=u["m"].where(u.index != 40, np.inf)), "non-finite KPI/metric value in trial"),
        (lambda u: u[~((u["trial"] == "t001") & (u["treated"] == 1))], "trial 't001' has 0 unit\\(s\\) in its treat"),
        (_split_team, "trial 't002' is listed under more than one team"),
        (lambda u: u.iloc[:0], "no rows"),
    ],
)
def test_same_errors_on_dask_and_pandas(client, units, change, message):
    bad = change(units)
    for frame in (bad, dd.from_pandas(bad, npartitions=4)):
        with pytest.raises(DataError, match=message):
            bc.summarize(frame, kpi="y", metrics=["m"], degree=2)


def test_cli_dask_engine_on_parquet_files(units, tmp_path, capsys):
    for i in range(3):
        units.iloc[i::3].to_parquet(tmp_path / f"logs_{i}.parquet", index=False)
    files = sorted(str(p) for p in tmp_path.glob("logs_*.parquet"))
    common = ["--kpi", "y", "--metric", "m", "--degree", "2"]
    assert main(["summarize", *files, *common, "--out", str(tmp_path / "p.csv"),
                 "--cov-out", str(tmp_path / "pc.csv")]) == 0
    assert main(["summarize", *files, *common, "--engine", "dask", "--workers", "2",
                 "--out", str(tmp_path / "d.csv"), "--cov-out", str(tmp_path / "dc.csv")]) == 0
    assert f"9 trials, {len(units)} units" in capsys.readouterr().out
    _compare([pd.read_csv(tmp_path / "d.csv"), pd.read_csv(tmp_path / "dc.csv")],
             [pd.read_csv(tmp_path / "p.csv"), pd.read_csv(tmp_path / "pc.csv")])
    # the multi-file pandas path equals summarising the concatenated table
    one = bc.summarize(pd.concat([units.iloc[i::3] for i in range(3)]), kpi="y", metrics="m", degree=2)
    _compare([pd.read_csv(tmp_path / "p.csv")], [one[0]])


def test_cli_dask_bad_input(units, tmp_path, capsys):
    bad = units.copy()
    bad.loc[bad.index[5], "treated"] = 7
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path, index=False)
    csv = tmp_path / "ok.csv"
    units.to_csv(csv, index=False)
    out, cov = tmp_path / "t.csv", tmp_path / "c.csv"
    tail = ["--out", str(out), "--cov-out", str(cov)]
    cases = [
        ([str(path), "--engine", "dask", "--scheduler", "synchronous"], "'treated' must be 0 .*found 7"),
        ([str(path), str(csv), "--engine", "dask", "--scheduler", "threads"], "mix Parquet and CSV"),
        ([str(csv), "--scheduler", "threads"], "apply to --engine dask only"),
        ([str(csv), "--engine", "dask", "--workers", "0"], "--workers must be a positive integer, got 0"),
        ([str(tmp_path / "missing.parquet"), "--engine", "dask"], "does not exist"),
    ]
    for args, message in cases:
        code = main(["summarize", *args, "--kpi", "y", "--metric", "m", *tail])
        err = capsys.readouterr().err
        assert code == 2, err
        lines = [ln for ln in unwrap(err).splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert re.search(message, lines[0]), lines[0]
        assert not out.exists() and not cov.exists()


def test_cli_unreachable_scheduler_is_one_clear_error(units, tmp_path, capsys, monkeypatch):
    import socket

    from bayes_cmma.inputs import dask_engine

    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT", "2s")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "ok.parquet"
    units.to_parquet(path, index=False)
    out, cov = tmp_path / "t.csv", tmp_path / "c.csv"
    code = main(["summarize", str(path), "--engine", "dask", "--scheduler", f"tcp://127.0.0.1:{port}",
                 "--kpi", "y", "--metric", "m", "--out", str(out), "--cov-out", str(cov)])
    err = capsys.readouterr().err
    lines = [ln for ln in unwrap(err).splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"could not connect to the Dask scheduler at 'tcp://127.0.0.1:{port}'" in lines[0]
    assert "leave out --scheduler" in lines[0]
    assert not out.exists() and not cov.exists()


def test_files_read_only_needed_columns_and_keep_label_text(tmp_path):
    """Wide logs: only the named columns are read; numeric-looking trial ids keep their zeros."""
    u = simulate_units(SimulationSettings(n_trials=3, n_per=40), np.random.default_rng(5)).units
    u["trial"] = u["trial"].map({"t000": "007", "t001": "010", "t002": "100"})
    u = u.rename(columns={"trial": "experiment"})
    u["unused"] = "not a number"  # would break a numeric read if it were loaded and used
    for ext in ("csv", "parquet"):
        path = tmp_path / f"wide.{ext}"
        (u.to_csv(path, index=False) if ext == "csv" else u.to_parquet(path, index=False))
        for engine in ("pandas", "dask"):
            trials, _, n = bc.summarize_files([path], kpi="y", metrics="m", degree=1, trial="experiment",
                                              engine=engine)
            assert trials["trial"].unique().tolist() == ["007", "010", "100"], (ext, engine)
            assert n == len(u)


@pytest.mark.parametrize(("kwargs", "message"), [(dict(metrics=[]), "no metric column"),
                                                 (dict(degree=0), "degree must be at least 1"),
                                                 (dict(engine="spark"), "unknown engine 'spark'")])
def test_summarize_files_bad_arguments(units, tmp_path, kwargs, message):
    path = tmp_path / "u.parquet"
    units.to_parquet(path, index=False)
    args = dict(kpi="y", metrics=["m"], degree=2) | kwargs
    with pytest.raises(DataError, match=message):
        bc.summarize_files([path], **args)
    with pytest.raises(DataError, match="no unit-level file"):
        bc.summarize_files([], kpi="y", metrics="m")


def test_globs_and_urls(units, tmp_path):
    """A quoted wildcard is expanded (both engines); a URL goes to Dask as given (file:// here, s3:// on a
    cluster); the pandas engine says it reads local files only."""
    for i in range(2):
        units.iloc[i::2].to_parquet(tmp_path / f"part_{i}.parquet", index=False)
    kw = dict(kpi="y", metrics="m", degree=2)
    want = bc.summarize(units.iloc[[*range(0, len(units), 2), *range(1, len(units), 2)]], **kw)
    pattern = str(tmp_path / "part_*.parquet")
    for engine in ("pandas", "dask"):
        got = bc.summarize_files(pattern, engine=engine, **kw)
        _compare(got[:2], want)
    url = f"file://{tmp_path}/part_*.parquet"
    _compare(bc.summarize_files(url, engine="dask", **kw)[:2], want)
    with pytest.raises(DataError, match="is a URL; the pandas engine reads local files only"):
        bc.summarize_files(url, **kw)
    with pytest.raises(DataError, match="no unit table file matches"):
        bc.summarize_files(str(tmp_path / "nothing_*.parquet"), **kw)
