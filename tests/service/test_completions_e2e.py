"""End to end: ``POST /v1/completions`` on the real vLLM engine through the `openai` SDK's
``client.completions.create``: a text prompt, n=2, echo, logprobs and a stream."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

PROMPT = "Start with 7. Apply +5. The result is"


def test_text_prompt_n2_with_usage_and_metrics(server) -> None:
    before = server.scrape()
    r = server.client().completions.create(model=server.model, prompt=PROMPT, max_tokens=12,
                                           n=2, seed=1, temperature=0.8)
    after = server.scrape()
    assert r.object == "text_completion" and [c.index for c in r.choices] == [0, 1]
    assert all(c.finish_reason in {"stop", "length"} for c in r.choices)
    assert 0 < r.usage.completion_tokens <= 24 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # the same request metrics as chat; choices under budget_source "none" (no reasoning)
    def grew(name: str, **labels) -> float:
        return after(name, **labels) - before(name, **labels)

    assert grew("lapo_requests_total") == 1
    assert grew("lapo_choices_total", budget_source="none") == 2
    assert grew("lapo_completion_tokens_total", budget_source="none") == r.usage.completion_tokens


def test_echo_and_logprobs(server) -> None:
    client = server.client()
    echoed = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=4,
                                       echo=True, seed=2)
    assert echoed.choices[0].text.startswith(PROMPT)
    scored = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=1,
                                       echo=True, logprobs=1, temperature=0)
    lp = scored.choices[0].logprobs  # as lm-eval scores a continuation
    assert lp.token_logprobs[0] is None and all(v <= 0 for v in lp.token_logprobs[1:])
    assert "".join(lp.tokens).startswith(PROMPT) and lp.text_offset[0] == 0
    r = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=6, logprobs=2,
                                  seed=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) > 0
    assert all(v <= 0 for v in lp.token_logprobs)
    assert "".join(lp.tokens).startswith(r.choices[0].text[:1])


def test_stream(server) -> None:
    stream = server.client().completions.create(model=server.model, prompt=PROMPT,
                                                max_tokens=8, stream=True, seed=3,
                                                stream_options={"include_usage": True},
                                                extra_body={"min_tokens": 2})
    text, finish, usage = "", None, None
    for chunk in stream:
        for c in chunk.choices:
            text += c.text
            finish = c.finish_reason or finish
        usage = chunk.usage or usage
    assert finish in {"stop", "length"} and text
    assert usage is not None and 0 < usage.completion_tokens <= 8
