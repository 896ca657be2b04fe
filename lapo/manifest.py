"""Checkpoint manifests: what a checkpoint is and how it was made (lineage, config, metrics).

Every checkpoint folder the pipeline writes carries ``manifest.json``; the service reads it to
label versions and to estimate tokens saved (``baseline_profile``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import lapo

MANIFEST = "manifest.json"


def checkpoint_hash(folder: Path) -> str:
    """sha256 over the weight files (safetensors), in name order: the checkpoint's identity."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


@functools.cache
def code_version() -> str:
    """The package version plus the git commit when running from a checkout (read once: the
    code a process runs is the code it loaded)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{lapo.__version__}+{commit}" if commit else lapo.__version__


def write_manifest(folder: Path, **fields) -> dict:
    """Write ``manifest.json`` with ``fields``; a folder with a tokenizer also gets its
    ``think_profile`` (`lapo.think`) unless ``fields`` gives one."""
    folder = Path(folder)
    if "think_profile" not in fields and (folder / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        from lapo.think import profile_of

        fields["think_profile"] = profile_of(AutoTokenizer.from_pretrained(folder)).to_json()
    manifest = {
        "format": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code_version": code_version(),
        "command": " ".join(["lapo", *sys.argv[1:]]) if sys.argv else "",
        "checkpoint_hash": checkpoint_hash(folder),
        **fields,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(folder: Path) -> dict:
    return json.loads((Path(folder) / MANIFEST).read_text())
