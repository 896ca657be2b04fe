"""The chat-completions serving class: validate against limits, build the prompt, run the
choices on the engine (`lapo.service.generation`), and shape OpenAI responses and SSE chunks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from lapo.service import chat_template, metrics, structured, tools
from lapo.service.budget import BudgetPlan, plan_budget, scale
from lapo.service.errors import APIError, invalid, sse_generation_failed
from lapo.service.generation import (
    ChoiceJob,
    ChoiceResult,
    Delta,
    Prompt,
    SamplingSpec,
    declare,
    generate_choice,
    run_choice,
)
from lapo.service.model import ModelHandle, engine_dead
from lapo.service.scheduling import RunningMedian, Scheduled
from lapo.service.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    CompletionTokensDetails,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    LapoInfo,
    ResponseMessage,
    ToolCall,
    Usage,
)
from lapo.service.settings import Settings
from lapo.think import ThinkProfile

if TYPE_CHECKING:
    from lapo.service.shadow import ShadowRunner

logger = logging.getLogger(__name__)


def lapo_info(result: ChoiceResult, queue_wait_s: float | None = None) -> LapoInfo:
    return LapoInfo(
        declared_reasoning_tokens=result.declared,
        actual_reasoning_tokens=result.counts.budgeted_tokens,
        reasoning_tokens=result.counts.reasoning_tokens,
        budget_source=result.source,
        budget_error=result.budget_error,
        enforced=result.enforced,
        queue_wait_s=None if queue_wait_s is None else round(queue_wait_s, 4),
    )


def total_usage(n_prompt: int, results: Iterable[ChoiceResult]) -> Usage:
    """A response's token counts: the prompt once, every choice's completion and reasoning."""
    results = list(results)
    completion = sum(r.counts.completion_tokens for r in results)
    reasoning = sum(r.counts.reasoning_tokens for r in results)
    return Usage(prompt_tokens=n_prompt, completion_tokens=completion,
                 total_tokens=n_prompt + completion,
                 completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning))


def lapo_headers(info: LapoInfo) -> dict[str, str]:
    def s(v: object) -> str:
        return "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    return {
        "x-lapo-declared-reasoning-tokens": s(info.declared_reasoning_tokens),
        "x-lapo-actual-reasoning-tokens": s(info.actual_reasoning_tokens),
        "x-lapo-budget-source": info.budget_source,
        "x-lapo-budget-error": s(info.budget_error),
        "x-lapo-enforced": s(info.enforced),
        "x-lapo-queue-wait-s": s(info.queue_wait_s),
    }


def tool_deltas(content: str | None, calls: list[ToolCall] | None) -> list[DeltaMessage]:
    """A buffered answer's stream deltas: its text, then one delta per call (OpenAI's shape:
    ``index``, ``id``, ``type``, the name and the whole arguments)."""
    deltas = [DeltaMessage(content=content)] if content else []
    for i, call in enumerate(calls or ()):
        deltas.append(DeltaMessage(tool_calls=[DeltaToolCall(
            index=i, id=call.id, type="function",
            function=DeltaFunctionCall(name=call.function.name,
                                       arguments=call.function.arguments))]))
    return deltas


async def _cancel(tasks: list[asyncio.Future], gens: tuple = ()) -> None:
    """Stop every choice; each generator's finally aborts its engine request."""
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for g in gens:
        await g.aclose()


class ChatService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.shadow: ShadowRunner | None = None  # set when LAPO_SHADOW_MODEL is set
        # Answer tokens of recent choices: the scheduler's expected answer after a budget.
        self.answers = RunningMedian()

    def _shadow(self, model: ModelHandle, req: ChatCompletionRequest, limit: int,
                results: list[ChoiceResult]) -> None:
        if self.shadow is None or not results:
            return
        # The baseline is another checkpoint: the same sampling, but not what names our
        # vocabulary or template (logit_bias, chat_template_kwargs) or shapes the output.
        spec = SamplingSpec(req.temperature, req.top_p, limit, req.seed, req.stop,
                            **self._sampling(req))
        self.shadow.maybe_submit(model, self._messages(req), spec,
                                 results[0].counts.reasoning_tokens)

    @staticmethod
    def _sampling(req: ChatCompletionRequest) -> dict:
        """vLLM's sampling extensions that mean the same for any checkpoint (unset: vLLM's
        defaults)."""
        return dict(top_k=req.top_k or 0, min_p=req.min_p or 0.0,
                    presence_penalty=req.presence_penalty,
                    frequency_penalty=req.frequency_penalty,
                    repetition_penalty=req.repetition_penalty or 1.0)

    def _spec(self, req: ChatCompletionRequest, limit: int, seed: int | None) -> SamplingSpec:
        """The request's sampling and output options for one choice (`SamplingSpec`)."""
        bias = ({int(k): v for k, v in req.logit_bias.items()} if req.logit_bias else None)
        return SamplingSpec(
            req.temperature, req.top_p, limit, seed, req.stop, **self._sampling(req),
            logit_bias=bias, ignore_eos=req.ignore_eos, min_tokens=req.min_tokens,
            logprobs=req.n_logprobs, skip_special_tokens=req.skip_special_tokens,
            include_stop_str_in_output=req.include_stop_str_in_output,
            constraint=None if req.constraint is None else req.constraint[1])

    @staticmethod
    def message_dicts(messages: list[ChatMessage]) -> list[dict]:
        """What the chat template gets (OpenAI's ``developer`` role is its ``system``; an
        assistant's ``tool_calls`` with their arguments parsed, its null content ""; a tool
        message's ``tool_call_id``)."""
        out = []
        for i, m in enumerate(messages):
            d: dict = {"role": "system" if m.role == "developer" else m.role,
                       "content": m.text()}
            if m.tool_calls:
                d["tool_calls"] = tools.history_calls(m.tool_calls, f"messages.{i}")
            if m.tool_call_id is not None:
                d["tool_call_id"] = m.tool_call_id
            out.append(d)
        return out

    def _messages(self, req: ChatCompletionRequest) -> list[dict]:
        return self.message_dicts(req.messages)

    # ------------------------------------------------------------------ validation
    def check_model(self, name: str | None, model: ModelHandle) -> None:
        if name is not None and name not in (model.name, model.version):
            raise APIError(404, f"The model '{name}' does not exist; this server serves "
                           f"'{model.name}'.", param="model", code="model_not_found")

    def check_messages(self, messages: list[ChatMessage]) -> None:
        s = self.settings
        if len(messages) > s.max_messages:
            raise invalid(f"'messages' may hold at most {s.max_messages} messages; got "
                          f"{len(messages)}.", "messages")
        for i, m in enumerate(messages):
            size = len(m.text())
            if size > s.max_message_chars:
                raise invalid(f"'messages[{i}].content' may be at most {s.max_message_chars} "
                              f"characters; got {size}.", f"messages.{i}.content")
            for j, call in enumerate(m.tool_calls or ()):
                size = len(call.function.arguments)
                if size > s.max_message_chars:
                    where = f"messages.{i}.tool_calls.{j}.function.arguments"
                    raise invalid(f"'{where}' may be at most {s.max_message_chars} "
                                  f"characters; got {size}.", where)

    def check_limits(self, req: ChatCompletionRequest, model: ModelHandle) -> None:
        s = self.settings
        self.check_model(req.model, model)
        tools.check(req, model, s)
        if req.n > s.max_n:
            raise invalid(f"'n' must be at most {s.max_n}; got {req.n}.", "n")
        self.check_messages(req.messages)
        if req.stop and len(req.stop) > s.max_stop:
            raise invalid(f"'stop' may hold at most {s.max_stop} sequences; got "
                          f"{len(req.stop)}.", "stop")
        if req.constraint is not None:
            structured.refuse_conflicts(req.constraint[0], stop=req.stop,
                                        ignore_eos=req.ignore_eos, min_tokens=req.min_tokens)
        if not model.profile.reasons:
            self._refuse_budgets(req, model)
        if req.reasoning_budget is not None and req.reasoning_budget > s.max_reasoning_budget:
            raise invalid(f"'reasoning_budget' must be at most {s.max_reasoning_budget}; got "
                          f"{req.reasoning_budget}.", "reasoning_budget")
        vocab = model.logit_vocab
        for key in req.logit_bias or {}:
            if not 0 <= int(key) < vocab:
                raise invalid(f"'logit_bias' keys must be token ids in [0, {vocab}) (the "
                              f"vocabulary of '{model.name}'); got {key}.", "logit_bias")
        chat_template.check_kwargs(req.chat_template_kwargs, model.tok.tokenizer, model.name,
                                   s.max_message_chars)

    @staticmethod
    def _budgets_given(req: ChatCompletionRequest) -> list[tuple[str, object]]:
        return [(name, value) for name, value in (
            ("reasoning_budget", req.reasoning_budget),
            ("reasoning_effort", req.reasoning_effort),
            ("budget_enforcement", "hard" if req.budget_enforcement == "hard" else None))
            if value is not None]

    @classmethod
    def _refuse_budgets(cls, req: ChatCompletionRequest, model: ModelHandle) -> None:
        """A model without a think span has no reasoning to budget: say so (as OpenAI
        answers ``reasoning_effort`` sent to a non-reasoning model), do not ignore it."""
        given = cls._budgets_given(req)
        if given:
            name, value = given[0]
            raise invalid(f"'{name}' ({value!r}) cannot apply: the model '{model.name}' does "
                          "not reason in a think span (its chat template and vocabulary "
                          "have no <think>), so it has no reasoning to budget.", name,
                          "unsupported_parameter")

    def build_prompt(self, req: ChatCompletionRequest, model: ModelHandle
                     ) -> tuple[Prompt, int, ThinkProfile | None]:
        """The chat-templated prompt, tokenized once here (the engine gets the ids), and its
        think profile when ``chat_template_kwargs`` moved where the span opens."""
        kwargs = req.chat_template_kwargs
        prompt = chat_template.render(self._messages(req), model.tok, kwargs,
                                      tools.template_tools(req))
        profile = None
        if kwargs:
            profile, closed = chat_template.prompt_profile(model.profile, prompt.text)
            if closed:
                chat_template.refuse_budgets_without_thinking(self._budgets_given(req))
                if req.constraint is not None:
                    # Thinking is off: the whole completion is the answer, constrained
                    # from its first token.
                    profile = dataclasses.replace(profile, opens="none")
        return prompt, len(prompt.ids), profile

    def completion_limit(self, req: ChatCompletionRequest, n_prompt: int) -> int:
        s = self.settings
        # Room for the prompt, an injected statement and at least one token.
        room = s.max_model_len - n_prompt - s.statement_max_tokens
        if room < 1:
            raise invalid(f"The prompt is {n_prompt} tokens; this model's context is "
                          f"{s.max_model_len} tokens, leaving no room for a completion.",
                          "messages", "context_length_exceeded")
        asked = req.completion_limit
        if asked is None:
            limit = min(s.default_max_tokens, room)
        elif asked > room:
            param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
            raise invalid(f"'{param}' is {asked}, but the context allows at most {room} "
                          f"completion tokens for this {n_prompt}-token prompt "
                          f"(context {s.max_model_len}).", param, "context_length_exceeded")
        else:
            limit = asked
        if req.min_tokens > limit:
            what = ("max_completion_tokens" if req.max_completion_tokens else "max_tokens"
                    if req.max_tokens else "the default completion limit")
            raise invalid(f"'min_tokens' must be at most the completion limit, {limit} "
                          f"({what}); got {req.min_tokens}.", "min_tokens")
        return limit

    # ------------------------------------------------------------------ running
    def _plan(self, req: ChatCompletionRequest) -> BudgetPlan:
        return plan_budget(req.reasoning_budget, req.reasoning_effort, req.budget_enforcement,
                           self.settings.effort_factors)

    def _jobs(self, req: ChatCompletionRequest, prompt: Prompt, limit: int,
              profile: ThinkProfile | None = None,
              statement: tuple[int | None, int] | None = None) -> list[ChoiceJob]:
        s = self.settings
        return [ChoiceJob(prompt, self._spec(req, limit,
                                             None if req.seed is None else req.seed + i),
                          self._plan(req), s.budget_limits, profile, statement)
                for i in range(req.n)]

    async def expected_work(self, req: ChatCompletionRequest, model: ModelHandle
                            ) -> tuple[float, tuple[int | None, int] | None]:
        """The scheduler's key for a request that must wait: its expected completion tokens
        (the declared reasoning budget plus the recent median answer; no declaration: its
        completion limit), and, in effort mode with one choice, the statement the probe wrote
        (its first phase, reused). A request without a budget asks the model for its
        statement first (a short engine request: `generation.declare`)."""
        self.check_limits(req, model)
        prompt, n_prompt, profile = self.build_prompt(req, model)
        limit = self.completion_limit(req, n_prompt)
        plan, answer = self._plan(req), self.answers.value()
        if plan.mode == "request":
            return float(plan.injected + answer), None
        if not (profile or model.tok.profile).reasons:
            return float(limit), None  # no think span: nothing to declare
        declared, tokens = await declare(model, prompt, self._spec(req, limit, req.seed),
                                         self.settings.statement_max_tokens)
        if declared is None:
            return float(limit), None
        if plan.mode == "effort":
            budget = scale(declared, plan.effort_factor)
            return float(budget + answer), ((declared, tokens) if req.n == 1 else None)
        return float(declared + answer), None

    async def complete(self, req: ChatCompletionRequest, model: ModelHandle,
                       sched: Scheduled | None = None
                       ) -> tuple[ChatCompletion, dict[str, str], list[ChoiceResult]]:
        self.check_limits(req, model)
        prompt, n_prompt, profile = self.build_prompt(req, model)
        limit = self.completion_limit(req, n_prompt)
        await tools.check_schemas(req, model)
        await structured.check(req.constraint, model)
        started = time.monotonic()

        statement = sched.statement_for(model) if sched else None
        tasks = [asyncio.ensure_future(generate_choice(model, job))
                 for job in self._jobs(req, prompt, limit, profile, statement)]
        try:
            results = await asyncio.gather(*tasks)
        finally:
            await _cancel(tasks)
        for r in results:
            metrics.observe_choice(model, r, started)
            self.answers.add(r.counts.answer_tokens)
        self._shadow(model, req, limit, results)
        choices = []
        for i, r in enumerate(results):
            content, calls, finish = tools.answer_message(req, r.answer, r.finish_reason,
                                                          self.settings, model.tok.tokenizer)
            message = ResponseMessage(content=content, reasoning_content=r.reasoning,
                                      reasoning=r.reasoning, tool_calls=calls)
            choices.append(Choice(
                index=i, message=message, finish_reason=finish,
                lapo=lapo_info(r, sched.waited_s if sched else None),
                logprobs=None if r.logprobs is None else ChoiceLogprobs(content=r.logprobs)))
        response = ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model.name,
            system_fingerprint=model.fingerprint, choices=choices,
            usage=total_usage(n_prompt, results))
        headers = lapo_headers(choices[0].lapo) if len(choices) == 1 else {}
        return response, headers, results

    async def stream(self, req: ChatCompletionRequest, model: ModelHandle,
                     sched: Scheduled | None = None) -> AsyncIterator[str]:
        """Validate first (errors become HTTP errors), then return the SSE body iterator."""
        self.check_limits(req, model)
        prompt, n_prompt, profile = self.build_prompt(req, model)
        limit = self.completion_limit(req, n_prompt)
        await tools.check_schemas(req, model)
        await structured.check(req.constraint, model)
        statement = sched.statement_for(model) if sched else None
        gens = [run_choice(model, job)
                for job in self._jobs(req, prompt, limit, profile, statement)]
        return self._sse(req, model, gens, n_prompt, time.monotonic(), limit,
                         sched.waited_s if sched else None)

    async def _sse(self, req: ChatCompletionRequest, model: ModelHandle,
                   gens: list[AsyncIterator[Delta | ChoiceResult]], n_prompt: int,
                   started: float, limit: int, waited_s: float | None = None
                   ) -> AsyncIterator[str]:
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
            body = ChatCompletionChunk(id=chunk_id, created=created, model=model.name,
                                       system_fingerprint=model.fingerprint,
                                       choices=choices, usage=usage)
            return f"data: {json.dumps(body.dump(include_usage))}\n\n"

        queue: asyncio.Queue = asyncio.Queue()

        async def pump(index: int, gen: AsyncIterator[Delta | ChoiceResult]) -> None:
            try:
                async for item in gen:
                    await queue.put((index, item))
            except Exception as exc:  # surfaced to the client as an error event
                await queue.put((index, exc))
            finally:
                await queue.put((index, None))

        async def merged():
            while True:
                yield await queue.get()

        async def single():
            # n = 1 (the common case): no task and queue hop per delta.
            try:
                async for item in gens[0]:
                    yield 0, item
            except Exception as exc:  # surfaced to the client as an error event
                yield 0, exc
            yield 0, None

        for i in range(req.n):
            yield chunk([ChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))])
        tasks = ([] if req.n == 1 else
                 [asyncio.ensure_future(pump(i, g)) for i, g in enumerate(gens)])
        events = single() if req.n == 1 else merged()
        results: dict[int, ChoiceResult] = {}
        buffered = req.tool_mode != "none"
        sent = [0] * req.n  # logprobs entries each choice's deltas carried
        open_choices = req.n
        try:
            while open_choices:
                index, item = await anext(events)
                if item is None:
                    open_choices -= 1
                elif isinstance(item, Exception):
                    logger.error("choice %d failed: %s", index, type(item).__name__)
                    yield sse_generation_failed(engine_dead(model.engine))
                    return
                elif isinstance(item, Delta):
                    if item.answer and buffered:
                        # Tool calls are read from the whole answer: it is sent at the end
                        # (its logprobs with the choice's last chunk).
                        continue
                    delta = (DeltaMessage(reasoning_content=item.reasoning,
                                          reasoning=item.reasoning)
                             if item.reasoning else DeltaMessage(content=item.answer))
                    logprobs = None
                    if item.logprobs is not None:
                        logprobs = ChoiceLogprobs(content=list(item.logprobs))
                        sent[index] += len(item.logprobs)
                    yield chunk([ChunkChoice(index=index, delta=delta, logprobs=logprobs)])
                else:
                    results[index] = item
                    metrics.observe_choice(model, item, started)
                    self.answers.add(item.counts.answer_tokens)
                    # Entries no delta carried (EOS, text held back to the end) come last.
                    rest = (None if item.logprobs is None
                            else ChoiceLogprobs(content=item.logprobs[sent[index]:]))
                    finish = item.finish_reason
                    if buffered:
                        content, calls, finish = tools.answer_message(
                            req, item.answer, finish, self.settings, model.tok.tokenizer)
                        for delta in tool_deltas(content, calls):
                            yield chunk([ChunkChoice(index=index, delta=delta)])
                    yield chunk([ChunkChoice(index=index, delta=DeltaMessage(), logprobs=rest,
                                             finish_reason=finish,
                                             lapo=lapo_info(item, waited_s))])
            self._shadow(model, req, limit, [results[i] for i in sorted(results)])
            if include_usage:
                yield chunk([], total_usage(n_prompt, results.values()))
            yield "data: [DONE]\n\n"
        finally:
            await events.aclose()
            await _cancel(tasks, gens)
