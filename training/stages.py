"""LAPO stage 1 (discovery) and stage 2 (internalization) as TRL `GRPOTrainer` runs.

    stage 1: base model, plain prompts, `Stage1Reward` -> checkpoint + M(q) (length_memory.json)
    warm-up: teach the budget format (`lapo.training.warmup`) on the stage-1 model's own rollouts
    stage 2: live prompts with n = M(q) (or none: self-declared), `Stage2Reward`, Eq. 8 updates

Each writes a Hugging Face checkpoint and its M(q) (``length_memory.json``); the pipeline adds
the manifest. Under a launcher every rank trains (TRL spreads the rollouts over the ranks),
the rewards exchange each generation batch so every rank holds the same M(q)
(`lapo.training.rewards`), which is checked after training; the main process writes the files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lapo.think import TokenCounter
from lapo.training import distributed
from lapo.training.config import Stage1Config, Stage2Config
from lapo.training.data import stage1_dataset, stage2_dataset
from lapo.training.grpo import GRPOStageConfig, grpo_config
from lapo.training.lora import LoraConfig, carry_base_name, load_trainable
from lapo.training.rewards import LengthMemory, Stage1Reward, Stage2Reward
from lapo.training.train_data import load_train_problems

logger = logging.getLogger(__name__)
MEMORY_FILE = "length_memory.json"


def _trainer(model_path: Path, settings: GRPOStageConfig, reward, dataset, run_dir: Path,
             lora: LoraConfig):
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    model = load_trainable(model_path, lora)  # base + the parent's adapter, when LoRA
    return GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=grpo_config(settings, run_dir, distributed.world_size()),
        train_dataset=dataset,
        processing_class=tokenizer,
    ), tokenizer


def _save(trainer, tokenizer, out: Path, memory: LengthMemory, stage: str,
          parent: Path) -> None:
    """The checkpoint (through the trainer, once) and M(q), after checking every rank holds
    the same M(q)."""
    distributed.save_trained(trainer, tokenizer, out)
    if distributed.is_main():
        carry_base_name(parent, out)
    digest = memory.digest()
    logger.info("%s M(q): %d entries, digest %s (rank %d of %d)", stage, len(memory), digest,
                distributed.rank(), distributed.world_size())
    distributed.check_same(digest, f"{stage} M(q)")
    if distributed.is_main():
        (out / MEMORY_FILE).write_text(json.dumps(memory.to_json(), indent=1) + "\n")
    distributed.barrier()


def _history(trainer) -> list[dict]:
    keep = ("step", "reward", "reward_std", "completions/mean_length", "lapo/correct",
            "lapo/budgeted_tokens", "lapo/self_declared_share", "loss")
    return [{k: v for k, v in row.items() if k in keep} for row in trainer.state.log_history]


def run_stage1(base: Path, out: Path, settings: Stage1Config, run_dir: Path,
               train_data: str = "synthetic", lora: LoraConfig | None = None) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    problems = load_train_problems(train_data, settings.problems_per_level, settings.seed + 101)
    memory = LengthMemory()
    reward = Stage1Reward(TokenCounter(tokenizer), memory, alpha=settings.alpha)
    trainer, tokenizer = _trainer(base, settings, reward,
                                  stage1_dataset(problems, tokenizer), run_dir,
                                  lora or LoraConfig())
    trainer.train()
    _save(trainer, tokenizer, out, memory, "stage1", base)
    return {"memory": memory.stats(), "history": _history(trainer),
            "problems": len(problems)}


def run_stage2(parent: Path, out: Path, settings: Stage2Config, run_dir: Path,
               memory: LengthMemory, train_data: str = "synthetic",
               lora: LoraConfig | None = None) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(parent)
    problems = load_train_problems(train_data, settings.problems_per_level, settings.seed + 101)
    before = memory.stats()
    reward = Stage2Reward(TokenCounter(tokenizer), memory, beta=settings.beta,
                          sigma_frac=settings.sigma_frac)
    dataset = stage2_dataset(problems, tokenizer, memory, settings.seed,
                             settings.inject_share)
    trainer, tokenizer = _trainer(parent, settings, reward, dataset, run_dir,
                                  lora or LoraConfig())
    trainer.train()
    _save(trainer, tokenizer, out, memory, "stage2", parent)
    return {"memory_before": before, "memory": memory.stats(), "history": _history(trainer),
            "problems": len(problems)}
