"""GRPO settings shared by stage 1 and stage 2, and the TRL `GRPOConfig` they become.

On this CPU: no reference model (beta = 0; the paper's KL coefficient 1e-4 barely acts and
a reference model doubles the forward cost), fp32, no gradient checkpointing (both the bf16
default and checkpointing fail or crawl on CPU), generation by transformers. On GPUs the
same dataclass turns on TRL's vLLM generation and the paper's hyperparameters
(`configs/gpu-r1-distill-1.5b.toml`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class GRPOSettings:
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
    use_vllm: bool = False  # GPUs: TRL's vLLM generation (colocate)
    gradient_checkpointing: bool = False
    logging_steps: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2: GRPO compares rollouts in a group")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.use_cpu and (self.bf16 or self.use_vllm):
            raise ValueError("use_cpu=True needs bf16=False and use_vllm=False "
                             "(bf16 fails and TRL's vLLM mode needs a GPU build)")


def grpo_config(s: GRPOSettings, output_dir: Path):
    from trl import GRPOConfig

    kwargs = {}
    if s.use_vllm:
        kwargs.update(use_vllm=True, vllm_mode="colocate")
    return GRPOConfig(
        output_dir=str(output_dir),
        use_cpu=s.use_cpu,
        bf16=s.bf16,
        gradient_checkpointing=s.gradient_checkpointing,
        num_generations=s.num_generations,
        per_device_train_batch_size=s.num_generations * s.prompts_per_step,
        gradient_accumulation_steps=1,
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
