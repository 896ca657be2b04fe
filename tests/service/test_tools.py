"""Tool calling on the scripted fake engine: ``tools``/``tool_choice`` checked (400s naming the
field), the forced-call schemas equal to vLLM's own, the forced answer's constraint on the
answer request only, answers turned into ``tool_calls`` (forced, and ``auto`` read by vLLM's
Hermes parser), the history and the tools rendered by the template, and streamed tool-call
deltas in OpenAI's shape. The calls themselves are the engine's guided decoding: the
end-to-end tests check them (`test_tools_e2e.py`). No vLLM engine runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from fake_engine import CORPUS, MESSAGES, FakeEngine, token_counter
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletionChunk

from lapo import protocol as p
from lapo.service.app import create_app
from lapo.service.chat import ChatService
from lapo.service.schemas import ChatCompletionRequest
from lapo.service.settings import Settings
from lapo.service.state import service_state

TOK = token_counter()
R12 = p.budget_statement(12) + " First 3+4=7."
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
           "required": ["city"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time"}},
]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
HERMES = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def _service(**kw) -> ChatService:
    return ChatService(Settings(model=Path("/fake/tiny"), served_model_name="tiny", **kw))


def _request(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="tiny", messages=kw.pop("messages", MESSAGES), **kw)


def _json(call) -> dict | None:
    so = call.params.structured_outputs
    return None if so is None else so.json


# --------------------------------------------------------------------------- vLLM's schemas


def _vllm_schema(tool_dicts, tool_choice, parallel):
    from vllm.entrypoints.openai.chat_completion.protocol import (
        ChatCompletionNamedToolChoiceParam,
        ChatCompletionToolsParam,
    )
    from vllm.tool_parsers.utils import get_json_schema_from_tools

    vtools = [ChatCompletionToolsParam.model_validate(copy.deepcopy(t)) for t in tool_dicts]
    if isinstance(tool_choice, dict):
        tool_choice = ChatCompletionNamedToolChoiceParam.model_validate(tool_choice)
    return get_json_schema_from_tools(tool_choice, vtools, parallel)


DEFS_TOOLS = [{"type": "function", "function": {"name": "place", "parameters": {
    "type": "object", "properties": {"at": {"$ref": "#/$defs/city"}},
    "$defs": {"city": {"type": "string", "enum": ["Paris", "Rome"]}}}}}, *TOOLS]


@pytest.mark.parametrize(("tool_dicts", "choice", "parallel"), [
    (TOOLS, NAMED, True),
    (TOOLS, {"type": "function", "function": {"name": "get_time"}}, True),
    (TOOLS, "required", True),
    (TOOLS, "required", False),
    (DEFS_TOOLS, "required", False),
], ids=["named", "named-no-parameters", "required", "required-one", "required-defs"])
def test_the_forced_answer_schema_is_vllms(tool_dicts, choice, parallel) -> None:
    req = _request(tools=copy.deepcopy(tool_dicts), tool_choice=choice,
                   parallel_tool_calls=parallel)
    assert req.constraint == ("tool_choice",
                              {"json": _vllm_schema(tool_dicts, choice, parallel)})


@pytest.mark.parametrize("fields", [{}, {"tools": TOOLS, "tool_choice": "auto"},
                                    {"tools": TOOLS}, {"tools": TOOLS, "tool_choice": "none"}])
def test_no_forced_call_no_constraint(fields) -> None:
    assert _request(**fields).constraint is None


# --------------------------------------------------------------------------- the template


def test_the_template_renders_plain_messages_as_before_tool_support() -> None:
    from lapo.tiny import CHAT_TEMPLATE, build_tokenizer

    # The template as shipped before tools (plain ChatML, the span opened for the assistant).
    before = ("{%- for message in messages %}"
              "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
              "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}"
              "{{- '<|im_start|>assistant\\n<think>' }}{%- endif %}")
    tok = build_tokenizer(CORPUS)
    conversations = [
        MESSAGES,
        [{"role": "system", "content": "Be brief."}, *MESSAGES],
        [*MESSAGES, {"role": "assistant", "content": "<think>x</think>7"},
         {"role": "user", "content": "And 5+5?\n\n  "}],
        [{"role": "user", "content": ""}],
    ]
    for messages in conversations:
        for gen in (True, False):
            new = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen,
                                          chat_template=CHAT_TEMPLATE)
            old = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen,
                                          chat_template=before)
            assert new == old


def test_the_shipped_model_has_the_tiny_template() -> None:
    from lapo.paths import models_dir
    from lapo.tiny import CHAT_TEMPLATE

    path = models_dir() / "lapo" / "chat_template.jinja"
    if not path.is_file():
        pytest.skip("models/lapo is not shipped here")
    assert path.read_text() == CHAT_TEMPLATE


def test_tools_and_the_history_are_rendered_hermes_style() -> None:
    messages = [
        {"role": "developer", "content": "Be brief."}, *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "20C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text",
                                                                "text": "noon"}]},
    ]
    req = _request(messages=messages, tools=TOOLS)
    prompt, _, _ = _service().build_prompt(req, FakeEngine({}).handle())
    tool_json = json.dumps(TOOLS[0], ensure_ascii=False)
    assert prompt.text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert f"<tools>\n{tool_json}\n" in prompt.text
    assert ("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
            "{\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", "
            "\"arguments\": {}}\n</tool_call><|im_end|>\n") in prompt.text
    assert ("<|im_start|>user\n<tool_response>\n20C\n</tool_response>\n<tool_response>\n"
            "noon\n</tool_response><|im_end|>\n<|im_start|>assistant\n<think>") in prompt.text
    # tool_choice "none": the template gets no tools (the history still renders)
    plain, _, _ = _service().build_prompt(req.model_copy(update={"tool_choice": "none"}),
                                          FakeEngine({}).handle())
    assert "<tools>" not in plain.text and "<tool_response>" in plain.text


def test_supports_tools_is_read_from_the_template() -> None:
    from lapo.think import supports_tools
    from lapo.tiny import TEMPLATES, build_tokenizer

    assert {k: supports_tools(build_tokenizer(CORPUS, template=k)) for k in TEMPLATES} == {
        "lapo": True, "r1": False, "qwen3": False, "chatml": False}


# --------------------------------------------------------------------------- answers


async def test_a_named_call_is_the_constrained_answer() -> None:
    fake = FakeEngine({"main": R12 + "</think>free text", "continue": '{"city": "Paris"}'})
    resp, _, [r] = await _service().complete(
        _request(tools=TOOLS, tool_choice=NAMED, max_tokens=200), fake.handle())
    main, cont = fake.calls
    assert _json(main) is None and _json(cont) == WEATHER
    assert "<tools>" in main.prompt_text
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.reasoning_content == R12
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
    assert choice.lapo.declared_reasoning_tokens == 12
    assert resp.usage.completion_tokens == r.counts.completion_tokens


async def test_required_calls_become_one_tool_call_each() -> None:
    answer = '[{"name":"get_weather","parameters":{"city":"Rome"}},{"name":"get_time",' \
             '"parameters":{}}]'
    fake = FakeEngine({"main": R12 + "</think>", "continue": answer})
    resp, _, _ = await _service().complete(_request(tools=TOOLS, tool_choice="required"),
                                           fake.handle())
    assert _json(fake.calls[1]) == _vllm_schema(TOOLS, "required", True)
    message = resp.choices[0].message
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] \
        == [("get_weather", {"city": "Rome"}), ("get_time", {})]
    assert len({c.id for c in message.tool_calls}) == 2
    assert resp.choices[0].finish_reason == "tool_calls"


async def test_a_forced_answer_cut_by_max_tokens_is_no_call() -> None:
    fake = FakeEngine({"main": R12 + "</think>", "continue": '{"city": "Paris"}'})
    resp, _, _ = await _service().complete(
        _request(tools=TOOLS, tool_choice=NAMED, max_tokens=len(TOK.encode(R12)) + 4),
        fake.handle())
    choice = resp.choices[0]
    assert choice.finish_reason == "length" and choice.message.tool_calls is None


@pytest.mark.parametrize(("answer", "content", "calls"), [
    (HERMES, None, [("get_weather", {"city": "Paris"})]),
    ("Let me check.\n" + HERMES, "Let me check.\n", [("get_weather", {"city": "Paris"})]),
    ("It is 7.", "It is 7.", []),
    ("<tool_call>\nnot json\n</tool_call>", "<tool_call>\nnot json\n</tool_call>", []),
], ids=["call", "text-then-call", "text", "unparsable"])
async def test_auto_reads_the_answer_with_vllms_hermes_parser(answer, content, calls) -> None:
    fake = FakeEngine({"main": R12 + "</think>" + answer})
    resp, _, _ = await _service().complete(_request(tools=TOOLS), fake.handle())
    [main] = fake.calls
    assert _json(main) is None and "<tools>" in main.prompt_text
    choice = resp.choices[0]
    assert choice.message.content == content
    got = [(c.function.name, json.loads(c.function.arguments))
           for c in choice.message.tool_calls or ()]
    assert got == calls
    assert choice.finish_reason == ("tool_calls" if calls else "stop")


@pytest.mark.parametrize("parallel", [True, False])
async def test_auto_keeps_one_call_without_parallel_tool_calls(parallel) -> None:
    two = HERMES + "\n" + HERMES.replace("Paris", "Rome")
    fake = FakeEngine({"main": R12 + "</think>" + two})
    resp, _, _ = await _service().complete(
        _request(tools=TOOLS, parallel_tool_calls=parallel), fake.handle())
    cities = [json.loads(c.function.arguments)["city"]
              for c in resp.choices[0].message.tool_calls]
    assert cities == (["Paris", "Rome"] if parallel else ["Paris"])


async def test_tool_choice_none_answers_plainly() -> None:
    fake = FakeEngine({"main": R12 + "</think>" + HERMES})
    resp, _, _ = await _service().complete(_request(tools=TOOLS, tool_choice="none"),
                                           fake.handle())
    assert "<tools>" not in fake.calls[0].prompt_text
    choice = resp.choices[0]
    assert choice.message.content == HERMES and choice.message.tool_calls is None
    assert "tool_calls" not in resp.model_dump()["choices"][0]["message"]


# --------------------------------------------------------------------------- streaming


async def _chunks(req: ChatCompletionRequest, fake: FakeEngine) -> list[ChatCompletionChunk]:
    gen = await _service().stream(req.model_copy(update={"stream": True}), fake.handle())
    out = []
    async for event in gen:
        body = event.removeprefix("data: ").strip()
        if body != "[DONE]":
            out.append(ChatCompletionChunk.model_validate(json.loads(body)))
    return out


def _reassemble(chunks: list[ChatCompletionChunk]) -> dict[int, dict]:
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for piece in chunk.choices[0].delta.tool_calls or ():
            call = calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = piece.id or call["id"]
            call["name"] += piece.function.name or ""
            call["arguments"] += piece.function.arguments or ""
    return calls


@pytest.mark.parametrize("tokens_per_step", [1, 4])
async def test_streamed_forced_calls_come_as_tool_call_deltas(tokens_per_step) -> None:
    answer = '[{"name":"get_weather","parameters":{"city":"Rome"}},{"name":"get_time",' \
             '"parameters":{}}]'
    fake = FakeEngine({"main": R12 + "</think>", "continue": answer},
                      tokens_per_step=tokens_per_step)
    chunks = await _chunks(_request(tools=TOOLS, tool_choice="required", logprobs=True),
                           fake)
    reasoning = "".join(c.choices[0].delta.model_extra.get("reasoning_content") or ""
                        for c in chunks if c.choices)
    assert reasoning == R12
    assert not any(c.choices[0].delta.content for c in chunks if c.choices)
    calls = _reassemble(chunks)
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Rome"}), ("get_time", {})]
    assert all(c["id"].startswith("call_") for c in calls.values())
    last = chunks[-1].choices[0]
    assert last.finish_reason == "tool_calls" and last.model_extra["lapo"]
    # every token's logprob is still sent, the buffered answer's with the last chunk
    sent = sum(len(c.choices[0].logprobs.content) for c in chunks
               if c.choices and c.choices[0].logprobs)
    assert sent == len(fake.calls[0].ids[:fake.calls[0].ids.index(TOK.close_id) + 1]) + \
        len(fake.calls[1].ids)


async def test_streamed_auto_sends_the_text_or_the_calls_at_the_end() -> None:
    chunks = await _chunks(_request(tools=TOOLS),
                           FakeEngine({"main": R12 + "</think>" + HERMES}))
    calls = _reassemble(chunks)
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Paris"})]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    chunks = await _chunks(_request(tools=TOOLS),
                           FakeEngine({"main": R12 + "</think>It is 7."}))
    texts = [c.choices[0].delta.content for c in chunks[1:] if c.choices and
             c.choices[0].delta.content]
    assert texts == ["It is 7."] and chunks[-1].choices[0].finish_reason == "stop"


# --------------------------------------------------------------------------- HTTP: 400s


def _client(tmp_path, fake: FakeEngine, **settings):
    app = create_app(Settings(model=tmp_path, served_model_name="tiny", api_keys="k1",
                              **settings), start_engine=False)
    client = TestClient(app)
    client.__enter__()
    service_state(app).registry.install(fake.handle())
    client.headers["Authorization"] = "Bearer k1"
    return client


@pytest.fixture
def client(tmp_path):
    fake = FakeEngine(lambda call: '{"city": "Rome"}' if call.params.structured_outputs
                      else R12 + "</think>x")
    c = _client(tmp_path, fake, max_tools=2)
    yield c
    c.__exit__(None, None, None)


BAD_HISTORY = [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [
    {"id": "c", "type": "function", "function": {"name": "get_time", "arguments": "{"}}]},
    {"role": "tool", "tool_call_id": "c", "content": "noon"}]


def _history(arguments: str) -> list[dict]:
    return [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "get_time",
                                                     "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "c", "content": "noon"}]


INVALID = [
    ({"tool_choice": "auto"}, "tool_choice", "only allowed when 'tools'"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice", "not in 'tools'"),
    ({"tools": [TOOLS[0], TOOLS[0]]}, "tools.1.function.name", "twice"),
    ({"tools": [*TOOLS, {"type": "function", "function": {"name": "x"}}]}, "tools",
     "at most 2"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "bogus"}}}], "tool_choice": "required"}, "tools.0.function.parameters",
     "cannot be enforced"),
    ({"tools": TOOLS, "tool_choice": NAMED, "response_format": {"type": "json_object"}},
     "response_format", "cannot be combined"),
    ({"tools": TOOLS, "tool_choice": NAMED, "stop": ["x"]}, "stop", "tool_choice"),
    ({"tools": []}, "tools", "at least 1"),  # OpenAI's answer to an empty list
    ({"tools": [{"type": "code", "function": {"name": "f"}}]}, "tools.0.type", "function"),
    ({"tools": TOOLS, "tool_choice": "maybe"}, "tool_choice", "'required'"),
    ({"messages": BAD_HISTORY}, "messages.1.tool_calls.0.function.arguments", "JSON"),
    ({"messages": [{"role": "user", "content": None}]}, "messages.0.content", "required"),
    ({"messages": [{"role": "user"}]}, "messages.0.content", "required"),
    ({"messages": [*MESSAGES, {"role": "tool", "content": "x"}]}, "messages.1",
     "tool_call_id"),
    # the Responses shape of a named choice on chat: the missing field is named, not the union
    ({"tools": TOOLS, "tool_choice": {"type": "function", "name": "add"}},
     "tool_choice.function", "Missing required parameter 'tool_choice.function'"),
    # a $defs that is not an object of schemas (would crash the schema builder)
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "$defs": [1]}}}], "tool_choice": "required"}, "tools.0.function.parameters", "$defs"),
    # history arguments: a JSON object, valid Unicode once parsed
    ({"messages": _history("[1]")}, "messages.1.tool_calls.0.function.arguments",
     "got a JSON list"),
    ({"messages": _history('{"a": "\\ud800"}')},
     "messages.1.tool_calls.0.function.arguments", "surrogate"),
]


@pytest.mark.parametrize(("fields", "param", "says"), INVALID,
                         ids=[f"{i}-{c[1]}" for i, c in enumerate(INVALID)])
def test_what_cannot_be_served_is_a_400_naming_the_field(client, fields, param, says) -> None:
    body = {"model": "tiny", "messages": MESSAGES, **fields}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and says in error["message"], error


@pytest.mark.parametrize("template", ["r1", "chatml"])
def test_auto_is_refused_for_a_template_without_tools(tmp_path, template) -> None:
    from lapo.tiny import build_tokenizer

    fake = FakeEngine(lambda call: '{"city": "Rome"}' if call.params.structured_outputs
                      else "x", tokenizer=build_tokenizer(CORPUS, template=template))
    c = _client(tmp_path, fake)
    try:
        for choice in ({}, {"tool_choice": "auto"}):
            r = c.post("/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES,
                                                     "tools": TOOLS, **choice})
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["param"] == "tool_choice" and "required" in error["message"]
        # a forced call needs no template support: guided decoding makes it
        r = c.post("/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES,
                                                 "tools": TOOLS, "tool_choice": NAMED})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"] == {
            "name": "get_weather", "arguments": '{"city": "Rome"}'}
    finally:
        c.__exit__(None, None, None)


def test_a_returned_message_can_be_sent_back_as_history(client) -> None:
    from openai.types.chat import ChatCompletion

    body = {"model": "tiny", "messages": MESSAGES, "tools": TOOLS, "tool_choice": NAMED}
    first = client.post("/v1/chat/completions", json=body)
    assert first.status_code == 200, first.text
    message = ChatCompletion.model_validate(first.json()).choices[0].message
    # what the openai SDK sends for a message model it got: the fields it was given
    sent = message.model_dump(exclude_unset=True, mode="json")
    assert sent["reasoning_content"] and sent["tool_calls"]
    call = message.tool_calls[0]
    history = [*MESSAGES, sent, {"role": "tool", "tool_call_id": call.id, "content": "7"}]
    r = client.post("/v1/chat/completions", json={**body, "messages": history,
                                                  "tool_choice": "none"})
    assert r.status_code == 200, r.text


def test_tools_over_http_in_the_openai_shape(client) -> None:
    r = client.post("/v1/chat/completions", json={
        "model": "tiny", "messages": MESSAGES, "tools": TOOLS, "tool_choice": "auto",
        "parallel_tool_calls": False})
    assert r.status_code == 200, r.text
    from openai.types.chat import ChatCompletion

    completion = ChatCompletion.model_validate(r.json())
    assert completion.choices[0].message.content == "x"
    assert completion.choices[0].message.tool_calls is None


def test_an_unknown_tool_parser_is_refused_at_start_up() -> None:
    from lapo.service.tools import check_parser

    check_parser("hermes")
    with pytest.raises(ValueError, match=r"LAPO_TOOL_CALL_PARSER='nope' is not a vLLM tool "
                                         r"parser \(known: .*hermes"):
        check_parser("nope")
