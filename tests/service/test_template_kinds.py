"""One think profile per checkpoint, read by every consumer: for the same completion of a
checkpoint of each chat-template kind, the stage-1 reward, the warm-up row builder,
evaluation and the service (on the scripted engine) count the same reasoning tokens and
reach the same correctness.

Kinds (tiny tokenizers, no weights; `lapo.tiny.TEMPLATES`): ours and DeepSeek-R1-Distill's
(the template opens ``<think>``), Qwen3's (the model writes it) and plain ChatML without
think tags (SmolLM2-Instruct: everything is the answer).
"""

from __future__ import annotations

import functools

import pytest
from fake_engine import CORPUS, MESSAGES, FakeEngine

from lapo import protocol as p
from lapo.evaluation.backends import build_prompt, score
from lapo.evaluation.data import EvalItem
from lapo.prompt import Prompt, with_budget
from lapo.service.budget import BudgetPlan
from lapo.service.generation import ChoiceJob, ChoiceResult, SamplingSpec, run_choice
from lapo.think import TokenCounter
from lapo.tiny import build_tokenizer
from lapo.training.rewards import LengthMemory, Stage1Reward
from lapo.training.warmup import warmup_rows

REASONING = " First 3+4=7. Check: 7."
# kind: (opens, completion in the model's words, reasoning it holds, answer)
KINDS = {
    "lapo": ("prompt", REASONING + "</think>7", REASONING, "7"),
    "r1": ("prompt", REASONING + "</think>7", REASONING, "7"),
    "qwen3": ("model", "<think>" + REASONING + "</think>7", REASONING, "7"),
    "chatml": ("none", "3+4=7, so the answer is 7", "", "3+4=7, so the answer is 7"),
}
ITEM = EvalItem("q1", 1, MESSAGES, "7", "exact")


@functools.cache
def tokenizer(kind: str):
    return build_tokenizer(CORPUS, 384, kind)


def counter(kind: str) -> TokenCounter:
    return TokenCounter(tokenizer(kind))


def completion_ids(kind: str, text: str) -> list[int]:
    tok = tokenizer(kind)
    return tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]


async def served(kind: str, text: str, plan: BudgetPlan = BudgetPlan("auto")
                 ) -> tuple[FakeEngine, ChoiceResult]:
    fake = FakeEngine({"main": text}, tokenizer=tokenizer(kind))
    model = fake.handle()
    job = ChoiceJob(Prompt.chat(MESSAGES, model.tok), SamplingSpec(0.6, 0.95, 256, 0, None),
                    plan)
    result = None
    async for item in run_choice(model, job):
        result = item
    assert isinstance(result, ChoiceResult)
    return fake, result


@pytest.mark.parametrize("kind", KINDS)
def test_profile_of_each_kind(kind) -> None:
    profile = counter(kind).profile
    assert profile.opens == KINDS[kind][0]
    assert profile.tags == ("none" if kind == "chatml" else "token")
    assert profile.prompt_suffix == ("\n" if kind == "r1" else "")
    assert profile.enable_thinking is (kind == "qwen3")
    assert "<|im_end|>" in profile.end_tokens


@pytest.mark.parametrize("kind", KINDS)
async def test_every_consumer_counts_the_same(kind) -> None:
    _, text, reasoning, answer = KINDS[kind]
    c = counter(kind)
    ids = completion_ids(kind, text)
    n_reasoning = len(c.encode(reasoning))
    counts = c(ids)
    assert (counts.reasoning_tokens, counts.budgeted_tokens) == (n_reasoning, n_reasoning)
    assert counts.answer_tokens == len(c.encode(answer))
    assert c.profile.split(text).answer == answer

    # training: the stage-1 reward (correct, and M(q) records this length)
    memory = LengthMemory()
    rewards = Stage1Reward(c, memory)(prompts=["P"], completions=[text],
                                      completion_ids=[ids], problem_id=["q1"], answer=["7"])
    assert rewards[0] >= 1.0
    assert memory.get("q1").median == n_reasoning

    # evaluation: the same checker and counts
    sample = score(ITEM, text, ids, c)
    assert sample.correct is True
    assert (sample.reasoning_tokens, sample.budgeted_tokens) == (n_reasoning, n_reasoning)

    # serving: the split the client sees, and the same counts
    _, result = await served(kind, text)
    assert (result.reasoning, result.answer) == (reasoning, answer)
    assert result.counts == counts
    assert result.source == "none" and result.declared is None


@pytest.mark.parametrize("kind", ["lapo", "r1", "qwen3"])
async def test_a_budget_goes_where_the_span_starts(kind) -> None:
    """Warm-up rows, evaluation's --budget and the service's reasoning_budget all put the
    statement right after the one <think> (the template's or one written for the model)."""
    c = counter(kind)
    base = Prompt.chat(MESSAGES, c).text
    stated = with_budget(base, 9, c.profile)
    assert stated.count(p.THINK_OPEN) == 1 and stated.endswith(p.budget_statement(9))
    assert build_prompt(tokenizer(kind), ITEM, 9, c.profile) == stated

    _, text, reasoning, _ = KINDS[kind]
    good = [(len(c.encode(reasoning)), text)]
    rows = dict((k, row) for row, k in warmup_rows(base, good, [good[0][0]], 100, 100,
                                                   c.profile))
    n = good[0][0]
    assert rows["inject"]["prompt"] == with_budget(base, n, c.profile)
    assert rows["inject"]["completion"] == REASONING + "</think>7"  # no second <think>
    self_text = rows["self"]["completion"]
    assert p.parse_budget(c.profile.split(self_text).reasoning) == n
    self_counts = c(completion_ids(kind, self_text))
    assert (self_counts.declared, self_counts.budgeted_tokens) == (n, n)

    # served with an injected budget: the prompt the engine got is the same text
    fake, result = await served(kind, REASONING + "</think>7", BudgetPlan("request", 9))
    assert fake.calls[0].prompt_text.endswith(stated[len(base):])
    assert fake.calls[0].prompt_text.count(p.THINK_OPEN) == 1
    assert (result.reasoning, result.answer) == (REASONING, "7")
    assert (result.source, result.declared) == ("request", 9)
    assert result.counts.budgeted_tokens == len(c.encode(REASONING))


def test_a_plain_model_takes_no_budget() -> None:
    profile = counter("chatml").profile
    with pytest.raises(ValueError, match="does not reason"):
        with_budget("P", 9, profile)


async def test_a_qwen3_model_that_skips_thinking_answers_in_content() -> None:
    text = "7"
    _, result = await served("qwen3", text)
    assert (result.reasoning, result.answer) == ("", "7")
    assert score(ITEM, text, completion_ids("qwen3", text), counter("qwen3")).correct


@pytest.mark.parametrize(("field", "value"), [("reasoning_budget", 40),
                                              ("reasoning_effort", "low"),
                                              ("budget_enforcement", "hard")])
def test_budgets_on_a_plain_model_get_a_clear_400(field, value) -> None:
    from lapo.service.chat import ChatService
    from lapo.service.errors import APIError
    from lapo.service.schemas import ChatCompletionRequest
    from lapo.service.settings import Settings

    model = FakeEngine({}, tokenizer=tokenizer("chatml")).handle()
    req = ChatCompletionRequest(model=model.name, messages=MESSAGES, **{field: value})
    with pytest.raises(APIError) as err:
        ChatService(Settings()).check_limits(req, model)
    assert (err.value.status, err.value.param, err.value.code) == (
        400, field, "unsupported_parameter")
    assert repr(value) in err.value.message and "think span" in err.value.message
    # Without them the same request is served.
    ChatService(Settings()).check_limits(
        ChatCompletionRequest(model=model.name, messages=MESSAGES), model)
