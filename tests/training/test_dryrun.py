"""`lapo train --config FILE --dry-run` end to end (a subprocess of `lapo`): the GPU recipe
passes on a stand-in base, broken copies fail naming the field and the fix, and none of it
loads a model, TRL or vLLM.

The stand-in base is the tiny factory's tokenizer (R1-Distill's chat template: the prompt
opens ``<think>\\n``) with DeepSeek-R1-Distill-Qwen-1.5B's ``config.json``: the dry run reads
only the config (for the parameter count and shapes) and the tokenizer (think profile, prompt
lengths), so the estimate is the real model's. Every CLI run happens in ONE subprocess, which
reports after each run the heavy modules it has imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lapo.paths import REPO_ROOT
from tests.training.test_model_shape import R1_CONFIG  # DeepSeek-R1-Distill-Qwen-1.5B's

pytestmark = pytest.mark.e2e  # every test here reads one subprocess's CLI runs

RECIPE = REPO_ROOT / "configs" / "gpu-r1-distill-1.5b.toml"
ZERO2 = REPO_ROOT / "configs" / "accelerate-deepspeed-zero2.yaml"

# Runs each CLI invocation in this one process, then lists what a dry run must not import:
# vLLM, TRL, PEFT, DeepSpeed, a transformers model class (a tokenizer imports transformers,
# torch and the auto mappings, never `modeling_utils` or a model's `models.*.modeling_*`).
RUNNER = r"""
import json, logging, re, sys
from typer.testing import CliRunner
from lapo.cli import app

out = {}
for name, args in json.loads(sys.argv[1]).items():
    logging.getLogger().handlers.clear()  # each run logs to its own captured stderr
    result = CliRunner().invoke(app, args)
    heavy = sorted(m for m in sys.modules
                   if m.split(".")[0] in ("vllm", "trl", "peft", "deepspeed")
                   or m == "transformers.modeling_utils"
                   or re.match(r"transformers\.models\.(?!auto\.)[^.]+\.modeling_", m))
    error = result.exception
    out[name] = {"code": result.exit_code, "output": result.output, "heavy": heavy,
                 "exception": None if error is None or isinstance(error, SystemExit)
                 else repr(error)}
print("RESULT " + json.dumps(out))
"""


def make_base(folder: Path, template: str, corpus: list[str]) -> Path:
    """The tiny factory's checkpoint with R1-Distill-1.5B's config.json. Its BPE merges are
    learned from the prompts it will measure, so its token counts come near a real
    tokenizer's (byte-level without merges would count 3-4x as many)."""
    from lapo.tiny import TinyConfig, make_tiny_checkpoint

    make_tiny_checkpoint(folder, corpus, TinyConfig(vocab_size=4096), template=template)
    (folder / "config.json").write_text(json.dumps(R1_CONFIG, indent=1))
    return folder


def set_keys(text: str, section: str, **values) -> str:
    """``text`` with ``key = value`` set in ``[section]`` (replaced, or added under it)."""
    lines = text.splitlines()
    if f"[{section}]" not in lines:
        lines += ["", f"[{section}]"]
    start = lines.index(f"[{section}]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")),
               len(lines))
    for key, value in values.items():
        line = f"{key} = {json.dumps(value)}"
        at = next((i for i in range(start + 1, end) if re.match(rf"{key}\s*=", lines[i])), None)
        if at is None:
            lines.insert(start + 1, line)
            end += 1
        else:
            lines[at] = line
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dryrun")
    data = root / "math_train.jsonl"
    data.write_text("".join(
        json.dumps({"id": f"p{i}", "question": f"What is {i} + {2 * i}? " * (1 + i % 5),
                    "answer": str(3 * i), "level": 1 + i % 5}) + "\n" for i in range(400)))
    corpus = [json.loads(line)["question"] for line in data.read_text().splitlines()]
    text = RECIPE.read_text()
    if importlib.util.find_spec("mmath") is None:  # the recipe evaluates on MATH500
        text = set_keys(text, "eval", data=str(data))
    else:
        from lapo.evaluation.data import load_items

        corpus += [m["content"] for item in load_items("math500") for m in item.messages]
    text = set_keys(text, "run", base_checkpoint=str(make_base(root / "r1", "r1", corpus)),
                    train_data=str(data), out=str(root / "run"))
    recipe = root / "gpu.toml"
    recipe.write_text(text)
    return {"root": root, "recipe": recipe,
            "plain": make_base(root / "plain", "chatml", corpus)}


def _broken(stand_in: dict[str, Path]) -> dict[str, tuple[str, list[str], list[str]]]:
    """name -> (config text, extra CLI args, what the output must say)."""
    good = stand_in["recipe"].read_text()
    misspelled = re.sub(r"^num_generations\s*=", "num_generation =", good, count=1, flags=re.M)
    cases = {
        "misspelled key": (misspelled, [], [
            "[stage1] unknown key 'num_generation'", "did you mean 'num_generations'?"]),
        "misspelled section": (good.replace("[warmup]", "[warm_up]"), [], [
            "unknown section [warm_up]", "did you mean 'warmup'?"]),
        "wrong type": (set_keys(good, "stage2", steps="240"), [], [
            "stage2.steps = '240': expected int"]),
        "indivisible batch": (set_keys(good, "stage1", per_device_train_batch_size=3,
                                       gradient_accumulation_steps=8), [], [
            "error: stage1.per_device_train_batch_size",
            "gradient_accumulation_steps", "prompts_per_step",
            "per_device_train_batch_size = 4 with gradient_accumulation_steps = 8"]),
        "ranks do not divide the batch": (good, ["--world-size", "7"], [
            "error: stage1.", "7 rank(s)", "do not split over 7 ranks"]),
        "missing data file": (set_keys(good, "run", train_data="/nonexistent/train.jsonl"),
                              [], ["error: run.train_data", "data file not found"]),
        "base without a think span": (set_keys(good, "run",
                                               base_checkpoint=str(stand_in["plain"])), [], [
            "error: run.base_checkpoint", "does not reason in a think span"]),
        "vLLM context too short": (set_keys(good, "stage1", vllm_max_model_length=4160), [], [
            "error: stage1.vllm_max_model_length: 4160 is shorter than prompt",
            "max_completion_length 4096"]),
        "does not fit 80 GB": (set_keys(good, "stage1", vllm_gpu_memory_utilization=0.95), [], [
            "error: stage1.per_device_train_batch_size: estimated",
            "more than 80", "vllm_gpu_memory_utilization", "DOES NOT FIT"]),
    }
    cases["engine context too short"] = (set_keys(good, "engine", max_model_len=4160), [], [
        "error: engine.max_model_len: 4160 is shorter than the warm-up rollouts",
        "set [engine] max_model_len >="])
    cases["engine context shorter than max_tokens"] = (
        set_keys(good, "engine", max_model_len=1024), [], [
            "[engine] max_model_len (1024) must hold the prompt plus [warmup] max_tokens"])
    return cases


@pytest.fixture(scope="module")
def runs(stand_in) -> dict[str, dict]:
    base_args = ["train", "--dry-run", "--accelerate-config", str(ZERO2), "--gpu-memory-gb", "80"]
    invocations = {
        "gpu recipe": base_args + ["--config", str(stand_in["recipe"])],
        "cpu recipe, 2 ranks": ["train", "--dry-run", "--world-size", "2", "--out",
                                str(stand_in["root"] / "cpu-run"), "--config",
                                str(REPO_ROOT / "configs" / "tiny-test.toml")],
    }
    for name, (text, extra, _) in _broken(stand_in).items():
        path = stand_in["root"] / (re.sub(r"\W+", "-", name) + ".toml")
        path.write_text(text)
        invocations[name] = base_args + ["--config", str(path), *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(invocations)],
                          capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, f"runner failed: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(line[len("RESULT "):])


def test_gpu_recipe_passes_and_fits_8_gpus_of_80_gb(runs) -> None:
    run = runs["gpu recipe"]
    out = run["output"]
    assert run["exception"] is None, run["exception"]
    assert run["code"] == 0, out
    assert "ok: the config passes every check" in out
    assert "8 rank(s)" in out and "DeepSpeed ZeRO-2" in out
    assert "1.78B parameters" in out  # the real model's count, from config.json
    assert "think profile: reasoning (template opens <think>)" in out
    for stage in ("stage1:", "warmup:", "stage2:", "eval:"):
        assert f"\n{stage}" in out
    assert out.count("fits") >= 3 and "DOES NOT FIT" not in out
    assert "time, all stages (estimate)" in out
    assert run["heavy"] == []


def test_cpu_recipe_passes_on_two_ranks(runs) -> None:
    """The documented CPU check: `torchrun --nproc_per_node 2` runs of the toy config."""
    run = runs["cpu recipe, 2 ranks"]
    assert run["code"] == 0, run["output"]
    assert "2 rank(s) (--world-size)" in run["output"]
    assert "per process, RAM (CPU run)" in run["output"] and "error:" not in run["output"]


@pytest.mark.parametrize("name", [
    "misspelled key", "misspelled section", "wrong type", "indivisible batch",
    "ranks do not divide the batch", "missing data file", "base without a think span",
    "vLLM context too short", "does not fit 80 GB", "engine context too short",
    "engine context shorter than max_tokens"])
def test_broken_configs_are_rejected_before_any_model_loads(runs, stand_in, name) -> None:
    cases = _broken(stand_in)
    run = runs[name]
    assert run["exception"] is None, run["exception"]
    assert run["code"] == 2, run["output"]
    for text in cases[name][2]:
        assert text in run["output"], f"{text!r} not in:\n{run['output']}"
    assert run["heavy"] == [], run["heavy"]
