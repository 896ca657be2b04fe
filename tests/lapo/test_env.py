"""`lapo.env.configure`: engine defaults filled in, never over what the user set."""

from __future__ import annotations

import os

import pytest

from lapo import env


@pytest.fixture(autouse=True)
def _restore_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_defaults_fill_in_but_never_override(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LAPO_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    for key in ("HF_HOME", "VLLM_CACHE_ROOT"):
        monkeypatch.delenv(key, raising=False)
    root = env.configure()
    # The bounded oneDNN kernel cache (engine memory flat under load, docs/RELIABILITY.md).
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "8"
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"  # the user's value stays
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["HF_HOME"] == str(root / "hf")

    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "1024")
    env.configure()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "1024"


def test_vllm_cpu_compiles_through_the_inductor_cache(monkeypatch, tmp_path) -> None:
    """vllm-cpu's AOT artefacts never load back: its starts use inductor's cache instead."""
    monkeypatch.setenv("LAPO_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("VLLM_USE_AOT_COMPILE", raising=False)
    monkeypatch.setattr(env, "_vllm_cpu", lambda: True)
    env.configure()
    assert os.environ["VLLM_USE_AOT_COMPILE"] == "0"
    monkeypatch.delenv("VLLM_USE_AOT_COMPILE")
    monkeypatch.setattr(env, "_vllm_cpu", lambda: False)  # CUDA vLLM: its own default
    env.configure()
    assert "VLLM_USE_AOT_COMPILE" not in os.environ
