"""Loading a checkpoint into a `ModelHandle`: the one place a handle is made, at start-up, for an
engine restart and for a hot-swap.

`load_model` blocks (run it off the event loop) and starts an engine; `open_model` is its async
twin, which also adds an adapter to the engine (vLLM's ``add_lora`` must run on the serving
event loop); `open_version` is a swap's target, on the running engine when that engine can
serve it (an adapter of its base, or the base itself), else on a new one; `reload_engine`
replaces a dead engine under the same version.

An adapter folder (``adapter_config.json``) given as the model starts the engine on its base
(`lapo.adapters.adapter_base`: the manifest's ``base_checkpoint``, else PEFT's
``base_model_name_or_path``) with LoRA on, at a rank that fits the adapter; the handle serves
through the adapter, with the adapter's own tokenizer (chat template, think profile) when it
ships one, and knows its base, so swapping back to the base or to another adapter of the same
base reuses the engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lapo.adapters import AdapterError, adapter_base, adapter_rank, is_adapter, vllm_lora_rank
from lapo.service import tools
from lapo.service.checkpoints import (
    CheckpointError,
    base_hash,
    check_base,
    has_tokenizer,
    validate_checkpoint,
)
from lapo.service.model import ModelHandle
from lapo.service.settings import Settings
from lapo.think import TokenCounter, load_profile

if TYPE_CHECKING:
    from vllm.lora.request import LoRARequest

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


def lora_request(path: Path, version: str) -> LoRARequest:
    from vllm.lora.request import LoRARequest

    return LoRARequest(lora_name=f"lapo-{version}", lora_int_id=next(_lora_ids),
                       lora_path=str(path))


def version_of(manifest: dict) -> str:
    return str(manifest.get("version") or manifest.get("checkpoint_hash") or "unversioned")


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text()) \
        if (path / "manifest.json").is_file() else {}


# ---------------------------------------------------------------------- the adapter-rank rule
def engine_lora_rank(adapter: Path, floor: int) -> int:
    """The ``max_lora_rank`` to start an engine with for ``adapter``: the smallest vLLM
    accepts that serves its rank and is at least ``floor`` (LAPO_MAX_LORA_RANK)."""
    return vllm_lora_rank(adapter_rank(adapter), floor)


def check_lora_fits(adapter: Path, engine_rank: int | None) -> None:
    """A running engine serves ``adapter`` only when it was started with LoRA at its rank or
    above (vLLM fixes ``max_lora_rank`` at start)."""
    if engine_rank is None:
        raise CheckpointError("LoRA adapters need an engine started with LoRA: set "
                              "LAPO_ENABLE_LORA=true and restart the service")
    rank = adapter_rank(adapter)
    if rank > engine_rank:
        raise CheckpointError(f"the adapter's LoRA rank r={rank} is above the engine's "
                              f"max_lora_rank {engine_rank}: set LAPO_MAX_LORA_RANK="
                              f"{vllm_lora_rank(rank)} (or more) and restart the service")


# ---------------------------------------------------------------------- handles
def _serving(engine: ModelHandle, path: Path, manifest: dict, tok: TokenCounter | None = None,
             lora: LoRARequest | None = None) -> ModelHandle:
    """The handle for the checkpoint at ``path`` served by ``engine``'s engine: the base it
    loaded (``lora`` None), or an adapter of it; the engine's facts are shared."""
    return dataclasses.replace(engine, version=version_of(manifest), path=str(path),
                               manifest=manifest,
                               # a base started without a manifest keeps the hash it measured
                               checkpoint_hash=manifest.get("checkpoint_hash")
                               or (engine.base_hash if lora is None else None),
                               baseline_profile=manifest.get("baseline_profile"),
                               tok=tok or engine.engine_tok, base_tok=engine.engine_tok,
                               lora_request=lora, created=int(time.time()))


def _start(settings: Settings, base: Path, name: str, base_tok: TokenCounter,
           base_checkpoint_hash: str, lora_rank: int | None) -> ModelHandle:
    """Start an engine on the full checkpoint ``base``; its handle serves ``base`` itself."""
    from lapo.engine import start_async_engine

    cfg = settings.engine_config(base, name)
    if lora_rank:
        cfg = dataclasses.replace(cfg, enable_lora=True,
                                  max_lora_rank=max(cfg.max_lora_rank, lora_rank))
    engine = start_async_engine(cfg)
    manifest = _manifest(base)
    return ModelHandle(name=name, version=version_of(manifest),
                       checkpoint_hash=manifest.get("checkpoint_hash"), path=str(base),
                       engine=engine, tok=base_tok, created=int(time.time()),
                       baseline_profile=manifest.get("baseline_profile"), manifest=manifest,
                       base_path=str(base.resolve()), base_hash=base_checkpoint_hash,
                       base_tok=base_tok,
                       lora_rank=cfg.max_lora_rank if cfg.enable_lora else None,
                       vocab_size=engine.model_config.get_vocab_size())


def load_model(settings: Settings, path: str | Path | None = None, name: str | None = None,
               lora_rank: int | None = None) -> ModelHandle:
    """Blocking: tokenizer, manifest and a new engine for a checkpoint (run off the event loop).

    ``lora_rank``: start the engine with LoRA on, at least at this rank (an engine restart
    keeps the dead engine's). An adapter's handle comes back with its ``lora_request`` not yet
    added to the engine: `open_model` adds it.
    """
    path = Path(path or settings.model)
    name = name or settings.model_name
    tools.check_parser(settings.tool_call_parser)
    if is_adapter(path):
        return _load_adapter(settings, path, name)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (config.json missing)")
    logger.info("loading %s (version %s)", path, version_of(_manifest(path)))
    return _start(settings, path, name, token_counter(path), base_hash(path), lora_rank)


def _load_adapter(settings: Settings, path: Path, name: str) -> ModelHandle:
    """The engine on the adapter's base, LoRA on; the handle serves through the adapter.
    Everything is checked before the engine starts."""
    roots = (Path(settings.model_root),) if settings.model_root else ()
    try:
        base = adapter_base(path, roots)
        actual = base_hash(base)
        check_base(path, base, actual)
        base_tok = token_counter(base)
        manifest = validate_checkpoint(path, None, actual, base_tok.tokenizer)
    except (CheckpointError, AdapterError) as exc:
        raise CheckpointError(f"cannot serve the adapter at {path}: {exc}") from exc
    version = version_of(manifest)
    rank = engine_lora_rank(path, settings.max_lora_rank)
    logger.info("loading adapter %s (version %s) on base %s, LoRA rank <= %d", path, version,
                base, rank)
    tok = adapter_token_counter(path)
    engine = _start(settings, base, name, base_tok, actual, rank)
    return _serving(engine, path, manifest, tok, lora_request(path, version))


async def open_model(settings: Settings, path: str | Path | None = None,
                     name: str | None = None, lora_rank: int | None = None) -> ModelHandle:
    """`load_model` off the event loop, then the adapter (if any) added to its engine."""
    handle = await asyncio.to_thread(load_model, settings, path, name, lora_rank)
    if handle.lora_request is not None:
        try:
            await handle.engine.add_lora(handle.lora_request)
        except BaseException:
            await asyncio.to_thread(handle.engine.shutdown)
            raise
    return handle


async def open_version(settings: Settings, path: str | Path, manifest: dict,
                       running: ModelHandle | None) -> ModelHandle:
    """A hot-swap's target (``manifest``: what validation returned): an adapter, or the
    running engine's own weights (rolling back from an adapter, with their own tokenizer and
    chat template), on ``running``'s engine; any other checkpoint on a new engine."""
    target = Path(path).resolve()
    if running is not None and is_adapter(target):
        check_lora_fits(target, running.lora_rank)
        tok = await asyncio.to_thread(adapter_token_counter, target)
        lora = lora_request(target, version_of(manifest))
        await running.engine.add_lora(lora)
        return _serving(running, target, manifest, tok, lora)
    if running is not None and str(target) == running.base_path:
        return _serving(running, target, manifest)
    return await open_model(settings, target)


async def reload_engine(settings: Settings, dead: ModelHandle) -> ModelHandle:
    """A fresh engine for the checkpoint ``dead`` served (its adapter re-added, if any)."""
    fresh = await open_model(settings, dead.base_path or dead.path, dead.name,
                             lora_rank=dead.lora_rank)
    if dead.lora_request is not None:
        await fresh.engine.add_lora(dead.lora_request)
    return dataclasses.replace(dead, engine=fresh.engine)
