"""The pipeline config (TOML): one section per stage, each a dataclass with its defaults.

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lapo.tiny import TinyConfig
from lapo.training.base import BaseConfig
from lapo.training.grpo import GRPOSettings
from lapo.training.lora import LoraSettings
from lapo.training.reasoning_base import ReasoningBaseSettings
from lapo.training.traces import OverthinkConfig
from lapo.training.warmup import WarmupSettings


@dataclass
class RunSettings:
    out: str = "runs/default"
    seed: int = 0
    publish: str | None = None  # copy the final checkpoint here (e.g. models/lapo)
    publish_base: str | None = None  # copy the base checkpoint here (e.g. models/base)
    # RL problems: "synthetic" (the graded task) or a data file of math problems (GSM8K, MATH,
    # DeepScaleR or generic rows; .jsonl, .json, .parquet; see lapo/datafiles.py), or
    # reasoning-gym tasks: "reasoning_gym:chain_sum+basic_arithmetic" (lapo/rgym.py).
    train_data: str = "synthetic"
    # Start from this checkpoint instead of training the tiny overthinking base
    # (e.g. DeepSeek-R1-Distill-Qwen-1.5B on GPUs).
    base_checkpoint: str | None = None
    # base_checkpoint is a plain instruct model (no think span): make a reasoning base from it
    # first, in its own words ([reasoning_base], training/reasoning_base.py).
    make_reasoning_base: bool = False
    # Several ranks (torchrun / accelerate launch): how long a collective may wait, i.e. how
    # long the other ranks wait at a barrier while the main process alone runs the warm-up
    # generation or the evaluation.
    collective_timeout_s: int = 7200


@dataclass
class Stage1Settings(GRPOSettings):
    alpha: float = 0.7


@dataclass
class Stage2Settings(GRPOSettings):
    beta: float = 0.8
    sigma_frac: float = 0.25
    inject_share: float = 0.5


@dataclass
class EvalSection:
    data: str = "synthetic"  # or math500 / aime2024 / a data file / reasoning_gym:TASK+...
    per_level: int = 20
    k: int = 4
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 512


@dataclass
class EngineSection:
    """Every vLLM engine the pipeline starts itself (warm-up generation, evaluation; TRL's
    engines inside GRPO take the stages' vllm_* settings)."""

    # float32: reproducible numbers on the tiny CPU model (bf16 + LoRA on AMX CPUs needs
    # extra care, docs/PLATFORM); bfloat16 on GPUs.
    dtype: str = "float32"
    # Prompt + generated tokens; must hold [warmup] and [eval] max_tokens plus the prompt.
    max_model_len: int = 2048
    max_num_seqs: int = 128
    # These engines live minutes: compiling (20-50 s on CPU) would not pay back. GPUs: false
    # (CUDA graphs).
    enforce_eager: bool = True
    gpu_memory_utilization: float = 0.9  # ignored on CPU (VLLM_CPU_KVCACHE_SPACE)
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("[engine] gpu_memory_utilization must be in (0, 1], got "
                             f"{self.gpu_memory_utilization}")
        for name in ("max_model_len", "max_num_seqs", "tensor_parallel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"[engine] {name} must be >= 1, got {getattr(self, name)}")

    def config(self, model, seed: int = 0):
        """The `lapo.engine.EngineConfig` of an engine for ``model``."""
        from lapo.engine import EngineConfig

        return EngineConfig(model=str(model), dtype=self.dtype, max_model_len=self.max_model_len,
                            max_num_seqs=self.max_num_seqs, enforce_eager=self.enforce_eager,
                            gpu_memory_utilization=self.gpu_memory_utilization,
                            tensor_parallel_size=self.tensor_parallel_size, seed=seed)

    def check_fits(self, longest_prompt: int, max_tokens: int, where: str) -> None:
        """Raise unless the longest prompt plus ``max_tokens`` fits ``max_model_len``."""
        need = longest_prompt + max_tokens
        if need > self.max_model_len:
            raise ValueError(
                f"[engine] max_model_len ({self.max_model_len}) is shorter than the longest "
                f"prompt ({longest_prompt} tokens) plus {where} max_tokens ({max_tokens}) = "
                f"{need}: raise max_model_len to at least {need} or lower {where} max_tokens")


@dataclass
class PipelineConfig:
    run: RunSettings = field(default_factory=RunSettings)
    base: BaseConfig = field(default_factory=BaseConfig)
    stage1: Stage1Settings = field(default_factory=Stage1Settings)
    warmup: WarmupSettings = field(default_factory=WarmupSettings)
    stage2: Stage2Settings = field(default_factory=Stage2Settings)
    eval: EvalSection = field(default_factory=EvalSection)
    engine: EngineSection = field(default_factory=EngineSection)
    reasoning_base: ReasoningBaseSettings = field(default_factory=ReasoningBaseSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)


_NESTED = {("base", "model"): TinyConfig, ("base", "overthink"): OverthinkConfig}


def _build(cls, data: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"[{where}] unknown key(s): {', '.join(unknown)}; "
                         f"allowed: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        nested = _NESTED.get((where, key))
        kwargs[key] = _build(nested, value, f"{where}.{key}") if nested else value
    return cls(**kwargs)


def load_config(path: Path) -> PipelineConfig:
    data = tomllib.loads(Path(path).read_text())
    sections = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ValueError(f"unknown section(s): {', '.join(unknown)}; "
                         f"allowed: {', '.join(sections)}")
    kwargs = {}
    for name, f in sections.items():
        cls = f.default_factory().__class__
        kwargs[name] = _build(cls, data.get(name, {}), name)
    cfg = PipelineConfig(**kwargs)
    if "max_model_len" not in data.get("engine", {}):
        # Room for the longest generation plus a prompt of 512 tokens (as evaluation sizes
        # its engine on its own), never less than the default.
        cfg.engine.max_model_len = max(cfg.engine.max_model_len, 512 + max(
            cfg.warmup.max_tokens, cfg.eval.max_tokens, cfg.reasoning_base.max_tokens))
    # One seed for the whole run unless a section sets its own.
    for section in (cfg.base, cfg.stage1, cfg.warmup, cfg.stage2, cfg.reasoning_base):
        if "seed" not in data.get(_section_name(cfg, section), {}):
            section.seed = cfg.run.seed
    check(cfg)
    return cfg


def check(cfg: PipelineConfig) -> None:
    """Checks across sections that need no world size (see `layouts` for those that do)."""
    for where, max_tokens in (("[warmup]", cfg.warmup.max_tokens),
                              ("[eval]", cfg.eval.max_tokens)):
        # The prompt's length is known only at run time (checked again then); a context that
        # cannot hold max_tokens alone is wrong for any prompt.
        if cfg.engine.max_model_len <= max_tokens:
            raise ValueError(
                f"[engine] max_model_len ({cfg.engine.max_model_len}) must hold the prompt plus "
                f"{where} max_tokens ({max_tokens}): raise max_model_len (e.g. to "
                f"{max_tokens + 1024}) or lower {where} max_tokens")
    trainers = {"stage1": cfg.stage1.use_cpu, "warmup": cfg.warmup.use_cpu,
                "stage2": cfg.stage2.use_cpu}
    if not cfg.run.base_checkpoint:
        trainers["base"] = True  # the tiny overthinking base trains on CPU
    elif cfg.run.make_reasoning_base:
        trainers["reasoning_base"] = cfg.reasoning_base.use_cpu
    if len(set(trainers.values())) > 1:
        raise ValueError(
            "every trainer of a run must agree on use_cpu (one process group serves them "
            f"all): {', '.join(f'{k}.use_cpu={v}' for k, v in trainers.items())}"
            + ("; the tiny base trains on CPU: give run.base_checkpoint on GPUs"
               if "base" in trainers else ""))


def uses_cpu(cfg: PipelineConfig) -> bool:
    """Whether the run's trainers (and so its process group: gloo) are on CPU."""
    return cfg.stage1.use_cpu


def layouts(cfg: PipelineConfig, world_size: int,
            stages: tuple[str, ...] = ("stage1", "stage2")) -> dict:
    """The batch layout for ``world_size`` ranks of each GRPO stage of ``stages``
    (`lapo.training.grpo.batch_layout`; ValueError naming the section and fields when the rollout
    batch does not split)."""
    from lapo.training.grpo import batch_layout

    out = {}
    for name in stages:
        try:
            out[name] = batch_layout(getattr(cfg, name), world_size)
        except ValueError as exc:
            raise ValueError(f"[{name}] {exc}") from exc
    return out


def _section_name(cfg: PipelineConfig, section) -> str:
    for f in dataclasses.fields(cfg):
        if getattr(cfg, f.name) is section:
            return f.name
    raise KeyError(section)


def to_dict(cfg: PipelineConfig) -> dict:
    return dataclasses.asdict(cfg)
