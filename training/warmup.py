"""Budget-format warm-up before stage 2: hindsight-labelled rollouts of the stage-1 model.

The paper always puts the statement into the prompt, so its model only has to READ a budget.
Our served model must also WRITE one (when a request injects nothing) with a number that
predicts its own reasoning length. GRPO cannot discover that format from nothing, so before
stage 2 we teach it with the model's own behaviour:

1. sample k rollouts per training problem from the stage-1 model (real vLLM engine);
2. keep the correct ones;
3. label each with its actual budgeted length L (hindsight) and train (TRL `SFTTrainer`) on
   two forms:
   - injected: prompt ends with ``<think>`` + statement(L); completion = reasoning. Every
     correct rollout up to ``inject_percentile`` of its problem's correct lengths (default:
     all), so the model learns what a number MEANS over the whole range of lengths it
     produces: an injected n conditions how long it reasons (an explicit budget);
   - self-declared: prompt ends with ``<think>``; completion = statement(L) + reasoning.
     Only the correct rollouts at or below ``self_percentile`` (default P30, the lower bound
     of stage 1's range) of the lengths of ALL the problem's rollouts (with one or two
     correct ones, a percentile of the correct lengths alone selects nothing): what the
     model declares and does on its own is its efficient end, not the overthinking tail.

Because every label is the true length, a declared number and the reasoning after it agree
by construction. Stage 2 then rewards both: correct, honest, no longer than M(q) (Eq. 6-8).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from lapo import protocol as p
from lapo.checker import check
from lapo.engine import GenerationEngineConfig, generate_offline
from lapo.prompt import with_budget
from lapo.think import LAPO_DEFAULT, ThinkProfile, TokenCounter
from lapo.training.data import chat_prompt, checker_of
from lapo.training.lora import LoraConfig, load_trainable
from lapo.training.rewards import percentile
from lapo.training.sft import train_sft
from lapo.training.train_data import load_train_problems

logger = logging.getLogger(__name__)


@dataclass
class WarmupConfig:
    problems_per_level: int = 200
    samples_per_problem: int = 8
    # Which correct rollouts become injected-budget rows (a percentile of the problem's
    # correct lengths) and self-declared rows (a percentile of all its rollouts' lengths).
    inject_percentile: float = 100.0
    self_percentile: float = 30.0
    epochs: float = 5.0
    learning_rate: float = 5e-4
    batch_size: int = 32  # rows per device per step (each rank's, under a launcher)
    # The SFT's micro-batch when it differs from batch_size (None: batch_size) and its
    # accumulation: rows per optimizer step = per-device batch x accumulation x world size.
    per_device_train_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    # The SFT's device and precision (GPUs: use_cpu = false, bf16 = true), and its longest row
    # in tokens (prompt + statement + reasoning: at least the prompt plus max_tokens).
    use_cpu: bool = True
    bf16: bool = False
    gradient_checkpointing: bool = False
    max_length: int = 1024
    temperature: float = 1.0
    max_tokens: int = 448
    seed: int = 0
    # Keep only correct rollouts (the method). The toy test config turns it off: its
    # random-weight model solves nothing, and the rest of the path is the same.
    only_correct: bool = True

    def __post_init__(self) -> None:
        if self.use_cpu and self.bf16:
            raise ValueError("[warmup] use_cpu=True needs bf16=False (bf16 fails on CPU)")
        if self.max_length <= self.max_tokens:
            raise ValueError(
                f"[warmup] max_length ({self.max_length}) must hold the prompt, the statement "
                f"and up to max_tokens ({self.max_tokens}) of reasoning: raise it (e.g. to "
                f"{self.max_tokens + 512})")
        for name in ("batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"[warmup] {name} must be >= 1, got {getattr(self, name)}")
        if self.per_device_train_batch_size is not None and self.per_device_train_batch_size < 1:
            raise ValueError("[warmup] per_device_train_batch_size must be >= 1 (or unset), "
                             f"got {self.per_device_train_batch_size}")

    @property
    def micro_batch(self) -> int:
        return self.per_device_train_batch_size or self.batch_size


def collect_rows(model: Path, s: WarmupConfig, engine: GenerationEngineConfig,
                 train_data: str = "synthetic") -> tuple[list[dict], dict]:
    """The SFT rows from the stage-1 model's rollouts (one vLLM engine, ``engine``'s
    settings), shuffled, and their statistics."""
    from transformers import AutoTokenizer
    from vllm import SamplingParams

    tokenizer = AutoTokenizer.from_pretrained(model)
    problems = load_train_problems(train_data, s.problems_per_level, s.seed + 101)
    prompts = [chat_prompt(tokenizer, prob) for prob in problems]
    params = SamplingParams(n=s.samples_per_problem, temperature=s.temperature,
                            max_tokens=s.max_tokens, seed=s.seed, skip_special_tokens=True)
    counter = TokenCounter(tokenizer)
    # Token ids without added specials, as the service sends them (the template wrote them).
    engine_prompts = [{"prompt_token_ids": counter.encode(x)} for x in prompts]
    engine.check_fits(max(len(x["prompt_token_ids"]) for x in engine_prompts), s.max_tokens,
                      "[warmup]")
    outputs = generate_offline(engine.for_model(model), engine_prompts, params,
                               desc="warm-up rollouts")
    profile = counter.profile
    rows, correct_total, sampled, self_rows = [], 0, 0, 0
    lengths: dict[str, list[int]] = {}
    for prob, prompt, out in zip(problems, prompts, outputs, strict=True):
        good, every = [], []
        for o in out.outputs:
            sampled += 1
            counts = counter(o.token_ids)
            every.append(counts.budgeted_tokens)
            if s.only_correct and not check(prob.answer, o.text, checker_of(prob), profile):
                continue
            if counts.declared is None and counts.budgeted_tokens > 0:
                good.append((counts.budgeted_tokens, o.text))
        correct_total += len(good)
        if not good:
            continue
        lengths[prob.id] = [n for n, _ in good]
        for row, kind in warmup_rows(prompt, good, every, s.inject_percentile,
                                     s.self_percentile, profile):
            rows.append(row)
            self_rows += kind == "self"
    random.Random(s.seed).shuffle(rows)
    stats = {"sampled": sampled, "correct": correct_total, "rows": len(rows),
             "self_declared_rows": self_rows,
             "problems": len(problems), "correct_lengths": lengths}
    logger.info("warm-up data: %s", {k: v for k, v in stats.items() if k != "correct_lengths"})
    return rows, stats


def warmup_rows(prompt: str, good: list[tuple[int, str]], every: list[int],
                inject_percentile: float, self_percentile: float,
                profile: ThinkProfile = LAPO_DEFAULT) -> list[tuple[dict, str]]:
    """One problem's SFT rows, as (row, kind): ``good`` are its correct rollouts as
    ``(length, text)``, ``every`` the lengths of all its rollouts, correct or not. The
    statement goes where the checkpoint's ``profile`` says the think span starts.

    >>> [k for _, k in warmup_rows("P", [(10, "a"), (30, "b")], [10, 30, 40, 50], 100, 30)]
    ['inject', 'self', 'inject']
    """
    inject_cut = percentile([n for n, _ in good], inject_percentile)
    self_cut = percentile(every, self_percentile)
    out = []
    for n, text in good:
        body = profile.inside_span(text)
        if n <= inject_cut:
            out.append(({"prompt": with_budget(prompt, n, profile), "completion": body},
                        "inject"))
        if n <= self_cut:
            out.append(({"prompt": prompt,
                         "completion": profile.budget_prefix() + p.budget_statement(n) + body},
                        "self"))
    return out


def train_warmup(model: Path, out: Path, s: WarmupConfig, rows: list[dict],
                 run_dir: Path, lora: LoraConfig | None = None) -> dict:
    """SFT ``model`` on the warm-up ``rows`` (`lapo.training.sft`; on every rank under a
    launcher, each taking its share of the rows) and save it to ``out`` once."""
    from transformers import AutoTokenizer

    if not rows:
        raise RuntimeError("warm-up found no correct rollouts: the stage-1 model solves nothing")
    return train_sft(load_trainable(model, lora or LoraConfig()),
                     AutoTokenizer.from_pretrained(model), rows, out, run_dir / "warmup",
                     use_cpu=s.use_cpu, bf16=s.bf16,
                     gradient_checkpointing=s.gradient_checkpointing,
                     per_device_train_batch_size=s.micro_batch,
                     gradient_accumulation_steps=s.gradient_accumulation_steps,
                     epochs=s.epochs, learning_rate=s.learning_rate, max_length=s.max_length,
                     seed=s.seed, warmup_steps=10, logging_steps=10)


def fill_memory(memory, correct_lengths: dict[str, list[int]]) -> int:
    """Give problems stage 1 never solved (or never drew) an M(q) from the warm-up's rollouts.

    The warm-up samples the stage-1 model, i.e. the same discovery measurement; entries stage 1
    recorded are kept. Returns how many entries were added.
    """
    added = 0
    for pid, lengths in correct_lengths.items():
        if memory.get(pid) is None and lengths:
            memory.record(pid, lengths)
            added += 1
    return added
