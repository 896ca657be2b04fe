"""`lapo train` end to end on the toy config, on two ranks (torchrun, gloo on CPU): every stage,
manifests, lineage, reports, one set of artefacts, resume.

    torchrun --nproc_per_node 2 -m lapo.cli train --config configs/tiny-test.toml --out DIR

One run serves every check (a second, one-rank run of the same config took 224 s of the
suite; one rank runs the whole pipeline in tests/training/test_smollm2_recipe.py, and resumes
this two-rank run below). The trainers run on both ranks; the engines, manifests and files
come from the main process once; both ranks end every GRPO stage with the same M(q), the one
saved.
"""


from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lapo.manifest import checkpoint_hash
from lapo.paths import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(720)]
STAGES = ("base", "stage1", "warmup", "stage2")
CHECKPOINT_FILES = {"config.json", "generation_config.json", "model.safetensors",
                    "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                    "manifest.json"}
EVAL_FILES = {f"{name}.{ext}" for name in ("base", "stage1", "stage2")
              for ext in ("json", "md", "png")} | {
    "comparison.json", "results.md", "length_vs_difficulty.png"}
MEMORY_LINE = re.compile(r"(stage[12]) M\(q\): (\d+) entries, digest (\w+) \(rank (\d) of 2\)")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("two-ranks")
    log = out.parent / f"{out.name}.log"
    with log.open("w") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             "--nproc_per_node", "2", "-m", "lapo.cli", "train",
             "--config", str(REPO_ROOT / "configs" / "tiny-test.toml"), "--out", str(out)],
            stdout=fh, stderr=subprocess.STDOUT, cwd=REPO_ROOT, timeout=660)
    text = log.read_text()
    assert proc.returncode == 0, text[-6000:]
    return out, text


def test_both_ranks_run_and_every_manifest_says_world_size_2(run) -> None:
    out, log = run
    for rank in (0, 1):
        assert f"lapo train: rank {rank} of world size 2" in log
    for stage in STAGES:
        folder = out / stage
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["world_size"] == 2 and manifest["stage"] == stage
        assert manifest["checkpoint_hash"] == checkpoint_hash(folder)


def test_artefacts_are_the_one_process_files(run) -> None:
    out, log = run
    for stage in STAGES:
        names = {p.name for p in (out / stage).iterdir()}
        expected = CHECKPOINT_FILES | ({"length_memory.json"} if stage != "base" else set())
        assert names == expected, stage  # written once: no training_args.bin, no partials
    assert {p.name for p in (out / "eval").iterdir()} == EVAL_FILES
    s2 = json.loads((out / "stage2" / "manifest.json").read_text())
    assert [row["step"] for row in s2["training"]["history"] if "reward" in row] == [1, 2]
    assert "comparison" in s2 and "evaluation" in s2
    # Engines start on the main process only: one for the warm-up, three for evaluation.
    assert log.count("starting vLLM engine") == 4


def test_both_ranks_hold_the_saved_memory(run) -> None:
    from lapo.training.rewards import LengthMemory

    out, log = run
    seen: dict[str, dict[int, str]] = {}
    for stage, _, digest, rank in MEMORY_LINE.findall(log):
        seen.setdefault(stage, {})[int(rank)] = digest
    for stage in ("stage1", "stage2"):
        saved = LengthMemory.from_json(json.loads((out / stage / "length_memory.json")
                                                  .read_text()))
        assert seen[stage] == {0: saved.digest(), 1: saved.digest()}, stage


def test_every_stage_is_a_loadable_checkpoint_with_a_manifest(run) -> None:
    run, _ = run
    from transformers import AutoConfig, AutoTokenizer

    for stage in STAGES:
        folder = run / stage
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["stage"] == stage
        assert manifest["checkpoint_hash"] == checkpoint_hash(folder)
        assert manifest["code_version"] and manifest["command"].startswith("lapo train")
        assert (folder / "model.safetensors").is_file()
        assert AutoConfig.from_pretrained(folder).model_type == "qwen2"
        assert AutoTokenizer.from_pretrained(folder).chat_template


def test_lineage_links_each_stage_to_its_parent(run) -> None:
    run, _ = run
    parents = {"stage1": "base", "warmup": "stage1", "stage2": "warmup"}
    for child, parent in parents.items():
        manifest = json.loads((run / child / "manifest.json").read_text())
        assert Path(manifest["parent"]) == run / parent
        assert manifest["parent_hash"] == checkpoint_hash(run / parent)


def test_stage_manifests_carry_rewards_memory_and_history(run) -> None:
    run, _ = run
    s1 = json.loads((run / "stage1" / "manifest.json").read_text())
    assert s1["reward"]["alpha"] == 0.7 and "length_memory" in s1
    s2 = json.loads((run / "stage2" / "manifest.json").read_text())
    assert s2["reward"]["beta"] == 0.8
    assert [row["step"] for row in s2["training"]["history"] if "reward" in row] == [1, 2]
    assert "baseline_profile" in s2 and "comparison" in s2 and "evaluation" in s2
    # M(q) as saved is what the manifests summarise; Eq. 8 only ever lowers an entry.
    from lapo.training.rewards import LengthMemory

    memory = {stage: json.loads((run / stage / "length_memory.json").read_text())
              for stage in ("stage1", "warmup", "stage2")}
    for stage in memory:
        manifest = json.loads((run / stage / "manifest.json").read_text())
        assert LengthMemory.from_json(memory[stage]).stats() == manifest["length_memory"]
        assert all(e["median"] >= 1 and e["samples"] >= 1 for e in memory[stage].values())
    assert set(memory["stage1"]) <= set(memory["warmup"]) <= set(memory["stage2"])
    for pid, entry in memory["warmup"].items():
        assert memory["stage2"][pid]["median"] <= entry["median"]


def test_reports_and_plot(run) -> None:
    run, _ = run
    for name in ("base", "stage1", "stage2"):
        report = json.loads((run / "eval" / f"{name}.json").read_text())
        assert report["samples"] == report["problems"] * report["settings"]["k"]
        assert [row["level"] for row in report["per_level"]] == [1, 2, 3, 4, 5]
    assert (run / "eval" / "results.md").read_text().startswith("# LAPO results")
    assert (run / "eval" / "length_vs_difficulty.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_resumes_without_retraining(run) -> None:
    run, _ = run
    before = {s: (run / s / "manifest.json").stat().st_mtime for s in STAGES}
    subprocess.run([sys.executable, "-m", "lapo.cli", "train", "--config",
                    str(REPO_ROOT / "configs" / "tiny-test.toml"), "--out", str(run),
                    "--only", "stage2"], check=True, timeout=300)
    assert before == {s: (run / s / "manifest.json").stat().st_mtime for s in STAGES}
