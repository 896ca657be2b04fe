"""`lapo --help` and every subcommand's --help work, without importing engines."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lapo.cli import app

SUBCOMMANDS = ["serve", "train", "eval", "swap", "bench"]


def test_top_level_help_lists_subcommands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.slow  # starts a process
def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from lapo.cli import app; from typer.testing import CliRunner; "
        "CliRunner().invoke(app, ['--help']); "
        "heavy = [m for m in ('torch', 'vllm', 'transformers', 'trl') if m in sys.modules]; "
        "print(heavy); assert not heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _bad_data_file(tmp_path) -> str:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2"}\n')
    return str(path)


def test_eval_with_a_bad_data_file_exits_with_the_message(tmp_path) -> None:
    # --model names no checkpoint: the data is read first, so no engine is ever started
    result = CliRunner().invoke(app, ["eval", "--data", _bad_data_file(tmp_path),
                                      "--model", "x", "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 2, result.output
    assert "bad.jsonl, line 2, field 'answer': missing or empty" in result.output
    assert "Traceback" not in result.output


def test_train_with_a_bad_data_file_exits_before_training(tmp_path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(f'[run]\ntrain_data = "{_bad_data_file(tmp_path)}"\n')
    result = CliRunner().invoke(app, ["train", "--config", str(config),
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "bad.jsonl, line 2, field 'answer'" in result.output
    assert not (tmp_path / "run" / "base").exists()  # failed before the first stage


def test_train_from_a_plain_instruct_base_says_what_it_needs(tmp_path) -> None:
    """A base without a think span (SmolLM2-Instruct's kind) is refused before any stage."""
    from lapo.tiny import build_tokenizer

    base = tmp_path / "plain"
    base.mkdir()
    (base / "config.json").write_text("{}")
    build_tokenizer(["hello world"] * 4, 300, "chatml").save_pretrained(base)
    config = tmp_path / "run.toml"
    config.write_text(f'[run]\nbase_checkpoint = "{base}"\n')
    result = CliRunner().invoke(app, ["train", "--config", str(config),
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "does not reason in a think span" in result.output
    assert "reasoning base" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "stage1").exists()
