"""`lapo train --config FILE --dry-run`: check a pipeline config before anyone books GPUs.

    lapo train --config configs/gpu-r1-distill-1.5b.toml --dry-run \\
        --accelerate-config configs/accelerate-deepspeed-zero2.yaml

Runs the preflight checks `lapo train` runs (`lapo.training.preflight`), then plans every
stage: batch split, rollouts, tokens, and an ESTIMATE per GPU of memory and time
(`lapo.training.estimates`, whose `Assumptions` are printed with the plan), with the checks
only a plan can make (a vLLM context or a KV cache too small, a stage that does not fit).
It reads the TOML, the data files, the base's ``config.json`` and tokenizer and the installed
packages' metadata; it never loads weights, a model class, TRL or vLLM, so it runs in seconds
on a laptop or a login node. Any error: exit status 2. docs/TRAINING.md shows the plan of the
GPU recipe.
"""

from __future__ import annotations

import math
from pathlib import Path

from lapo.prompt import chat_text
from lapo.training.config import GRPO_STAGES, STAGES, ConfigError, PipelineConfig, load_config
from lapo.training.estimates import (
    Assumptions,
    GiB,
    Memory,
    MemoryPart,
    decode_step_s,
    kv_capacity_tokens,
    state_parts,
    transient_parts,
)
from lapo.training.launch import Launch, read_launch
from lapo.training.model_shape import count
from lapo.training.plan import Plan, StagePlan, hours
from lapo.training.preflight import Preflight, measure


class _Planner(Preflight):
    """The preflight checks plus each stage's plan; a plan's own checks are findings too."""

    def __init__(self, cfg: PipelineConfig, launch: Launch, run: Path, only: str | None,
                 assumptions: Assumptions) -> None:
        super().__init__(cfg, launch, run, only)
        self.a = assumptions

    def plan_grpo(self, name: str) -> StagePlan:
        s, world, a = self.grpo(name), self.launch.world_size, self.a
        G, P = s.num_generations, s.prompts_per_step
        title = ("GRPO discovery, reward 1[correct] + alpha*R1" if name == "stage1" else
                 "GRPO internalization with n = M(q)")
        plan = StagePlan(name, f"{title} (TRL GRPOTrainer), {s.steps} steps")
        rollouts = s.steps * G * P
        plan.lines.append(f"rollouts: {s.steps} steps x {G} generations x {P} prompts = "
                          f"{rollouts:,} ({rollouts // world:,} per rank); generated tokens "
                          f"<= {count(rollouts * s.max_completion_length)} (x "
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
        plan.memory_note = (f"P = {count(shape.params)}, N = {world}, T = {per_device} x {seq} = "
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
        plan.lines.append(f"vLLM (colocated, tensor parallel {tp}): KV cache ~{count(kv_tokens)} "
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
                          f"GPU, tensor parallel {tp}; KV cache ~{count(kv)} tokens, {concurrent} "
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
                          f"= {rollouts:,}; generated tokens <= {count(rollouts * w.max_tokens)} "
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
            plan.lines.append(f"time split (estimate): rollouts {hours(gen_s)} (one GPU) + "
                              f"SFT <= {hours(sft_s)}")
        return plan

    def plan_eval(self) -> StagePlan:
        e = self.cfg.eval
        plan = StagePlan("eval", f"base, stage 1 and stage 2 on {e.data} (k = {e.k}, "
                         f"temperature {e.temperature:g}, max_tokens {e.max_tokens})")
        self.check_eval_data()
        items = self.eval_items
        if items is None:
            return plan
        samples = 3 * len(items) * e.k
        plan.lines.append(f"samples: 3 models x {len(items)} problems x {e.k} = {samples:,}; "
                          f"tokens <= {count(samples * e.max_tokens)}")
        prompt = 0
        if self.tokenizer is not None:
            lengths = measure(self.tokenizer, [chat_text(self.tokenizer, it.messages)
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



def dry_run(config: Path, out: Path | None = None, only: str | None = None,
            world_size: int | None = None, accelerate_config: Path | None = None,
            gpu_memory_gb: float = 80.0, assumptions: Assumptions | None = None) -> Plan:
    """Check ``config`` for a launch on ``world_size`` ranks and return the plan.

    Raises `ConfigError` when the config cannot be read at all (a TOML error, an unknown or
    mistyped key, a value a section rejects); everything else is a `Finding` in the plan.
    """
    cfg = load_config(config)
    if only is not None and only not in STAGES:
        raise ConfigError(f"--only must be one of {', '.join(STAGES)}, got {only!r}")
    launch = read_launch(accelerate_config, world_size, gpu_memory_gb)
    checker = _Planner(cfg, launch, Path(out or cfg.run.out), only, assumptions or Assumptions())
    checker.header.append(f"launch: {launch.describe()}")
    todo = checker.todo()
    runs = {s for s, why in todo.items() if why is None}
    checker.check_base()
    checker.check_train_data(bool(runs & {"stage1", "warmup", "stage2"}))
    checker.check_libraries(todo)
    if launch.mixed_precision == "bf16" and any(
            not checker.grpo(s).bf16 for s in GRPO_STAGES if s in runs):
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
        checker.header.append(f"time, all stages (estimate): {hours(total)}")
    return Plan(str(config), launch, checker.header, stages, checker.findings, checker.a)
