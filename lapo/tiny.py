"""Tiny model factory: a Qwen2-architecture model and a byte-level BPE tokenizer, in HF format.

Training starts from it (`training/base.py`) and tests use it, so the whole stack (TRL, vLLM,
the service) runs on a CPU in seconds with the same code paths as a real checkpoint.

    python -m lapo.tiny OUT_DIR            # random-init model + tokenizer

The tokenizer is byte-level BPE (256 byte symbols; optional merges learned from a corpus), so
any text round-trips exactly. Digits stay single tokens (Qwen2's pre-tokenizer splits them),
which suits arithmetic. ``<think>``/``</think>`` are ordinary (non-special) added tokens: with
``skip_special_tokens=True`` a special tag would vanish from the text and the think split
would break. The chat template's generation prompt ends by opening ``<think>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from lapo.protocol import THINK_CLOSE, THINK_OPEN

BOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# Qwen2's pre-tokenizer pattern: transformers 5 rebuilds a Qwen2 tokenizer from vocab+merges
# with this split, so merges must be learned under the same split to be used as trained.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# ChatML, as Qwen2 uses it; the generation prompt opens the think span. With ``tools`` it
# speaks Qwen2.5's Hermes-style tool format: a system block lists the function signatures in
# <tools></tools> (after the request's own system message), an assistant's calls are
# ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (a newline inside each tag), and
# tool results are ``<tool_response>`` blocks in a user turn (consecutive results share one
# turn). Messages without tools render exactly as plain ChatML did before tool support.
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}"
    "{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'"
    " + 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name '"
    " + 'and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n'"
    " + '{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call>'"
    " + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if tools and loop.first and message['role'] == 'system' %}"
    "{%- elif message['role'] == 'assistant' and message['tool_calls'] is defined"
    " and message['tool_calls'] %}"
    "{{- '<|im_start|>assistant\\n' + (message['content'] or '') }}"
    "{%- for call in message['tool_calls'] %}"
    "{%- set fn = call['function'] if call['function'] is defined else call %}"
    "{%- if message['content'] or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + fn['name'] + '\", \"arguments\": ' }}"
    "{%- if fn['arguments'] is string %}{{- fn['arguments'] }}"
    "{%- else %}{{- fn['arguments'] | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{%- if loop.first or loop.previtem['role'] != 'tool' %}{{- '<|im_start|>user' }}"
    "{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or loop.nextitem['role'] != 'tool' %}{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>' }}{%- endif %}"
)
_CHATML_TURNS = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
)
# The chat-template kinds real checkpoints come in (see lapo.think), for tests without
# real weights: ours; DeepSeek-R1-Distill's (the prompt ends "<think>\n"); Qwen3's (the
# model writes <think>; enable_thinking=False closes an empty span in the prompt); plain
# ChatML without think tags (SmolLM2-Instruct).
TEMPLATES = {
    "lapo": CHAT_TEMPLATE,
    "r1": _CHATML_TURNS
    + "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}",
    "qwen3": _CHATML_TURNS
    + "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}",
    "chatml": _CHATML_TURNS
    + "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
}


@dataclass
class TinyConfig:
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4  # head_dim 32: the smallest vLLM's CPU attention supports
    num_key_value_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 2048
    vocab_size: int = 512  # BPE target; the real size is what the trainer reaches
    seed: int = 0


def build_tokenizer(corpus: Iterable[str] = (), vocab_size: int = 512, template: str = "lapo"):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with a chat template of ``TEMPLATES`` and,
    unless the template is plain ``chatml``, the think tags as ordinary added tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from tokenizers import trainers as tk_trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = tk_trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[BOS, IM_START, IM_END],
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    if template != "chatml":
        tok.add_tokens(
            [
                AddedToken(THINK_OPEN, normalized=False, special=False),
                AddedToken(THINK_CLOSE, normalized=False, special=False),
            ]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=IM_END,
        pad_token=BOS,
        unk_token=None,
        model_max_length=TinyConfig.max_position_embeddings,
    )
    fast.chat_template = TEMPLATES[template]
    return fast


def build_model(tokenizer, config: TinyConfig | None = None):
    """A randomly initialised Qwen2ForCausalLM sized for ``tokenizer`` (float32)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = config or TinyConfig()
    torch.manual_seed(cfg.seed)
    qcfg = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(BOS),
        torch_dtype="float32",
    )
    return Qwen2ForCausalLM(qcfg).to(torch.float32)


def _token_id(tokenizer, token: str) -> int | None:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
        return None
    return tid


def save_checkpoint(model, tokenizer, out: Path, manifest: dict | None = None) -> Path:
    """Save model (safetensors), tokenizer, chat template and an optional manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # The turn end and padding of ChatML when the vocabulary has them, else the tokenizer's
    # own (a checkpoint with another chat format): never None.
    eos = _token_id(tokenizer, IM_END) or tokenizer.eos_token_id
    pad = _token_id(tokenizer, BOS) or tokenizer.pad_token_id
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos if pad is None else pad
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if manifest is not None:
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out


def make_tiny_checkpoint(
    out: Path, corpus: Iterable[str] = (), config: TinyConfig | None = None,
    template: str = "lapo",
) -> Path:
    """Build and save a random-init tiny model + tokenizer; returns ``out``."""
    cfg = config or TinyConfig()
    tokenizer = build_tokenizer(corpus, cfg.vocab_size, template)
    model = build_model(tokenizer, cfg)
    manifest = {
        "kind": "tiny-random",
        "stage": "init",
        "config": asdict(cfg),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    return save_checkpoint(model, tokenizer, out, manifest)


if __name__ == "__main__":
    import sys

    print(make_tiny_checkpoint(Path(sys.argv[1])))
