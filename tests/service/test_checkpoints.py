"""Checkpoint validation before a swap (no engine): table of refusals with their reasons."""

from __future__ import annotations

import json
import shutil

import pytest

from lapo.manifest import write_manifest
from lapo.service.checkpoints import CheckpointError, validate_checkpoint


@pytest.fixture(scope="module")
def root(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    good = shutil.copytree(tiny_checkpoint, root / "good")
    write_manifest(good, kind="test", stage="test", version="good")
    return root


def _variant(root, name: str, change) -> str:
    path = root / name
    if not path.exists():
        shutil.copytree(root / "good", path)
        change(path)
    return str(path)


def _drop(name):
    return lambda p: (p / name).unlink()


def _write(name, text):
    return lambda p: (p / name).write_text(text)


def _manifest_hash(p):
    m = json.loads((p / "manifest.json").read_text())
    m["checkpoint_hash"] = "f" * 16
    (p / "manifest.json").write_text(json.dumps(m))


def _remote_code(p):
    c = json.loads((p / "config.json").read_text())
    c["auto_map"] = {"AutoModelForCausalLM": "evil.Model"}
    (p / "config.json").write_text(json.dumps(c))


def _special_think(p):
    t = json.loads((p / "tokenizer.json").read_text())
    for tok in t["added_tokens"]:
        if tok["content"] == "</think>":
            tok["special"] = True
    (p / "tokenizer.json").write_text(json.dumps(t))


def _special_think_rewritten(p):
    _special_think(p)
    m = json.loads((p / "manifest.json").read_text())
    write_manifest(p, **{k: v for k, v in m.items() if k not in ("think_profile", "created")})


CASES = [
    ("no-manifest", _drop("manifest.json"), "manifest.json missing"),
    ("bad-json", _write("manifest.json", "{"), "not valid JSON"),
    ("hash", _manifest_hash, "does not match the weights"),
    ("pickle", _write("pytorch_model.bin", "x"), "pickle-format"),
    ("no-weights", _drop("model.safetensors"), r"no \*\.safetensors"),
    ("no-config", _drop("config.json"), "config.json missing"),
    ("remote-code", _remote_code, "remote code"),
    ("no-template", _drop("chat_template.jinja"), "chat template"),
    ("stale-profile", _special_think, "think_profile .* disagrees with the tokenizer"),
]


@pytest.mark.parametrize(("name", "change", "message"), CASES, ids=[c[0] for c in CASES])
def test_refused(root, name, change, message) -> None:
    with pytest.raises(CheckpointError, match=message):
        validate_checkpoint(_variant(root, name, change), root)


def test_good_checkpoint_passes(root) -> None:
    manifest = validate_checkpoint(root / "good", root)
    assert manifest["version"] == "good"
    assert (manifest["think_profile"]["opens"], manifest["think_profile"]["tags"]) == (
        "prompt", "token")


def test_special_think_tags_are_served_keeping_special_tokens(root) -> None:
    """Single but special tags vanish from text decoded with skip_special_tokens: accepted,
    and the profile says so (the service then decodes keeping special tokens)."""
    manifest = validate_checkpoint(_variant(root, "special-think", _special_think_rewritten),
                                   root)
    assert manifest["think_profile"]["tags"] == "special"  # </think> is; <think> is not


def test_path_traversal_and_symlinks_out_of_the_root(root, tmp_path) -> None:
    outside = shutil.copytree(root / "good", tmp_path / "outside")
    with pytest.raises(CheckpointError, match="outside the allowed model root"):
        validate_checkpoint(str(root / ".." / outside.parent.name / "outside"), root)
    link = root / "link"
    if not link.exists():
        link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(CheckpointError, match="outside the allowed model root"):
        validate_checkpoint(link, root)
