"""`EngineSampler` on adapters (no engine): an adapter runs on its base with LoRA on, and the
checkpoints one engine can serve share it (`lapo.evaluation.backends`)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from lapo.evaluation.backends import EngineSampler


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> SimpleNamespace:
    """A tiny base, two adapters of it (r=8 and r=16, one with its own tokenizer files),
    and another full checkpoint."""
    from lapo.tiny import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("family")
    base = make_tiny_checkpoint(root / "base", ["What is 3+4? 7"], template="chatml")
    other = make_tiny_checkpoint(root / "other", ["What is 3+4? 7"], template="chatml")

    def adapter(name: str, r: int, tokenizer: bool) -> Path:
        folder = root / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps(
            {"peft_type": "LORA", "r": r, "base_model_name_or_path": str(base)}))
        if tokenizer:
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(base).save_pretrained(folder)
        return folder

    return SimpleNamespace(base=base.resolve(), other=other, small=adapter("small", 8, True),
                           big=adapter("big", 16, False))


class _Engine:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.stopped = False

    def shutdown(self) -> None:
        self.stopped = True


@pytest.fixture
def started(monkeypatch) -> list[_Engine]:
    engines: list[_Engine] = []

    def start(cfg):
        engines.append(_Engine(cfg))
        return engines[-1]

    monkeypatch.setattr("lapo.engine.start_async_engine", start)
    return engines


def test_an_adapter_runs_on_its_base_with_lora(family, started) -> None:
    sampler = EngineSampler(family.small)
    (engine,) = started
    assert Path(engine.cfg.model) == family.base
    assert engine.cfg.enable_lora and engine.cfg.max_lora_rank == 8
    assert sampler.lora.lora_path == str(family.small.resolve()) and sampler.lora.lora_int_id == 1
    # The base itself, on the same engine, without an adapter.
    assert sampler.serves(family.base)
    sampler.use(family.base)
    assert sampler.lora is None
    # Rank 16 does not fit an engine started for rank 8; another checkpoint never does.
    assert not sampler.serves(family.big) and not sampler.serves(family.other)
    with pytest.raises(ValueError, match="rank <= 8"):
        sampler.use(family.big)


def test_adapters_of_one_base_share_one_engine(family, started) -> None:
    sampler = EngineSampler(family.big)  # rank 16: room for the rank-8 adapter too
    sampler.use(family.small)
    assert len(started) == 1 and sampler.lora.lora_int_id == 2  # a new id per adapter
    sampler.use(family.big)  # no tokenizer files of its own: the base's
    assert sampler.lora.lora_int_id == 3 and sampler.tokenizer.name_or_path == str(family.base)


def test_a_full_checkpoint_serves_itself_only(family, started) -> None:
    sampler = EngineSampler(family.other)
    (engine,) = started
    assert not engine.cfg.enable_lora and sampler.lora is None
    assert sampler.serves(family.other) and not sampler.serves(family.small)


async def test_evaluate_models_starts_one_engine_per_family(family, started,
                                                            monkeypatch) -> None:
    from lapo.evaluation import evaluate

    async def no_samples(sampler, settings, progress, items):
        return []

    monkeypatch.setattr(evaluate, "collect", no_samples)
    monkeypatch.setattr(evaluate.report_mod, "summarize", lambda samples, meta: meta)
    models = {"base": family.big, "stage1": family.small, "stage2": family.other}
    reports = await evaluate.evaluate_models(models, evaluate.EvalSettings(), items=[])
    assert [Path(e.cfg.model) for e in started] == [family.base, family.other.resolve()]
    assert all(e.stopped for e in started)
    assert {name: r["model"] for name, r in reports.items()} == {
        name: str(path) for name, path in models.items()}
