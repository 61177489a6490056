"""The notebooks execute top to bottom (short-chain setting: BAYES_CMMA_NOTEBOOK_FAST=1).

They are stored as jupytext percent scripts (``notebooks/*.py``); each is read into a notebook and
run in a fresh Jupyter kernel, so an error in any cell fails the test. The suite runs the first
notebook; the other two are ``slow`` here because the documentation build (``docs/_ext/generate.py``,
run by ``.ci/run`` with warnings as errors) executes all three on every CI run, the same way.
"""

from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))

pytestmark = pytest.mark.mcmc


def test_the_three_notebooks_are_there():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03"]


@pytest.mark.parametrize(
    "path", [pytest.param(p, marks=[pytest.mark.slow] if p.stem[:2] != "01" else []) for p in NOTEBOOKS],
    ids=[p.stem for p in NOTEBOOKS],
)
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("BAYES_CMMA_NOTEBOOK_FAST", "1")
    # run beside a link to the committed results, as from notebooks/ in the repository, without
    # writing into the repository
    work = tmp_path / "notebooks"
    work.mkdir()
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")
    nb = jupytext.read(path)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # every figure the notebook shows was rendered
    shown = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(shown) >= {"01": 8, "02": 1, "03": 1}[path.stem[:2]]
