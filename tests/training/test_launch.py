"""The launch a dry run plans for: the world size from the flag, the environment or the
accelerate config."""

from __future__ import annotations

import pytest

from lapo.paths import REPO_ROOT
from lapo.training.launch import read_launch

ZERO2 = REPO_ROOT / "configs" / "accelerate-deepspeed-zero2.yaml"


@pytest.mark.parametrize("world, env, expected, source", [
    (4, {"WORLD_SIZE": "2"}, 4, "--world-size"),
    (None, {"WORLD_SIZE": "2"}, 2, "$WORLD_SIZE"),
    (None, {}, 8, "num_processes"),
])
def test_world_size_precedence(world, env, expected, source) -> None:
    launch = read_launch(ZERO2, world, 80, env=env)
    assert launch.world_size == expected and source in launch.source
    assert launch.deepspeed and launch.zero_stage == 2
