"""Loading a checkpoint into a `ModelHandle` (blocking: run it off the event loop)."""

from __future__ import annotations

import dataclasses
import logging
import time

from lapo.protocol import TokenCounter
from lapo.think import load_profile
from service.model import ModelHandle
from service.settings import Settings

logger = logging.getLogger(__name__)


def load_model(settings: Settings, path=None, name: str | None = None) -> ModelHandle:
    """Blocking: tokenizer, manifest and engine for a checkpoint (run off the event loop)."""
    import json
    from pathlib import Path

    from transformers import AutoTokenizer

    from lapo.engine import start_async_engine

    path = Path(path or settings.model)
    name = name or settings.model_name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (config.json missing)")
    manifest = {}
    if (path / "manifest.json").is_file():
        manifest = json.loads((path / "manifest.json").read_text())
    version = manifest.get("version") or manifest.get("checkpoint_hash") or "unversioned"
    logger.info("loading %s (version %s)", path, version)
    tokenizer = AutoTokenizer.from_pretrained(path)
    engine = start_async_engine(settings.engine_config(path, name))
    return ModelHandle(name=name, version=str(version), manifest=manifest,
                       checkpoint_hash=manifest.get("checkpoint_hash"), path=str(path),
                       engine=engine, tok=TokenCounter(tokenizer, load_profile(path, tokenizer)),
                       created=int(time.time()),
                       baseline_profile=manifest.get("baseline_profile"),
                       base_path=str(path.resolve()),
                       base_hash=manifest.get("checkpoint_hash") or _hash(path),
                       vocab_size=engine.model_config.get_vocab_size())


def _hash(path) -> str:
    from lapo.manifest import checkpoint_hash

    return checkpoint_hash(path)


async def reload_engine(settings: Settings, dead: ModelHandle) -> ModelHandle:
    """A fresh engine for the checkpoint ``dead`` served (its adapter re-added, if any)."""
    import asyncio

    fresh = await asyncio.to_thread(load_model, settings, dead.base_path or dead.path,
                                    dead.name)
    if dead.lora_request is not None:
        await fresh.engine.add_lora(dead.lora_request)
    return dataclasses.replace(dead, engine=fresh.engine)
