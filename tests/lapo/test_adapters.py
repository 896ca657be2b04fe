"""`lapo.adapters`: what an adapter folder is, its rank, the ranks vLLM serves, where its base
is (one definition for training and serving; no engine, no torch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lapo.adapters import (
    VLLM_LORA_RANKS,
    AdapterError,
    adapter_base,
    adapter_rank,
    is_adapter,
    vllm_lora_rank,
)


def _base(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def _adapter(folder: Path, base_ref: str | None = None, config_ref: str | None = None,
             config: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    body = {"peft_type": "LORA", "r": 4, "base_model_name_or_path": config_ref}
    (folder / "adapter_config.json").write_text(json.dumps(body if config is None else config))
    if base_ref:
        (folder / "manifest.json").write_text(json.dumps({"base_checkpoint": base_ref}))
    return folder


@pytest.mark.parametrize(("files", "expected"), [
    ({"adapter_config.json": "{}"}, True),
    ({"config.json": "{}"}, False),  # a full checkpoint
    ({}, False),
])
def test_is_adapter(tmp_path, files, expected) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert is_adapter(tmp_path) is expected


@pytest.mark.parametrize(("config", "expected"), [
    ({"r": 12}, 12),
    ({"r": "16"}, 16),
    ({}, 8),  # PEFT's default
])
def test_adapter_rank(tmp_path, config, expected) -> None:
    assert adapter_rank(_adapter(tmp_path / "a", config=config)) == expected


@pytest.mark.parametrize(("rank", "floor", "expected"), [
    (1, 1, 1), (2, 1, 8), (8, 8, 8), (12, 8, 16), (4, 16, 16), (300, 8, 320), (512, 8, 512),
])
def test_vllm_lora_rank(rank, floor, expected) -> None:
    assert vllm_lora_rank(rank, floor) == expected


@pytest.mark.parametrize(("rank", "floor"), [(1024, 1), (8, 1024)])
def test_vllm_lora_rank_above_the_largest(rank, floor) -> None:
    with pytest.raises(AdapterError, match="above the largest vLLM serves"):
        vllm_lora_rank(rank, floor)


def test_lora_ranks_are_the_installed_vllms() -> None:
    from typing import get_args

    from vllm.config.lora import MaxLoRARanks

    assert VLLM_LORA_RANKS == get_args(MaxLoRARanks)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """<tmp>/repo (the repository root), <tmp>/models/{base,adapters/a}, <tmp>/root/shared."""
    monkeypatch.setattr("lapo.paths.REPO_ROOT", tmp_path / "repo")
    return SimpleNamespace(tmp=tmp_path, in_repo=_base(tmp_path / "repo" / "models" / "base"),
                           sibling=_base(tmp_path / "models" / "adapters" / "sibling"),
                           shared=_base(tmp_path / "root" / "shared"),
                           adapters=tmp_path / "models" / "adapters")


@pytest.mark.parametrize(("manifest_ref", "config_ref", "expected"), [
    ("ABS", None, "shared"),  # absolute: as it is
    ("models/base", None, "in_repo"),  # relative: the repository root first
    ("sibling", None, "sibling"),  # then the adapter's parent folder
    ("shared", None, "shared"),  # then the given roots
    (None, "models/base", "in_repo"),  # no base_checkpoint: PEFT's base_model_name_or_path
    ("gone", "sibling", "sibling"),  # base_checkpoint not found: PEFT's next
    ("models/base", "sibling", "in_repo"),  # the manifest's wins over PEFT's
])
def test_adapter_base_resolution(tree, manifest_ref, config_ref, expected) -> None:
    ref = str(tree.shared) if manifest_ref == "ABS" else manifest_ref
    adapter = _adapter(tree.adapters / "a", ref, config_ref)
    assert adapter_base(adapter, (tree.tmp / "root",)) == getattr(tree, expected).resolve()


def test_adapter_base_not_found_says_where_it_looked(tree) -> None:
    adapter = _adapter(tree.adapters / "a", "nowhere", "Org/hub-model")
    with pytest.raises(AdapterError) as err:
        adapter_base(adapter, (tree.tmp / "root",))
    message = str(err.value)
    assert "base checkpoint was not found" in message and "base_checkpoint" in message
    assert str(tree.tmp / "repo" / "nowhere") in message
    assert str(tree.adapters / "nowhere") in message
    assert str(tree.tmp / "root" / "Org/hub-model") in message


@pytest.mark.parametrize(("config_text", "match"), [
    (json.dumps({"r": 4}), "names no base"),
    ("{not json", "adapter_config.json is not valid JSON"),
])
def test_adapter_base_refusals(tmp_path, config_text, match) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(config_text)
    with pytest.raises(AdapterError, match=match):
        adapter_base(folder)


def test_adapter_error_is_a_value_error() -> None:
    assert issubclass(AdapterError, ValueError)


@pytest.mark.slow  # starts a process
def test_no_heavy_imports() -> None:
    code = ("import sys, lapo.adapters; "
            "print(sorted(m for m in ('torch', 'vllm', 'peft', 'transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
