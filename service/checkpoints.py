"""Checkpoint validation before a hot-swap: a bad checkpoint is refused (4xx) before loading.

Checks: the path is inside the allowed root (``LAPO_MODEL_ROOT``); Hugging Face config and
tokenizer present; weights are safetensors only (no pickle formats); no remote code
(``auto_map``); ``manifest.json`` present and consistent with the weights (checkpoint hash);
the tokenizer loads and has a chat template that renders. Its think profile (`lapo.think`:
where the think span opens, what its tags are, or that there is none) comes back in the
manifest, so `/admin/models` can say what each version is.
"""

from __future__ import annotations

import json
from pathlib import Path

from lapo.prompt import chat_text

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class CheckpointError(ValueError):
    """A checkpoint the service refuses; the message says what to fix."""


def resolve_inside(path: str | Path, root: Path | None) -> Path:
    target = Path(path).expanduser().resolve()
    if root is not None:
        base = Path(root).expanduser().resolve()
        if not target.is_relative_to(base):
            raise CheckpointError(f"path {path!r} is outside the allowed model root "
                                  f"(LAPO_MODEL_ROOT)")
    if not target.is_dir():
        raise CheckpointError(f"no checkpoint folder at {path!r}")
    return target


def is_adapter(folder: Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def validate_checkpoint(path: str | Path, root: Path | None,
                        served_base_hash: str | None = None) -> dict:
    """Validate; return the manifest. Raises `CheckpointError` with what is wrong.

    A PEFT LoRA adapter (``adapter_config.json``) must name, in its manifest's
    ``base_checkpoint_hash``, the base the service is running (``served_base_hash``).
    """
    folder = resolve_inside(path, root)
    if is_adapter(folder):
        return _validate_adapter(folder, served_base_hash)
    if not (folder / "config.json").is_file():
        raise CheckpointError("config.json missing: not a Hugging Face checkpoint")
    config = json.loads((folder / "config.json").read_text())
    if "auto_map" in config:
        raise CheckpointError("the checkpoint needs remote code (auto_map); refused")
    pickles = sorted(f.name for f in folder.iterdir() if f.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"pickle-format weights are refused: {', '.join(pickles)}; "
                              f"ship safetensors only")
    if not any(folder.glob("*.safetensors")):
        raise CheckpointError("no *.safetensors weights in the checkpoint")
    manifest = _manifest(folder)
    profile = _check_tokenizer(folder)
    recorded = manifest.get("think_profile")
    if recorded and (recorded.get("opens"), recorded.get("tags")) != (profile["opens"],
                                                                       profile["tags"]):
        raise CheckpointError(
            f"manifest think_profile (opens {recorded.get('opens')!r}, tags "
            f"{recorded.get('tags')!r}) disagrees with the tokenizer (opens "
            f"{profile['opens']!r}, tags {profile['tags']!r}); rewrite the manifest")
    return {**manifest, "think_profile": profile}


def _manifest(folder: Path) -> dict:
    from lapo.manifest import checkpoint_hash

    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise CheckpointError("manifest.json missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"manifest.json is not valid JSON: {exc.msg}") from exc
    declared = manifest.get("checkpoint_hash")
    actual = checkpoint_hash(folder)
    if declared != actual:
        raise CheckpointError(f"manifest checkpoint_hash {declared!r} does not match the "
                              f"weights ({actual!r})")
    return manifest


def _validate_adapter(folder: Path, served_base_hash: str | None) -> dict:
    pickles = sorted(f.name for f in folder.iterdir() if f.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"pickle-format weights are refused: {', '.join(pickles)}")
    if not (folder / "adapter_model.safetensors").is_file():
        raise CheckpointError("adapter_model.safetensors missing from the LoRA adapter")
    config = json.loads((folder / "adapter_config.json").read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"only LoRA adapters are served, not {config.get('peft_type')}")
    manifest = _manifest(folder)
    base = manifest.get("base_checkpoint_hash")
    if served_base_hash is None or base != served_base_hash:
        raise CheckpointError(f"the adapter was trained on base {base!r}, but this service "
                              f"runs base {served_base_hash!r}")
    return manifest


def _check_tokenizer(folder: Path) -> dict:
    """The tokenizer loads and has a chat template; returns its think profile (any kind is
    served: a template that opens <think>, a model that writes it, or no think span)."""
    from transformers import AutoTokenizer

    from lapo.think import profile_of

    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as exc:  # any loader failure is a bad checkpoint, not a server error
        raise CheckpointError(f"tokenizer does not load: {type(exc).__name__}") from exc
    if not tok.chat_template:
        raise CheckpointError("tokenizer has no chat template")
    try:
        chat_text(tok, [{"role": "user", "content": "x"}])
    except Exception as exc:
        raise CheckpointError(f"the chat template does not render: {type(exc).__name__}") \
            from exc
    return profile_of(tok).to_json()
