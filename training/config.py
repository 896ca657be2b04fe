"""The pipeline config (TOML): one section per stage, and `load_config`, its one reader.

Each section is a dataclass with its defaults (the stages' own beside their code: `BaseConfig`,
`GRPOStageConfig`, `WarmupConfig`, `ReasoningBaseConfig`, `GenerationEngineConfig`, ...).
`load_config` refuses what a typo would otherwise turn into a silent default: every unknown
key with a "did you mean", every value of the wrong type, the section a value error comes
from (`ConfigError`, a ValueError).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lapo.engine import GenerationEngineConfig
from lapo.training import config_schema as schema
from lapo.training.base import BaseConfig
from lapo.training.grpo import GRPOStageConfig
from lapo.training.lora import LoraConfig
from lapo.training.reasoning_base import ReasoningBaseConfig
from lapo.training.rewards import ALPHA, BETA, SIGMA_FRAC
from lapo.training.warmup import WarmupConfig

# The stages of a run, in the order the pipeline runs them; the GRPO ones among them.
STAGES = ("base", "stage1", "warmup", "stage2", "eval")
GRPO_STAGES = ("stage1", "stage2")


class ConfigError(ValueError):
    """The config cannot be read; the message names the file, the field and the fix."""


@dataclass
class RunConfig:
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
class Stage1Config(GRPOStageConfig):
    alpha: float = ALPHA


@dataclass
class Stage2Config(GRPOStageConfig):
    beta: float = BETA
    sigma_frac: float = SIGMA_FRAC
    inject_share: float = 0.5


@dataclass
class EvalConfig:
    data: str = "synthetic"  # or math500 / aime2024 / a data file / reasoning_gym:TASK+...
    per_level: int = 20
    k: int = 4
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 512


@dataclass
class PipelineConfig:
    run: RunConfig = field(default_factory=RunConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    eval: EvalConfig = field(default_factory=EvalConfig)
    engine: GenerationEngineConfig = field(default_factory=GenerationEngineConfig)
    reasoning_base: ReasoningBaseConfig = field(default_factory=ReasoningBaseConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)


# The sections that take [run] seed unless they set their own.
_SEEDED = ("base", "stage1", "warmup", "stage2", "reasoning_base")


def load_config(path: Path) -> PipelineConfig:
    """Read and check the TOML at ``path``. Raises `ConfigError` listing every problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    problems = schema.problems(data, PipelineConfig)
    sections = {}
    if not problems:
        # Each section alone, so a value error (a __post_init__) names its section.
        for name, cls in schema.sections(PipelineConfig).items():
            try:
                sections[name] = schema.build(cls, data.get(name, {}))
            except (ValueError, TypeError) as exc:
                text = str(exc)
                problems.append(text if text.startswith("[") else f"[{name}] {text}")
    if problems:
        raise ConfigError(f"{path}: {problems[0]}" if len(problems) == 1 else
                          f"{path}:\n  " + "\n  ".join(problems))
    cfg = PipelineConfig(**sections)
    if "max_model_len" not in data.get("engine", {}):
        # Room for the longest generation plus a prompt of 512 tokens (as evaluation sizes
        # its engine on its own), never less than the default.
        cfg.engine.max_model_len = max(cfg.engine.max_model_len, 512 + max(
            cfg.warmup.max_tokens, cfg.eval.max_tokens, cfg.reasoning_base.max_tokens))
    # One seed for the whole run unless a section sets its own.
    for name in _SEEDED:
        if "seed" not in data.get(name, {}):
            getattr(cfg, name).seed = cfg.run.seed
    try:
        check(cfg)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return cfg


def check(cfg: PipelineConfig) -> None:
    """Checks across sections that need no world size (the batch split over ranks:
    `lapo.training.preflight`)."""
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


def to_dict(cfg: PipelineConfig) -> dict:
    return dataclasses.asdict(cfg)
