"""The tiny model factory: HF format, exact round-trips, tags as ordinary tokens."""

from __future__ import annotations

import json

import pytest

from lapo.protocol import THINK_CLOSE, THINK_OPEN


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_checkpoint)


def test_checkpoint_files(tiny_checkpoint) -> None:
    names = {p.name for p in tiny_checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "manifest.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["hidden_size"] // config["num_attention_heads"] >= 32  # vLLM CPU head sizes


@pytest.mark.parametrize(
    "text",
    ["3+4=7\n\nWait, 12*3 = 36.", "héllo  wörld\t€ 😀", "<think> a </think>b", "  leading", ""],
)
def test_round_trip_exact(tokenizer, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True).replace("<|im_end|>", "") == text


def test_think_tags_are_single_ordinary_tokens(tokenizer) -> None:
    for tag in (THINK_OPEN, THINK_CLOSE):
        ids = tokenizer.encode(tag, add_special_tokens=False)
        assert len(ids) == 1
        # Ordinary: survives skip_special_tokens, unlike <|im_end|>.
        assert tokenizer.decode(ids, skip_special_tokens=True) == tag
    assert tokenizer.decode(tokenizer.encode("<|im_end|>"), skip_special_tokens=True) == ""


def test_chat_template_opens_think(tokenizer) -> None:
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 3+4?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n" + THINK_OPEN)
    assert "What is 3+4?" in prompt


def test_digits_are_single_tokens(tokenizer) -> None:
    assert len(tokenizer.encode("12345", add_special_tokens=False)) == 5
