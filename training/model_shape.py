"""A decoder-only transformer's shape, read from its ``config.json``: what the estimates need.

Nothing is loaded: the parameter count of a Llama/Qwen2 layout is a formula; other
architectures are counted on the meta device (no weights, no memory).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from lapo.training.config import PipelineConfig


def count(x: float) -> str:
    """A parameter or token count for people: 1.78B, 12.5M, 4,096."""
    return f"{x / 1e9:.2f}B" if x >= 1e9 else f"{x / 1e6:.1f}M" if x >= 1e6 else f"{x:,.0f}"


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a decoder-only transformer, from its ``config.json``."""

    name: str
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    max_positions: int
    qkv_bias: bool = False
    counted: int | None = None  # parameters counted on the meta device (other architectures)

    @property
    def params(self) -> int:
        """Llama/Qwen2 layout: attention (q, k, v, o; Qwen2's q/k/v biases), a gated MLP
        (gate, up, down), two RMSNorms per layer, the final norm, embeddings (+ an untied
        LM head)."""
        if self.counted is not None:
            return self.counted
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        attn = h * q + 2 * h * kv + q * h + (q + 2 * kv if self.qkv_bias else 0)
        layer = attn + 3 * h * self.intermediate + 2 * h
        return self.layers * layer + h + self.vocab * h * (1 if self.tied else 2)

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of every layer, bf16: 2 x layers x kv_heads x head_dim x 2 bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2

    def describe(self) -> str:
        return (f"{self.name}, {count(self.params)} parameters (hidden {self.hidden}, "
                f"{self.layers} layers, intermediate {self.intermediate}, heads "
                f"{self.heads}/{self.kv_heads} kv, vocab {self.vocab}, "
                f"{'tied' if self.tied else 'untied'} embeddings, "
                f"{self.max_positions} positions)")


_LAYOUT_TYPES = {"qwen2", "qwen3", "llama", "mistral"}


def shape_from_config(data: dict, folder: Path | None = None) -> ModelShape:
    """The shape from a ``config.json`` dict; other architectures (MoE, ...) are counted on
    the meta device (``accelerate.init_empty_weights``: no weights, no memory)."""
    model_type = data.get("model_type", "")
    heads = data.get("num_attention_heads", 1)
    shape = ModelShape(
        name=(data.get("architectures") or [model_type or "?"])[0],
        hidden=data.get("hidden_size", 0), layers=data.get("num_hidden_layers", 0),
        intermediate=data.get("intermediate_size", 0), vocab=data.get("vocab_size", 0),
        heads=heads, kv_heads=data.get("num_key_value_heads") or heads,
        head_dim=data.get("head_dim") or data.get("hidden_size", 0) // max(heads, 1),
        # Qwen2 and Llama configs default to untied embeddings.
        tied=bool(data.get("tie_word_embeddings", False)),
        max_positions=data.get("max_position_embeddings", 0),
        qkv_bias=bool(data.get("attention_bias", model_type == "qwen2")),
    )
    if model_type in _LAYOUT_TYPES and shape.hidden and shape.layers and shape.intermediate:
        return shape
    if folder is None:
        raise ValueError(f"cannot count the parameters of model_type {model_type!r}")
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    return dataclasses.replace(shape, counted=sum(p.numel() for p in model.parameters()))


def tiny_shape(cfg: PipelineConfig) -> ModelShape:
    """The tiny base `lapo.training.base` trains when no base checkpoint is given."""
    m = cfg.base.model
    return ModelShape("Qwen2ForCausalLM (tiny, trained by the base stage)", m.hidden_size,
                      m.num_hidden_layers, m.intermediate_size, m.vocab_size + 2,
                      m.num_attention_heads, m.num_key_value_heads,
                      m.hidden_size // m.num_attention_heads, True, m.max_position_embeddings,
                      qkv_bias=True)
