"""Resumable studies: result rows are appended to a CSV as they are computed, so a rerun continues.

Imported by the study scripts in this folder (``python benchmarks/NAME.py`` puts it on the path).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def done_keys(path: Path, keys: tuple[str, ...]) -> set[tuple]:
    """The key tuples already in ``path`` (empty when it does not exist yet)."""
    if not path.exists():
        return set()
    frame = pd.read_csv(path)
    if any(k not in frame for k in keys):
        return set()
    return set(frame[list(keys)].itertuples(index=False, name=None))


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows (6 significant digits), writing the header when the file is new."""
    if rows:
        pd.DataFrame(rows).to_csv(path, mode="a", header=not path.exists(), index=False, float_format="%.6g")
