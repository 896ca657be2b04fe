"""`run_pipeline` runs the preflight checks before any work: the batch split of the GRPO
stages it will train, and only those (a resumed run whose GRPO stages are done is not refused
for them)."""

from __future__ import annotations

import pytest

from lapo.paths import REPO_ROOT
from lapo.training import pipeline
from lapo.training.preflight import PreflightError


def _config(tmp_path):
    text = (REPO_ROOT / "configs/tiny-test.toml").read_text()
    # 4 generations x 2 prompts = 8 completions per step: 3 per device does not split them.
    text = text.replace("[stage2]\n", "[stage2]\nper_device_train_batch_size = 3\n")
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def test_an_unsplittable_batch_is_refused_before_any_stage(tmp_path, monkeypatch) -> None:
    ran = []
    monkeypatch.setattr(pipeline, "run_base", lambda *a: ran.append("base"))
    with pytest.raises(PreflightError, match=r"stage2\.per_device_train_batch_size"):
        pipeline.run_pipeline(_config(tmp_path), out=tmp_path / "run")
    assert ran == []


def test_a_done_stage_is_not_checked_again(tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    (run / "stage2").mkdir(parents=True)
    (run / "stage2" / "manifest.json").write_text("{}")
    ran = []
    for name in ("run_base", "run_stage1", "run_warmup", "run_stage2", "run_evaluation"):
        monkeypatch.setattr(pipeline, name, lambda *a, _n=name: ran.append(_n))
    pipeline.run_pipeline(_config(tmp_path), out=run)
    assert ran == ["run_base", "run_stage1", "run_warmup", "run_stage2", "run_evaluation"]
