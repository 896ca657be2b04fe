"""Memory and time per GPU of a training stage: ESTIMATES, with their stated assumptions.

The formulas are `state_parts` (weights, gradients, Adam; DeepSpeed ZeRO sharding),
`activation_bytes`, `lm_head_bytes` (TRL's fused head), `decode_step_s` and
`kv_capacity_tokens`; what they cannot read from a config is `Assumptions`, printed with every
plan. docs/TRAINING.md shows them on the GPU recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lapo.training.launch import Launch
from lapo.training.model_shape import ModelShape

GiB = 1024**3
# TRL's fused LM head (trl/kernels/chunked_logprob.py, TRL 1.16): [4096 tokens x 32768 vocab]
# tiles instead of the [tokens x vocab] logits.
FUSED_TOKEN_TILE, FUSED_VOCAB_TILE = 4096, 32768


@dataclass(frozen=True)
class Assumptions:
    """What the estimate cannot read from a config: printed with every plan. Defaults are an
    80 GB H100 SXM; replace them with measured numbers for other GPUs."""

    runtime_gib: float = 3.0  # per GPU: CUDA context, NCCL buffers, allocator fragmentation
    # Inside vLLM's share besides weights and KV cache: CUDA graphs, the activations of its
    # profiling run (TRL caps a step at 4096 tokens), the sampler.
    vllm_overhead_gib: float = 2.0
    peak_tflops: float = 989.0  # bf16 dense, H100 SXM
    mfu: float = 0.35  # share of peak a training step reaches
    hbm_tb_s: float = 3.35  # H100 SXM memory bandwidth
    bandwidth_share: float = 0.5  # share of it one decode step reaches
    min_decode_step_s: float = 0.006  # floor of one vLLM decode step (scheduler, sampler)
    default_max_num_seqs: int = 256  # vLLM's default when max_num_seqs is unset

    def lines(self) -> list[str]:
        return [f"runtime {self.runtime_gib:g} GiB per GPU (CUDA context, NCCL, fragmentation)",
                f"vLLM overhead {self.vllm_overhead_gib:g} GiB inside its share",
                f"training at {self.mfu:g} x {self.peak_tflops:g} TFLOP/s (bf16 peak)",
                f"decode step = max({self.min_decode_step_s * 1e3:g} ms, bytes read / "
                f"({self.bandwidth_share:g} x {self.hbm_tb_s:g} TB/s)); every completion "
                "runs to its max length (an upper bound)"]


@dataclass
class MemoryPart:
    what: str
    formula: str
    bytes: float
    phase: Literal["static", "train", "generate"] = "static"


@dataclass
class Memory:
    """Peak memory per GPU (an estimate): static parts + the training step's transient +
    colocated vLLM; with vLLM's sleep mode, training and generation take turns."""

    parts: list[MemoryPart]
    sleep: bool = False
    gpu: bool = True  # False: a CPU run, RAM per process (no budget to fit)

    def phase(self, name: str) -> float:
        return sum(p.bytes for p in self.parts if p.phase == name)

    @property
    def total(self) -> float:
        train, gen = self.phase("train"), self.phase("generate")
        return self.phase("static") + (max(train, gen) if self.sleep else train + gen)




def activation_bytes(shape: ModelShape, tokens: int, checkpointing: bool, dtype_bytes: int
                     ) -> tuple[float, str]:
    """Activations of one micro-batch of ``tokens`` tokens. A decoder layer keeps about
    (10 H + 4 I) values per token for its backward (norm inputs and outputs, q/k/v and
    rotated q/k, attention output, the MLP's gate, up, act(gate) and product): with
    checkpointing, the layer inputs of every layer plus one layer recomputed, x2 for its
    gradients; without, every layer's."""
    h, i, L = shape.hidden, shape.intermediate, shape.layers
    per_layer = tokens * (10 * h + 4 * i) * dtype_bytes
    if checkpointing:
        return L * tokens * h * dtype_bytes + 2 * per_layer, "T*H*L*b + 2*T*(10H+4I)*b"
    return L * per_layer, "T*(10H+4I)*L*b"


def lm_head_bytes(shape: ModelShape, tokens: int) -> tuple[float, str]:
    """TRL 1.16's fused LM head: fp32 [4096 x 32768] tiles (forward and backward) and fp32
    gradients of the hidden states and of the head's weight; no [T x V] logits."""
    tile = min(tokens, FUSED_TOKEN_TILE) * min(shape.vocab, FUSED_VOCAB_TILE) * 4
    return 2 * tile + tokens * shape.hidden * 4 + shape.vocab * shape.hidden * 4, \
        "2*4096*32768*4 + T*H*4 + V*H*4"


def transient_parts(shape: ModelShape, tokens: int, checkpointing: bool, dtype_bytes: int
                    ) -> list[MemoryPart]:
    """What one training micro-batch of ``tokens`` tokens adds: activations + LM head."""
    act, act_f = activation_bytes(shape, tokens, checkpointing, dtype_bytes)
    head, head_f = lm_head_bytes(shape, tokens)
    return [MemoryPart("activations" + (" (checkpointing)" if checkpointing else ""), act_f,
                       act, "train"),
            MemoryPart("LM head (TRL fused tiles, fp32 grads)", head_f, head, "train")]


def state_parts(shape: ModelShape, launch: Launch, ref_model: bool, cpu: bool
                ) -> list[MemoryPart]:
    """Weights, reference model, gradients and Adam per GPU. DeepSpeed ZeRO (Rajbhandari et
    al. 2020, Fig. 1: 2P + (2 + 12)P/N for stage 2): bf16 weights and gradients, fp32 master
    weights + Adam m and v (12P) sharded over N ranks from stage 1, gradients from stage 2,
    weights from stage 3. Without DeepSpeed the stages hold the fp32 model they load (bf16
    runs as autocast): 4P weights, 4P gradients, 8P Adam, all on every rank."""
    P, N = shape.params, launch.world_size
    if cpu or not launch.deepspeed:
        parts = [MemoryPart("policy weights (fp32)", "4P", 4 * P),
                 MemoryPart("gradients (fp32)", "4P", 4 * P),
                 MemoryPart("Adam m, v (fp32)", "8P", 8 * P)]
        if ref_model:
            parts.append(MemoryPart("reference model (fp32; kl_beta > 0)", "4P", 4 * P))
        return parts
    z = launch.zero_stage
    shard = {"w": N if z >= 3 else 1, "g": N if z >= 2 else 1, "o": N if z >= 1 else 1}
    parts = [MemoryPart("policy weights (bf16)", "2P" + ("/N" if z >= 3 else ""),
                        2 * P / shard["w"]),
             MemoryPart("gradients (bf16)", "2P" + ("/N" if z >= 2 else ""), 2 * P / shard["g"])]
    if launch.offload_optimizer:
        parts.append(MemoryPart("fp32 master + Adam m, v", "offloaded to CPU", 0))
    else:
        parts.append(MemoryPart("fp32 master + Adam m, v", "12P" + ("/N" if z >= 1 else ""),
                                12 * P / shard["o"]))
    if ref_model:  # TRL builds it when beta != 0; DeepSpeed inference engine, stage 0 unless 3
        parts.append(MemoryPart("reference model (bf16; kl_beta > 0)",
                                "2P" + ("/N" if z >= 3 else ""), 2 * P / shard["w"]))
    return parts


def decode_step_s(shape: ModelShape, batch: int, context: int, a: Assumptions,
                  tp: int = 1, b: int = 2) -> float:
    """One decode step is memory bound: it reads the weights (b x P bytes) and the batch's KV
    cache (batch x context x KV bytes per token), split over ``tp`` GPUs."""
    read = (b * shape.params + batch * context * shape.kv_bytes_per_token * b // 2) / tp
    return max(a.min_decode_step_s, read / (a.bandwidth_share * a.hbm_tb_s * 1e12))


def kv_capacity_tokens(shape: ModelShape, share_bytes: float, a: Assumptions, tp: int = 1,
                       b: int = 2) -> float:
    """KV cache tokens vLLM gets from its share of each of ``tp`` GPUs: share - weights/tp -
    overhead (``b`` bytes per weight and KV value)."""
    free = share_bytes - b * shape.params / tp - a.vllm_overhead_gib * GiB
    return max(0.0, free) * tp / (shape.kv_bytes_per_token * b // 2)
