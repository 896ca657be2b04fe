"""GRPO settings shared by stage 1 and stage 2, and the TRL `GRPOConfig` they become.

On this CPU: no reference model (beta = 0; the paper's KL coefficient 1e-4 barely acts and
a reference model doubles the forward cost), fp32, no gradient checkpointing (both the bf16
default and checkpointing fail or crawl on CPU), generation by transformers. On GPUs the
same dataclass turns on TRL's vLLM generation and the paper's hyperparameters
(`configs/gpu-r1-distill-1.5b.toml`).

Batches (TRL 1.16 counts completions, not prompts). One optimizer step learns from the
rollout batch, ``num_generations * prompts_per_step`` completions (G x prompts), split as::

    per_device_train_batch_size * gradient_accumulation_steps * world_size  ==  G * prompts

``per_device_train_batch_size`` is the micro-batch one forward sees (the logits of that many
completions are in memory at once), so it is sized for memory, not for the rollout.
``steps_per_generation`` (TRL's; default ``gradient_accumulation_steps``) sets how many
micro-steps one generation feeds: TRL generates ``per_device * world_size *
steps_per_generation`` completions at a time (its ``generation_batch_size``), which must hold
whole groups of G. `batch_layout` checks both for a world size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VLLM_MODES = ("colocate", "server")


@dataclass
class GRPOStageConfig:
    steps: int = 40
    num_generations: int = 8  # G (paper: 8)
    prompts_per_step: int = 8
    learning_rate: float = 5e-5
    kl_beta: float = 0.0  # paper: 1e-4
    temperature: float = 1.0
    max_completion_length: int = 448  # paper: 4096
    problems_per_level: int = 200
    use_cpu: bool = True
    bf16: bool = False
    use_vllm: bool = False  # GPUs: TRL's vLLM generation
    gradient_checkpointing: bool = False
    logging_steps: int = 5
    seed: int = 0
    # Completions per device per forward; None: the whole rollout batch split over the ranks
    # (G * prompts_per_step // (world_size * gradient_accumulation_steps)).
    per_device_train_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    # Micro-steps one generation feeds (TRL's); None: gradient_accumulation_steps.
    steps_per_generation: int | None = None
    # TRL's vLLM generation (use_vllm): "colocate" (an engine inside every rank, sharing its
    # GPU) or "server" (a `trl vllm-serve` process); the colocated engine's share of the GPU,
    # context length (None: the model's, often far more than prompt + completion), sleep mode
    # (frees its memory during the optimizer step) and tensor parallelism.
    vllm_mode: str = "colocate"
    vllm_gpu_memory_utilization: float = 0.3
    vllm_max_model_length: int | None = None
    vllm_enable_sleep_mode: bool = False
    vllm_tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2: GRPO compares rollouts in a group")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.use_cpu and (self.bf16 or self.use_vllm):
            raise ValueError("use_cpu=True needs bf16=False and use_vllm=False "
                             "(bf16 fails and TRL's vLLM mode needs a GPU build)")
        for name in ("per_device_train_batch_size", "steps_per_generation"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {value}")
        if self.gradient_accumulation_steps < 1:
            raise ValueError("gradient_accumulation_steps must be >= 1, got "
                             f"{self.gradient_accumulation_steps}")
        if self.vllm_mode not in VLLM_MODES:
            raise ValueError(f"vllm_mode must be one of {', '.join(VLLM_MODES)}, "
                             f"got {self.vllm_mode!r}")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ValueError("vllm_gpu_memory_utilization must be in (0, 1], got "
                             f"{self.vllm_gpu_memory_utilization}")
        if self.vllm_tensor_parallel_size < 1:
            raise ValueError("vllm_tensor_parallel_size must be >= 1, got "
                             f"{self.vllm_tensor_parallel_size}")
        if (self.vllm_max_model_length is not None
                and self.vllm_max_model_length <= self.max_completion_length):
            raise ValueError(
                f"vllm_max_model_length ({self.vllm_max_model_length}) must hold the prompt "
                f"plus max_completion_length ({self.max_completion_length}): raise it (e.g. to "
                f"{self.max_completion_length + 1024}) or leave it unset")

    @property
    def rollout_batch(self) -> int:
        """Completions one optimizer step learns from: G x prompts_per_step."""
        return self.num_generations * self.prompts_per_step


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step's rollout batch is spread over ranks and micro-steps."""

    world_size: int
    num_generations: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    steps_per_generation: int
    generation_batch_size: int  # completions per generation, all ranks together


def batch_layout(s: GRPOStageConfig, world_size: int) -> BatchLayout:
    """The micro-batch, accumulation and generation batch for ``world_size`` ranks.

    Raises ValueError naming the fields to change. The constraints are TRL 1.16's
    (`GRPOConfig.__post_init__`: the generation batch holds whole groups) plus ours (one
    optimizer step is exactly the rollout batch).

    >>> layout = batch_layout(GRPOStageConfig(num_generations=4, prompts_per_step=2), 2)
    >>> layout.per_device_train_batch_size, layout.generation_batch_size
    (4, 8)
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    g, accum, rollout = s.num_generations, s.gradient_accumulation_steps, s.rollout_batch
    per_device = s.per_device_train_batch_size
    if per_device is None:
        if rollout % (world_size * accum):
            raise ValueError(
                f"num_generations * prompts_per_step ({g} * {s.prompts_per_step} = {rollout}) "
                f"does not split over world_size * gradient_accumulation_steps ({world_size} * "
                f"{accum}): change prompts_per_step or gradient_accumulation_steps, or set "
                "per_device_train_batch_size")
        per_device = rollout // (world_size * accum)
    if per_device * accum * world_size != rollout:
        raise ValueError(
            f"per_device_train_batch_size * gradient_accumulation_steps * world_size "
            f"({per_device} * {accum} * {world_size} = {per_device * accum * world_size}) must "
            f"equal num_generations * prompts_per_step ({g} * {s.prompts_per_step} = {rollout}):"
            " one optimizer step learns from the whole rollout batch")
    spg = s.steps_per_generation or accum
    generation = per_device * world_size * spg
    if generation % g:
        raise ValueError(
            f"a generation (per_device_train_batch_size * world_size * steps_per_generation = "
            f"{per_device} * {world_size} * {spg} = {generation} completions) must hold whole "
            f"groups of num_generations ({g}): change steps_per_generation")
    return BatchLayout(world_size, g, per_device, accum, spg, generation)


def grpo_config(s: GRPOStageConfig, output_dir: Path, world_size: int = 1):
    from trl import GRPOConfig

    layout = batch_layout(s, world_size)
    kwargs = {}
    if s.use_vllm:
        kwargs.update(
            use_vllm=True, vllm_mode=s.vllm_mode,
            vllm_gpu_memory_utilization=s.vllm_gpu_memory_utilization,
            vllm_max_model_length=s.vllm_max_model_length,
            vllm_enable_sleep_mode=s.vllm_enable_sleep_mode,
            vllm_tensor_parallel_size=s.vllm_tensor_parallel_size,
        )
    return GRPOConfig(
        output_dir=str(output_dir),
        use_cpu=s.use_cpu,
        bf16=s.bf16,
        gradient_checkpointing=s.gradient_checkpointing,
        num_generations=s.num_generations,
        per_device_train_batch_size=layout.per_device_train_batch_size,
        gradient_accumulation_steps=layout.gradient_accumulation_steps,
        steps_per_generation=layout.steps_per_generation,
        max_steps=s.steps,
        learning_rate=s.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(5, s.steps // 4),
        beta=s.kl_beta,
        temperature=s.temperature,
        max_completion_length=s.max_completion_length,
        logging_steps=s.logging_steps,
        save_strategy="no",
        report_to=[],
        seed=s.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
        **kwargs,
    )
