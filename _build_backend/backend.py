"""Build backend of bayes_cmma: hatchling, after a check of the Python version.

pip does not check a local project's ``requires-python`` before it resolves the dependencies, so
on Python 3.11 ``pip install -e .`` used to fail with "No matching distribution found for
arviz-base>=1.0", which does not say what is wrong. pip asks the backend for the build
requirements first, so this check runs before anything is resolved.
"""

import sys

if sys.version_info < (3, 12):  # noqa: UP036 (the point: this runs under any Python)
    raise SystemExit(
        f"bayes_cmma needs Python >= 3.12; this pip runs Python {sys.version.split()[0]} ({sys.executable}).\n"
        "Get 3.12 one of these ways, then recreate the virtual environment with it:\n"
        "  pyenv:  pyenv install 3.12 && pyenv local 3.12   (the repository's .python-version asks for 3.12)\n"
        "  uv:     uv python install 3.12 && uv venv --python 3.12 .venv\n"
        "  system: sudo apt install python3.12 python3.12-venv  (Debian/Ubuntu), then python3.12 -m venv .venv\n"
        "and rerun the quickstart: rm -rf .venv && python3.12 -m venv .venv && .venv/bin/pip install -e '.[test]'"
    )

from hatchling.build import *  # noqa: F403
