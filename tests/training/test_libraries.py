"""Installed library versions and the ranges TRL's own extras ask for, against pyproject."""

from __future__ import annotations

import tomllib

import pytest

from lapo.paths import REPO_ROOT
from lapo.training.libraries import installed_versions, trl_extra_spec


def test_gpu_extra_pins_versions_trl_supports() -> None:
    """pyproject's `gpu` extra: vLLM and DeepSpeed inside the ranges TRL's own extras ask."""
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = {Requirement(r).name: Requirement(r).specifier
            for r in project["optional-dependencies"]["gpu"]}
    versions = {name: next(iter(spec)).version for name, spec in pins.items()}
    assert set(versions) >= {"vllm", "trl", "deepspeed"}
    installed_trl = installed_versions(("trl",))["trl"]
    if installed_trl != versions["trl"]:
        pytest.skip(f"trl {installed_trl} installed, the extra pins {versions['trl']}")
    assert trl_extra_spec("vllm").contains(versions["vllm"])
    assert trl_extra_spec("deepspeed").contains(versions["deepspeed"])
    train = {Requirement(r).name: str(Requirement(r).specifier)
             for r in project["optional-dependencies"]["train"]}
    assert train["trl"] == f"=={versions['trl']}"  # one TRL for both extras
