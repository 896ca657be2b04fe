"""A checkpoint's think profile: how ITS tokenizer and chat template mark reasoning.

Computed once from the tokenizer (and written into the manifest as ``think_profile``), read
by every consumer — rewards and the checker, the warm-up, M(q), evaluation, the service's
streaming split and accounting, swap validation — so training and serving can never disagree
on what counts as reasoning. Three kinds of checkpoint, by how the think span opens:

- ``prompt``: the chat template's generation prompt already opens it (ends with ``<think>``,
  perhaps plus a newline): DeepSeek-R1-Distill, and this project's own models;
- ``model``: the model writes ``<think>`` itself (Qwen3, QwQ);
- ``none``: the model never reasons in tags (plain instruct models, e.g. SmolLM2-Instruct):
  the whole completion is the answer; budgets cannot apply.

Tags are ``token`` (each one ordinary added token), ``special`` (one token each, but
special: it vanishes from text decoded with ``skip_special_tokens``, so text must be
decoded keeping specials) or ``text`` (written as several tokens).

Only the tokenizer is needed (no weights, no torch): ``profile_of(AutoTokenizer...)``.
`TokenCounter` binds the protocol's token counting (`lapo.protocol`) to a tokenizer and its
profile.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from lapo.protocol import (
    THINK_CLOSE,
    THINK_OPEN,
    ThinkSplit,
    ThinkStreamSplitter,
    TokenCounts,
    count_tokens,
    count_tokens_text,
    split_think,
)

Opens = Literal["prompt", "model", "none"]
Tags = Literal["token", "special", "text", "none"]
# Turn-ending tokens of the common chat formats (ChatML, Llama 3, Gemma, R1/Qwen).
_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>",
               "<end_of_turn>", "<｜end▁of▁sentence｜>", "</s>")


@dataclass(frozen=True)
class ThinkProfile:
    opens: Opens
    tags: Tags
    open_ids: tuple[int, ...] = ()  # <think> as the tokenizer encodes it
    close_ids: tuple[int, ...] = ()  # </think>
    # What the generation prompt ends with after <think> ("\n" for R1-distill), when
    # ``opens == "prompt"``.
    prompt_suffix: str = ""
    end_tokens: tuple[str, ...] = ()  # tokens that end a turn
    end_ids: tuple[int, ...] = ()
    enable_thinking: bool = False  # the template takes an ``enable_thinking`` switch
    notes: tuple[str, ...] = field(default=())

    # ------------------------------------------------------------------ derived
    @property
    def reasons(self) -> bool:
        """The model reasons in a think span (its reasoning can be counted and budgeted)."""
        return self.opens != "none"

    @property
    def prompt_opens_think(self) -> bool:
        return self.opens == "prompt"

    @property
    def single_tags(self) -> bool:
        return self.tags in ("token", "special")

    @property
    def close_id(self) -> int | None:
        return self.close_ids[0] if self.single_tags and self.close_ids else None

    @property
    def open_id(self) -> int | None:
        return self.open_ids[0] if self.single_tags and self.open_ids else None

    @property
    def skip_special_tokens(self) -> bool:
        """How generated ids must be decoded for the tags to survive in the text."""
        return self.tags != "special"

    @property
    def kind(self) -> str:
        """A short name for logs and ``/admin/models``."""
        return {"prompt": "reasoning (template opens <think>)",
                "model": "reasoning (model opens <think>)",
                "none": "plain (no think span)"}[self.opens]

    def opened_by_prompt(self, budget_in_prompt: bool = False) -> bool:
        """Whether a completion starts inside the think span: the template opened it, or a
        budget statement was placed in the prompt (which opens it, `budget_prefix`)."""
        return self.reasons and (self.opens == "prompt" or budget_in_prompt)

    def split(self, completion: str, budget_in_prompt: bool = False) -> ThinkSplit:
        """A whole completion's reasoning and answer, for this checkpoint."""
        return split_think(completion, self.opened_by_prompt(budget_in_prompt), self.reasons)

    def answer(self, completion: str, budget_in_prompt: bool = False) -> str | None:
        """The answer part of a completion, or None when the reasoning never closed (what
        every answer checker reads). ``budget_in_prompt``: a budget statement was placed in
        the prompt (it opens the span)."""
        split = self.split(completion, budget_in_prompt)
        if split.opened and not split.closed:
            return None
        return split.answer

    def stream_splitter(self, budget_in_prompt: bool = False) -> ThinkStreamSplitter:
        """`split`'s streaming twin."""
        return ThinkStreamSplitter(self.opened_by_prompt(budget_in_prompt), self.reasons)

    def inside_span(self, completion: str) -> str:
        """``completion`` from just inside its think span: without the ``<think>`` a model
        that opens the span itself wrote (what follows a prompt that holds a budget)."""
        if self.opens == "model" and completion.lstrip().startswith(THINK_OPEN):
            return completion.lstrip()[len(THINK_OPEN):]
        return completion

    def budget_prefix(self) -> str:
        """What goes between a generation prompt and a budget statement: ``<think>`` when
        the model would have written it itself, nothing when the template wrote it."""
        if not self.reasons:
            raise ValueError("this model does not reason in a think span: no budget applies")
        return "" if self.opens == "prompt" else THINK_OPEN

    # ------------------------------------------------------------------ (de)serialise
    def to_json(self) -> dict:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_json(cls, data: dict) -> ThinkProfile:
        names = set(cls.__dataclass_fields__)
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
        return cls(**kw)


# This project's own checkpoints (lapo.tiny): the template opens <think>, tags are tokens.
LAPO_DEFAULT = ThinkProfile("prompt", "token")


def _render(tokenizer, **kw) -> str:
    messages = [{"role": "user", "content": "x"}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         **kw)


def _tag_kind(tokenizer, tag: str) -> tuple[Tags, tuple[int, ...]]:
    ids = tuple(tokenizer.encode(tag, add_special_tokens=False))
    if len(ids) == 1:
        special = tokenizer.decode(list(ids), skip_special_tokens=True) != tag
        return ("special" if special else "token"), ids
    return "text", ids


def _in_vocab(tokenizer, tag: str) -> bool:
    tid = tokenizer.convert_tokens_to_ids(tag)
    return tid is not None and tid != tokenizer.unk_token_id and (
        tokenizer.unk_token_id is not None or tokenizer.convert_ids_to_tokens(tid) == tag)


def template_source(tokenizer) -> str:
    """The chat template ``tokenizer`` renders with (named templates: the default one, as
    ``apply_chat_template`` uses it); "" without one."""
    template = tokenizer.chat_template or ""
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()), "")
    return template


_TOOLS_VAR = re.compile(r"\btools\b")


def supports_tools(tokenizer) -> bool:
    """Whether the chat template renders tool definitions: its source reads ``tools`` (what
    transformers and vLLM pass it). Only such a model can be asked to choose between a tool
    call and text (``tool_choice: "auto"``)."""
    return bool(_TOOLS_VAR.search(template_source(tokenizer)))


def profile_of(tokenizer) -> ThinkProfile:
    """The think profile of ``tokenizer`` (with its chat template)."""
    template = template_source(tokenizer)
    notes: list[str] = []
    end_tokens = [t for t in _END_TOKENS if _in_vocab(tokenizer, t)]
    if tokenizer.eos_token and tokenizer.eos_token not in end_tokens:
        end_tokens.insert(0, tokenizer.eos_token)
    end_ids = tuple(tokenizer.convert_tokens_to_ids(t) for t in end_tokens)
    enable_thinking = "enable_thinking" in template
    rendered = _render(tokenizer) if template else ""
    stripped = rendered.rstrip()
    mentions = THINK_OPEN in template or THINK_CLOSE in template
    known = _in_vocab(tokenizer, THINK_OPEN) and _in_vocab(tokenizer, THINK_CLOSE)
    if not template:
        notes.append("no chat template")
    if stripped.endswith(THINK_OPEN):
        opens: Opens = "prompt"
    elif mentions or known:
        opens = "model"
    else:
        opens = "none"
    if opens == "none":
        return ThinkProfile("none", "none", end_tokens=tuple(end_tokens), end_ids=end_ids,
                            enable_thinking=enable_thinking, notes=tuple(notes))
    open_kind, open_ids = _tag_kind(tokenizer, THINK_OPEN)
    close_kind, close_ids = _tag_kind(tokenizer, THINK_CLOSE)
    if "text" in (open_kind, close_kind):
        tags: Tags = "text"
    else:  # one token each; if either is special, text must be decoded keeping specials
        tags = "special" if "special" in (open_kind, close_kind) else "token"
    suffix = rendered[len(stripped):] if opens == "prompt" else ""
    return ThinkProfile(opens, tags, open_ids, close_ids, suffix, tuple(end_tokens), end_ids,
                        enable_thinking, tuple(notes))


def load_profile(folder: str | Path, tokenizer=None) -> ThinkProfile:
    """A checkpoint's profile: computed from ``tokenizer`` when given (what serving and
    training use is the truth), else the one its manifest records, else computed."""
    if tokenizer is not None:
        return profile_of(tokenizer)
    folder = Path(folder)
    manifest = folder / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text()).get("think_profile")
        if data:
            return ThinkProfile.from_json(data)
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
    return profile_of(tokenizer)


class TokenCounter:
    """`lapo.protocol.count_tokens` bound to a tokenizer and its think profile: tag ids,
    turn-ending ids, decoding and where the span opens come from them.

    The one counter training rewards, the warm-up, evaluation and the service all use.
    Takes any tokenizer with ``convert_tokens_to_ids``, ``eos_token_id``, ``encode`` and
    ``decode`` (and a chat template, unless ``profile`` is given).
    """

    def __init__(self, tokenizer, profile: ThinkProfile | None = None) -> None:
        self.tokenizer = tokenizer
        self.profile = profile if profile is not None else profile_of(tokenizer)
        self.open_id = self.profile.open_id
        self.close_id = self.profile.close_id
        self.close_ids = list(self.profile.close_ids)
        self.eos_ids = frozenset({tokenizer.eos_token_id, *self.profile.end_ids}) - {None}

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids),
                                     skip_special_tokens=self.profile.skip_special_tokens)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as the engine would tokenize a prompt (no added specials)."""
        return self.tokenizer.encode(text, add_special_tokens=False)

    def __call__(self, ids: Sequence[int], prompt_opens_think: bool | None = None,
                 declared: int | None = None) -> TokenCounts:
        """Counts of a completion. ``declared``: a budget injected into the prompt (which
        then opened the span); ``prompt_opens_think``: override the profile's answer."""
        profile = self.profile
        if not profile.reasons:
            total = len(ids)
            answer = total - (1 if ids and ids[-1] in self.eos_ids else 0)
            return TokenCounts(total, 0, 0, answer, None, closed=False)
        if prompt_opens_think is None:
            prompt_opens_think = profile.prompt_opens_think or declared is not None
        if profile.single_tags:
            return count_tokens(ids, self.decode, self.open_id, self.close_id, self.eos_ids,
                                prompt_opens_think=prompt_opens_think, declared=declared)
        return count_tokens_text(ids, self.decode, self.eos_ids,
                                 prompt_opens_think=prompt_opens_think, declared=declared)
