"""Pipeline configs load and validate (the CPU default, the toy test, the GPU recipe)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lapo.paths import REPO_ROOT
from training.config import load_config

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.stage1.num_generations >= 2
    assert cfg.stage2.beta > 0


def test_unknown_keys_are_errors(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[stage1]\nstepz = 3\n")
    with pytest.raises(ValueError, match="unknown key.*stepz"):
        load_config(bad)
    bad.write_text("[stage3]\nsteps = 3\n")
    with pytest.raises(ValueError, match="unknown section.*stage3"):
        load_config(bad)


def test_cpu_settings_are_validated(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[stage1]\nbf16 = true\n")
    with pytest.raises(ValueError, match="use_cpu=True needs bf16=False"):
        load_config(bad)


def test_run_seed_propagates(tmp_path) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("[run]\nseed = 7\n[stage2]\nseed = 3\n")
    cfg = load_config(cfg_file)
    assert cfg.base.seed == 7 and cfg.stage1.seed == 7 and cfg.stage2.seed == 3
