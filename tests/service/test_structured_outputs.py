"""Structured outputs on the scripted fake engine: ``response_format`` and vLLM's
``structured_outputs`` become vLLM's ``StructuredOutputsParams`` on the answer's engine request
only (the reasoning stays free), for every way a think span opens; the accounting is the same
as without a constraint; a constraint vLLM cannot compile is a 400 naming the field. The
constraint itself is the engine's (guided decoding): the end-to-end tests check it
(`test_structured_outputs_e2e.py`). No vLLM engine runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from fake_engine import MESSAGES, FakeEngine, served_client, token_counter

from lapo import protocol as p
from lapo.service.budget import BudgetLimits, hard_cap
from lapo.service.chat import ChatService
from lapo.service.schemas import ChatCompletionRequest
from lapo.service.settings import Settings

TOK = token_counter()
STMT = p.budget_statement
R12 = STMT(12) + " First 3+4=7."
JSON = '{"answer": 7}'
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}},
          "required": ["answer"]}
RESPONSE_FORMATS = [
    ({"response_format": {"type": "json_object"}}, {"json_object": True}),
    ({"response_format": {"type": "json_schema",
                          "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}}},
     {"json": SCHEMA}),
    ({"structured_outputs": {"regex": r"\{\"answer\": \d+\}"}}, {"regex": r"\{\"answer\": \d+\}"}),
    ({"structured_outputs": {"choice": ["yes", "no"]}}, {"choice": ["yes", "no"]}),
    ({"structured_outputs": {"grammar": 'root ::= "7"'}}, {"grammar": 'root ::= "7"'}),
]


def _service() -> ChatService:
    return ChatService(Settings(model=Path("/fake/tiny"), served_model_name="tiny"))


def _request(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="tiny", messages=MESSAGES, **kw)


def _so(call) -> dict | None:
    so = call.params.structured_outputs
    if so is None:
        return None
    fields = ("json", "regex", "choice", "grammar", "json_object")
    return {f: getattr(so, f) for f in fields if getattr(so, f) not in (None, False)}


@pytest.mark.parametrize(("fields", "expected"), RESPONSE_FORMATS,
                         ids=[next(iter(f[0].values())).get("type", "") or
                              next(iter(next(iter(f[0].values())))) for f in RESPONSE_FORMATS])
async def test_the_answer_request_alone_is_constrained(fields, expected) -> None:
    fake = FakeEngine({"main": R12 + "</think>free text never shown", "continue": JSON})
    resp, _, [r] = await _service().complete(_request(max_tokens=200, seed=1, **fields),
                                             fake.handle())
    main, cont = fake.calls
    assert [c.kind for c in fake.calls] == ["main", "continue"]
    assert _so(main) is None and _so(cont) == expected
    # the reasoning request was aborted at the model's own </think> (one token a step here)
    assert main.ids[-1] == TOK.close_id and main.request_id in fake.aborted
    assert cont.prompt_ids[-1] == TOK.close_id
    choice = resp.choices[0]
    assert choice.message.content == JSON and choice.message.reasoning_content == R12
    assert choice.finish_reason == "stop"
    # counts: the reasoning through </think>, then the constrained answer
    kept = main.ids[:main.ids.index(TOK.close_id) + 1]
    assert r.counts == TOK(kept + cont.ids)
    assert choice.lapo.declared_reasoning_tokens == 12 and choice.lapo.enforced is False
    assert resp.usage.completion_tokens == len(kept) + len(cont.ids)
    assert cont.params.max_tokens == 200 - len(kept)
    assert {c.params.seed for c in fake.calls} == {1}


async def test_no_constraint_is_one_request_as_before() -> None:
    fake = FakeEngine({"main": R12 + "</think>" + JSON})
    resp, _, _ = await _service().complete(_request(response_format={"type": "text"}),
                                           fake.handle())
    [main] = fake.calls
    assert _so(main) is None and resp.choices[0].message.content == JSON


async def test_hard_cap_closes_the_span_before_the_constrained_answer() -> None:
    long = "".join(f" {i % 10}" for i in range(200))
    fake = FakeEngine({"main": long + "</think>never", "continue": JSON})
    resp, _, [r] = await _service().complete(
        _request(reasoning_budget=20, budget_enforcement="hard", max_tokens=400,
                 response_format={"type": "json_object"}), fake.handle())
    main, cont = fake.calls
    assert _so(main) is None and _so(cont) == {"json_object": True}
    choice = resp.choices[0]
    assert choice.lapo.enforced is True and choice.message.content == JSON
    # the budget holds as without a constraint: exactly the cap, then the forced </think>
    assert r.counts.budgeted_tokens == hard_cap(20, BudgetLimits().hard_slack_ratio,
                                                BudgetLimits().hard_slack_tokens)
    assert cont.prompt_ids[-1] == TOK.close_id


async def test_reasoning_that_ends_inside_the_span_still_gets_its_answer() -> None:
    # EOS inside the span: the end-of-turn token gives way to a forced </think>.
    fake = FakeEngine({"main": R12, "continue": JSON})
    resp, _, [r] = await _service().complete(
        _request(max_tokens=200, response_format={"type": "json_object"}), fake.handle())
    main, cont = fake.calls
    assert main.ids[-1] == TOK.tokenizer.eos_token_id  # what the model did
    assert cont.prompt_ids[-len(TOK.close_ids):] == TOK.close_ids
    assert TOK.tokenizer.eos_token_id not in cont.prompt_ids[-len(main.ids) - 1:]
    assert resp.choices[0].message.content == JSON
    assert resp.choices[0].finish_reason == "stop"
    assert r.counts == TOK(main.ids[:-1] + TOK.close_ids + cont.ids)


@pytest.mark.parametrize("tokens_per_step", [1, 4, 50])
async def test_ending_inside_the_span_with_logprobs_sends_no_eos_entry(tokens_per_step) -> None:
    # The EOS may arrive in the same engine step as reasoning text that is streamed at once:
    # its logprob must go before that delta carries it.
    def fake():
        return FakeEngine({"main": R12, "continue": JSON}, tokens_per_step=tokens_per_step)

    req = _request(max_tokens=200, response_format={"type": "json_object"}, logprobs=True)
    resp, _, [r] = await _service().complete(req, fake().handle())
    assert resp.choices[0].message.content == JSON
    # one entry per completion token but the forced </think>, which the model did not sample
    assert len(resp.choices[0].logprobs.content) == len(r.logprobs) == (
        r.counts.completion_tokens - len(TOK.close_ids))
    eos = TOK.tokenizer.decode([TOK.tokenizer.eos_token_id])
    assert [e["token"] for e in r.logprobs].count(eos) == 1  # the answer's own end
    gen = await _service().stream(req.model_copy(update={"stream": True}), fake().handle())
    chunks = [json.loads(c[6:]) for c in [c async for c in gen] if c != "data: [DONE]\n\n"]
    sent = [e for c in chunks for ch in c["choices"] for e in (ch.get("logprobs") or {}).get(
        "content") or []]
    assert len(sent) == len(r.logprobs)


@pytest.mark.parametrize("tokens_per_step", [1, 3, 7])
async def test_tokens_after_think_close_in_the_same_step_are_cut(tokens_per_step) -> None:
    fake = FakeEngine({"main": R12 + "</think> not JSON at all", "continue": JSON},
                      tokens_per_step=tokens_per_step)
    deltas = []
    gen = await _service().stream(_request(response_format={"type": "json_object"},
                                           logprobs=True, stream=True), fake.handle())
    async for chunk in gen:
        deltas.append(chunk)
    body = "".join(deltas)
    assert "not JSON" not in body
    main, cont = fake.calls
    assert cont.prompt_ids[-1] == TOK.close_id
    resp, _, [r] = await _service().complete(
        _request(response_format={"type": "json_object"}, logprobs=True),
        FakeEngine({"main": R12 + "</think> not JSON at all", "continue": JSON},
                   tokens_per_step=tokens_per_step).handle())
    assert resp.choices[0].message.content == JSON
    # one logprobs entry per kept token, </think> included (the model sampled it)
    assert len(resp.choices[0].logprobs.content) == resp.usage.completion_tokens


async def test_a_plain_model_is_constrained_from_its_first_token() -> None:
    fake = FakeEngine({"main": JSON})
    handle = fake.handle()
    plain = dataclasses.replace(TOK.profile, opens="none", tags="none")
    from lapo.service.generation import ChoiceJob, SamplingSpec, generate_choice

    spec = SamplingSpec(0.6, 0.95, 64, 0, ["##"], constraint={"json_object": True})
    from fake_engine import chat_prompt

    r = await generate_choice(handle, ChoiceJob(chat_prompt(), spec, profile=plain))
    [main] = fake.calls
    assert _so(main) == {"json_object": True} and main.params.stop == ["##"]
    assert r.answer == JSON and r.reasoning == ""


async def test_a_model_that_opens_its_span_gets_think_in_the_prompt() -> None:
    from fake_engine import chat_prompt

    from lapo.service.generation import ChoiceJob, SamplingSpec, generate_choice

    model_opens = dataclasses.replace(TOK.profile, opens="model")
    prompt = chat_prompt()
    base = prompt.text.rstrip()
    if base.endswith(p.THINK_OPEN):  # the tiny template opens it: take it off
        prompt = type(prompt)(base[:-len(p.THINK_OPEN)], TOK.encode(base[:-len(p.THINK_OPEN)]))
    fake = FakeEngine({"main": " First 3+4=7.</think>x", "continue": JSON})
    spec = SamplingSpec(0.6, 0.95, 64, 0, None, constraint={"json_object": True})
    r = await generate_choice(fake.handle(), ChoiceJob(prompt, spec, profile=model_opens))
    main, cont = fake.calls
    assert main.prompt_ids[-1] == TOK.open_id  # <think> placed by the service
    assert _so(main) is None and _so(cont) == {"json_object": True}
    assert r.reasoning == " First 3+4=7." and r.answer == JSON
    assert r.counts.reasoning_tokens > 0


async def test_effort_mode_statement_phase_is_never_constrained() -> None:
    fake = FakeEngine({"statement": STMT(10) + " more", "main": " 3+4=7.</think>x",
                       "continue": JSON})
    await _service().complete(_request(reasoning_effort="low",
                                       response_format={"type": "json_object"}), fake.handle())
    assert [_so(c) for c in fake.calls] == [None, None, {"json_object": True}]


# --------------------------------------------------------------------------- HTTP: 400s


@pytest.fixture
def client(tmp_path):
    fake = FakeEngine({"main": R12 + "</think>x", "continue": JSON})
    with served_client(tmp_path, fake) as c:
        yield c


INVALID = [
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "bad", "schema": {"type": "bogus"}}}}, "response_format", "bogus"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "string", "pattern": "[a-"}}}}, "response_format",
     "compile"),
    ({"structured_outputs": {"regex": "[a-"}}, "structured_outputs", "regex"),
    ({"structured_outputs": {"grammar": "root ::= ("}}, "structured_outputs", "grammar"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "xml"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
     "response_format.json_schema.name", "pattern"),
    ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs",
     "exactly one"),
    ({"structured_outputs": {}}, "structured_outputs", "exactly one"),
    ({"structured_outputs": {"choice": []}}, "structured_outputs.choice", "at least 1"),
    ({"structured_outputs": {"regex": "a"}, "response_format": {"type": "json_object"}},
     "body", "at most one"),
    ({"structured_outputs": {"structural_tag": "{}"}}, "structured_outputs.structural_tag",
     "Unsupported"),
    ({"structured_outputs": {"json": SCHEMA, "disable_any_whitespace": True}},
     "structured_outputs", "disable_any_whitespace"),
    ({"structured_outputs": {"regex": "a", "whitespace_pattern": " "}}, "structured_outputs",
     "whitespace_pattern"),
    ({"response_format": {"type": "json_object"}, "stop": ["}"]}, "stop", "response_format"),
    ({"response_format": {"type": "json_object"}, "ignore_eos": True}, "ignore_eos",
     "response_format"),
    ({"structured_outputs": {"regex": "a"}, "min_tokens": 3}, "min_tokens",
     "structured_outputs"),
]


@pytest.mark.parametrize(("fields", "param", "word"), INVALID,
                         ids=[f"{c[1]}-{c[2]}" for c in INVALID])
def test_a_constraint_that_cannot_apply_is_a_400_naming_it(client, fields, param, word) -> None:
    r = client.post("/v1/chat/completions",
                    json={"model": "tiny", "messages": MESSAGES, **fields})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    assert word in error["message"], error["message"]
    assert "/project/cpp" not in error["message"]


def test_response_format_is_served_streaming_and_not(client) -> None:
    body = {"model": "tiny", "messages": MESSAGES,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "a", "schema": SCHEMA}}}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == JSON
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
        events = [line[len("data: "):] for line in s.iter_lines() if line.startswith("data: ")]
    assert s.status_code == 200 and events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert content == JSON
