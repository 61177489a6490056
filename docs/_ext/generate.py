"""Generated documentation pages: the committed results and the executed notebooks.

Runs when Sphinx starts (``builder-inited``), writes into ``docs/results/`` and
``docs/notebooks/`` (both git-ignored), and is the only way those pages come to exist:

* ``results/<study>/``: a copy of ``benchmarks/results/<study>/`` (its ``summary.md`` is the page;
  other Markdown files there become pages that it links to; figures are copied beside them). The
  measured numbers in the documentation are these files, not retyped.
* ``notebooks/<name>.ipynb``: ``notebooks/<name>.py`` (jupytext percent format) executed top to
  bottom in a fresh kernel, in a scratch folder laid out like the repository so that relative paths
  to ``benchmarks/results`` work. An error in a cell stops the build.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
RESULTS = ROOT / "benchmarks" / "results"
NOTEBOOKS = ROOT / "notebooks"


def _orphan(text: str) -> str:
    """Mark a page that is reached by a link, not by a table of contents."""
    return "---\norphan: true\n---\n\n" + text


def generate_results(out: Path) -> list[str]:
    """Copy every committed result folder to ``out``; return the studies, sorted."""
    if out.exists():
        shutil.rmtree(out)
    studies = []
    for folder in sorted(p for p in RESULTS.iterdir() if p.is_dir()):
        if not (folder / "summary.md").exists():
            continue
        studies.append(folder.name)
        for src in folder.rglob("*"):
            if src.is_dir() or src.suffix not in {".md", ".png", ".csv"}:
                continue
            dst = out / folder.name / src.relative_to(folder)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.suffix == ".md":
                text = src.read_text()
                top = src.relative_to(folder) == Path("summary.md")
                dst.write_text(text if top else _orphan(text))
            else:
                shutil.copyfile(src, dst)
    index = ["# Committed results", "",
             "Every number the documentation quotes from a benchmark or a simulation study comes from",
             "one of these folders of `benchmarks/results/`, copied here when the documentation is built.",
             "Each page names the command that made it.", "",
             "```{toctree}", ":maxdepth: 1", "", *[f"{s}/summary" for s in studies], "```", ""]
    (out / "index.md").write_text("\n".join(index))
    return studies


def execute_notebooks(out: Path) -> list[str]:
    """Execute every ``notebooks/NN_*.py`` into ``out/NN_*.ipynb``; return their names."""
    import jupytext
    from nbclient import NotebookClient

    out.mkdir(parents=True, exist_ok=True)
    reuse = os.environ.get("BAYES_CMMA_DOCS_REUSE_NOTEBOOKS") == "1"
    names = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")):
        target = out / f"{path.stem}.ipynb"
        names.append(path.stem)
        if reuse and target.exists() and target.stat().st_mtime >= path.stat().st_mtime:
            continue  # BAYES_CMMA_DOCS_REUSE_NOTEBOOKS=1: keep an earlier execution (editing prose)
        nb = jupytext.read(path)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / "notebooks"
            work.mkdir()
            (Path(tmp) / "benchmarks").symlink_to(ROOT / "benchmarks")
            NotebookClient(nb, timeout=1800, kernel_name="python3",
                           resources={"metadata": {"path": str(work)}}).execute()
        jupytext.write(nb, target, fmt="ipynb")
    return names


def generate_cli(out: Path) -> None:
    """One page with the ``--help`` of every ``bayes-cmma`` command, from the real parser."""
    import argparse

    from bayes_cmma.cli import build_parser

    parser = build_parser()
    lines = ["# Command-line reference", "",
             "Generated from the parser of `bayes-cmma` when the documentation is built, so it is",
             "exactly what `bayes-cmma COMMAND --help` prints.", "",
             "```text", parser.format_help().rstrip(), "```", ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        lines += [f"## `bayes-cmma {name}`", "", "```text", command.format_help().rstrip(), "```", ""]
    text = "\n".join(lines)
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


def check_api_page(page: Path) -> None:
    """Every public name (``bayes_cmma.__all__``) has an entry on the API page."""
    import bayes_cmma

    text = page.read_text()
    missing = [n for n in bayes_cmma.__all__ if f" bayes_cmma.{n}\n" not in text]
    if missing:
        raise RuntimeError(f"docs/api.md does not document {', '.join(missing)}; add an autodoc entry for each")


def _on_builder_inited(app) -> None:
    check_api_page(DOCS / "api.md")
    # fixed terminal width: argparse wraps its help to $COLUMNS
    os.environ["COLUMNS"] = "100"
    generate_results(DOCS / "results")
    generate_cli(DOCS / "cli.md")
    execute_notebooks(DOCS / "notebooks")


def setup(app):
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
