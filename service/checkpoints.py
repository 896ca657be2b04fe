"""Checkpoint validation before a hot-swap: a bad checkpoint is refused (4xx) before loading.

Checks: the path is inside the allowed root (``LAPO_MODEL_ROOT``); Hugging Face config and
tokenizer present; weights are safetensors only (no pickle formats); no remote code
(``auto_map``); ``manifest.json`` present and consistent with the weights (checkpoint hash);
the tokenizer loads and has a chat template that renders. Its think profile (`lapo.think`:
where the think span opens, what its tags are, or that there is none) comes back in the
manifest, so `/admin/models` can say what each version is.

A PEFT LoRA adapter (``adapter_config.json``) is served on its base's engine. Its manifest
names the base: ``base_checkpoint_hash`` (required: the base's ``checkpoint_hash``) and
``base_checkpoint`` (the base's folder, for `lapo serve` on an adapter; else PEFT's
``base_model_name_or_path``). It may ship its own tokenizer files (another chat template,
hence perhaps another think profile) but not another vocabulary: vLLM's LoRA serving cannot
add tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from lapo.adapters import adapter_config, is_adapter
from lapo.prompt import chat_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase as Tokenizer

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


def has_tokenizer(folder: Path) -> bool:
    return (Path(folder) / "tokenizer_config.json").is_file()


def base_hash(folder: Path) -> str:
    """A base checkpoint's identity: its manifest's ``checkpoint_hash``, else computed."""
    from lapo.manifest import checkpoint_hash

    folder = Path(folder)
    if (folder / "manifest.json").is_file():
        recorded = _json(folder / "manifest.json").get("checkpoint_hash")
        if recorded:
            return recorded
    return checkpoint_hash(folder)


def check_base(adapter: Path, base: Path, actual_hash: str) -> None:
    """The adapter's manifest says it was trained on the base ``base`` is (by hash)."""
    declared = _manifest(Path(adapter)).get("base_checkpoint_hash")
    if not declared:
        raise CheckpointError(
            f"the adapter at {adapter} has no base_checkpoint_hash in its manifest.json: set "
            f"it to the checkpoint_hash of the base it was trained on ({base} has "
            f"{actual_hash!r})")
    if declared != actual_hash:
        raise CheckpointError(
            f"the adapter at {adapter} was trained on base checkpoint_hash {declared!r} "
            f"(manifest base_checkpoint_hash), but its base at {base} has checkpoint_hash "
            f"{actual_hash!r}: point base_checkpoint at the base it was trained on")


def validate_checkpoint(path: str | Path, root: Path | None,
                        served_base_hash: str | None = None,
                        base_tokenizer: Tokenizer | None = None) -> dict:
    """Validate; return the manifest. Raises `CheckpointError` with what is wrong.

    A PEFT LoRA adapter (``adapter_config.json``) must name, in its manifest's
    ``base_checkpoint_hash``, the base the service is running (``served_base_hash``); its
    own tokenizer, if it ships one, must have ``base_tokenizer``'s vocabulary.
    """
    folder = resolve_inside(path, root)
    if is_adapter(folder):
        return _validate_adapter(folder, served_base_hash, base_tokenizer)
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
    return {**manifest, "think_profile": _profile(folder, manifest)}


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path.name} is not valid JSON: {exc.msg}") from exc


def _profile(folder: Path, manifest: dict, base_tokenizer: Tokenizer | None = None) -> dict:
    """The tokenizer's think profile, checked against the one the manifest records."""
    profile = _check_tokenizer(folder, base_tokenizer)
    recorded = manifest.get("think_profile")
    if recorded and (recorded.get("opens"), recorded.get("tags")) != (profile["opens"],
                                                                       profile["tags"]):
        raise CheckpointError(
            f"manifest think_profile (opens {recorded.get('opens')!r}, tags "
            f"{recorded.get('tags')!r}) disagrees with the tokenizer (opens "
            f"{profile['opens']!r}, tags {profile['tags']!r}); rewrite the manifest")
    return profile


def _manifest(folder: Path) -> dict:
    from lapo.manifest import checkpoint_hash

    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise CheckpointError("manifest.json missing")
    manifest = _json(manifest_path)
    declared = manifest.get("checkpoint_hash")
    actual = checkpoint_hash(folder)
    if declared != actual:
        raise CheckpointError(f"manifest checkpoint_hash {declared!r} does not match the "
                              f"weights ({actual!r})")
    return manifest


def _validate_adapter(folder: Path, served_base_hash: str | None,
                      base_tokenizer: Tokenizer | None) -> dict:
    pickles = sorted(f.name for f in folder.iterdir() if f.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"pickle-format weights are refused: {', '.join(pickles)}")
    if not (folder / "adapter_model.safetensors").is_file():
        raise CheckpointError("adapter_model.safetensors missing from the LoRA adapter")
    config = adapter_config(folder)
    if config.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"only LoRA adapters are served, not {config.get('peft_type')}")
    manifest = _manifest(folder)
    base = manifest.get("base_checkpoint_hash")
    if served_base_hash is None or base != served_base_hash:
        raise CheckpointError(f"the adapter was trained on base {base!r}, but this service "
                              f"runs base {served_base_hash!r}")
    if not has_tokenizer(folder):
        return manifest  # the base's tokenizer and chat template serve it
    return {**manifest, "think_profile": _profile(folder, manifest, base_tokenizer)}


def check_vocabulary(tokenizer: Tokenizer, base_tokenizer: Tokenizer) -> None:
    """An adapter's tokenizer must have its base's vocabulary (same tokens, same ids): vLLM's
    LoRA serving runs the base's embedding and cannot add tokens."""
    size, base_size = len(tokenizer), len(base_tokenizer)
    if size != base_size:
        raise CheckpointError(
            f"the adapter's tokenizer has a different vocabulary from its base ({size} tokens, "
            f"the base {base_size}): vLLM's LoRA serving cannot add tokens; ship the base's "
            f"tokenizer (only the chat template may change)")
    vocab, base_vocab = tokenizer.get_vocab(), base_tokenizer.get_vocab()
    if vocab != base_vocab:
        token = min(t for t in vocab.keys() | base_vocab.keys()
                    if vocab.get(t) != base_vocab.get(t))
        raise CheckpointError(
            f"the adapter's tokenizer has a different vocabulary from its base (token "
            f"{token!r}: id {vocab.get(token)} in the adapter's, {base_vocab.get(token)} in the "
            f"base's): vLLM's LoRA serving cannot add tokens; ship the base's tokenizer (only "
            f"the chat template may change)")


def _check_tokenizer(folder: Path, base_tokenizer: Tokenizer | None = None) -> dict:
    """The tokenizer loads and has a chat template (and ``base_tokenizer``'s vocabulary when
    given); returns its think profile (any kind is served: a template that opens <think>, a
    model that writes it, or no think span)."""
    from transformers import AutoTokenizer

    from lapo.think import profile_of

    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as exc:  # any loader failure is a bad checkpoint, not a server error
        raise CheckpointError(f"tokenizer does not load: {type(exc).__name__}") from exc
    if base_tokenizer is not None:
        check_vocabulary(tok, base_tokenizer)
    if not tok.chat_template:
        raise CheckpointError("tokenizer has no chat template")
    try:
        chat_text(tok, [{"role": "user", "content": "x"}])
    except Exception as exc:
        raise CheckpointError(f"the chat template does not render: {type(exc).__name__}") \
            from exc
    return profile_of(tok).to_json()
