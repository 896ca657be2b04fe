"""The wheel: one top-level package, `lapo`, holding every source file of the checkout.

The folders stay where the layout has them (`service/`, `training/`, ...) and install as
`lapo.service`, `lapo.training`, ... (pyproject's package-dir), so `pip install` puts no generic
top-level names (`service`, `training`) into site-packages. Built in-process with setuptools'
PEP 517 backend from a copy of the sources (seconds; no process, no network).
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

from lapo.paths import REPO_ROOT

# Checkout folder -> the package it installs as.
FOLDERS = {"lapo": "lapo", "service": "lapo/service", "training": "lapo/training",
           "evaluation": "lapo/evaluation", "loadtests": "lapo/loadtests"}


def _build_wheel(tmp_path: Path) -> zipfile.ZipFile:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    for folder in FOLDERS:
        shutil.copytree(REPO_ROOT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    from setuptools import build_meta

    cwd = os.getcwd()
    os.chdir(src)
    try:
        name = build_meta.build_wheel(str(tmp_path / "dist"))
    finally:
        os.chdir(cwd)
    return zipfile.ZipFile(tmp_path / "dist" / name)


def test_wheel_has_one_top_level_package_with_every_module(tmp_path) -> None:
    names = _build_wheel(tmp_path).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"lapo"}
    expected = {f"{package}/{path.relative_to(REPO_ROOT / folder).as_posix()}"
                for folder, package in FOLDERS.items()
                for path in (REPO_ROOT / folder).rglob("*.py")
                if "__pycache__" not in path.parts}
    assert expected - set(names) == set()  # a new subfolder must be listed in pyproject


def test_installed_names_are_the_packaged_ones() -> None:
    import lapo.evaluation
    import lapo.loadtests
    import lapo.service
    import lapo.training

    for module, folder in ((lapo.service, "service"), (lapo.training, "training"),
                           (lapo.evaluation, "evaluation"), (lapo.loadtests, "loadtests")):
        assert Path(module.__file__).parent.name == folder
