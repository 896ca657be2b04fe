"""The memory estimate's formulas against their sources."""

from __future__ import annotations

import pytest

from lapo.training.estimates import state_parts
from lapo.training.launch import Launch
from lapo.training.model_shape import ModelShape

# DeepSeek-R1-Distill-Qwen-1.5B's shape.
R1 = ModelShape("Qwen2ForCausalLM", hidden=1536, layers=28, intermediate=8960, vocab=151936,
                heads=12, kv_heads=2, head_dim=128, tied=False, max_positions=131072,
                qkv_bias=True)


def test_zero2_state_follows_the_zero_paper() -> None:
    shape = R1
    launch = Launch(world_size=8, distributed="DEEPSPEED", zero_stage=2)
    parts = {p.what: p.bytes for p in state_parts(shape, launch, True, False)}
    P = shape.params
    assert sum(parts.values()) == pytest.approx(2 * P + 14 * P / 8 + 2 * P)
