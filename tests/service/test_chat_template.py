"""``chat_template_kwargs`` (`lapo.service.chat_template`): checked against the variables the
served template reads, passed to it, template errors as 400s, and the think profile of the
prompt as rendered, so a switch that closes or opens the think span keeps the split and the
token accounting right (Qwen3's ``enable_thinking: false``; a template whose switch opens
``<think>``). On the scripted fake engine with the tiny tokenizers of each template kind."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from fake_engine import CORPUS, MESSAGES, FakeEngine

from lapo import protocol as p
from lapo.service.chat import ChatService
from lapo.service.chat_template import check_kwargs, prompt_profile, template_variables
from lapo.service.errors import APIError
from lapo.service.schemas import ChatCompletionRequest
from lapo.service.settings import Settings
from lapo.think import ThinkProfile
from lapo.tiny import TEMPLATES, build_tokenizer

REASONING = " First 3+4=7."


def tokenizer(kind: str, template: str | None = None):
    tok = build_tokenizer(CORPUS, 384, kind)
    if template is not None:
        tok.chat_template = template
    return tok


def _service() -> ChatService:
    return ChatService(Settings(model=Path("/fake/tiny"), served_model_name="tiny"))


def _request(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="tiny", messages=MESSAGES, max_tokens=64, **kw)


def test_template_variables() -> None:
    assert template_variables(TEMPLATES["qwen3"]) == {"messages", "add_generation_prompt",
                                                      "enable_thinking"}
    assert template_variables(TEMPLATES["lapo"]) == {"messages", "add_generation_prompt",
                                                     "tools"}
    # transformers' {% generation %} tag parses
    assert "x" in template_variables("{% generation %}{{ x }}{% endgeneration %}")


@pytest.mark.parametrize(("kwargs", "param", "words"), [
    ({"enable_thinking": False, "nope": 1}, "chat_template_kwargs.nope",
     ["does not read 'nope'", "takes: enable_thinking"]),
    ({"tools": "x"}, "chat_template_kwargs.tools", ["server sets 'tools'"]),
    ({"eos_token": "x"}, "chat_template_kwargs.eos_token", ["server sets"]),
    ({"enable_thinking": "y" * 33}, "chat_template_kwargs.enable_thinking", ["32", "33"]),
])
def test_check_kwargs_refuses(kwargs, param, words) -> None:
    with pytest.raises(APIError) as info:
        check_kwargs(kwargs, tokenizer("qwen3"), "tiny", max_chars=32)
    assert (info.value.status, info.value.param) == (400, param)
    for word in words:
        assert word in info.value.message


PROFILE = {"model": ThinkProfile("model", "token"), "prompt": ThinkProfile("prompt", "token"),
           "none": ThinkProfile("none", "none")}


@pytest.mark.parametrize(("kind", "text", "opens", "suffix", "closed"), [
    ("model", "<|im_start|>assistant\n", "model", "", False),
    ("model", "<|im_start|>assistant\n<think>\n\n</think>\n\n", "model", "", True),
    ("model", "<|im_start|>assistant\n<think>\n", "prompt", "\n", False),
    ("prompt", "<|im_start|>assistant\n<think>", "prompt", "", False),
    ("prompt", "<|im_start|>assistant\n", "model", "", False),
    ("prompt", "<|im_start|>assistant\n<think></think>", "model", "", True),
    ("none", "<|im_start|>assistant\n<think>", "none", "", False),
])
def test_prompt_profile(kind, text, opens, suffix, closed) -> None:
    profile, is_closed = prompt_profile(PROFILE[kind], text)
    assert (profile.opens, profile.prompt_suffix, is_closed) == (opens, suffix, closed)
    assert dataclasses.replace(profile, opens=PROFILE[kind].opens,
                               prompt_suffix="") == PROFILE[kind]  # only those change


async def test_qwen3_enable_thinking_false_is_all_answer() -> None:
    fake = FakeEngine({"main": "The answer is 7."}, tokenizer=tokenizer("qwen3"))
    resp, _, [r] = await _service().complete(
        _request(chat_template_kwargs={"enable_thinking": False}), fake.handle())
    [call] = fake.calls
    assert call.prompt_text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert (r.reasoning, r.answer) == ("", "The answer is 7.")
    assert (r.counts.reasoning_tokens, r.source) == (0, "none")
    assert resp.usage.prompt_tokens == len(call.prompt_ids)


async def test_qwen3_enable_thinking_true_reasons() -> None:
    fake = FakeEngine({"main": p.THINK_OPEN + REASONING + "</think>7"},
                      tokenizer=tokenizer("qwen3"))
    _, _, [r] = await _service().complete(
        _request(chat_template_kwargs={"enable_thinking": True}), fake.handle())
    assert (r.reasoning, r.answer) == (REASONING, "7")
    assert r.counts.reasoning_tokens == len(fake.tok.encode(REASONING))


@pytest.mark.parametrize("budget", [{"reasoning_budget": 10}, {"reasoning_effort": "low"},
                                    {"budget_enforcement": "hard"}])
async def test_budgets_refused_when_thinking_is_off(budget) -> None:
    fake = FakeEngine({"main": "7"}, tokenizer=tokenizer("qwen3"))
    with pytest.raises(APIError) as info:
        await _service().complete(
            _request(chat_template_kwargs={"enable_thinking": False}, **budget), fake.handle())
    name = next(iter(budget))
    assert (info.value.status, info.value.param) == (400, name)
    assert "switched off" in info.value.message
    assert fake.calls == []


# A template whose switch opens the span in the prompt (the checkpoint's profile: "model").
OPENING = TEMPLATES["chatml"].replace(
    "'<|im_start|>assistant\\n' }}",
    "'<|im_start|>assistant\\n' }}{%- if thinking %}{{- '<think>' }}{%- endif %}")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_switch_that_opens_the_span_is_followed(stream) -> None:
    tok = tokenizer("qwen3", OPENING)
    fake = FakeEngine({"main": REASONING + "</think>7"}, tokenizer=tok)
    model = fake.handle()
    assert model.profile.opens == "model"
    req = _request(chat_template_kwargs={"thinking": True}, reasoning_budget=5, stream=stream)
    if stream:
        body = await _service().stream(req, model)
        deltas = [json.loads(e[len("data: "):])["choices"][0]["delta"]
                  async for e in body if e != "data: [DONE]\n\n"]
        assert "".join(d.get("reasoning") or "" for d in deltas) == REASONING
        assert "".join(d.get("content") or "" for d in deltas) == "7"
    else:
        resp, _, [r] = await _service().complete(req, model)
        assert (r.reasoning, r.answer) == (REASONING, "7")
        assert r.counts.reasoning_tokens == len(tok.encode(REASONING))
        assert (r.source, r.declared) == ("request", 5)
    [call] = fake.calls
    # the statement follows the template's <think> (no second <think>)
    assert call.prompt_text.endswith("assistant\n<think>" + p.budget_statement(5))


async def test_template_errors_are_400s() -> None:
    raising = ("{%- if messages | length > 1 %}{{ raise_exception('Only one message, "
               "please.') }}{%- endif %}" + TEMPLATES["qwen3"])
    fake = FakeEngine({"main": "7"}, tokenizer=tokenizer("qwen3", raising))
    req = ChatCompletionRequest(model="tiny", messages=MESSAGES * 2)
    with pytest.raises(APIError) as info:
        await _service().complete(req, fake.handle())
    assert (info.value.status, info.value.param) == (400, "messages")
    assert "Only one message, please." in info.value.message
    typed = TEMPLATES["qwen3"].replace("enable_thinking is false", "enable_thinking + 1 > 1")
    fake = FakeEngine({"main": "7"}, tokenizer=tokenizer("qwen3", typed))
    with pytest.raises(APIError) as info:
        await _service().complete(_request(chat_template_kwargs={"enable_thinking": "x"}),
                                  fake.handle())
    assert (info.value.status, info.value.param) == (400, "chat_template_kwargs")
    assert fake.calls == []
