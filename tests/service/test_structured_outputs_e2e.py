"""End to end: structured outputs on the real vLLM engine (xgrammar guided decoding), driven by
the `openai` SDK: ``.parse()`` with a pydantic model, a batch whose every ``stop``-finished
answer parses against its schema, the reasoning budget under a constraint, and a schema vLLM
cannot compile refused with a 400 naming ``response_format``."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from pydantic import BaseModel, ConfigDict, Field

from lapo.service.budget import BudgetLimits, hard_cap

pytestmark = pytest.mark.e2e

QUESTION = "Start with 7. Apply in order: +5, *2, -4. What is the final number?"
MESSAGES = [{"role": "user", "content": QUESTION}]
# The tiny model never saw JSON: unbounded, it writes digits until max_tokens. A bounded
# integer (a range xgrammar enforces) ends its answer, as a real schema's limits would.
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer", "minimum": -999,
                                                      "maximum": 999}},
          "required": ["answer"], "additionalProperties": False}
# The tiny model's reasoning is bounded (a hard budget) so that every choice reaches its
# constrained answer well inside max_tokens.
BOUNDED = {"reasoning_budget": 24, "budget_enforcement": "hard"}


class Answer(BaseModel):
    """SCHEMA as a pydantic model (what a strict schema parse checks)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    answer: int = Field(ge=-999, le=999)


def test_parse_returns_the_pydantic_model(server) -> None:
    completion = server.client().chat.completions.parse(
        model=server.model, messages=MESSAGES, response_format=Answer, max_tokens=256,
        seed=3, extra_body=BOUNDED)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop", choice
    assert isinstance(choice.message.parsed, Answer)
    # the reasoning stayed free text, outside the constrained content
    extra = choice.message.model_extra or {}
    assert extra.get("reasoning_content")
    assert json.loads(choice.message.content) == choice.message.parsed.model_dump()
    assert completion.usage.completion_tokens_details.reasoning_tokens > 0


def test_every_stopped_answer_of_a_batch_parses_against_its_schema(server) -> None:
    aclient = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="sk-test",
                                 max_retries=0, timeout=300)
    response_format = {"type": "json_schema",
                       "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}

    async def one(seed: int):
        return await aclient.chat.completions.create(
            model=server.model, messages=MESSAGES, response_format=response_format,
            max_tokens=160, seed=seed, temperature=0.8, extra_body=BOUNDED)

    async def batch():
        try:
            return await asyncio.gather(*(one(s) for s in range(50)))
        finally:
            await aclient.close()

    results = asyncio.run(batch())
    stopped = [r.choices[0] for r in results if r.choices[0].finish_reason == "stop"]
    for choice in stopped:
        Answer.model_validate_json(choice.message.content)  # raises unless it matches
    # nearly all finish (compact JSON, a bounded reasoning): the check above ran on them
    assert len(stopped) >= 45, [r.choices[0].finish_reason for r in results]
    for r in results:
        assert r.choices[0].model_extra["lapo"]["budget_source"] == "request"


@pytest.mark.parametrize("budget", [16, 40])
def test_the_reasoning_budget_holds_under_response_format(server, budget) -> None:
    r = server.client().chat.completions.create(
        model=server.model, messages=MESSAGES, max_tokens=256, seed=1,
        response_format={"type": "json_object"},
        extra_body={"reasoning_budget": budget, "budget_enforcement": "hard"})
    choice = r.choices[0]
    lapo = choice.model_extra["lapo"]
    assert lapo["declared_reasoning_tokens"] == budget
    assert lapo["budget_source"] == "request"
    # the hard cap (the server's default slack), then the constrained answer
    limits = BudgetLimits()
    assert lapo["actual_reasoning_tokens"] <= hard_cap(budget, limits.hard_slack_ratio,
                                                        limits.hard_slack_tokens)
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)


def test_a_schema_vllm_cannot_compile_is_a_400_naming_response_format(server) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(
            model=server.model, messages=MESSAGES, max_tokens=16,
            response_format={"type": "json_schema", "json_schema": {
                "name": "bad", "schema": {"type": "bogus"}}})
    error = err.value.response.json()["error"]
    assert err.value.status_code == 400 and error["param"] == "response_format", error
    assert "bogus" in error["message"]


def test_streamed_structured_answer_is_json(server) -> None:
    stream = server.client().chat.completions.create(
        model=server.model, messages=MESSAGES, max_tokens=160, seed=5, stream=True,
        extra_body={"structured_outputs": {"choice": ["yes", "no"]}, **BOUNDED})
    content, reasoning, finish = "", "", None
    for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            content += delta.content or ""
            reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop" and content in {"yes", "no"} and reasoning


def test_reasoning_effort_scales_the_models_budget_under_response_format(server) -> None:
    """Effort mode under a schema: the model's own statement, halved ("low"), is the budget
    the hard cap holds; the answer parses."""
    r = server.client().chat.completions.create(
        model=server.model, messages=MESSAGES, max_tokens=400, seed=2, reasoning_effort="low",
        response_format={"type": "json_schema",
                         "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}},
        extra_body={"budget_enforcement": "hard"})
    choice = r.choices[0]
    lapo = choice.model_extra["lapo"]
    limits = BudgetLimits()
    assert lapo["budget_source"] == "effort", lapo  # the default model always declares
    assert lapo["actual_reasoning_tokens"] <= hard_cap(
        lapo["declared_reasoning_tokens"], limits.hard_slack_ratio, limits.hard_slack_tokens)
    assert choice.finish_reason == "stop", choice
    Answer.model_validate_json(choice.message.content)
