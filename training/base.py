"""The "overthinking" base model: supervised (TRL `SFTTrainer`) on redundant reasoning traces.

On a 2-core CPU we cannot start from DeepSeek-R1-Distill, so we make the same situation at
small scale: a tiny Qwen2 from `lapo.tiny`, trained on `lapo.training.traces.overthinking` traces of
the chained-arithmetic task. It learns the chat format (``<think>reasoning</think>answer``), a
fallible skill at arithmetic, and the habit of re-checking, restating and detouring.

Run through the pipeline: ``lapo train --config configs/default.toml --only base``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lapo.prompt import chat_text
from lapo.protocol import budget_statement
from lapo.task import generate
from lapo.tiny import TinyConfig, build_model, build_tokenizer
from lapo.training.sft import train_sft
from lapo.training.traces import OverthinkConfig, completion, overthinking

logger = logging.getLogger(__name__)


@dataclass
class BaseConfig:
    seed: int = 0
    problems_per_level: int = 2000
    traces_per_problem: int = 1
    epochs: float = 1.0
    learning_rate: float = 2e-3
    batch_size: int = 32  # traces per device per step (each rank's, under a launcher)
    max_length: int = 512
    model: TinyConfig = field(default_factory=TinyConfig)
    overthink: OverthinkConfig = field(default_factory=OverthinkConfig)


def build_dataset_rows(cfg: BaseConfig, tokenizer) -> list[dict[str, str]]:
    """Prompt/completion strings: the chat template's prompt (ending in <think>) + trace."""
    rng = random.Random(cfg.seed)
    rows = []
    for prob in generate("train", cfg.problems_per_level, seed=cfg.seed):
        prompt = chat_text(tokenizer, prob.messages())
        for _ in range(cfg.traces_per_problem):
            trace = overthinking(prob, rng, cfg.overthink)
            rows.append({"prompt": prompt, "completion": completion(trace, prob)})
    rng.shuffle(rows)
    return rows


def train_base(cfg: BaseConfig, out: Path, run_dir: Path) -> dict:
    """Train the base model and save it to ``out``; returns training stats for the manifest.

    Under a launcher every rank builds the same tokenizer and initial model (both seeded) and
    trains on its share of the traces; the checkpoint is written once.
    """
    import torch

    torch.manual_seed(cfg.seed)
    # The tokenizer's merges are learned from the same kind of text it will see.
    rng = random.Random(cfg.seed + 1)
    sample = generate("train", 200, seed=cfg.seed + 1)
    corpus = [completion(overthinking(p, rng, cfg.overthink), p) + " " + p.question
              for p in sample]
    # The budget statement is part of the protocol the model will speak after LAPO: its words
    # get merged tokens now, so stage 2 teaches a short fixed phrase, not rare byte pieces.
    corpus += [budget_statement(rng.randint(10, 500)) for _ in range(200)]
    tokenizer = build_tokenizer(corpus, cfg.model.vocab_size)
    model = build_model(tokenizer, cfg.model)
    rows = build_dataset_rows(cfg, tokenizer)
    logger.info("base: %d traces, %d parameters", len(rows),
                sum(p.numel() for p in model.parameters()))
    stats = train_sft(model, tokenizer, rows, out, run_dir / "sft", use_cpu=True, bf16=False,
                      per_device_train_batch_size=cfg.batch_size, epochs=cfg.epochs,
                      learning_rate=cfg.learning_rate, max_length=cfg.max_length,
                      seed=cfg.seed, warmup_steps=50, logging_steps=25, disable_tqdm=False)
    return {
        **stats,
        "traces": len(rows),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "config": asdict(cfg),
    }
