"""The build backend stops an install on Python < 3.12 with a message that says how to get 3.12.

(On 3.12 the same module is the backend of every install, including the README's set-up in CI.)
"""

import runpy
import sys
from pathlib import Path

import pytest

BACKEND = Path(__file__).resolve().parents[1] / "_build_backend" / "backend.py"


def test_old_python_is_refused_with_the_way_to_get_312(monkeypatch):
    monkeypatch.setattr(sys, "version_info", (3, 11, 7, "final", 0))
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(BACKEND))
    message = str(info.value)
    assert message.startswith("bayes_cmma needs Python >= 3.12")
    for way in ("pyenv install 3.12", "uv python install 3.12", "python3.12 -m venv .venv"):
        assert way in message


def test_pyproject_uses_it():
    text = (BACKEND.parents[1] / "pyproject.toml").read_text()
    assert 'build-backend = "backend"' in text and 'backend-path = ["_build_backend"]' in text
