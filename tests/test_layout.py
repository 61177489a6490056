"""The public interface over the package layout: every ``bc.*`` name resolves to the object its
module defines, the module attributes of the earlier flat layout (``bc.plots``, ``bc.checking``,
...) still work, and ``import bayes_cmma`` (or the summarizer alone) does not load PyMC."""

import importlib
import pkgutil
import subprocess
import sys

import pytest

import bayes_cmma as bc

SUBPACKAGES = ["inputs", "fitting", "decisions", "checks", "baselines", "augmentation", "studies", "reporting"]


@pytest.mark.parametrize("name", bc.__all__)
def test_public_name_is_its_module_object(name):
    obj = getattr(bc, name)
    module = bc._LAZY.get(name)
    if module is not None:  # lazily imported: the same object as the defining module's
        assert getattr(importlib.import_module(f"bayes_cmma.{module}"), name) is obj
        assert obj.__module__ == f"bayes_cmma.{module}", "defined where the table says, not re-exported"
    else:  # the exception classes, imported eagerly
        assert obj.__module__ == "bayes_cmma.errors"


@pytest.mark.parametrize(("name", "path"), sorted(bc._SUBMODULES.items()))
def test_flat_layout_module_attributes_still_work(name, path):
    assert getattr(bc, name) is importlib.import_module(f"bayes_cmma.{path}")


def test_every_module_sits_in_a_flow_subpackage():
    """The top level holds only the shared contracts, the CLI and the example; the rest is grouped."""
    top = {m.name for m in pkgutil.iter_modules(bc.__path__)}
    assert top == {"cli", "errors", "dims", "datasets", *SUBPACKAGES}
    for sub in SUBPACKAGES:
        pkg = importlib.import_module(f"bayes_cmma.{sub}")
        assert pkg.__doc__, f"bayes_cmma.{sub} says what it holds"
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"bayes_cmma.{sub}.{info.name}")


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'fitt'"):
        bc.fitt  # noqa: B018


def test_import_and_summarizer_do_not_load_pymc():
    code = ("import sys, bayes_cmma as bc; bc.summarize; from bayes_cmma.inputs import data; "
            "print(sorted(m for m in ('pymc', 'pytensor', 'nutpie') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
