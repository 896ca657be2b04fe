"""The served model as requests see it (`ModelHandle`), and whether its engine is alive.

A handle is swapped as a whole (hot-swap, engine restart): a request holds one handle from
admission to its last token, so everything it needs of the model lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lapo.think import ThinkProfile, TokenCounter

if TYPE_CHECKING:
    from vllm.lora.request import LoRARequest
    from vllm.v1.engine.async_llm import AsyncLLM


def engine_dead(engine: AsyncLLM | object) -> bool:
    """vLLM's ``AsyncLLM.errored``: its engine-core process died (its monitor thread saw it)."""
    return bool(getattr(engine, "errored", False))


@dataclass
class ModelHandle:
    """What a request needs of the served model."""

    name: str
    version: str
    checkpoint_hash: str | None
    path: str
    engine: AsyncLLM
    tok: TokenCounter  # the tokenizer, bound to the protocol's token counting
    created: int
    baseline_profile: dict | None = None
    manifest: dict | None = None
    lora_request: LoRARequest | None = None  # a vLLM LoRARequest when this version is an adapter
    base_path: str | None = None  # the engine's own weights
    base_hash: str | None = None
    vocab_size: int | None = None  # the engine's logits width (vLLM's get_vocab_size())
    # The tokenizer of the engine's own checkpoint (the base, under an adapter whose ``tok``
    # may be its own: another chat template over the same vocabulary); None: ``tok``.
    base_tok: TokenCounter | None = None
    lora_rank: int | None = None  # the engine's max LoRA rank; None: started without LoRA

    @property
    def fingerprint(self) -> str:
        return f"lapo-{self.version}"

    @property
    def engine_tok(self) -> TokenCounter:
        """The tokenizer of the weights the engine loaded (the base, under an adapter)."""
        return self.base_tok or self.tok

    @property
    def profile(self) -> ThinkProfile:
        """The checkpoint's think profile."""
        return self.tok.profile

    @property
    def logit_vocab(self) -> int:
        """How many token ids a request may name (``logit_bias``): the engine's vocabulary,
        as vLLM checks it, else the tokenizer's."""
        return self.vocab_size or len(self.tok.tokenizer)

    @property
    def dead(self) -> bool:
        return engine_dead(self.engine)
