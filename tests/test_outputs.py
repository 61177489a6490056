"""Atomic writing of a fit's outputs."""

import pytest

from bayes_cmma.outputs import write_atomically


def test_rerun_replaces_files_and_removes_stale_tables(tmp_path):
    out = tmp_path / "out"
    write_atomically(out, {n: (lambda p, n=n: p.write_text("old " + n)) for n in
                           ("summary.csv", "elasticity.csv", "ranking.csv", "notes.txt")})
    write_atomically(out, {"summary.csv": lambda p: p.write_text("new")})
    assert (out / "summary.csv").read_text() == "new"
    assert not (out / "elasticity.csv").exists() and not (out / "ranking.csv").exists()
    assert (out / "notes.txt").read_text() == "old notes.txt"  # not a table of ours: left alone
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_failure_while_writing_leaves_previous_outputs(tmp_path):
    out = tmp_path / "out"
    write_atomically(out, {"summary.csv": lambda p: p.write_text("old")})

    def boom(path):
        path.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(out, {"ranking.csv": lambda p: p.write_text("new"), "summary.csv": boom})
    assert (out / "summary.csv").read_text() == "old"
    assert not (out / "ranking.csv").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))
