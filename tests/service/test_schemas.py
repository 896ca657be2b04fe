"""The stream's chunk schema (`ChatCompletionChunk`): which fields each kind of chunk sends,
as OpenAI clients (and vLLM's server) expect them."""

from __future__ import annotations

import pytest

from lapo.service.schemas import (
    ChatCompletionChunk,
    ChoiceLogprobs,
    ChunkChoice,
    CompletionTokensDetails,
    DeltaMessage,
    LapoInfo,
    Usage,
)

INFO = LapoInfo(declared_reasoning_tokens=None, actual_reasoning_tokens=3, reasoning_tokens=3,
                budget_source="none", budget_error=None, enforced=False)
USAGE = Usage(prompt_tokens=5, completion_tokens=4, total_tokens=9,
              completion_tokens_details=CompletionTokensDetails(reasoning_tokens=3))
ENTRY = {"token": "7", "logprob": -0.5, "bytes": [55], "top_logprobs": []}


@pytest.mark.parametrize(("choice", "expected"), [
    (ChunkChoice(index=0, delta=DeltaMessage(role="assistant", content="")),  # the first
     {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
      "finish_reason": None}),
    (ChunkChoice(index=1, delta=DeltaMessage(reasoning_content="x", reasoning="x")),
     {"index": 1, "delta": {"reasoning_content": "x", "reasoning": "x"}, "logprobs": None,
      "finish_reason": None}),
    (ChunkChoice(index=0, delta=DeltaMessage(content="7"),
                 logprobs=ChoiceLogprobs(content=[ENTRY])),
     {"index": 0, "delta": {"content": "7"}, "logprobs": {"content": [ENTRY]},
      "finish_reason": None}),
    (ChunkChoice(index=0, delta=DeltaMessage(), finish_reason="stop", lapo=INFO),  # the last
     {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop",
      "lapo": INFO.model_dump()}),
])
def test_chunk_choice_fields(choice, expected) -> None:
    assert choice.model_dump() == expected
    assert list(choice.model_dump()) == list(expected)  # key order on the wire


@pytest.mark.parametrize(("usage", "include_usage", "expected"), [
    (None, False, None),  # not asked: no "usage" key
    (None, True, {"usage": None}),  # asked: null on every chunk but the last
    (USAGE, True, {"usage": USAGE.model_dump()}),
])
def test_chunk_usage_only_when_asked(usage, include_usage, expected) -> None:
    chunk = ChatCompletionChunk(id="chatcmpl-1", created=1, model="m", system_fingerprint="f",
                                choices=[], usage=usage)
    body = chunk.dump(include_usage)
    assert list(body)[:6] == ["id", "object", "created", "model", "system_fingerprint",
                              "choices"]
    assert body["object"] == "chat.completion.chunk"
    assert {k: v for k, v in body.items() if k == "usage"} == (expected or {})
