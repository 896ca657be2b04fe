"""vLLM's extra chat parameters on the scripted fake engine: each reaches vLLM's
``SamplingParams`` in every phase of a choice as intended (effort mode's statement phase, the
main request, a hard cap's continuation), the LAPO accounting is unchanged, logprobs come in
the OpenAI shape (whole responses and streams), and invalid values get a 400 naming the field,
the limit and the value (through the HTTP app). No vLLM engine runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_engine import MESSAGES, FakeEngine, served_client, token_counter

from lapo import protocol as p
from lapo.service.chat import ChatService
from lapo.service.schemas import ChatCompletionRequest
from lapo.service.settings import Settings

TOK = token_counter()
STMT = p.budget_statement
LONG = "".join(f" {i % 10}" for i in range(200))
ANSWER = "The answer is 7."
R12 = STMT(12) + " First 3+4=7."


def enc(text: str) -> list[int]:
    return TOK.encode(text)


def _service() -> ChatService:
    return ChatService(Settings(model=Path("/fake/tiny"), served_model_name="tiny"))


def _request(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="tiny", messages=MESSAGES, **kw)


# --------------------------------------------------------------------------- plumbing

# (request fields, SamplingParams attribute, expected in the statement phase, the main
# request, the continuation; a callable takes the main request's call)
MIN_TOKENS = 100
PLUMBING = [
    ({"top_k": 7}, "top_k", 7, 7, 7),
    ({"min_p": 0.1}, "min_p", 0.1, 0.1, 0.1),
    ({"repetition_penalty": 1.2}, "repetition_penalty", 1.2, 1.2, 1.2),
    ({"presence_penalty": 0.5}, "presence_penalty", 0.5, 0.5, 0.5),
    ({"frequency_penalty": -0.5}, "frequency_penalty", -0.5, -0.5, -0.5),
    ({"logit_bias": {"5": 2.5, "17": -100}}, "logit_bias", {5: 2.5, 17: -100.0},
     {5: 2.5, 17: -100.0}, {5: 2.5, 17: -100.0}),
    # output options: never in the statement phase
    ({"ignore_eos": True}, "ignore_eos", False, True, True),
    ({"min_tokens": MIN_TOKENS}, "min_tokens", 0, MIN_TOKENS,
     lambda main: MIN_TOKENS - len(main.ids) - 1),  # what is left after the forced </think>
    ({"logprobs": True}, "logprobs", None, 0, 0),
    ({"logprobs": True, "top_logprobs": 3}, "logprobs", None, 3, 3),
    ({"skip_special_tokens": False}, "skip_special_tokens", True, False, False),
    ({"include_stop_str_in_output": True, "stop": ["##"]}, "include_stop_str_in_output",
     True, True, True),
    ({"stop": ["##"]}, "stop", ["tokens."], ["##"], ["##"]),
]


@pytest.mark.parametrize(("fields", "attr", "statement", "main", "cont"), PLUMBING,
                         ids=[f"{c[1]}={next(iter(c[0].values()))}" for c in PLUMBING])
async def test_each_param_reaches_every_phase(fields, attr, statement, main, cont) -> None:
    fake = FakeEngine({"statement": STMT(10) + " more", "main": LONG + "</think>never",
                       "continue": ANSWER})
    req = _request(reasoning_effort="low", budget_enforcement="hard", max_tokens=300, seed=4,
                   **fields)
    resp, _, _ = await _service().complete(req, fake.handle())
    first, main_call, cont_call = fake.calls
    assert [c.kind for c in fake.calls] == ["statement", "main", "continue"]
    assert resp.choices[0].lapo.enforced is True
    expected_cont = cont(main_call) if callable(cont) else cont
    assert getattr(first.params, attr) == statement
    assert getattr(main_call.params, attr) == main
    assert getattr(cont_call.params, attr) == expected_cont
    # the phases' own settings are untouched by the request's options
    assert first.params.max_tokens == 24 and first.params.include_stop_str_in_output
    assert main_call.params.max_tokens == 300
    assert cont_call.params.max_tokens == 300 - len(main_call.ids) - 1
    assert {c.params.seed for c in fake.calls} == {4}


async def test_unset_params_are_vllms_defaults() -> None:
    from vllm import SamplingParams

    fake = FakeEngine({"main": R12 + "</think>7"})
    await _service().complete(_request(max_tokens=64), fake.handle())
    [call] = fake.calls
    default = SamplingParams()
    for attr in ("top_k", "min_p", "repetition_penalty", "presence_penalty",
                 "frequency_penalty", "logit_bias", "ignore_eos", "min_tokens", "logprobs",
                 "skip_special_tokens", "include_stop_str_in_output"):
        assert getattr(call.params, attr) == getattr(default, attr), attr


async def test_ignore_eos_generates_to_the_limit_with_unchanged_accounting() -> None:
    fake = FakeEngine({"main": R12 + "</think>7"})
    resp, _, [r] = await _service().complete(_request(max_tokens=60, ignore_eos=True),
                                             fake.handle())
    [call] = fake.calls
    eos = TOK.tokenizer.eos_token_id
    assert call.params.ignore_eos is True
    assert len(call.ids) == 60 and call.ids.count(eos) >= 2  # went on past EOS, twice
    assert resp.choices[0].finish_reason == "length"
    assert r.counts == TOK(call.ids)  # the protocol's counter on the same ids
    assert resp.usage.completion_tokens == 60
    assert resp.choices[0].lapo.declared_reasoning_tokens == 12
    assert r.reasoning == R12 and r.answer.startswith("7")


async def test_min_tokens_holds_eos_back() -> None:
    fake = FakeEngine({"main": " First.</think>7"})
    resp, _, _ = await _service().complete(_request(max_tokens=64, min_tokens=20),
                                           fake.handle())
    [call] = fake.calls
    assert call.params.min_tokens == 20 and call.params.max_tokens == 64
    assert 20 < len(call.ids) < 64 and call.finish_reason == "stop"
    assert call.ids[-1] == TOK.tokenizer.eos_token_id
    assert TOK.tokenizer.eos_token_id not in call.ids[:20]
    assert resp.usage.completion_tokens == len(call.ids)


async def test_min_tokens_continuation_gets_the_rest() -> None:
    """A hard cap cuts the main request: the continuation must still reach min_tokens."""
    fake = FakeEngine({"main": LONG, "continue": ANSWER})
    resp, _, _ = await _service().complete(
        _request(reasoning_budget=4, budget_enforcement="hard", max_tokens=200,
                 min_tokens=80), fake.handle())
    main, cont = fake.calls
    left = 80 - len(main.ids) - 1
    assert left > 0 and cont.params.min_tokens == left
    assert len(cont.ids) > left  # EOS only after min_tokens in total
    assert resp.usage.completion_tokens == len(main.ids) + 1 + len(cont.ids) > 80


# --------------------------------------------------------------------------- logprobs

def _check_entries(entries: list[dict], fake: FakeEngine, calls, top_n: int) -> None:
    """Each sampled token's entry, in order, as the fake engine's logprobs make it."""
    ids = [tid for c in calls for tid in c.ids]
    positions = [k for c in calls for k in range(len(c.ids))]
    assert len(entries) == len(ids)
    for e, tid, k in zip(entries, ids, positions, strict=True):
        at = fake.logprobs_at(k, tid, top_n)
        assert e["token"] == TOK.tokenizer.decode([tid])
        assert e["bytes"] == list(e["token"].encode())
        assert e["logprob"] == at[tid].logprob
        top = e["top_logprobs"]
        assert len(top) == top_n
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        best = sorted(at.items(), key=lambda kv: kv[1].rank)[:top_n]
        assert [t["token"] for t in top] == [TOK.tokenizer.decode([i]) for i, _ in best]


@pytest.mark.parametrize("top_n", [0, 2, 5])
async def test_logprobs_cover_reasoning_and_answer(top_n) -> None:
    fake = FakeEngine({"main": R12 + "</think>" + ANSWER}, tokens_per_step=3)
    resp, _, _ = await _service().complete(
        _request(max_tokens=128, logprobs=True, top_logprobs=top_n), fake.handle())
    [call] = fake.calls
    body = resp.model_dump()
    content = body["choices"][0]["logprobs"]["content"]
    _check_entries(content, fake, [call], top_n)
    assert "".join(e["token"] for e in content) == TOK.tokenizer.decode(call.ids)
    assert body["usage"]["completion_tokens"] == len(content)  # EOS included, like vLLM


async def test_logprobs_skip_the_forced_close_of_a_hard_cap() -> None:
    fake = FakeEngine({"main": LONG, "continue": ANSWER})
    resp, _, _ = await _service().complete(
        _request(reasoning_budget=4, budget_enforcement="hard", max_tokens=200,
                 logprobs=True, top_logprobs=1), fake.handle())
    main, cont = fake.calls
    content = resp.model_dump()["choices"][0]["logprobs"]["content"]
    assert len(content) == len(main.ids) + len(cont.ids)
    assert resp.usage.completion_tokens == len(content) + 1  # + the forced </think>
    _check_entries(content[:len(main.ids)], fake, [main], 1)
    _check_entries(content[len(main.ids):], fake, [cont], 1)
    assert p.THINK_CLOSE not in [e["token"] for e in content]


def _sse(events: list[str]) -> list[dict]:
    assert events[-1] == "data: [DONE]\n\n"
    return [json.loads(e[len("data: "):]) for e in events[:-1]]


@pytest.mark.parametrize(("n", "steps"), [(1, 1), (1, 4), (2, 2)])
async def test_streamed_logprobs_add_up_to_the_whole_list(n, steps) -> None:
    # A stop string makes vLLM hold text back: entries run ahead of the text they belong to.
    script = {"main": R12 + "</think>" + ANSWER}
    fields = dict(n=n, seed=1, max_tokens=128, logprobs=True, top_logprobs=2, stop=["@@@"])
    whole, _, _ = await _service().complete(_request(**fields), FakeEngine(script).handle())
    fake = FakeEngine(script, tokens_per_step=steps)
    body = await _service().stream(_request(stream=True, **fields), fake.handle())
    chunks = _sse([e async for e in body])
    for i in range(n):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == i]
        assert mine[0]["logprobs"] is None  # the role chunk
        streamed, text = [], ""
        for choice in mine[1:]:
            streamed += choice["logprobs"]["content"]
            delta = choice["delta"]
            text += delta.get("reasoning_content") or delta.get("content") or ""
            # a token's entry comes with its text or ahead of it, never after
            assert len("".join(e["token"] for e in streamed)) >= len(text)
        expected = whole.model_dump()["choices"][i]["logprobs"]["content"]
        assert streamed == expected
        assert mine[-1]["finish_reason"] == "stop"


async def test_streamed_logprobs_off_by_default() -> None:
    fake = FakeEngine({"main": R12 + "</think>7"})
    body = await _service().stream(_request(stream=True, max_tokens=64), fake.handle())
    chunks = _sse([e async for e in body])
    assert all(c["choices"][0]["logprobs"] is None for c in chunks)
    assert fake.calls[0].params.logprobs is None


# --------------------------------------------------------------------------- HTTP: 400s

@pytest.fixture
def client(tmp_path):
    fake = FakeEngine({"main": R12 + "</think>7"})
    with served_client(tmp_path, fake) as c:
        yield c


VOCAB = len(TOK.tokenizer)
# (fields, param, words the message must hold: the limit and the value)
INVALID = [
    ({"top_k": -2}, "top_k", ["-1", "-2"]),
    ({"top_k": 2**31}, "top_k", ["2147483647", "2147483648"]),
    ({"min_p": 1.5}, "min_p", ["1", "1.5"]),
    ({"repetition_penalty": 0}, "repetition_penalty", ["0.01", "got 0"]),
    ({"repetition_penalty": 2.5}, "repetition_penalty", ["2", "2.5"]),
    ({"presence_penalty": 3}, "presence_penalty", ["2", "3"]),
    ({"frequency_penalty": -2.5}, "frequency_penalty", ["-2", "-2.5"]),
    ({"logit_bias": {"5": 101}}, "logit_bias.5", ["100", "101"]),
    ({"logit_bias": {"5": -101}}, "logit_bias.5", ["-100", "-101"]),
    ({"logit_bias": {"abc": 1}}, "logit_bias", ["token ids", "'abc'"]),
    ({"logit_bias": {str(VOCAB): 1}}, "logit_bias", [f"[0, {VOCAB})", f"got {VOCAB}"]),
    ({"logit_bias": {"-1": 1}}, "logit_bias", [f"[0, {VOCAB})", "got -1"]),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", ["20", "21"]),
    ({"top_logprobs": 2}, "top_logprobs", ["logprobs: true"]),
    ({"min_tokens": -1}, "min_tokens", ["0", "-1"]),
    ({"min_tokens": 50, "max_tokens": 10}, "min_tokens", ["10", "max_tokens", "50"]),
    ({"min_tokens": 50, "max_completion_tokens": 10}, "min_tokens",
     ["10", "max_completion_tokens", "50"]),
    ({"chat_template_kwargs": {"x": [1]}}, "chat_template_kwargs", ["JSON scalars", "list"]),
    ({"chat_template_kwargs": "x"}, "chat_template_kwargs", ["dictionary", "'x'"]),
    ({"chat_template_kwargs": {"enable_thinking": False}},
     "chat_template_kwargs.enable_thinking", ["does not read", "takes: none"]),
    ({"chat_template_kwargs": {"messages": "x"}}, "chat_template_kwargs.messages",
     ["cannot be set"]),
    ({"stop": ["ok", "\ud800"]}, "body", ["'stop.1'", "not valid Unicode"]),
]


@pytest.mark.parametrize(("fields", "param", "words"), INVALID,
                         ids=[f"{c[1]}-{json.dumps(c[0])[:30]}" for c in INVALID])
def test_invalid_values_name_field_limit_and_value(client, fields, param, words) -> None:
    # json.dumps escapes what httpx's json= cannot encode (lone surrogates)
    r = client.post("/v1/chat/completions", headers={"content-type": "application/json"},
                    content=json.dumps({"model": "tiny", "messages": MESSAGES, **fields}))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    for word in words:
        assert word in error["message"], (word, error["message"])


@pytest.mark.parametrize("fields", [
    {"best_of": 2}, {"use_beam_search": True},
    {"guided_json": {"type": "object"}}, {"stop_token_ids": [1]}, {"echo": True},
    {"continue_final_message": True}, {"chat_template": "{{ messages }}"},
])
def test_unimplemented_params_still_refused(client, fields) -> None:
    r = client.post("/v1/chat/completions",
                    json={"model": "tiny", "messages": MESSAGES, **fields})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "unsupported_parameter" and error["param"] == next(iter(fields))


def test_the_benchmark_clients_request_is_served(client) -> None:
    """What ``vllm bench serve`` (openai-chat backend, random dataset) sends."""
    with client.stream("POST", "/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "x y z"}],
            "max_completion_tokens": 16, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True}) as r:
        assert r.status_code == 200
        events = [line for line in r.iter_lines() if line]
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert events[-1] == "data: [DONE]"
    assert chunks[-1]["usage"]["completion_tokens"] == 16
