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


_KILLED_WRITER = r"""
import sys, time
from pathlib import Path
from bayes_cmma.outputs import write_atomically

out, flag = Path(sys.argv[1]), Path(sys.argv[2])

def slow(path):
    with open(path, "w") as f:
        f.write("half a table,")
        f.flush()
        flag.touch()  # the parent kills us now, mid-write
        time.sleep(120)
        f.write("the rest")

write_atomically(out, {"summary.csv": lambda p: p.write_text("new"), "ranking.csv": slow})
"""


def test_killed_mid_write_leaves_the_previous_output(tmp_path):
    """SIGKILL while a table is half written: the folder keeps the previous complete files."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    write_atomically(out, {"summary.csv": lambda p: p.write_text("old"), "ranking.csv": lambda p: p.write_text("old")})
    flag = tmp_path / "mid-write"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(out), str(flag)])
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert child.poll() is None, "the writer ended before it was killed"
            assert time.monotonic() < deadline, "the writer never reached the middle of its write"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert sorted(p.name for p in out.iterdir()) == ["ranking.csv", "summary.csv"]
    assert (out / "summary.csv").read_text() == "old" and (out / "ranking.csv").read_text() == "old"
    # what was half written is only in the hidden temporary folder, never under the output's name
    leftovers = list(tmp_path.glob(".out.tmp-*"))
    assert len(leftovers) == 1 and (leftovers[0] / "ranking.csv").read_text() == "half a table,"
    # the next run is unaffected
    write_atomically(out, {"summary.csv": lambda p: p.write_text("newer")})
    assert (out / "summary.csv").read_text() == "newer" and not (out / "ranking.csv").exists()
