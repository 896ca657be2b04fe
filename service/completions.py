"""The legacy text-completions serving class (``/v1/completions``): validate against limits,
tokenize each prompt, run ``len(prompts) x n`` choices on the engine, and shape OpenAI's
``text_completion`` responses and SSE chunks (`CompletionService`).

Raw text: no chat template and no think span (the completion's text is returned as the model
wrote it, ``</think>`` included). Admission, lease, deadline and disconnects are the
`RequestScope`'s, as for chat; each choice is one engine request, aborted when it is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from lapo.prompt import Prompt
from lapo.service import logprobs as lp
from lapo.service import metrics, structured
from lapo.service.completions_schemas import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionUsage,
)
from lapo.service.errors import invalid, sse_generation_failed
from lapo.service.generation import EngineRequest, SamplingSpec, sampling_params
from lapo.service.model import ModelHandle, engine_dead
from lapo.service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class _Piece:
    """A choice's text since its previous piece, with its tokens' legacy logprobs."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    done: bool = False
    tokens: int = 0


@dataclass
class _Choice:
    index: int
    prompt: Prompt
    echo: str
    text: list[str] = field(default_factory=list)
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    tokens: int = 0


def legacy_logprobs(entries: list[dict], offset: int) -> CompletionLogprobs:
    """Chat-shaped entries (`lapo.service.logprobs`) as OpenAI's legacy logprobs, offsets
    counted from ``offset`` characters into the choice's text."""
    tokens, offsets, at = [], [], offset
    for e in entries:
        tokens.append(e["token"])
        offsets.append(at)
        at += len(e["token"])
    top = []
    for e in entries:
        alternatives = {t["token"]: t["logprob"] for t in e["top_logprobs"]}
        alternatives.setdefault(e["token"], e["logprob"])  # the sampled token, as vLLM does
        top.append(alternatives)
    return CompletionLogprobs(tokens=tokens, token_logprobs=[e["logprob"] for e in entries],
                              top_logprobs=top, text_offset=offsets)


def _merge(a: CompletionLogprobs | None, b: CompletionLogprobs | None
           ) -> CompletionLogprobs | None:
    if a is None or b is None:
        return a or b
    return CompletionLogprobs(tokens=a.tokens + b.tokens,
                              token_logprobs=a.token_logprobs + b.token_logprobs,
                              top_logprobs=a.top_logprobs + b.top_logprobs,
                              text_offset=a.text_offset + b.text_offset)


class CompletionService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # ------------------------------------------------------------------ validation
    def _prompts(self, req: CompletionRequest, model: ModelHandle) -> list[Prompt]:
        s = self.settings
        if req.model not in (model.name, model.version):
            from lapo.service.errors import APIError

            raise APIError(404, f"The model '{req.model}' does not exist; this server serves "
                           f"'{model.name}'.", param="model", code="model_not_found")
        given = req.prompts()
        if len(given) * req.n > s.max_n:
            raise invalid(f"'n' x the number of prompts may be at most {s.max_n}; got "
                          f"{req.n} x {len(given)}.", "n" if len(given) == 1 else "prompt")
        if req.stop and len(req.stop) > s.max_stop:
            raise invalid(f"'stop' may hold at most {s.max_stop} sequences; got "
                          f"{len(req.stop)}.", "stop")
        if req.structured_outputs is not None:
            structured.refuse_conflicts("structured_outputs", stop=req.stop,
                                        ignore_eos=req.ignore_eos, min_tokens=req.min_tokens)
        vocab = model.logit_vocab
        for key in req.logit_bias or {}:
            if not 0 <= int(key) < vocab:
                raise invalid(f"'logit_bias' keys must be token ids in [0, {vocab}) (the "
                              f"vocabulary of '{model.name}'); got {key}.", "logit_bias")
        tokenizer = model.tok.tokenizer
        prompts = []
        for i, item in enumerate(given):
            if isinstance(item, str):
                if len(item) > s.max_message_chars:
                    raise invalid(f"'prompt' may be at most {s.max_message_chars} characters; "
                                  f"prompt {i} has {len(item)}.", "prompt")
                # As vLLM tokenizes a text prompt: with the tokenizer's special tokens (BOS).
                prompts.append(Prompt(item, tokenizer.encode(item)))
                if not prompts[-1].ids:
                    raise invalid(f"'prompt' must not be empty (prompt {i} is \"\", which is no "
                                  f"token for '{model.name}', whose tokenizer adds no BOS).",
                                  "prompt")
            else:
                bad = next((t for t in item if t >= len(tokenizer)), None)
                if bad is not None:
                    raise invalid(f"'prompt' token ids must be below {len(tokenizer)} (the "
                                  f"tokenizer of '{model.name}'); got {bad}.", "prompt")
                prompts.append(Prompt(tokenizer.decode(item), list(item)))
        return prompts

    def _limit(self, req: CompletionRequest, prompts: list[Prompt]) -> int:
        s = self.settings
        longest = max(len(p.ids) for p in prompts)
        room = s.max_model_len - longest
        if room < 1:
            raise invalid(f"The prompt is {longest} tokens; this model's context is "
                          f"{s.max_model_len} tokens, leaving no room for a completion.",
                          "prompt", "context_length_exceeded")
        if req.max_tokens is None:
            limit = min(s.default_max_tokens, room)
        elif req.max_tokens > room:
            raise invalid(f"'max_tokens' is {req.max_tokens}, but the context allows at most "
                          f"{room} completion tokens for this {longest}-token prompt "
                          f"(context {s.max_model_len}).", "max_tokens",
                          "context_length_exceeded")
        else:
            limit = req.max_tokens
        if req.min_tokens > limit:
            raise invalid(f"'min_tokens' must be at most max_tokens, {limit}; got "
                          f"{req.min_tokens}.", "min_tokens")
        return limit

    def spec(self, req: CompletionRequest, limit: int, seed: int | None) -> SamplingSpec:
        """The request's sampling and output options for one choice."""
        bias = {int(k): v for k, v in req.logit_bias.items()} if req.logit_bias else None
        return SamplingSpec(
            req.temperature, req.top_p, limit, seed, req.stop, top_k=req.top_k or 0,
            min_p=req.min_p or 0.0, presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            repetition_penalty=req.repetition_penalty or 1.0, logit_bias=bias,
            ignore_eos=req.ignore_eos, min_tokens=req.min_tokens, logprobs=req.logprobs,
            skip_special_tokens=req.skip_special_tokens,
            include_stop_str_in_output=req.include_stop_str_in_output,
            constraint=(None if req.structured_outputs is None
                        else req.structured_outputs.params()))

    async def _prepare(self, req: CompletionRequest, model: ModelHandle
                       ) -> tuple[list[_Choice], list[SamplingSpec]]:
        prompts = self._prompts(req, model)
        limit = self._limit(req, prompts)
        if req.structured_outputs is not None:
            await structured.check(("structured_outputs", req.structured_outputs.params()),
                                   model)
        choices, specs = [], []
        for i, prompt in enumerate(prompts):
            for j in range(req.n):
                index = i * req.n + j
                seed = None if req.seed is None else req.seed + j
                choices.append(_Choice(index, prompt, prompt.text if req.echo else ""))
                specs.append(self.spec(req, limit, seed))
        return choices, specs

    # ------------------------------------------------------------------ running
    async def _run(self, model: ModelHandle, choice: _Choice, spec: SamplingSpec
                   ) -> AsyncIterator[_Piece]:
        """One choice: its pieces as the engine streams them, the last one ``done``."""
        tokenizer = model.tok.tokenizer
        params = sampling_params(spec, spec.max_tokens, constrained=True)
        with_prompt = bool(choice.echo) and spec.logprobs is not None
        if with_prompt:
            # echo + logprobs: the prompt's own logprobs (what eval harnesses such as
            # lm-eval score), computed by the engine in the same request.
            params.prompt_logprobs = spec.logprobs
        request = EngineRequest(model.engine, choice.prompt, params, model.lora_request)
        offset, tokens, finish = len(choice.echo), 0, None
        echoed = not choice.echo
        try:
            async for out in request.stream():
                if not echoed:
                    echoed = True
                    yield _Piece(choice.index, choice.echo, self._prompt_logprobs(
                        choice.prompt, request.prompt_logprobs, spec.logprobs, tokenizer)
                        if with_prompt else None)
                tokens += len(out.token_ids)
                finish = out.finish_reason or finish
                logprobs = None
                if spec.logprobs is not None:
                    entries = lp.entries(out.token_ids, out.logprobs, spec.logprobs,
                                         lambda tid: tokenizer.decode([tid]))
                    logprobs = legacy_logprobs(entries, offset)
                    offset += sum(len(e["token"]) for e in entries)
                yield _Piece(choice.index, out.text, logprobs, tokens=tokens)
        finally:
            await request.close()
        yield _Piece(choice.index, "", None, finish, done=True, tokens=tokens)

    @staticmethod
    def _prompt_logprobs(prompt: Prompt, positions: list | None, top_n: int,
                         tokenizer) -> CompletionLogprobs:
        """The prompt's tokens in legacy logprobs; the first has none (nothing precedes it),
        as OpenAI and vLLM send it."""
        decode = lambda tid: tokenizer.decode([tid])  # noqa: E731
        rest = lp.entries(prompt.ids[1:], (positions or [None])[1:], top_n, decode)
        legacy = legacy_logprobs([{"token": decode(prompt.ids[0]), "logprob": 0.0,
                                   "top_logprobs": []}, *rest], 0)
        legacy.token_logprobs[0] = legacy.top_logprobs[0] = None
        return legacy

    async def complete(self, req: CompletionRequest, model: ModelHandle) -> Completion:
        choices, specs = await self._prepare(req, model)

        async def drain(choice: _Choice, spec: SamplingSpec) -> None:
            gen = self._run(model, choice, spec)
            try:
                async for piece in gen:
                    choice.text.append(piece.text)
                    choice.logprobs = _merge(choice.logprobs, piece.logprobs)
                    choice.finish_reason = piece.finish_reason or choice.finish_reason
                    choice.tokens = piece.tokens
            finally:
                await gen.aclose()
            metrics.observe_text_choice(model, choice.finish_reason, choice.tokens)

        tasks = [asyncio.ensure_future(drain(c, s)) for c, s in zip(choices, specs, strict=True)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return Completion(
            id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model.name,
            system_fingerprint=model.fingerprint,
            choices=[CompletionChoice(index=c.index, text="".join(c.text),
                                      logprobs=c.logprobs, finish_reason=c.finish_reason)
                     for c in choices],
            usage=self._usage(req, choices))

    @staticmethod
    def _usage(req: CompletionRequest, choices: list[_Choice]) -> CompletionUsage:
        prompt = sum(len(c.prompt.ids) for c in choices[::req.n])  # each prompt once
        completion = sum(c.tokens for c in choices)
        return CompletionUsage(prompt_tokens=prompt, completion_tokens=completion,
                               total_tokens=prompt + completion)

    async def stream(self, req: CompletionRequest, model: ModelHandle) -> AsyncIterator[str]:
        """Validate first (errors become HTTP errors), then return the SSE body iterator."""
        choices, specs = await self._prepare(req, model)
        return self._sse(req, model, choices, specs)

    async def _sse(self, req: CompletionRequest, model: ModelHandle, choices: list[_Choice],
                   specs: list[SamplingSpec]) -> AsyncIterator[str]:
        chunk_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        def chunk(pieces: list[CompletionChoice], usage: CompletionUsage | None = None) -> str:
            body = Completion(id=chunk_id, created=created, model=model.name,
                              system_fingerprint=model.fingerprint, choices=pieces, usage=usage)
            return f"data: {json.dumps(body.dump(include_usage))}\n\n"

        queue: asyncio.Queue = asyncio.Queue()

        async def pump(choice: _Choice, spec: SamplingSpec) -> None:
            gen = self._run(model, choice, spec)
            try:
                async for piece in gen:
                    await queue.put(piece)
            except Exception as exc:  # surfaced to the client as an error event
                await queue.put(exc)
            finally:
                await gen.aclose()

        tasks = [asyncio.ensure_future(pump(c, s)) for c, s in zip(choices, specs, strict=True)]
        by_index = {c.index: c for c in choices}
        open_choices = len(choices)
        try:
            while open_choices:
                item = await queue.get()
                if isinstance(item, Exception):
                    logger.error("completion choice failed: %s", type(item).__name__)
                    yield sse_generation_failed(engine_dead(model.engine))
                    return
                choice = by_index[item.index]
                choice.tokens = item.tokens
                if item.done:
                    open_choices -= 1
                    choice.finish_reason = item.finish_reason
                    metrics.observe_text_choice(model, item.finish_reason, item.tokens)
                    yield chunk([CompletionChoice(index=item.index, text="",
                                                  finish_reason=item.finish_reason)])
                elif item.text or item.logprobs is not None:
                    yield chunk([CompletionChoice(index=item.index, text=item.text,
                                                  logprobs=item.logprobs, finish_reason=None)])
            if include_usage:
                yield chunk([], self._usage(req, choices))
            yield "data: [DONE]\n\n"
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
