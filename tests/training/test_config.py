"""Pipeline configs load and validate (the CPU default, the toy test, the GPU recipe)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lapo.paths import REPO_ROOT
from lapo.training.config import load_config

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


@pytest.mark.parametrize(
    ("fields", "world", "expected"),
    [  # (per device, accumulation, steps per generation, generation batch)
        ({}, 1, (32, 1, 1, 32)),  # today's one-process layout: the rollout in one micro-step
        ({}, 2, (16, 1, 1, 32)),
        ({"gradient_accumulation_steps": 4}, 2, (4, 4, 4, 32)),
        ({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 8}, 2,
         (2, 8, 8, 32)),
        ({"per_device_train_batch_size": 4, "gradient_accumulation_steps": 4,
          "steps_per_generation": 8}, 2, (4, 4, 8, 64)),  # one generation, two steps
    ],
)
def test_batch_layout(fields, world, expected) -> None:
    from lapo.training.grpo import GRPOStageConfig, batch_layout

    s = GRPOStageConfig(num_generations=4, prompts_per_step=8, **fields)
    layout = batch_layout(s, world)
    assert (layout.per_device_train_batch_size, layout.gradient_accumulation_steps,
            layout.steps_per_generation, layout.generation_batch_size) == expected
    per_device, accum = layout.per_device_train_batch_size, layout.gradient_accumulation_steps
    assert per_device * accum * world == s.num_generations * s.prompts_per_step


@pytest.mark.parametrize(
    ("fields", "world", "message"),
    [
        ({}, 3, r"num_generations \* prompts_per_step \(4 \* 8 = 32\) does not split over "
                r"world_size \* gradient_accumulation_steps \(3 \* 1\)"),
        ({"per_device_train_batch_size": 8}, 2,
         r"per_device_train_batch_size \* gradient_accumulation_steps \* world_size "
         r"\(8 \* 1 \* 2 = 16\) must equal num_generations \* prompts_per_step"),
        ({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 16,
          "steps_per_generation": 1}, 1, r"whole groups of num_generations \(4\): change "
                                         r"steps_per_generation"),
    ],
)
def test_batch_layout_errors_name_the_fields(fields, world, message) -> None:
    from lapo.training.grpo import GRPOStageConfig, batch_layout

    with pytest.raises(ValueError, match=message):
        batch_layout(GRPOStageConfig(num_generations=4, prompts_per_step=8, **fields), world)


def test_grpo_config_carries_the_layout_and_vllm_settings() -> None:
    from lapo.training.grpo import GRPOStageConfig, grpo_config

    s = GRPOStageConfig(num_generations=4, prompts_per_step=8, gradient_accumulation_steps=2,
                     steps=2)
    args = grpo_config(s, Path("unused"), world_size=1)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps,
            args.steps_per_generation, args.generation_batch_size) == (16, 2, 2, 32)
    assert not args.use_vllm
    gpu = load_config(REPO_ROOT / "configs" / "gpu-r1-distill-1.5b.toml").stage1
    assert (gpu.vllm_mode, gpu.vllm_max_model_length, gpu.vllm_enable_sleep_mode) == (
        "colocate", 5120, True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[engine]\nmax_model_len = 512\n[eval]\nmax_tokens = 512\n",
         r"\[engine\] max_model_len \(512\) must hold the prompt plus \[eval\] max_tokens"),
        ("[engine]\nmax_model_len = 400\n",
         r"\[engine\] max_model_len \(400\) must hold the prompt plus \[warmup\] max_tokens"),
        ("[engine]\ngpu_memory_utilization = 1.5\n", r"gpu_memory_utilization must be in"),
        ("[warmup]\nuse_cpu = false\n", r"every trainer of a run must agree on use_cpu"),
        ("[warmup]\nmax_length = 256\n", r"\[warmup\] max_length \(256\) must hold"),
        ("[stage1]\nvllm_mode = \"remote\"\n", r"vllm_mode must be one of colocate, server"),
        ("[stage2]\nvllm_max_model_length = 256\n",
         r"vllm_max_model_length \(256\) must hold the prompt plus max_completion_length"),
    ],
)
def test_cross_section_checks(tmp_path, text, message) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(bad)


def test_engine_section_builds_every_engine_config() -> None:
    cfg = load_config(REPO_ROOT / "configs" / "gpu-r1-distill-1.5b.toml")
    engine = cfg.engine.for_model("some/checkpoint")
    assert (engine.dtype, engine.max_model_len, engine.enforce_eager,
            engine.gpu_memory_utilization) == ("bfloat16", 5120, False, 0.85)
    assert engine.max_model_len >= cfg.eval.max_tokens + 512
    tiny = load_config(REPO_ROOT / "configs" / "tiny-test.toml").engine
    engine = tiny.for_model("x")
    assert (engine.dtype, engine.max_model_len, engine.max_num_seqs, engine.enforce_eager) == (
        "float32", 2048, 128, True)  # what the warm-up and evaluation engines always had
    with pytest.raises(ValueError, match=r"max_model_len \(2048\) is shorter than the longest "
                                         r"prompt \(300 tokens\) plus \[eval\] max_tokens "
                                         r"\(4096\) = 4396"):
        tiny.check_fits(300, 4096, "[eval]")


def test_engine_context_fits_the_longest_generation_unless_set(tmp_path) -> None:
    """Without [engine] max_model_len, the engines hold max_tokens + a 512-token prompt (as
    evaluation sized its engine before the section existed); a given value is kept."""
    path = tmp_path / "c.toml"
    path.write_text("[eval]\nmax_tokens = 1800\n")
    assert load_config(path).engine.max_model_len == 2312
    path.write_text("[eval]\nmax_tokens = 100\n")
    assert load_config(path).engine.max_model_len == 2048
    path.write_text("[eval]\nmax_tokens = 1800\n[engine]\nmax_model_len = 4096\n")
    assert load_config(path).engine.max_model_len == 4096
