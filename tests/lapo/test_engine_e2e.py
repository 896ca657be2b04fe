"""The tiny model in the real vLLM engine (in-process AsyncLLM on CPU), streamed and split."""

from __future__ import annotations

import uuid

import pytest

from lapo import protocol as p

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def engine(tiny_checkpoint):
    from lapo.engine import EngineConfig, start_async_engine

    eng = start_async_engine(EngineConfig(model=str(tiny_checkpoint), max_model_len=512,
                                           enforce_eager=True, dtype="float32"))
    try:
        yield eng
    finally:
        eng.shutdown()


async def test_streaming_generation_split_by_protocol(engine, tiny_checkpoint) -> None:
    from transformers import AutoTokenizer
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 3+4?"}], tokenize=False, add_generation_prompt=True
    )
    # Force a </think> mid-way so both spans are exercised whatever the random model samples.
    prompt += "a b c" + p.THINK_CLOSE
    params = SamplingParams(
        max_tokens=24, temperature=1.0, seed=0, output_kind=RequestOutputKind.DELTA,
        skip_special_tokens=True,
    )
    splitter = p.ThinkStreamSplitter(prompt_opens_think=False)
    texts, ids, finish = [], [], None
    async for out in engine.generate(prompt, params, request_id=uuid.uuid4().hex):
        delta = out.outputs[0]
        texts.append(delta.text)
        ids.extend(delta.token_ids)
        splitter.feed(delta.text)
        finish = delta.finish_reason or finish
    assert finish in {"stop", "length"}
    assert 1 <= len(ids) <= 24
    text = "".join(texts)
    assert text == tok.decode(ids, skip_special_tokens=True)
    counts = p.count_tokens(
        ids, tok.decode, tok.convert_tokens_to_ids(p.THINK_OPEN),
        tok.convert_tokens_to_ids(p.THINK_CLOSE), {tok.eos_token_id}, prompt_opens_think=False,
    )
    assert counts.completion_tokens == len(ids)
    # Streamed split agrees with the whole-text split.
    whole = p.split_think(text, prompt_opens_think=False)
    assert splitter.opened == whole.opened


async def test_reasoning_then_answer_from_engine(engine, tiny_checkpoint) -> None:
    """A prompt that opens <think>: the engine's output splits into reasoning/answer tokens."""
    from transformers import AutoTokenizer
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    params = SamplingParams(
        max_tokens=16, temperature=0.0, output_kind=RequestOutputKind.DELTA,
        skip_special_tokens=True,
    )
    splitter = p.ThinkStreamSplitter(prompt_opens_think=True)
    reasoning, answer, ids = "", "", []
    async for out in engine.generate(prompt, params, request_id=uuid.uuid4().hex):
        r, a = splitter.feed(out.outputs[0].text)
        reasoning, answer = reasoning + r, answer + a
        ids.extend(out.outputs[0].token_ids)
    r, a = splitter.finish()
    reasoning, answer = reasoning + r, answer + a
    whole = p.split_think(tok.decode(ids, skip_special_tokens=True), prompt_opens_think=True)
    assert (reasoning, answer) == (whole.reasoning, whole.answer)
    counts = p.count_tokens(
        ids, tok.decode, tok.convert_tokens_to_ids(p.THINK_OPEN),
        tok.convert_tokens_to_ids(p.THINK_CLOSE), {tok.eos_token_id},
    )
    assert counts.reasoning_tokens + counts.answer_tokens <= len(ids)
    assert counts.reasoning_tokens > 0
