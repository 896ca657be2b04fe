"""The preflight checks `lapo train` runs before its first stage (and the dry run before it
plans), on a plain instruct base built by the tiny factory (ChatML, no think span: SmolLM2's
kind)."""

from __future__ import annotations

import pytest

from lapo.think import profile_of
from lapo.tiny import build_tokenizer
from lapo.training.config import load_config
from lapo.training.preflight import PreflightError, check_run
from lapo.training.reasoning_base import reasoning_tokenizer


@pytest.fixture
def plain(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    build_tokenizer(["hello world"] * 4, 300, "chatml").save_pretrained(folder)
    return folder


def test_plain_base_needs_a_reasoning_base(tmp_path, plain) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f'[run]\nbase_checkpoint = "{plain}"\n')
    with pytest.raises(PreflightError, match="does not reason in a think span.*"
                                             "make_reasoning_base"):
        check_run(load_config(cfg_file), tmp_path / "run", 1)
    cfg_file.write_text(f'[run]\nbase_checkpoint = "{plain}"\nmake_reasoning_base = true\n')
    check_run(load_config(cfg_file), tmp_path / "run", 1)


def test_reasoning_template_opens_think_as_text_with_the_base_vocabulary(plain) -> None:
    from transformers import AutoTokenizer

    before = AutoTokenizer.from_pretrained(plain)
    tok = reasoning_tokenizer(plain)
    assert profile_of(before).opens == "none"
    profile = profile_of(tok)
    assert (profile.opens, profile.tags, profile.prompt_suffix) == ("prompt", "text", "\n")
    assert tok.get_vocab() == before.get_vocab()  # vLLM LoRA cannot add tokens
    messages = [{"role": "user", "content": "1 + 2 = ?"}]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        before.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        + "<think>\n")


def test_a_missing_data_file_stops_the_run(tmp_path) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[run]\ntrain_data = "/nonexistent/train.jsonl"\n')
    with pytest.raises(PreflightError, match="run.train_data"):
        check_run(load_config(cfg_file), tmp_path / "run", 1)
