"""Loading checkpoints into handles (no engine): an adapter's base checked, the handle at
start-up, and a swap's target on the running engine (`lapo.service.loader`)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from lapo.manifest import checkpoint_hash, write_manifest
from lapo.service.checkpoints import CheckpointError, base_hash, check_vocabulary


def _base(folder: Path, manifest: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights of " + folder.name.encode())
    if manifest:
        write_manifest(folder, kind="test", stage="test", version=folder.name)
    return folder


def _adapter(folder: Path, base_ref: str | None = None, config_ref: str | None = None,
             base_checkpoint_hash: str | None = None, r: int = 4) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": r, "base_model_name_or_path": config_ref}))
    (folder / "adapter_model.safetensors").write_bytes(b"lora of " + folder.name.encode())
    fields = {"base_checkpoint": base_ref} if base_ref else {}
    write_manifest(folder, kind="test-adapter", stage="test", version=folder.name,
                   base_checkpoint_hash=base_checkpoint_hash, **fields)
    return folder


def test_base_hash_from_the_manifest_else_computed(tmp_path) -> None:
    with_manifest = _base(tmp_path / "a")
    manifest = json.loads((with_manifest / "manifest.json").read_text())
    assert base_hash(with_manifest) == manifest["checkpoint_hash"]
    bare = _base(tmp_path / "b", manifest=False)
    assert base_hash(bare) == checkpoint_hash(bare)


def test_check_vocabulary() -> None:
    from lapo.tiny import TEMPLATES, build_tokenizer

    base = build_tokenizer(["What is 3+4? 7"], template="chatml")
    same = build_tokenizer(["What is 3+4? 7"], template="chatml")
    same.chat_template = TEMPLATES["r1"]  # another template: fine
    check_vocabulary(same, base)
    grown = build_tokenizer(["What is 3+4? 7"], template="chatml")
    grown.add_tokens(["<extra>"])
    with pytest.raises(CheckpointError, match="different vocabulary.*cannot add tokens"):
        check_vocabulary(grown, base)
    # Same size, two ids swapped.
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(base.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    swapped = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)))
    assert len(swapped) == len(base)
    with pytest.raises(CheckpointError, match="token 'a': id"):
        check_vocabulary(swapped, base)


# ---------------------------------------------------------------- load_model on an adapter
@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """A tiny plain-ChatML base and an adapter folder (fake weights) whose own tokenizer's
    template opens "<think>\\n" as text."""
    from transformers import AutoTokenizer

    from lapo.tiny import TEMPLATES, make_tiny_checkpoint

    root = tmp_path_factory.mktemp("adapter-loader")
    base = make_tiny_checkpoint(root / "base", ["What is 3+4? 7"], template="chatml")
    base_manifest = write_manifest(base, kind="test", stage="test", version="base-1")

    def adapter(name: str, declared_hash: str) -> Path:
        out = _adapter(root / name, str(base), None, declared_hash, r=12)
        tok = AutoTokenizer.from_pretrained(base)
        tok.chat_template = TEMPLATES["r1"]
        tok.save_pretrained(out)
        write_manifest(out, kind="test-adapter", stage="test", version=name,
                       base_checkpoint=str(base), base_checkpoint_hash=declared_hash)
        return out

    return SimpleNamespace(root=root, base=base, base_hash=base_manifest["checkpoint_hash"],
                           good=adapter("think", base_manifest["checkpoint_hash"]),
                           wrong=adapter("wrong-base", "0" * 16))


class _Engine:
    """What `load_model` reads of an engine; records the config it was started with."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.model_config = SimpleNamespace(get_vocab_size=lambda: 600)


def test_load_model_on_an_adapter_starts_its_base_with_lora(tiny_pair, monkeypatch) -> None:
    from lapo.service.loader import load_model
    from lapo.service.settings import Settings

    monkeypatch.setattr("lapo.engine.start_async_engine", _Engine)
    handle = load_model(Settings(model=tiny_pair.good))
    assert handle.engine.cfg.model == str(tiny_pair.base)
    assert handle.engine.cfg.enable_lora and handle.engine.cfg.max_lora_rank == 16  # r=12
    assert handle.lora_rank == 16
    assert handle.name == "think" and handle.version == "think"
    assert handle.path == str(tiny_pair.good)
    assert handle.lora_request.lora_path == str(tiny_pair.good)
    assert (handle.base_path, handle.base_hash) == (str(tiny_pair.base.resolve()),
                                                    tiny_pair.base_hash)
    # The adapter's own template and think profile; the base's kept for swapping back.
    assert (handle.profile.opens, handle.profile.tags) == ("prompt", "text")
    assert handle.engine_tok.profile.opens == "none"
    assert handle.manifest["think_profile"]["opens"] == "prompt"


def test_load_model_refuses_an_adapter_of_another_base(tiny_pair, monkeypatch) -> None:
    from lapo.service.loader import load_model
    from lapo.service.settings import Settings

    def no_engine(cfg):
        raise AssertionError("the engine must not start")

    monkeypatch.setattr("lapo.engine.start_async_engine", no_engine)
    with pytest.raises(CheckpointError) as err:
        load_model(Settings(model=tiny_pair.wrong))
    message = str(err.value)
    assert "0" * 16 in message and tiny_pair.base_hash in message
    assert str(tiny_pair.wrong) in message and str(tiny_pair.base) in message


# ---------------------------------------------------------------- a swap's target (open_version)
class _LoraEngine(_Engine):
    """`_Engine` that also takes adapters (``add_lora``), as vLLM's running engine does."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.loras: list = []

    async def add_lora(self, lora) -> None:
        self.loras.append(lora)


@pytest.fixture
def running(tiny_pair, monkeypatch):
    """A started handle on the tiny base with LoRA on at ``rank`` (None: LoRA off)."""
    from lapo.service.loader import load_model
    from lapo.service.settings import Settings

    monkeypatch.setattr("lapo.engine.start_async_engine", _LoraEngine)

    def start(rank: int | None):
        settings = Settings(model=tiny_pair.base, max_lora_rank=rank or 16)
        return settings, load_model(settings, lora_rank=rank)

    return start


async def test_swap_to_an_adapter_reuses_the_running_engine(tiny_pair, running) -> None:
    from lapo.service.loader import open_version

    settings, base = running(16)
    manifest = {"version": "think-2", "checkpoint_hash": "h-think"}
    handle = await open_version(settings, tiny_pair.good, manifest, base)
    assert handle.engine is base.engine and base.engine.loras == [handle.lora_request]
    assert handle.lora_request.lora_path == str(tiny_pair.good.resolve())
    assert (handle.version, handle.checkpoint_hash, handle.path) == (
        "think-2", "h-think", str(tiny_pair.good.resolve()))
    assert handle.profile.opens == "prompt" and handle.engine_tok is base.tok
    # Back to the base: the same engine, no adapter, the base's own tokenizer.
    back = await open_version(settings, tiny_pair.base, {"version": "base-1"}, handle)
    assert back.engine is base.engine and back.lora_request is None
    assert back.tok is base.tok and back.version == "base-1"
    assert back.path == str(tiny_pair.base.resolve())


@pytest.mark.parametrize(("rank", "words"), [
    (None, "LAPO_ENABLE_LORA=true"),  # the engine started without LoRA
    (8, "LAPO_MAX_LORA_RANK=16"),  # r=12 does not fit max_lora_rank 8
])
async def test_swap_to_an_adapter_the_engine_cannot_serve(tiny_pair, running, rank,
                                                          words) -> None:
    from lapo.service.loader import open_version

    settings, base = running(rank)
    with pytest.raises(CheckpointError, match=words):
        await open_version(settings, tiny_pair.good, {"version": "x"}, base)
    assert base.engine.loras == []


async def test_swap_to_another_checkpoint_starts_an_engine(tiny_pair, running,
                                                           tmp_path) -> None:
    from lapo.service.loader import open_version
    from lapo.tiny import make_tiny_checkpoint

    settings, base = running(16)
    other = make_tiny_checkpoint(tmp_path / "other", ["What is 3+4? 7"], template="chatml")
    handle = await open_version(settings, other, {"version": "other"}, base)
    assert handle.engine is not base.engine and handle.lora_request is None
    assert handle.engine.cfg.model == str(other.resolve())


class _StoppableEngine(_LoraEngine):
    """`_LoraEngine` that can be shut down (the registry frees a drained version's engine)."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.stopped = False

    async def remove_lora(self, lora_id: int) -> None:
        pass

    def shutdown(self) -> None:
        self.stopped = True


@pytest.mark.parametrize("strategy", ["side_by_side", "replace"])
async def test_swap_to_an_adapter_under_each_strategy(tiny_pair, monkeypatch, strategy) -> None:
    """side_by_side: the adapter joins the running engine. replace: that engine is shut down
    before the target loads, so the adapter gets an engine of its own (a live one)."""
    from lapo.service import admin
    from lapo.service.loader import load_model
    from lapo.service.settings import Settings
    from lapo.service.state import ServiceState

    async def no_warm(handle) -> None:
        pass

    monkeypatch.setattr("lapo.engine.start_async_engine", _StoppableEngine)
    monkeypatch.setattr(admin, "_warm", no_warm)
    settings = Settings(model=tiny_pair.base, max_lora_rank=16, swap_strategy=strategy,
                        model_root=str(tiny_pair.root))
    state = ServiceState.create(settings)
    first = load_model(settings, lora_rank=16)
    state.registry.install(first)
    result = await admin._do_swap(state, str(tiny_pair.good), None)
    served = state.registry.active.handle
    assert result["strategy"] == strategy and served.lora_request is not None
    assert not served.engine.stopped and served.engine.loras == [served.lora_request]
    assert (served.engine is first.engine) == (strategy == "side_by_side")
    assert first.engine.stopped == (strategy == "replace")
