"""`lapo train` end to end on the toy config: every stage, manifests, lineage, reports, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lapo.manifest import checkpoint_hash
from lapo.paths import REPO_ROOT

pytestmark = pytest.mark.e2e
STAGES = ("base", "stage1", "warmup", "stage2")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pipeline")
    subprocess.run([sys.executable, "-m", "lapo.cli", "train", "--config",
                    str(REPO_ROOT / "configs" / "tiny-test.toml"), "--out", str(out)],
                   check=True, timeout=900)
    return out


def test_every_stage_is_a_loadable_checkpoint_with_a_manifest(run: Path) -> None:
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


def test_lineage_links_each_stage_to_its_parent(run: Path) -> None:
    parents = {"stage1": "base", "warmup": "stage1", "stage2": "warmup"}
    for child, parent in parents.items():
        manifest = json.loads((run / child / "manifest.json").read_text())
        assert Path(manifest["parent"]) == run / parent
        assert manifest["parent_hash"] == checkpoint_hash(run / parent)


def test_stage_manifests_carry_rewards_memory_and_history(run: Path) -> None:
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


def test_reports_and_plot(run: Path) -> None:
    for name in ("base", "stage1", "stage2"):
        report = json.loads((run / "eval" / f"{name}.json").read_text())
        assert report["samples"] == report["problems"] * report["settings"]["k"]
        assert [row["level"] for row in report["per_level"]] == [1, 2, 3, 4, 5]
    assert (run / "eval" / "results.md").read_text().startswith("# LAPO results")
    assert (run / "eval" / "length_vs_difficulty.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_resumes_without_retraining(run: Path) -> None:
    before = {s: (run / s / "manifest.json").stat().st_mtime for s in STAGES}
    subprocess.run([sys.executable, "-m", "lapo.cli", "train", "--config",
                    str(REPO_ROOT / "configs" / "tiny-test.toml"), "--out", str(run),
                    "--only", "stage2"], check=True, timeout=300)
    assert before == {s: (run / s / "manifest.json").stat().st_mtime for s in STAGES}
