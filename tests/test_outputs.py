"""Atomic writing of a fit's outputs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bayes_cmma.errors import BayesCMMAError
from bayes_cmma.reporting import outputs
from bayes_cmma.reporting.outputs import COMMIT_FILE, recover, write_atomically


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
from bayes_cmma.reporting.outputs import write_atomically

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


def _run_until_flag_then_kill(script: str, *args: str, flag) -> None:
    child = subprocess.Popen([sys.executable, "-c", script, *args])
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert child.poll() is None, "the writer ended before it was killed"
            assert time.monotonic() < deadline, "the writer never reached the point where it is killed"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL


def test_killed_mid_write_leaves_the_previous_output(tmp_path):
    """SIGKILL while a table is half written: the folder keeps the previous complete files."""
    out = tmp_path / "out"
    write_atomically(out, {"summary.csv": lambda p: p.write_text("old"), "ranking.csv": lambda p: p.write_text("old")})
    flag = tmp_path / "mid-write"
    _run_until_flag_then_kill(_KILLED_WRITER, str(out), str(flag), flag=flag)
    assert sorted(p.name for p in out.iterdir()) == ["ranking.csv", "summary.csv"]
    assert (out / "summary.csv").read_text() == "old" and (out / "ranking.csv").read_text() == "old"
    # what was half written is only in the hidden temporary folder, never under the output's name
    leftovers = list(tmp_path.glob(".out.tmp-*"))
    assert len(leftovers) == 1 and (leftovers[0] / "ranking.csv").read_text() == "half a table,"
    # the next run is unaffected
    write_atomically(out, {"summary.csv": lambda p: p.write_text("newer")})
    assert (out / "summary.csv").read_text() == "newer" and not (out / "ranking.csv").exists()


_KILLED_BETWEEN_MOVES = r"""
import sys, time
from pathlib import Path
from bayes_cmma.reporting import outputs

out, flag = Path(sys.argv[1]), Path(sys.argv[2])
move = outputs._move

def move_then_stall(src, dst):
    move(src, dst)
    flag.touch()  # one file of the new set is in place, the others not: the parent kills us now
    time.sleep(120)

outputs._move = move_then_stall
outputs.write_atomically(out, {"summary.csv": lambda p: p.write_text("new"),
                               "ranking.csv": lambda p: p.write_text("new")})
"""


def test_killed_between_two_moves_is_completed_not_mixed(tmp_path):
    """SIGKILL after the first of several files moved in: the commit record lets the next reader or
    writer finish the move, so the folder holds the new run's set, never new summary + old ranking."""
    out = tmp_path / "out"
    write_atomically(out, {"summary.csv": lambda p: p.write_text("old"), "ranking.csv": lambda p: p.write_text("old"),
                           "drf.csv": lambda p: p.write_text("old")})
    flag = tmp_path / "between-moves"
    _run_until_flag_then_kill(_KILLED_BETWEEN_MOVES, str(out), str(flag), flag=flag)
    assert (out / COMMIT_FILE).exists()
    assert (out / "summary.csv").read_text() == "new" and (out / "ranking.csv").read_text() == "old"  # the mix
    assert recover(out) is True
    assert sorted(p.name for p in out.iterdir()) == ["ranking.csv", "summary.csv"]  # drf.csv was stale
    assert (out / "ranking.csv").read_text() == "new"
    assert not list(tmp_path.glob(".out.tmp-*"))
    assert recover(out) is False  # nothing left to do


def test_next_write_completes_an_interrupted_one_first(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_atomically(out, {"summary.csv": lambda p: p.write_text("old"), "ranking.csv": lambda p: p.write_text("old")})
    moved = []

    def move_once_then_interrupt(src, dst):
        if moved:
            raise KeyboardInterrupt
        os.replace(src, dst)
        moved.append(dst)

    monkeypatch.setattr(outputs, "_move", move_once_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(out, {"summary.csv": lambda p: p.write_text("new"),
                               "ranking.csv": lambda p: p.write_text("new")})
    monkeypatch.undo()
    assert (out / COMMIT_FILE).exists()
    write_atomically(out, {"notes.md": lambda p: p.write_text("x")}, stale=[])
    assert (out / "summary.csv").read_text() == "new" and (out / "ranking.csv").read_text() == "new"
    assert not (out / COMMIT_FILE).exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_damaged_commit_record_is_one_clear_error(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / COMMIT_FILE).write_text("{half")
    with pytest.raises(BayesCMMAError, match=f"{COMMIT_FILE} is damaged.*rerun the command"):
        recover(out)
    (out / COMMIT_FILE).write_text(json.dumps({"tmp": ".out.tmp-gone", "files": ["summary.csv"], "remove": []}))
    with pytest.raises(BayesCMMAError, match="summary.csv is neither in"):
        recover(out)


def test_old_temporary_folders_of_killed_writes_are_removed(tmp_path):
    out = tmp_path / "out"
    old, fresh, other = (tmp_path / ".out.tmp-old"), (tmp_path / ".out.tmp-fresh"), (tmp_path / ".other.tmp-old")
    for d in (old, fresh, other):
        d.mkdir()
        (d / "summary.csv").write_text("half")
    hours_ago = time.time() - 2 * outputs.STALE_TMP_SECONDS
    for d in (old, other):
        os.utime(d, (hours_ago, hours_ago))
    write_atomically(out, {"summary.csv": lambda p: p.write_text("new")})
    assert not old.exists()
    assert fresh.exists()  # may belong to a write still running
    assert other.exists()  # another output's folder: not ours to remove


def test_recover_is_public_as_bc_outputs_recover():
    import bayes_cmma as bc

    assert bc.outputs.recover is recover and "outputs" in dir(bc)


class _InterruptedFinaliser:
    """Ctrl-C delivered while a finaliser runs: Python reports it as "Exception ignored" and carries on."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)


def _write_dropping_a_finaliser(path):
    _InterruptedFinaliser()  # dropped at once, so its finaliser runs here and swallows the interrupt
    path.write_text("new")


def test_a_ctrl_c_swallowed_by_a_finaliser_still_stops_the_write(tmp_path, capsys):
    from bayes_cmma.fitting import interrupts

    out = tmp_path / "out"
    write_atomically(out, {"summary.csv": lambda p: p.write_text("old")})
    previous = signal.getsignal(signal.SIGINT)
    with interrupts.catching(), pytest.raises(KeyboardInterrupt):
        write_atomically(out, {"summary.csv": _write_dropping_a_finaliser})
    assert (out / "summary.csv").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert "Exception ignored" not in capsys.readouterr().err
    # the handler and hook are restored and nothing stays pending
    assert signal.getsignal(signal.SIGINT) is previous
    interrupts.check()


def test_check_is_a_no_op_outside_catching():
    from bayes_cmma.fitting import interrupts

    with interrupts.catching():
        interrupts.check()
    interrupts.check()
