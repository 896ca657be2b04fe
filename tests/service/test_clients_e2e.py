"""End to end: the client libraries apps use, against `lapo serve` on the real engine.

Each test asserts what the client returned (a parsed object, a tool call with parsed arguments,
a final output), not only that no exception was raised. The default model is a 1M-parameter
toy: its reasoning is bounded (a hard budget) so every answer reaches its constrained part, and
integers in schemas are bounded (it never saw JSON; an unbounded integer runs to max_tokens).
"""

from __future__ import annotations

import json
import os
from typing import Annotated

import pytest
from pydantic import BaseModel, ConfigDict, Field

pytestmark = pytest.mark.e2e

QUESTION = "Start with 7. Apply in order: +5, *2, -4. What is the final number?"
BOUNDED = {"reasoning_budget": 24, "budget_enforcement": "hard"}


class Answer(BaseModel):
    """A structured answer (a bounded integer: the grammar ends it)."""

    model_config = ConfigDict(extra="forbid")
    answer: int = Field(ge=-999, le=999)


# A tool argument bounded for the toy model (module level: annotations are resolved here).
Small = Annotated[int, Field(ge=0, le=99)]


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


# The tool's parameters as JSON schema, bounded for the toy model.
ADD_PARAMETERS = {"type": "object", "additionalProperties": False, "required": ["a", "b"],
                  "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                 "b": {"type": "integer", "minimum": 0, "maximum": 99}}}


# -- LangChain --------------------------------------------------------------------------------

def _langchain(server, **kw):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=server.model, base_url=f"{server.url}/v1", api_key="sk-test",
                      max_retries=0, timeout=120, max_tokens=128, extra_body=BOUNDED, **kw)


def test_langchain_with_structured_output_json_schema(server) -> None:
    llm = _langchain(server, seed=3)
    result = llm.with_structured_output(Answer, method="json_schema").invoke(QUESTION)
    assert isinstance(result, Answer)


def test_langchain_bind_tools_round_trip(server) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import StructuredTool

    tool = StructuredTool.from_function(add, args_schema=ADD_PARAMETERS)
    llm = _langchain(server, seed=4)
    messages = [HumanMessage("Use the add tool to add 3 and 4.")]
    call_message = llm.bind_tools([tool], tool_choice="add").invoke(messages)
    assert len(call_message.tool_calls) == 1
    call = call_message.tool_calls[0]
    assert call["name"] == "add" and set(call["args"]) == {"a", "b"}
    assert all(isinstance(v, int) for v in call["args"].values())
    messages += [call_message, ToolMessage(str(tool.invoke(call["args"])),
                                           tool_call_id=call["id"])]
    # The toy model loses its way under a long tools block (docs/SERVING.md, tool calling):
    # the answer to the tool's result is asked with tool_choice "none" (history rendered,
    # no tools block), and must finish.
    final = llm.bind_tools([tool], tool_choice="none").invoke(messages)
    assert isinstance(final.content, str) and final.content
    assert not final.tool_calls
    assert final.response_metadata["finish_reason"] == "stop"


# -- LiteLLM ----------------------------------------------------------------------------------

def _litellm():
    # Offline: LiteLLM otherwise fetches its model cost map from the internet at import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


def test_litellm_structured_output_and_reasoning_content(server) -> None:
    litellm = _litellm()
    response = litellm.completion(
        model=f"openai/{server.model}", api_base=f"{server.url}/v1", api_key="sk-test",
        messages=[{"role": "user", "content": QUESTION}], response_format=Answer,
        max_tokens=128, seed=3, extra_body=BOUNDED, num_retries=0)
    message = response.choices[0].message
    assert response.choices[0].finish_reason == "stop"
    assert isinstance(Answer.model_validate_json(message.content), Answer)
    assert message.reasoning_content
    assert response.usage.completion_tokens_details.reasoning_tokens > 0


def test_litellm_tool_call(server) -> None:
    litellm = _litellm()
    response = litellm.completion(
        model=f"openai/{server.model}", api_base=f"{server.url}/v1", api_key="sk-test",
        messages=[{"role": "user", "content": "Add 3 and 4 with the add tool."}],
        tools=[{"type": "function", "function": {"name": "add", "parameters": ADD_PARAMETERS}}],
        tool_choice="required", parallel_tool_calls=False, max_tokens=128, seed=3,
        extra_body=BOUNDED, num_retries=0)
    assert response.choices[0].finish_reason == "tool_calls"
    (call,) = response.choices[0].message.tool_calls
    assert call.function.name == "add" and set(json.loads(call.function.arguments)) == {"a", "b"}


# -- instructor -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["JSON_SCHEMA", "TOOLS"])
def test_instructor_returns_the_model(server, mode) -> None:
    import instructor

    client = instructor.from_openai(server.client(), mode=getattr(instructor.Mode, mode))
    result = client.chat.completions.create(
        model=server.model, response_model=Answer, max_retries=0, max_tokens=128, seed=3,
        messages=[{"role": "user", "content": QUESTION}], extra_body=BOUNDED)
    assert isinstance(result, Answer)


# -- OpenAI Agents SDK ------------------------------------------------------------------------

def _agent_run(server, model_kind: str):
    from dataclasses import replace

    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        RunHooks,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # no trace export (no OpenAI account here)
    client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="sk-test", max_retries=0,
                         timeout=120)
    model_cls = (OpenAIResponsesModel if model_kind == "responses"
                 else OpenAIChatCompletionsModel)
    calls: list[tuple[int, int]] = []

    @function_tool
    def add_numbers(a: Small, b: Small) -> int:
        """Add two integers."""
        calls.append((a, b))
        return a + b

    class AnswerAfterTheTool(RunHooks):
        """The first turn must call the tool; the turn after its result must answer. (The
        toy model loses its way under a tools block, so "auto" is not used: docs/SERVING.md.)"""

        async def on_tool_end(self, context, agent, tool, result) -> None:
            agent.model_settings = replace(agent.model_settings, tool_choice="none")

    agent = Agent(name="calculator", instructions="Use the tool to add numbers.",
                  tools=[add_numbers], model=model_cls(model=server.model, openai_client=client),
                  reset_tool_choice=False,
                  # greedy: the SDK sends no seed, and a sampled toy may ramble past max_tokens
                  model_settings=ModelSettings(tool_choice="required", parallel_tool_calls=False,
                                               temperature=0.0, max_tokens=256,
                                               extra_body=BOUNDED))
    result = Runner.run_sync(agent, "Add 3 and 4.", max_turns=4, hooks=AnswerAfterTheTool())
    return result, calls


@pytest.mark.parametrize("model_kind", ["responses", "chat_completions"])
def test_agents_sdk_runs_a_function_tool_and_answers(server, model_kind) -> None:
    from agents.items import ToolCallItem, ToolCallOutputItem

    result, calls = _agent_run(server, model_kind)
    kinds = [type(item) for item in result.new_items]
    assert ToolCallItem in kinds and ToolCallOutputItem in kinds, kinds
    assert len(calls) >= 1 and all(0 <= v <= 99 for call in calls for v in call)
    assert isinstance(result.final_output, str) and result.final_output
