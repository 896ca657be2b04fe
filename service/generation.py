"""One choice of a chat completion on the engine: budget phases, think split, token counts.

`run_choice` is an async generator: it yields `Delta` pieces (reasoning first, then answer)
as the engine produces them and ends with one `ChoiceResult`. Phases:

1. effort mode only: the model writes its own statement (stopped at "tokens."); the number
   is scaled and the statement re-injected, so the main phase plans for the scaled budget;
2. main: the prompt (plus an injected statement) is generated, streamed (DELTA outputs);
3. hard cap only: once the reasoning passes the cap, the request is aborted and a new one
   continues from ``prompt + reasoning + </think>`` so the model answers.

Engine requests are aborted in ``finally`` whatever ends the generator (client disconnect,
timeout, error).

Sampling options (temperature ... logit_bias) are the same in every phase. Output options
(``ignore_eos``, ``min_tokens``, ``logprobs``, the request's stop strings, special tokens)
apply to the completion's requests (main and continuation), never to effort mode's
statement phase, whose text is not part of the completion; a continuation gets what is left
of ``min_tokens``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lapo import protocol as p
from lapo.prompt import Prompt
from lapo.service import logprobs as lp
from lapo.service.budget import BudgetLimits, BudgetPlan, Source, hard_cap, scale
from lapo.service.model import ModelHandle, engine_dead
from lapo.think import ThinkProfile, TokenCounter

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase
    from vllm import CompletionOutput, RequestOutput, SamplingParams
    from vllm.lora.request import LoRARequest
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)
_DEAD_POLL_S = 0.25


class EngineDead(RuntimeError):
    """The engine process died under a request."""


@dataclass(frozen=True)
class SamplingSpec:
    """A choice's sampling; the defaults past ``stop`` are vLLM's (nothing changed)."""

    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    stop: list[str] | None
    # Sampling: every engine request of the choice.
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] | None = None
    # Output: the completion's requests only (not effort mode's statement phase).
    ignore_eos: bool = False
    min_tokens: int = 0
    logprobs: int | None = None  # top alternatives per token (0: the token's own); None: off
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False


@dataclass(frozen=True)
class ChoiceJob:
    """One choice to generate: its prompt, its sampling, its budget and the limits it runs
    under (a swap's probe and the shadow baseline use the defaults: self-declared, no cap).
    ``profile``: the prompt's own think profile when chat-template kwargs changed where the
    span opens (`lapo.service.chat_template.prompt_profile`); None: the checkpoint's."""

    prompt: Prompt
    spec: SamplingSpec
    plan: BudgetPlan = BudgetPlan("auto")
    limits: BudgetLimits = BudgetLimits()
    profile: ThinkProfile | None = None


@dataclass(frozen=True)
class Delta:
    reasoning: str = ""
    answer: str = ""
    # OpenAI logprobs entries of the tokens generated since the previous delta (with
    # ``logprobs`` requested): a token's entry comes with its text or ahead of it (text a
    # stop string or a tag split holds back comes later); entries generated after the last
    # delta come with the choice's result.
    logprobs: tuple[dict, ...] | None = None


@dataclass(frozen=True)
class ChoiceResult:
    reasoning: str
    answer: str
    finish_reason: str | None
    counts: p.TokenCounts
    source: Source
    declared: int | None
    enforced: bool
    statement_overhead_tokens: int  # effort mode's first phase (not billed)
    first_reasoning_at: float | None = None  # time.monotonic() of the first reasoning text
    first_answer_at: float | None = None
    # Every sampled token's OpenAI logprobs entry, in order (with ``logprobs`` requested):
    # reasoning and answer; not the forced </think> of a hard cap (not sampled).
    logprobs: list[dict] | None = None

    @property
    def budget_error(self) -> float | None:
        if self.declared is None:
            return None
        return round((self.counts.budgeted_tokens - self.declared) / self.declared, 4)


def _params(spec: SamplingSpec, max_tokens: int, *, statement: bool = False,
            min_tokens: int | None = None, skip_special: bool = True):
    """vLLM ``SamplingParams`` for one engine request of a choice.

    ``statement``: effort mode's first phase (stopped after ``tokens.``, the text kept): the
    choice's sampling without its output options. Otherwise the completion's options, with
    ``min_tokens`` (default: the spec's) and ``skip_special`` (False when the checkpoint's
    think tags are special tokens: the split needs them in the text).
    """
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    sampling = dict(
        n=1, temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k,
        min_p=spec.min_p, presence_penalty=spec.presence_penalty,
        frequency_penalty=spec.frequency_penalty, repetition_penalty=spec.repetition_penalty,
        logit_bias=dict(spec.logit_bias) if spec.logit_bias else None, seed=spec.seed,
        max_tokens=max_tokens, output_kind=RequestOutputKind.DELTA,
    )
    if statement:
        return SamplingParams(**sampling, stop=["tokens."], include_stop_str_in_output=True,
                              skip_special_tokens=skip_special)
    return SamplingParams(
        **sampling, stop=spec.stop, include_stop_str_in_output=spec.include_stop_str_in_output,
        skip_special_tokens=skip_special and spec.skip_special_tokens,
        ignore_eos=spec.ignore_eos,
        min_tokens=spec.min_tokens if min_tokens is None else min_tokens,
        logprobs=spec.logprobs,
    )


class _Trail:
    """A choice's logprobs entries (`lapo.service.logprobs`): all of them, and those no delta has
    carried yet. Off (``entries`` None) unless the request asked for logprobs."""

    def __init__(self, top_n: int | None, tokenizer: PreTrainedTokenizerBase) -> None:
        self.top_n, self.tokenizer = top_n, tokenizer
        self.entries: list[dict] | None = None if top_n is None else []
        self._unsent: list[dict] = []

    def add(self, out: CompletionOutput) -> None:
        if self.entries is not None:
            new = lp.entries(out.token_ids, out.logprobs, self.top_n,
                             lambda tid: self.tokenizer.decode([tid]))
            self.entries.extend(new)
            self._unsent.extend(new)

    def take(self) -> tuple[dict, ...] | None:
        if self.entries is None:
            return None
        taken, self._unsent = tuple(self._unsent), []
        return taken


class _Request:
    """One engine request, aborted on close unless it finished."""

    def __init__(self, engine: AsyncLLM, prompt: Prompt, params: SamplingParams,
                 lora: LoRARequest | None = None) -> None:
        self.engine, self.prompt, self.params, self.lora = engine, prompt, params, lora
        self.id = f"lapo-{uuid.uuid4().hex}"
        self.finished = False

    async def stream(self) -> AsyncIterator[CompletionOutput]:
        gen = self.engine.generate(self.prompt.engine_input(), self.params, request_id=self.id,
                                   lora_request=self.lora)
        try:
            out = await _first_output(gen, self.engine)
            while True:
                self.finished = out.finished
                yield out.outputs[0]
                out = await anext(gen)
        except StopAsyncIteration:
            return
        finally:
            await gen.aclose()

    async def close(self) -> None:
        if not self.finished:
            try:
                await self.engine.abort(self.id)
            except Exception:  # the engine may already be gone; nothing left to free
                logger.debug("abort of %s failed", self.id, exc_info=True)


async def _first_output(gen: AsyncGenerator[RequestOutput, None],
                        engine: AsyncLLM) -> RequestOutput:
    """The request's first output, or `EngineDead` if the engine dies before it comes.

    A request submitted just as the engine process dies can block inside vLLM (its input
    socket has no peer any more) where no error reaches it; once it has produced output, the
    supervisor's `fail_in_flight` wakes it. One extra task per engine request, not per token.
    """
    first = asyncio.ensure_future(anext(gen))
    try:
        while True:
            done, _ = await asyncio.wait({first}, timeout=_DEAD_POLL_S)
            if done:
                return first.result()
            if engine_dead(engine):
                raise EngineDead("the engine died before the request produced output")
    finally:
        if not first.done():
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)


async def _declare(engine: AsyncLLM, tok: TokenCounter, prompt: Prompt, spec: SamplingSpec,
                   max_tokens: int, lora: LoRARequest | None = None
                   ) -> tuple[int | None, int]:
    """Effort mode's first phase: let the model write its statement; (declared, tokens)."""
    req = _Request(engine, prompt, _params(spec, max_tokens, statement=True,
                                           skip_special=tok.profile.skip_special_tokens), lora)
    text, n_tokens = "", 0
    try:
        async for out in req.stream():
            text += out.text
            n_tokens += len(out.token_ids)
    finally:
        await req.close()
    return p.parse_budget(text), n_tokens


def _span_start(ids: list[int], profile: ThinkProfile) -> int:
    """How many of the completion's ids precede the reasoning (a model-written <think>)."""
    if profile.open_id is not None and profile.open_id in ids:
        return ids.index(profile.open_id) + 1
    return len(ids)  # several-token tag: the span opened within the last delta


async def generate_choice(model: ModelHandle, job: ChoiceJob) -> ChoiceResult:
    """`run_choice` drained: its final `ChoiceResult` (the deltas are not needed)."""
    gen = run_choice(model, job)
    try:
        async for item in gen:
            if isinstance(item, ChoiceResult):
                return item
    finally:
        await gen.aclose()
    raise RuntimeError("run_choice ended without a result")


async def run_choice(model: ModelHandle, job: ChoiceJob) -> AsyncIterator[Delta | ChoiceResult]:
    """Generate one choice of ``job`` on ``model`` (its engine, tokenizer and, for an adapter
    version, its ``LoRARequest``): deltas as they come, then one `ChoiceResult`."""
    engine, tok, lora = model.engine, model.tok, model.lora_request
    # Where the think span opens (this prompt's, when template kwargs moved it), its tags.
    profile = job.profile or tok.profile
    prompt, spec, plan, limits = job.prompt, job.spec, job.plan, job.limits
    slack_ratio, slack_tokens = limits.hard_slack_ratio, limits.hard_slack_tokens
    injected, source, overhead = plan.injected, "request", 0
    if plan.mode == "effort":
        declared, overhead = await _declare(engine, tok, prompt, spec,
                                            limits.statement_max_tokens, lora)
        if declared is not None:
            injected, source = scale(declared, plan.effort_factor), "effort"
        else:
            source = "none"
    elif plan.mode == "auto":
        source = "model"
    main_prompt = (prompt.then(profile.budget_prefix() + p.budget_statement(injected), tok)
                   if injected is not None else prompt)

    splitter = profile.stream_splitter(budget_in_prompt=injected is not None)
    reader = p.BudgetStreamReader()
    ids: list[int] = []
    span_start = 0  # ids before the reasoning: a <think> the model wrote itself
    shown: list[str] = []  # the main request's text as the engine streamed it
    reasoning, answer = [], []
    finish, enforced = None, False
    cap = hard_cap(injected, slack_ratio, slack_tokens) if plan.hard and injected else None
    statement_len = 0
    first_r = first_a = None
    trail = _Trail(spec.logprobs, tok.tokenizer)
    skip_special = profile.skip_special_tokens
    req = _Request(engine, main_prompt, _params(spec, spec.max_tokens, skip_special=skip_special),
                   lora)
    try:
        async for out in req.stream():
            opened = splitter.opened
            ids.extend(out.token_ids)
            trail.add(out)
            shown.append(out.text)
            r, a = splitter.feed(out.text)
            if splitter.opened and not opened:
                span_start = _span_start(ids, profile)
            if r:
                first_r = first_r or time.monotonic()
                reasoning.append(r)
                if injected is None and not reader.done:
                    reader.feed(r)
                    if reader.done and reader.declared is not None:
                        statement_len = p.statement_token_len(ids[span_start:], tok.decode)
                        if plan.hard:
                            cap = hard_cap(reader.declared, slack_ratio, slack_tokens)
                yield Delta(reasoning=r, logprobs=trail.take())
            if a:
                first_a = first_a or time.monotonic()
                answer.append(a)
                yield Delta(answer=a, logprobs=trail.take())
            finish = out.finish_reason or finish
            # At the cap: exactly ``cap`` budgeted reasoning tokens, then the forced </think>.
            if (cap is not None and not splitter.closed
                    and len(ids) - span_start - statement_len >= cap
                    and out.finish_reason is None):
                enforced = True
                break
    finally:
        await req.close()

    if enforced:
        # With stop strings vLLM holds back the stream's last characters until a request
        # finishes; this one was aborted, so they come from its token ids.
        streamed = "".join(shown)
        full = tok.tokenizer.decode(ids, skip_special_tokens=(
            skip_special and spec.skip_special_tokens))  # as the engine decoded them
        if len(full) > len(streamed) and full.startswith(streamed):
            r, _ = splitter.feed(full[len(streamed):])
            if r:
                reasoning.append(r)
                yield Delta(reasoning=r, logprobs=trail.take())
        held_r, _ = splitter.finish()
        if held_r:
            reasoning.append(held_r)
            yield Delta(reasoning=held_r, logprobs=trail.take())
        ids.extend(tok.close_ids)  # the forced </think> is part of the completion (no logprob)
        remaining = spec.max_tokens - len(ids)
        finish = "length"
        if remaining > 0:
            # The exact tokens generated so far (ids ends with the forced </think>).
            cont = main_prompt.then_ids(tok.decode(ids), ids)
            req = _Request(engine, cont, _params(spec, remaining, skip_special=skip_special,
                                                 min_tokens=max(0, spec.min_tokens - len(ids))),
                           lora)
            try:
                async for out in req.stream():
                    ids.extend(out.token_ids)
                    trail.add(out)
                    if out.text:
                        first_a = first_a or time.monotonic()
                        answer.append(out.text)
                        yield Delta(answer=out.text, logprobs=trail.take())
                    finish = out.finish_reason or finish
            finally:
                await req.close()
    else:
        held_r, held_a = splitter.finish()
        if held_r:
            reasoning.append(held_r)
            yield Delta(reasoning=held_r, logprobs=trail.take())
        if held_a:
            first_a = first_a or time.monotonic()
            answer.append(held_a)
            yield Delta(answer=held_a, logprobs=trail.take())

    counts = tok(ids, prompt_opens_think=profile.opened_by_prompt(injected is not None),
                 declared=injected)
    declared = counts.declared
    if source in ("model", "none"):
        # Nothing injected: the budget is the model's own statement, if it wrote one (also
        # in effort mode when its first phase found none to scale).
        source = "model" if declared is not None else "none"
    yield ChoiceResult(
        reasoning="".join(reasoning), answer="".join(answer), finish_reason=finish,
        counts=counts, source=source, declared=declared, enforced=enforced,
        statement_overhead_tokens=overhead, first_reasoning_at=first_r,
        first_answer_at=first_a, logprobs=trail.entries,
    )
