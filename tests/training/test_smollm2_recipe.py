"""The SmolLM2 recipe (configs/smollm2.toml): the reasoning base in the model's own words,
LoRA through every stage, and the CI smoke run of the same config at toy sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lapo.paths import REPO_ROOT
from lapo.training.reasoning_base import format_completion, split_trace

RECIPE = REPO_ROOT / "configs" / "smollm2.toml"
SMOKE = REPO_ROOT / "configs" / "smollm2-smoke.toml"
# What the smoke run may change: sizes (generation lengths included), the run folder,
# publishing, and the warm-up's correct-only filter (two stage-1 steps on six problems may
# solve none).
SIZE_KEYS = {"steps", "problems_per_level", "per_level", "k", "samples_per_problem",
             "num_generations", "prompts_per_step", "logging_steps", "epochs", "out",
             "publish", "only_correct", "max_completion_length", "max_tokens", "max_length"}


def test_split_trace_keeps_the_models_words_and_the_verified_answer() -> None:
    text = "We add 3 and 4 to get 7, then 7 + 2 = 9.\nAnswer: **9**.\nI hope this helps!"
    assert split_trace(text) == ("We add 3 and 4 to get 7, then 7 + 2 = 9.", "Answer: 9")
    # No "Answer:" label: the whole text is the reasoning, the last number the answer.
    assert split_trace("3 plus 4 is 7 and 7 plus 2 is 9") == (
        "3 plus 4 is 7 and 7 plus 2 is 9", "Answer: 9")
    assert split_trace("Answer: 9") is None  # no reasoning before the answer
    assert split_trace("I think <think> 2 + 2 = 4") is None  # tags of its own: unusable
    assert format_completion("2 + 2 = 4.", "Answer: 4") == "2 + 2 = 4.\n</think>\nAnswer: 4"


@pytest.mark.e2e  # SmolLM2's own tokenizer (the imported checkpoint)
def test_reasoning_template_opens_think_as_text_with_the_base_vocabulary(smollm2) -> None:
    from transformers import AutoTokenizer

    from lapo.think import profile_of
    from lapo.training.reasoning_base import reasoning_tokenizer

    plain = AutoTokenizer.from_pretrained(smollm2)
    tok = reasoning_tokenizer(smollm2)
    assert profile_of(plain).opens == "none"
    profile = profile_of(tok)
    assert (profile.opens, profile.tags, profile.prompt_suffix) == ("prompt", "text", "\n")
    assert tok.get_vocab() == plain.get_vocab()  # vLLM LoRA cannot add tokens
    messages = [{"role": "user", "content": "1 + 2 = ?"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    before = plain.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == before + "<think>\n"


def test_lora_rank_must_be_one_vllm_serves() -> None:
    from lapo.training.lora import LoraConfig

    with pytest.raises(ValueError, match=r"\[lora\] r must be one vLLM serves"):
        LoraConfig(enabled=True, r=12)


def test_smoke_config_is_the_recipe_at_toy_sizes() -> None:
    """CI's smoke run must exercise the published recipe: same sections, same keys, same
    values except sizes."""
    recipe, smoke = (tomllib.loads(f.read_text()) for f in (RECIPE, SMOKE))
    assert recipe.keys() == smoke.keys()
    for section, values in recipe.items():
        extra = set(smoke[section]) - set(values) - SIZE_KEYS
        assert not extra, f"[{section}] smoke-only keys {extra}"
        for key, value in values.items():
            if key not in SIZE_KEYS:
                assert smoke[section].get(key) == value, f"[{section}] {key} differs"
    from lapo.training.config import load_config

    for f in (RECIPE, SMOKE):
        cfg = load_config(f)
        assert cfg.lora.enabled and cfg.run.make_reasoning_base


@pytest.mark.e2e
def test_smoke_run_builds_adapters_over_the_imported_base(tmp_path, smollm2) -> None:
    """`lapo train --config configs/smollm2-smoke.toml`: every stage is a LoRA adapter over
    the unchanged imported base, named by its repo path and hash; evaluation compares them."""
    from lapo.manifest import read_manifest
    from lapo.think import load_profile

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "lapo.cli", "train", "--config", str(SMOKE),
                           "--out", str(out)], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    base_hash = read_manifest(smollm2)["checkpoint_hash"]
    for stage in ("base", "stage1", "warmup", "stage2"):
        folder = out / stage
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "models/smollm2-135m-instruct"
        assert config["r"] == 16
        manifest = read_manifest(folder)
        assert manifest["base_checkpoint"] == "models/smollm2-135m-instruct"
        assert manifest["base_checkpoint_hash"] == base_hash
        assert manifest["think_profile"]["opens"] == "prompt"
        assert not (folder / "model.safetensors").exists()
        assert not (folder / "README.md").exists()
        assert (folder / "adapter_model.safetensors").stat().st_size < 30_000_000
        assert load_profile(folder).tags == "text"
    rb = read_manifest(out / "base")["training"]
    assert rb["rows"] >= 1 and set(rb["per_level"]) == {"1", "2", "3"}
    assert read_manifest(smollm2)["checkpoint_hash"] == base_hash  # base untouched
    comparison = json.loads((out / "eval" / "comparison.json").read_text())
    assert set(comparison) == {"base", "stage1", "stage2"}
    # the base reasoned (a ratio exists) and is its own reference
    assert comparison["base"]["token_ratio_vs_base"] == 1.0
    assert comparison["base"]["accuracy_change_points"] == 0
    for name, row in comparison.items():
        report = json.loads((out / "eval" / f"{name}.json").read_text())
        # Each stage evaluated as the adapter itself (LoRA on the base's engine), every level.
        assert report["settings"]["model"] == str(out / name)
        assert report["samples"] == 3 * 2 and report["problems"] == 3
        assert [r["level"] for r in report["per_level"]] == [1, 2, 3]
        assert row["accuracy"] == report["accuracy"]
        assert row["mean_reasoning_tokens"] == report["mean_reasoning_tokens"]
        # k equal per problem: Pass@1 is the mean of the per-problem accuracies
        per_problem = [p["accuracy"] for p in report["per_problem"].values()]
        assert abs(sum(per_problem) / 3 - report["accuracy"]) < 1e-3
        assert report["accuracy_se"] is not None and "accuracy_change_se_points" in row
    assert not (out / "work" / "merged" / "stage2").exists()
    assert (out / "eval" / "length_vs_difficulty.png").stat().st_size > 0
    assert (out / "stage2" / "length_memory.json").is_file()


def _dry_run(config: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    return subprocess.run([sys.executable, "-m", "lapo.cli", "train", "--dry-run", "--config",
                           str(config)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.e2e  # a subprocess of lapo on the imported checkpoint
def test_dry_run_plans_the_recipe(smollm2) -> None:
    proc = _dry_run(RECIPE)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "ok: the config passes every check" in out
    assert "base: reasoning base from models/smollm2-135m-instruct: 240 problems x 8" in out
    # reasoning-gym stages count every (task, level): 40 per level x 3 levels of chain_sum.
    assert "data: 120 problems (problems_per_level 40 x 3)" in out
    assert "think profile: reasoning (template opens <think>), tags text" in out


@pytest.mark.e2e  # a subprocess of lapo on the imported checkpoint
def test_dry_run_reports_an_unknown_reasoning_gym_task(tmp_path, smollm2) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(RECIPE.read_text().replace('train_data = "reasoning_gym:chain_sum"',
                                              'train_data = "reasoning_gym:chain_sums"'))
    proc = _dry_run(bad)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "run.train_data" in out and "chain_sums" in out
    assert "Traceback" not in out
