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


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from lapo.cli import app; from typer.testing import CliRunner; "
        "CliRunner().invoke(app, ['--help']); "
        "heavy = [m for m in ('torch', 'vllm', 'transformers', 'trl') if m in sys.modules]; "
        "print(heavy); assert not heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
