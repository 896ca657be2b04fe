"""Every docstring example in the sources runs (`python -m doctest` semantics), by package name.

Modules are imported as installed (`lapo.service.budget`, not `service.budget`) so that no
module is loaded twice; only modules whose source holds a ``>>>`` example are imported.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

from lapo.paths import REPO_ROOT

FOLDERS = {"lapo": "lapo", "service": "lapo.service", "training": "lapo.training",
           "evaluation": "lapo.evaluation", "loadtests": "lapo.loadtests"}


def _modules_with_examples() -> list[str]:
    found = []
    for folder, package in FOLDERS.items():
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if ">>> " in path.read_text():
                rel = path.relative_to(REPO_ROOT / folder).with_suffix("")
                found.append(".".join([package, *rel.parts]).removesuffix(".__init__"))
    return found


MODULES = _modules_with_examples()


def test_the_sources_have_examples() -> None:
    assert len(MODULES) >= 5


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
