"""Shared fixtures: a tiny checkpoint per session, and the engine env configured once."""

from __future__ import annotations

from pathlib import Path

import pytest

from lapo import env

env.configure()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny Qwen2 checkpoint with the LAPO tokenizer (seconds to build)."""
    from lapo.tiny import make_tiny_checkpoint

    corpus = ["<|im_start|>user\nWhat is 3+4?<|im_end|>\n<|im_start|>assistant\n<think>"
              " I will answer the question with 12 tokens.\n3+4=7. Check: 7.</think>7"] * 20
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), corpus)
