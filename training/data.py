"""Training datasets for stage 1 and stage 2, as TRL's `GRPOTrainer` reads them.

Stage 2 prompts carry n = M(q), and M(q) changes during training (Eq. 8). The official code
writes its update under a key the dataset never reads, so it never reaches the prompts. Here
the prompt is built when a row is READ (``Dataset.with_transform``), from the live
`LengthMemory`: an update is in the next prompt built for that problem.

Prompt modes in stage 2 (beyond the paper, see docs/TRAINING.md, stage 2):

- ``inject``: the template's ``<think>`` followed by the statement with n = M(q) — the paper's
  format, and what a request's explicit ``reasoning_budget`` produces at serving time;
- ``self``: the template's ``<think>`` alone — the model writes its own statement (what the
  service does by default). A problem with no M(q) yet is always ``self``.
"""

from __future__ import annotations

import hashlib

from lapo import protocol as p
from lapo.prompt import chat_text, with_budget
from lapo.task import Problem
from lapo.think import LAPO_DEFAULT, ThinkProfile, profile_of
from lapo.training.rewards import LengthMemory


def checker_of(problem) -> str:
    return getattr(problem, "checker", "exact")


def chat_prompt(tokenizer, problem: Problem) -> str:
    """The chat-templated prompt; the template's generation prompt ends with ``<think>``."""
    return chat_text(tokenizer, problem.messages())


def stage1_dataset(problems: list[Problem], tokenizer):
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": chat_prompt(tokenizer, prob), "problem_id": prob.id, "answer": prob.answer,
         "checker": checker_of(prob)}
        for prob in problems
    ])


def prompt_mode(problem_id: str, seed: int, inject_share: float) -> str:
    """'inject' or 'self', fixed per problem by a hash (stable across epochs and resumes)."""
    h = int(hashlib.sha256(f"{seed}:{problem_id}".encode()).hexdigest()[:8], 16)
    return "inject" if h / 0xFFFFFFFF < inject_share else "self"


def build_stage2_prompt(base_prompt: str, mode: str, memory: LengthMemory,
                        problem_id: str, profile: ThinkProfile = LAPO_DEFAULT
                        ) -> tuple[str, int]:
    """(prompt, target): target is the injected n, or -1 when the model declares its own."""
    entry = memory.get(problem_id)
    if mode == "inject" and entry is not None:
        n = max(p.MIN_BUDGET, round(entry.median))
        return with_budget(base_prompt, n, profile), n
    return base_prompt, -1


def stage2_dataset(problems: list[Problem], tokenizer, memory: LengthMemory, seed: int,
                   inject_share: float = 0.5):
    """Rows whose ``prompt`` and ``target`` are computed from ``memory`` at read time."""
    from datasets import Dataset

    profile = profile_of(tokenizer)
    base = Dataset.from_list([
        {"base_prompt": chat_prompt(tokenizer, prob), "problem_id": prob.id,
         "answer": prob.answer, "mode": prompt_mode(prob.id, seed, inject_share),
         "checker": checker_of(prob)}
        for prob in problems
    ])

    def live(batch: dict) -> dict:
        prompts, targets = [], []
        for bp, mode, pid in zip(batch["base_prompt"], batch["mode"], batch["problem_id"],
                                 strict=True):
            prompt, target = build_stage2_prompt(bp, mode, memory, pid, profile)
            prompts.append(prompt)
            targets.append(target)
        return {"prompt": prompts, "target": targets, "problem_id": batch["problem_id"],
                "answer": batch["answer"], "mode": batch["mode"], "checker": batch["checker"]}

    return base.with_transform(live)
