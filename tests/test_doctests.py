"""Every docstring example in the package runs (Bytewax's convention: runnable examples)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

ROOTS = ("driftline", "driftline.operators", "driftline.sinks", "driftline.flows", "driftline.schemas")


def _modules() -> list[str]:
    names: set[str] = set()
    for root in ROOTS:
        pkg = importlib.import_module(root)
        names.add(root)
        names.update(m.name for m in pkgutil.walk_packages(pkg.__path__, f"{root}."))
    return sorted(n for n in names if not n.endswith("__main__"))


MODULES = _modules()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
