"""A reasoning base from a plain instruct model, in the model's own words.

LAPO rewards and budgets the reasoning inside a think span; a plain instruct checkpoint
(SmolLM2-Instruct: think profile ``none``) has none. This stage makes one:

1. sample the imported model's own step-by-step solutions to the training problems (one vLLM
   engine; the task's prompt asks it to think step by step, then answer after "Answer:");
2. keep the correct ones (the task's own verifier) and cut each at its last "Answer:": what
   precedes is the reasoning, that line is the answer;
3. a chat template whose generation prompt opens the span (the model's own template plus
   ``<think>\\n``: the tags are text, so the vocabulary stays the base's and a LoRA adapter on
   the imported base serves it);
4. a short format SFT (TRL `SFTTrainer`, PEFT LoRA when ``[lora]`` is on) on
   ``prompt <think>\\n`` -> ``reasoning \\n</think>\\n Answer: x``.

The base's lengths are then the real model's (its own traces), not a trace writer's.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from lapo import protocol as p
from lapo.checker import check
from lapo.engine import GenerationEngineConfig, generate_offline
from lapo.prompt import chat_text
from lapo.rgym import ANSWER_RE, extract_answer
from lapo.think import TokenCounter, profile_of
from lapo.training.data import checker_of
from lapo.training.lora import LoraConfig, load_trainable, name_base
from lapo.training.sft import train_sft
from lapo.training.train_data import load_train_problems

logger = logging.getLogger(__name__)
OPEN_SUFFIX = "<think>\n"


@dataclass
class ReasoningBaseConfig:
    problems_per_level: int = 100  # training problems sampled (per task and level)
    samples_per_problem: int = 8
    temperature: float = 0.7
    max_tokens: int = 256
    traces_per_problem: int = 2  # distinct correct traces kept per problem
    min_reasoning_words: int = 3  # a trace must reason before it answers
    epochs: float = 2.0
    learning_rate: float = 1e-3
    batch_size: int = 16
    max_length: int = 768
    use_cpu: bool = True
    bf16: bool = False
    seed: int = 0


def reasoning_template(template: str) -> str:
    """The model's chat template with ``<think>\\n`` after its generation prompt."""
    return template + "{% if add_generation_prompt %}" + OPEN_SUFFIX + "{% endif %}"


def reasoning_tokenizer(folder: Path):
    """The imported model's tokenizer with the reasoning template (same vocabulary)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not tokenizer.chat_template:
        raise ValueError(f"{folder} has no chat template to open a think span in")
    tokenizer.chat_template = reasoning_template(tokenizer.chat_template)
    profile = profile_of(tokenizer)
    if profile.opens != "prompt":
        raise ValueError(f"the reasoning template of {folder} does not open <think> in its "
                         f"generation prompt (think profile opens {profile.opens!r})")
    return tokenizer


def split_trace(text: str, min_words: int = 3) -> tuple[str, str] | None:
    """(reasoning, answer line) of a plain completion the verifier accepted: the reasoning is
    the text before its last "Answer:" (all of it when there is none), the answer line
    "Answer: x" with x as the verifier read it. None when too little reasoning precedes it.

    >>> split_trace("2 + 3 = 5. Then 5 + 4 = 9.\\nAnswer: **9**\\nHope it helps")
    ('2 + 3 = 5. Then 5 + 4 = 9.', 'Answer: 9')
    >>> split_trace("First 2 + 3 = 5, then 5 + 4 = 9. The result is 9.")
    ('First 2 + 3 = 5, then 5 + 4 = 9. The result is 9.', 'Answer: 9')
    >>> split_trace("Answer: 9") is None
    True
    """
    got = extract_answer(text)
    if got is None or p.THINK_OPEN in text or p.THINK_CLOSE in text:
        return None
    matches = list(ANSWER_RE.finditer(text))
    reasoning = (text[:matches[-1].start()] if matches else text).strip()
    if len(reasoning.split()) < min_words:
        return None
    return reasoning, f"Answer: {got}"


def format_completion(reasoning: str, answer: str) -> str:
    return f"{reasoning}\n{p.THINK_CLOSE}\n{answer}"


def collect_traces(model: Path, s: ReasoningBaseConfig, engine: GenerationEngineConfig,
                   train_data: str, tokenizer) -> tuple[list[dict], dict]:
    """SFT rows from the plain model's own correct solutions, and their statistics."""
    from transformers import AutoTokenizer
    from vllm import SamplingParams

    plain = AutoTokenizer.from_pretrained(model)
    profile = profile_of(plain)
    problems = load_train_problems(train_data, s.problems_per_level, s.seed + 11)
    counter = TokenCounter(plain, profile)
    prompts = [chat_text(plain, prob.messages()) for prob in problems]
    engine_prompts = [{"prompt_token_ids": counter.encode(x)} for x in prompts]
    engine.check_fits(max(len(x["prompt_token_ids"]) for x in engine_prompts), s.max_tokens,
                      "[reasoning_base]")
    params = SamplingParams(n=s.samples_per_problem, temperature=s.temperature,
                            max_tokens=s.max_tokens, seed=s.seed, skip_special_tokens=True)
    outputs = generate_offline(engine.for_model(model), engine_prompts, params,
                               desc="reasoning base: own solutions")
    rows, per_level = [], defaultdict(lambda: {"sampled": 0, "correct": 0, "kept": 0,
                                               "problems_solved": 0, "problems": 0})
    kept_lengths = []
    for prob, out in zip(problems, outputs, strict=True):
        level = per_level[getattr(prob, "level", 0)]
        level["problems"] += 1
        seen, solved = set(), False
        for o in out.outputs:
            level["sampled"] += 1
            if not check(prob.answer, o.text, checker_of(prob), profile):
                continue
            level["correct"] += 1
            solved = True
            trace = split_trace(o.text, s.min_reasoning_words)
            if trace is None or trace in seen or len(seen) >= s.traces_per_problem:
                continue
            seen.add(trace)
            level["kept"] += 1
            kept_lengths.append(len(counter.encode(trace[0])))
            rows.append({"prompt": chat_text(tokenizer, prob.messages()),
                         "completion": format_completion(*trace)})
        level["problems_solved"] += solved
    random.Random(s.seed).shuffle(rows)
    stats = {
        "problems": len(problems), "rows": len(rows),
        "per_level": {str(k): {**v, "pass_at_1": round(v["correct"] / max(1, v["sampled"]), 4)}
                      for k, v in sorted(per_level.items())},
        "mean_reasoning_tokens": round(sum(kept_lengths) / max(1, len(kept_lengths)), 1),
    }
    logger.info("reasoning base data: %s", stats)
    return rows, stats


def train_reasoning_base(model: Path, out: Path, s: ReasoningBaseConfig,
                         lora: LoraConfig, rows: list[dict], run_dir: Path,
                         base_ref: str) -> dict:
    """Format SFT of ``model`` on ``rows`` with the reasoning template; saves to ``out``."""
    if not rows:
        raise RuntimeError("the reasoning base found no correct solution with reasoning in the "
                           "model's own samples: raise [reasoning_base] samples_per_problem or "
                           "use easier problems")
    stats = train_sft(load_trainable(model, lora), reasoning_tokenizer(model), rows, out,
                      run_dir / "reasoning_base", use_cpu=s.use_cpu, bf16=s.bf16,
                      per_device_train_batch_size=s.batch_size, epochs=s.epochs,
                      learning_rate=s.learning_rate, max_length=s.max_length, seed=s.seed,
                      warmup_steps=5, logging_steps=5)
    name_base(out, base_ref)
    return {**stats, "lora": lora.enabled}
