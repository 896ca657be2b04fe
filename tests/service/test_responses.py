"""``POST /v1/responses`` on the scripted fake engine: a Responses request becomes the chat
request it means (messages, limits, budgets, formats, tools), the chat completion becomes a
Responses object the openai SDK's types accept, the stream is the Responses event sequence,
and what a stateless server cannot do is a 400 naming the field. No vLLM engine runs."""

from __future__ import annotations

import json

import pytest
from fake_engine import FakeEngine, served_client
from fastapi.testclient import TestClient
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from lapo import protocol as p
from lapo.service import responses
from lapo.service.app import create_app
from lapo.service.errors import APIError
from lapo.service.responses_schemas import ResponsesRequest
from lapo.service.settings import Settings
from lapo.service.state import service_state

REASONING = p.budget_statement(12) + " First 3+4=7."
ANSWER = "7"
EVENTS = TypeAdapter(ResponseStreamEvent)


@pytest.fixture
def served(tmp_path):
    fake = FakeEngine(lambda call: REASONING + "</think>" + ANSWER)
    with served_client(tmp_path, fake) as c:
        yield c, fake


def post(client, **fields):
    return client.post("/v1/responses", json={"model": "tiny", **fields})


def request(**fields) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "tiny", "input": "hi", **fields})


def sse(text: str) -> list[dict]:
    """Each event's data, after checking its ``event:`` line names its type."""
    out = []
    for block in text.strip().split("\n\n"):
        head, data = block.split("\n", 1)
        body = json.loads(data.removeprefix("data: "))
        assert head == f"event: {body['type']}"
        out.append(body)
    return out


# ------------------------------------------------------------------ translation


def test_input_items_become_chat_messages() -> None:
    req = request(instructions="Be brief.", input=[
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "What is "}, {"type": "input_text",
                                                                  "text": "3+4?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [],
         "content": [{"type": "reasoning_text", "text": "old thoughts"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Let me add.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "add",
         "arguments": '{"a": 3, "b": 4}', "status": "completed"},
        {"type": "function_call", "call_id": "call_2", "name": "add", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "7"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "0"}]},
    ])
    assert responses.chat_messages(req) == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": "What is 3+4?"},
        {"role": "assistant", "content": "Let me add.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "add", "arguments": '{"a": 3, "b": 4}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "add", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "7"},
        {"role": "tool", "tool_call_id": "call_2", "content": "0"},
    ]


def test_a_string_input_is_one_user_message() -> None:
    chat = responses.to_chat(request(input="What is 3+4?", max_output_tokens=50,
                                     temperature=0.2, top_p=0.5, user="u1",
                                     reasoning={"effort": "low", "summary": "auto"},
                                     reasoning_budget=9, budget_enforcement="hard"))
    assert [m.model_dump(exclude_none=True) for m in chat.messages] == [
        {"role": "user", "content": "What is 3+4?"}]
    assert (chat.max_completion_tokens, chat.temperature, chat.top_p, chat.user) == (
        50, 0.2, 0.5, "u1")
    assert (chat.reasoning_effort, chat.reasoning_budget, chat.budget_enforcement) == (
        "low", 9, "hard")
    assert chat.n == 1 and chat.stream is False


def test_unset_sampling_keeps_the_chat_defaults() -> None:
    chat = responses.to_chat(request())
    assert (chat.temperature, chat.top_p, chat.completion_limit) == (0.6, 0.95, None)


@pytest.mark.parametrize(("fmt", "expected"), [
    ({"type": "text"}, {"type": "text", "json_schema": None}),
    ({"type": "json_object"}, {"type": "json_object", "json_schema": None}),
    ({"type": "json_schema", "name": "answer", "strict": True,
      "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}},
     {"type": "json_schema", "json_schema": {
         "name": "answer", "strict": True, "description": None,
         "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}),
])
def test_text_format_is_chat_response_format(fmt, expected) -> None:
    chat = responses.to_chat(request(text={"format": fmt}))
    assert chat.response_format.model_dump(by_alias=True) == expected


def test_tools_are_sent_in_chat_shape() -> None:
    req = request(tools=[{"type": "function", "name": "add", "description": "a+b",
                          "parameters": {"type": "object"}, "strict": True}],
                  tool_choice={"type": "function", "name": "add"}, parallel_tool_calls=False)
    chat = responses.to_chat(req)
    dumped = chat.model_dump(exclude_none=True)
    assert dumped["tools"] == [{"type": "function", "function": {
        "name": "add", "description": "a+b", "parameters": {"type": "object"},
        "strict": True}}]
    assert dumped["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert dumped["parallel_tool_calls"] is False


def test_chat_errors_name_the_responses_field() -> None:
    exc = responses.renamed(APIError(400, "'max_completion_tokens' is 9000, but ...",
                                     param="max_completion_tokens"))
    assert exc.param == "max_output_tokens" and exc.message.startswith("'max_output_tokens'")
    assert responses.renamed(APIError(400, "x", param="messages.3.content")).param == "input"
    named = responses.renamed(APIError(400, "'tools.0.function.name' is taken",
                                       param="tools.0.function.name"))
    assert named.message == "'tools.0.name' is taken"
    assert responses.renamed(APIError(400, "x", param="tools.0.function.name")).param == (
        "tools.0.name")


# ------------------------------------------------------------------ the HTTP route


def test_a_response_with_reasoning_usage_and_lapo(served) -> None:
    client, fake = served
    r = post(client, input="What is 3+4?", instructions="Answer with a number.",
             max_output_tokens=64, metadata={"run": "a"}, store=False, include=[],
             reasoning={"effort": "medium"})
    assert r.status_code == 200, r.text
    body = r.json()
    resp = Response.model_validate(body)
    assert resp.id.startswith("resp_") and resp.status == "completed"
    reasoning, message = resp.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert "First 3+4=7." in reasoning.content[0].text
    assert message.type == "message" and message.content[0].text == ANSWER
    assert resp.output_text == ANSWER
    assert resp.usage.output_tokens_details.reasoning_tokens == body["lapo"]["reasoning_tokens"]
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    assert resp.metadata == {"run": "a"} and resp.instructions == "Answer with a number."
    assert resp.max_output_tokens == 64 and body["store"] is False
    assert body["lapo"]["budget_source"] == "effort"
    assert r.headers["x-lapo-budget-source"] == "effort"
    # the instructions came first, as a system message
    assert "Answer with a number." in fake.calls[-1].prompt_text


def test_max_output_tokens_reached_is_incomplete(served) -> None:
    client, _ = served
    r = post(client, input="What is 3+4?", max_output_tokens=3)
    body = r.json()
    resp = Response.model_validate(body)
    assert resp.status == "incomplete"
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.usage.output_tokens == 3


def test_the_stream_is_the_responses_event_sequence(served) -> None:
    client, _ = served
    r = post(client, input="What is 3+4?", stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    for e in events:
        EVENTS.validate_python(e)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    head = ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[:3] == head
    reasoning_deltas = [e["delta"] for e in events if e["type"] ==
                        "response.reasoning_text.delta"]
    text_deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(text_deltas) == ANSWER
    compact = [k for i, k in enumerate(kinds) if not (i and k == kinds[i - 1])]
    assert compact == head + [
        "response.reasoning_text.delta", "response.reasoning_text.done",
        "response.output_item.done", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    final = Response.model_validate(events[-1]["response"])
    assert final.output[0].content[0].text == "".join(reasoning_deltas)
    assert final.output_text == ANSWER
    assert final.usage.output_tokens_details.reasoning_tokens > 0
    assert events[-1]["response"]["lapo"]["reasoning_tokens"] == (
        final.usage.output_tokens_details.reasoning_tokens)
    done = events[-2]["item"]
    assert done["type"] == "message" and done["status"] == "completed"


def test_a_stream_cut_by_max_output_tokens_ends_incomplete(served) -> None:
    client, _ = served
    events = sse(post(client, input="q", stream=True, max_output_tokens=3).text)
    assert events[-1]["type"] == "response.incomplete"
    final = Response.model_validate(events[-1]["response"])
    assert final.incomplete_details.reason == "max_output_tokens"
    # no answer text: an empty message item still closes the output
    assert final.output[-1].type == "message"


def test_chat_stream_faults_become_an_error_event() -> None:
    async def chunks():
        yield 'data: {"error": {"message": "The engine failed while generating.", ' \
              '"type": "server_error", "param": null, "code": null}}\n\n'

    async def run():
        return [e async for e in responses.events(request(), "tiny", chunks())]

    import asyncio

    events = sse("".join(asyncio.run(run())))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress",
                                           "error"]
    EVENTS.validate_python(events[-1])


def test_chat_tool_calls_become_function_call_items() -> None:
    completion = {"model": "tiny", "choices": [{
        "index": 0, "finish_reason": "tool_calls", "lapo": None,
        "message": {"role": "assistant", "content": None, "reasoning_content": "think",
                    "tool_calls": [{"id": "call_9", "type": "function",
                                    "function": {"name": "add", "arguments": '{"a": 1}'}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9,
                  "completion_tokens_details": {"reasoning_tokens": 2}}}
    resp = Response.model_validate(responses.from_chat(request(), completion).model_dump())
    reasoning, call = resp.output
    assert reasoning.type == "reasoning"
    assert (call.type, call.call_id, call.name, call.arguments) == (
        "function_call", "call_9", "add", '{"a": 1}')
    assert call.id.startswith("fc_") and resp.status == "completed"


def test_streamed_tool_call_deltas_become_function_call_events() -> None:
    out = responses.EventStream(request(), "tiny")
    chunks = [
        {"choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "add", "arguments": '{"a":'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": " 1}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4,
                                  "total_tokens": 9,
                                  "completion_tokens_details": {"reasoning_tokens": 1}}},
    ]
    text = "".join([*out.start(), *(t for c in chunks for t in out.chunk(c)), *out.end()])
    events = sse(text)
    for e in events:
        EVENTS.validate_python(e)
    kinds = [e["type"] for e in events]
    assert kinds[-6:] == ["response.output_item.added",
                          "response.function_call_arguments.delta",
                          "response.function_call_arguments.delta",
                          "response.function_call_arguments.done",
                          "response.output_item.done", "response.completed"]
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == '{"a": 1}' and done["name"] == "add"
    final = Response.model_validate(events[-1]["response"])
    assert [i.type for i in final.output] == ["reasoning", "function_call"]
    assert final.output[1].call_id == "call_1"


@pytest.mark.parametrize(("fields", "param"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"background": True}, "background"),
    ({"tools": [{"type": "web_search"}]}, "tools"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "tools"),
    ({"truncation": "auto"}, "truncation"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"include": ["message.output_text.logprobs"]}, "include.0"),
    ({"reasoning": {"effort": "minimal"}}, "reasoning.effort"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
    ({"text": {"format": {"type": "text", "schema": {"type": "object"}}}}, "text.format"),
    ({"input": ["hi"]}, "input.0"),  # the item's own error, not "input.str"
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]},
     "input"),
    ({"input": []}, "input"),
])
def test_what_a_stateless_text_server_cannot_do_is_a_400_naming_it(served, fields,
                                                                    param) -> None:
    client, fake = served
    r = post(client, **{"input": "hi", **fields})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"].startswith(param), error
    assert not fake.calls


def test_the_stateless_refusal_says_why(served) -> None:
    client, _ = served
    error = post(client, input="hi", previous_response_id="resp_1").json()["error"]
    assert "stateless" in error["message"] and "input" in error["message"]


def test_chat_limits_name_the_responses_field(served) -> None:
    client, _ = served
    error = post(client, input="hi", max_output_tokens=10**6).json()["error"]
    assert error["param"] == "max_output_tokens" and "'max_output_tokens'" in error["message"]
    r = post(client, input="hi", model="other")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_what_openai_clients_send_is_accepted(served) -> None:
    client, _ = served
    r = post(client, input=[{"role": "user", "content": "What is 3+4?"}], include=[
        "reasoning.encrypted_content"], store=True, prompt_cache_key="k",
             service_tier="auto", safety_identifier="s", truncation="disabled",
             background=False, reasoning={"summary": "auto"}, text={"format": {"type": "text"}})
    assert r.status_code == 200, r.text
    Response.model_validate(r.json())
    assert r.json()["store"] is False  # nothing is ever stored


def test_auth_applies(served) -> None:
    client, _ = served
    r = client.post("/v1/responses", json={"model": "tiny", "input": "hi"},
                    headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_a_lone_function_call_is_an_assistant_turn_without_content() -> None:
    chat = responses.to_chat(request(input=[
        {"role": "user", "content": "add"},
        {"type": "function_call", "call_id": "c1", "name": "add", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "0"}]))
    assistant = chat.messages[1]
    assert assistant.role == "assistant" and assistant.content is None
    assert assistant.tool_calls[0].id == "c1" and chat.messages[2].tool_call_id == "c1"


ADD = {"type": "function", "name": "add", "description": "a + b",
       "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                      "b": {"type": "integer"}},
                      "required": ["a", "b"]}}


@pytest.mark.parametrize("stream", [False, True])
def test_a_named_tool_choice_answers_with_a_function_call(tmp_path, stream) -> None:
    # a constrained answer is its own engine request, continuing after </think>
    fake = FakeEngine({"main": REASONING + "</think>", "continue": '{"a": 3, "b": 4}'})
    app = create_app(Settings(model=tmp_path, served_model_name="tiny"), start_engine=False)
    with TestClient(app) as client:
        service_state(app).registry.install(fake.handle())
        r = post(client, input="What is 3+4?", tools=[ADD], stream=stream,
                 tool_choice={"type": "function", "name": "add"})
    assert r.status_code == 200, r.text
    if stream:
        events = sse(r.text)
        for e in events:
            EVENTS.validate_python(e)
        body = events[-1]["response"]
        assert "response.function_call_arguments.done" in [e["type"] for e in events]
    else:
        body = r.json()
    resp = Response.model_validate(body)
    call = resp.output[-1]
    assert call.type == "function_call" and call.name == "add"
    assert json.loads(call.arguments) == {"a": 3, "b": 4}, call.arguments
    assert resp.tools[0].name == "add" and resp.tool_choice.name == "add"
