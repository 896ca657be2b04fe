"""Loading a checkpoint into a `ModelHandle`: a full checkpoint, or a LoRA adapter on its base.

`load_model` blocks (run it off the event loop); `open_model` is its async twin, which also
adds an adapter to the engine (vLLM's ``add_lora`` must run on the serving event loop).

An adapter folder (``adapter_config.json``) given as the model starts the engine on its base
(`lapo.service.checkpoints.adapter_base`: the manifest's ``base_checkpoint``, else PEFT's
``base_model_name_or_path``) with LoRA on, at a rank that fits the adapter; the handle serves
through the adapter, with the adapter's own tokenizer (chat template, think profile) when it
ships one, and knows its base, so swapping back to the base or to another adapter of the same
base reuses the engine.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from pathlib import Path

from lapo.protocol import TokenCounter
from lapo.think import load_profile
from lapo.service.checkpoints import (
    CheckpointError,
    adapter_base,
    adapter_rank,
    base_hash,
    check_base,
    has_tokenizer,
    is_adapter,
    validate_checkpoint,
    vllm_lora_rank,
)
from lapo.service.model import ModelHandle
from lapo.service.settings import Settings

logger = logging.getLogger(__name__)
_lora_ids = itertools.count(1)  # vLLM's lora_int_id: unique per adapter in this process


def token_counter(folder: Path) -> TokenCounter:
    """Blocking: a checkpoint's (or adapter's) tokenizer, bound to its think profile."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return TokenCounter(tokenizer, load_profile(folder, tokenizer))


def adapter_token_counter(folder: Path) -> TokenCounter | None:
    """Blocking: an adapter's own tokenizer when it ships one (None: its base's serves it)."""
    return token_counter(folder) if has_tokenizer(folder) else None


def lora_request(path: Path, version: str):
    from vllm.lora.request import LoRARequest

    return LoRARequest(lora_name=f"lapo-{version}", lora_int_id=next(_lora_ids),
                       lora_path=str(path))


def version_of(manifest: dict) -> str:
    return str(manifest.get("version") or manifest.get("checkpoint_hash") or "unversioned")


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text()) \
        if (path / "manifest.json").is_file() else {}


def load_model(settings: Settings, path=None, name: str | None = None,
               lora_rank: int | None = None) -> ModelHandle:
    """Blocking: tokenizer, manifest and engine for a checkpoint (run off the event loop).

    ``lora_rank``: start the engine with LoRA on, at least at this rank (an engine restart
    keeps the dead engine's). An adapter's handle comes back with its ``lora_request`` not yet
    added to the engine: `open_model` adds it.
    """
    path = Path(path or settings.model)
    name = name or settings.model_name
    if is_adapter(path):
        return _load_adapter(settings, path, name)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (config.json missing)")
    manifest = _manifest(path)
    logger.info("loading %s (version %s)", path, version_of(manifest))
    return _start(settings, path, name, manifest, token_counter(path), lora_rank,
                  base_hash(path))


def _load_adapter(settings: Settings, path: Path, name: str) -> ModelHandle:
    """The engine on the adapter's base, LoRA on; the handle serves through the adapter."""
    roots = (Path(settings.model_root),) if settings.model_root else ()
    base = adapter_base(path, roots)
    actual = base_hash(base)
    check_base(path, base, actual)
    base_tok = token_counter(base)
    try:
        manifest = validate_checkpoint(path, None, actual, base_tok.tokenizer)
    except CheckpointError as exc:
        raise CheckpointError(f"cannot serve the adapter at {path}: {exc}") from exc
    version = version_of(manifest)
    rank = vllm_lora_rank(adapter_rank(path), settings.max_lora_rank)
    logger.info("loading adapter %s (version %s) on base %s, LoRA rank <= %d", path, version,
                base, rank)
    return _start(settings, base, name, _manifest(base), base_tok, rank, actual,
                  version=version, path=str(path), manifest=manifest,
                  checkpoint_hash=manifest.get("checkpoint_hash"),
                  baseline_profile=manifest.get("baseline_profile"),
                  tok=adapter_token_counter(path) or base_tok,
                  lora_request=lora_request(path, version))


def _start(settings: Settings, base: Path, name: str, base_manifest: dict,
           base_tok: TokenCounter, lora_rank: int | None, base_checkpoint_hash: str,
           **handle) -> ModelHandle:
    """Start the engine on ``base``; the handle's fields default to the base's own."""
    from lapo.engine import start_async_engine

    cfg = settings.engine_config(base, name)
    if lora_rank:
        cfg = dataclasses.replace(cfg, enable_lora=True,
                                  max_lora_rank=max(cfg.max_lora_rank, lora_rank))
    engine = start_async_engine(cfg)
    fields = dict(name=name, version=version_of(base_manifest), manifest=base_manifest,
                  checkpoint_hash=base_manifest.get("checkpoint_hash"), path=str(base),
                  tok=base_tok, created=int(time.time()),
                  baseline_profile=base_manifest.get("baseline_profile"))
    fields.update(handle)
    return ModelHandle(**fields, engine=engine, base_path=str(base.resolve()),
                       base_hash=base_checkpoint_hash, base_tok=base_tok,
                       lora_rank=cfg.max_lora_rank if cfg.enable_lora else None,
                       vocab_size=engine.model_config.get_vocab_size())


async def open_model(settings: Settings, path=None, name: str | None = None,
                     lora_rank: int | None = None) -> ModelHandle:
    """`load_model` off the event loop, then the adapter (if any) added to its engine."""
    import asyncio

    handle = await asyncio.to_thread(load_model, settings, path, name, lora_rank)
    if handle.lora_request is not None:
        try:
            await handle.engine.add_lora(handle.lora_request)
        except BaseException:
            await asyncio.to_thread(handle.engine.shutdown)
            raise
    return handle


async def reload_engine(settings: Settings, dead: ModelHandle) -> ModelHandle:
    """A fresh engine for the checkpoint ``dead`` served (its adapter re-added, if any)."""
    fresh = await open_model(settings, dead.base_path or dead.path, dead.name,
                             lora_rank=dead.lora_rank)
    if dead.lora_request is not None:
        await fresh.engine.add_lora(dead.lora_request)
    return dataclasses.replace(dead, engine=fresh.engine)
