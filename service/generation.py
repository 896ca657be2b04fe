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
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from lapo import protocol as p
from lapo.prompt import Prompt
from service.budget import BudgetLimits, BudgetPlan, Source, hard_cap, scale
from service.model import ModelHandle, engine_dead

logger = logging.getLogger(__name__)
_DEAD_POLL_S = 0.25


class EngineDead(RuntimeError):
    """The engine process died under a request."""


@dataclass(frozen=True)
class SamplingSpec:
    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    stop: list[str] | None


@dataclass(frozen=True)
class ChoiceJob:
    """One choice to generate: its prompt, its sampling, its budget and the limits it runs
    under (a swap's probe and the shadow baseline use the defaults: self-declared, no cap)."""

    prompt: Prompt
    spec: SamplingSpec
    plan: BudgetPlan = BudgetPlan("auto")
    limits: BudgetLimits = BudgetLimits()


@dataclass(frozen=True)
class Delta:
    reasoning: str = ""
    answer: str = ""


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

    @property
    def budget_error(self) -> float | None:
        if self.declared is None:
            return None
        return round((self.counts.budgeted_tokens - self.declared) / self.declared, 4)


def _params(spec: SamplingSpec, max_tokens: int, stop: list[str] | None = None,
            include_stop: bool = False, skip_special: bool = True):
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        n=1, temperature=spec.temperature, top_p=spec.top_p, max_tokens=max_tokens,
        seed=spec.seed, stop=stop, include_stop_str_in_output=include_stop,
        skip_special_tokens=skip_special, output_kind=RequestOutputKind.DELTA,
    )


class _Request:
    """One engine request, aborted on close unless it finished."""

    def __init__(self, engine, prompt: Prompt, params, lora=None) -> None:
        self.engine, self.prompt, self.params, self.lora = engine, prompt, params, lora
        self.id = f"lapo-{uuid.uuid4().hex}"
        self.finished = False

    async def stream(self):
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


async def _first_output(gen, engine):
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


async def _declare(engine, tok: p.TokenCounter, prompt: Prompt, spec: SamplingSpec,
                   max_tokens: int, lora=None) -> tuple[int | None, int]:
    """Effort mode's first phase: let the model write its statement; (declared, tokens)."""
    req = _Request(engine, prompt, _params(spec, max_tokens, stop=["tokens."], include_stop=True,
                                           skip_special=tok.profile.skip_special_tokens), lora)
    text, n_tokens = "", 0
    try:
        async for out in req.stream():
            text += out.text
            n_tokens += len(out.token_ids)
    finally:
        await req.close()
    return p.parse_budget(text), n_tokens


def _span_start(ids: list[int], profile) -> int:
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
    profile = tok.profile  # where the think span opens, what its tags are
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
    skip_special = profile.skip_special_tokens
    req = _Request(engine, main_prompt,
                   _params(spec, spec.max_tokens, spec.stop, skip_special=skip_special), lora)
    try:
        async for out in req.stream():
            opened = splitter.opened
            ids.extend(out.token_ids)
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
                yield Delta(reasoning=r)
            if a:
                first_a = first_a or time.monotonic()
                answer.append(a)
                yield Delta(answer=a)
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
        streamed, full = "".join(shown), tok.decode(ids)
        if len(full) > len(streamed) and full.startswith(streamed):
            r, _ = splitter.feed(full[len(streamed):])
            if r:
                reasoning.append(r)
                yield Delta(reasoning=r)
        held_r, _ = splitter.finish()
        if held_r:
            reasoning.append(held_r)
            yield Delta(reasoning=held_r)
        ids.extend(tok.close_ids)  # the forced </think> is part of the completion
        remaining = spec.max_tokens - len(ids)
        finish = "length"
        if remaining > 0:
            # The exact tokens generated so far (ids ends with the forced </think>).
            cont = main_prompt.then_ids(tok.decode(ids), ids)
            req = _Request(engine, cont,
                           _params(spec, remaining, spec.stop, skip_special=skip_special), lora)
            try:
                async for out in req.stream():
                    ids.extend(out.token_ids)
                    if out.text:
                        first_a = first_a or time.monotonic()
                        answer.append(out.text)
                        yield Delta(answer=out.text)
                    finish = out.finish_reason or finish
            finally:
                await req.close()
    else:
        held_r, held_a = splitter.finish()
        if held_r:
            reasoning.append(held_r)
            yield Delta(reasoning=held_r)
        if held_a:
            first_a = first_a or time.monotonic()
            answer.append(held_a)
            yield Delta(answer=held_a)

    counts = tok(ids, declared=injected)
    declared = counts.declared
    if source in ("model", "none"):
        # Nothing injected: the budget is the model's own statement, if it wrote one (also
        # in effort mode when its first phase found none to scale).
        source = "model" if declared is not None else "none"
    yield ChoiceResult(
        reasoning="".join(reasoning), answer="".join(answer), finish_reason=finish,
        counts=counts, source=source, declared=declared, enforced=enforced,
        statement_overhead_tokens=overhead, first_reasoning_at=first_r,
        first_answer_at=first_a,
    )
