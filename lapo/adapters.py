"""LoRA adapter facts, one definition for training and serving: what an adapter folder is, its
rank, the ranks vLLM serves, and where its base checkpoint is.

A PEFT LoRA adapter is a folder with ``adapter_config.json`` (``r``, PEFT's
``base_model_name_or_path``) and ``adapter_model.safetensors``; a LAPO adapter's
``manifest.json`` also names its base (``base_checkpoint``: the base's folder, and
``base_checkpoint_hash``). Light imports only (no torch, vLLM or PEFT): `lapo.training.lora`
and `lapo.service` both read these.
"""

from __future__ import annotations

import json
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"
# The ranks vLLM's LoRA serving accepts as ``max_lora_rank`` (vLLM 0.32
# `vllm.config.lora.MaxLoRARanks`; a test checks the installed vLLM agrees). An adapter of any
# rank up to the largest is served by an engine whose max_lora_rank is at least its rank.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
PEFT_DEFAULT_RANK = 8  # peft.LoraConfig's ``r`` when adapter_config.json leaves it out


class AdapterError(ValueError):
    """An adapter that cannot be used as it is; the message says what to fix."""


def is_adapter(folder: str | Path) -> bool:
    """A PEFT adapter folder (it has ``adapter_config.json``), not a full checkpoint."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def adapter_config(folder: str | Path) -> dict:
    """An adapter's ``adapter_config.json``."""
    return _json(Path(folder) / ADAPTER_CONFIG)


def adapter_rank(folder: str | Path) -> int:
    """The LoRA rank ``r`` of an adapter (PEFT's default when its config leaves it out)."""
    return int(adapter_config(folder).get("r", PEFT_DEFAULT_RANK))


def vllm_lora_rank(rank: int, floor: int = 1) -> int:
    """The smallest rank vLLM accepts as ``max_lora_rank`` that serves rank ``rank`` and is
    at least ``floor`` (e.g. the configured LAPO_MAX_LORA_RANK).

    >>> vllm_lora_rank(4), vllm_lora_rank(12), vllm_lora_rank(4, floor=16)
    (8, 16, 16)
    """
    need = max(rank, floor)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= need:
            return allowed
    raise AdapterError(f"LoRA rank {need} is above the largest vLLM serves "
                       f"({VLLM_LORA_RANKS[-1]})")


def adapter_base(folder: str | Path, roots: tuple[Path, ...] = (),
                 first: tuple[Path, ...] = ()) -> Path:
    """The base checkpoint folder an adapter was trained on (resolved).

    The reference is the manifest's ``base_checkpoint``, else adapter_config.json's
    ``base_model_name_or_path`` (PEFT's; often the training machine's path). An absolute
    path is taken as it is; a relative one is looked up under each of ``first`` (training: its
    working directory, which its config's paths are relative to), then the repository root,
    then the adapter's parent folder, then each of ``roots`` (the service's model root); the
    first folder with a ``config.json`` wins.
    """
    from lapo import paths  # read at call time: tests point REPO_ROOT elsewhere

    folder = Path(folder)
    manifest = _json(folder / "manifest.json") if (folder / "manifest.json").is_file() else {}
    config = adapter_config(folder)
    refs = [r for r in (manifest.get("base_checkpoint"), config.get("base_model_name_or_path"))
            if r]
    if not refs:
        raise AdapterError(f"the adapter at {folder} names no base: set base_checkpoint in "
                           f"its manifest.json to the base checkpoint's folder")
    tried: list[str] = []
    for ref in refs:
        ref_path = Path(ref).expanduser()
        places = ([ref_path] if ref_path.is_absolute() else
                  [*(Path(r) / ref_path for r in first), paths.REPO_ROOT / ref_path,
                   folder.parent / ref_path,
                   *(Path(r) / ref_path for r in roots)])
        for place in places:
            if (place / "config.json").is_file():
                return place.resolve()
            tried.append(str(place))
    raise AdapterError(f"the adapter's base checkpoint was not found (tried "
                       f"{', '.join(dict.fromkeys(tried))}): set base_checkpoint in "
                       f"{folder / 'manifest.json'} to the base checkpoint's folder")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{path.name} is not valid JSON: {exc.msg}") from exc
