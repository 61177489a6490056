"""Sphinx configuration of the bayes_cmma documentation (PyData theme, MyST-NB).

Build offline from the repository root::

    pip install -e '.[docs]'
    sphinx-build -W -b html docs docs/_build/html

Two kinds of page are generated at build time, never edited by hand (see ``_ext/generate.py``):
the results pages, copied from the committed result files in ``benchmarks/results/``, and the
notebooks, executed from ``notebooks/*.py`` (set ``BAYES_CMMA_NOTEBOOK_FAST=1`` for short chains).
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import bayes_cmma  # noqa: E402

project = "bayes_cmma"
author = "the bayes_cmma developers"
copyright = "2026, the bayes_cmma developers"
release = bayes_cmma.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "generate",
]

exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
myst_enable_extensions = ["deflist"]
myst_heading_anchors = 3
# notebooks are executed by _ext/generate.py (in a scratch folder beside the committed results),
# so MyST-NB only renders their stored outputs
nb_execution_mode = "off"
nb_merge_streams = True

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False}
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False

html_theme = "pydata_sphinx_theme"
html_title = "bayes_cmma"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_static_path: list[str] = []
# the pages are few and listed in the top bar; an empty left sidebar would only take width
html_sidebars = {"**": []}
