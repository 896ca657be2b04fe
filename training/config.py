"""The pipeline config (TOML): one section per stage, each a dataclass with its defaults.

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lapo.tiny import TinyConfig
from training.base import BaseConfig
from training.grpo import GRPOSettings
from training.traces import OverthinkConfig
from training.warmup import WarmupSettings


@dataclass
class RunSettings:
    out: str = "runs/default"
    seed: int = 0
    publish: str | None = None  # copy the final checkpoint here (e.g. models/lapo)
    publish_base: str | None = None  # copy the base checkpoint here (e.g. models/base)
    # RL problems: "synthetic" (the graded task) or a data file of math problems (GSM8K, MATH,
    # DeepScaleR or generic rows; .jsonl, .json, .parquet; see lapo/datafiles.py).
    train_data: str = "synthetic"
    # Start from this checkpoint instead of training the tiny overthinking base
    # (e.g. DeepSeek-R1-Distill-Qwen-1.5B on GPUs).
    base_checkpoint: str | None = None


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
    data: str = "synthetic"  # or math500 / aime2024 / a data file (lapo/datafiles.py)
    per_level: int = 20
    k: int = 4
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 512


@dataclass
class PipelineConfig:
    run: RunSettings = field(default_factory=RunSettings)
    base: BaseConfig = field(default_factory=BaseConfig)
    stage1: Stage1Settings = field(default_factory=Stage1Settings)
    warmup: WarmupSettings = field(default_factory=WarmupSettings)
    stage2: Stage2Settings = field(default_factory=Stage2Settings)
    eval: EvalSection = field(default_factory=EvalSection)


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
    # One seed for the whole run unless a section sets its own.
    for section in (cfg.base, cfg.stage1, cfg.warmup, cfg.stage2):
        if "seed" not in data.get(_section_name(cfg, section), {}):
            section.seed = cfg.run.seed
    return cfg


def _section_name(cfg: PipelineConfig, section) -> str:
    for f in dataclasses.fields(cfg):
        if getattr(cfg, f.name) is section:
            return f.name
    raise KeyError(section)


def to_dict(cfg: PipelineConfig) -> dict:
    return dataclasses.asdict(cfg)
