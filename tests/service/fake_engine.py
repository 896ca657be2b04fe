"""A scripted stand-in for vLLM's ``AsyncLLM``, for exact unit tests of `lapo.service.generation`.

Like vLLM's own serving tests (``MagicMock(spec=AsyncLLM)`` fed scripted outputs), but the
outputs follow the engine's rules for one request with ``RequestOutputKind.DELTA``:

- the scripted completion text is tokenized with the project's real tiny tokenizer
  (`lapo.tiny.build_tokenizer`, no weights), and an end-of-sequence token follows it;
- each engine step yields ``tokens_per_step`` tokens (an int, or the sizes of successive
  steps, the last one repeating) as a real ``vllm.outputs.RequestOutput`` whose
  ``outputs[0]`` carries the step's ``token_ids`` and the text they add, decoded
  incrementally (an incomplete UTF-8 sequence is held back until it completes);
- per token, as vLLM checks them: EOS ends with ``finish_reason="stop"``, ``max_tokens``
  with ``"length"``, and a stop string (the one that completes earliest) with ``"stop"``;
  the text then ends before the stop string, or after it with
  ``include_stop_str_in_output``. Like vLLM's detokenizer, while stop strings are to be
  excluded the streamed text holds back ``max(len(stop)) - 1`` characters;
- ``min_tokens``: EOS is masked and stop strings are not matched before that many tokens;
  ``ignore_eos``: EOS does not end the request. Either way the model writes on past the end
  of its script (the script again) until ``max_tokens``. The EOS that ends a request is left
  out of its text (unless ``include_stop_str_in_output``), as vLLM's detokenizer does;
- with ``logprobs`` set, each output carries vLLM's per-token ``{id: Logprob}`` dicts
  (`FakeEngine.logprobs_at`);
- ``finished`` is True on the last output only; ``abort(request_id)`` is an ``AsyncMock``
  (recorded) and ends that request's stream.

Every request is recorded as an `EngineCall` (prompt, params, request id, LoRA request, what
was yielded), so tests assert on what the service sent and got.

The script says what the model writes for each request: a callable ``script(call) -> text``
(or a list of token ids), a mapping from the request's `EngineCall.kind` to a text, or a list
of texts taken in order. Kinds: ``"statement"`` (effort mode's first phase, stopped at
``tokens.``), ``"continue"`` (the prompt ends with ``</think>``: a hard cap's continuation)
and ``"main"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from unittest.mock import AsyncMock, MagicMock

from lapo import protocol as p
from lapo.prompt import Prompt
from lapo.service.model import ModelHandle
from lapo.think import TokenCounter

# The same corpus tests/conftest.py trains the tiny checkpoint's tokenizer on: the budget
# statement and the tags come out as a handful of tokens, like with a served checkpoint.
CORPUS = ["<|im_start|>user\nWhat is 3+4?<|im_end|>\n<|im_start|>assistant\n<think>"
          " I will answer the question with 12 tokens.\n3+4=7. Check: 7.</think>7"] * 20
MESSAGES = [{"role": "user", "content": "What is 3+4?"}]
HANG = object()  # a script result: the request never produces output


@functools.cache
def tiny_tokenizer():
    """The project's tiny byte-level BPE tokenizer (built in memory, no checkpoint)."""
    from lapo.tiny import build_tokenizer

    return build_tokenizer(CORPUS)


@functools.cache
def token_counter() -> TokenCounter:
    return TokenCounter(tiny_tokenizer())


def chat_prompt(messages: list[dict] | None = None) -> Prompt:
    """The chat-templated prompt (text and ids) the service builds for ``messages``."""
    return Prompt.chat(messages or MESSAGES, token_counter())


@dataclass
class EngineCall:
    """One ``generate`` request as the fake engine saw it, and what it yielded."""

    request_id: str
    prompt: object  # what generate() got: {"prompt_token_ids": [...]} or a text
    params: object  # the vllm SamplingParams
    lora_request: object
    prompt_ids: list[int]
    prompt_text: str  # the prompt ids decoded with special tokens
    kind: str  # "statement" | "continue" | "main"
    script_ids: list[int] = field(default_factory=list)  # the scripted tokens, EOS included
    ids: list[int] = field(default_factory=list)  # the token ids yielded
    deltas: list[str] = field(default_factory=list)  # the text of each yielded output
    finish_reason: str | None = None
    stop_reason: str | None = None
    closed: bool = False  # the generate() stream was closed (finished, aborted or dropped)

    @property
    def text(self) -> str:
        return "".join(self.deltas)


Script = Callable[[EngineCall], object] | Mapping[str, object] | Sequence[object]


def _kind(params, prompt_text: str) -> str:
    stop = [params.stop] if isinstance(params.stop, str) else list(params.stop or [])
    if "tokens." in stop:
        return "statement"
    if prompt_text.endswith(p.THINK_CLOSE):
        return "continue"
    return "main"


def _stop_match(text: str, stops: Sequence[str], start: int = 0) -> tuple[str, int] | None:
    """The stop string completing earliest in ``text[start:]`` (ties: list order) and its
    index in ``text``."""
    best = None
    for s in stops:
        i = text.find(s, start)
        if i >= 0 and (best is None or i + len(s) < best[1] + len(best[0])):
            best = (s, i)
    return best


class FakeEngine:
    """A ``MagicMock(spec=AsyncLLM)`` (``self.engine``) answering requests from a script."""

    def __init__(self, script: Script, tokens_per_step: int | Sequence[int] = 1,
                 eos: bool = True, tokenizer=None) -> None:
        """``tokenizer``: another checkpoint's (default: the project's tiny one)."""
        from vllm.v1.engine.async_llm import AsyncLLM

        self.script = list(script) if isinstance(script, list) else script
        self.steps = ([tokens_per_step] if isinstance(tokens_per_step, int)
                      else list(tokens_per_step))
        if not self.steps or any(n < 1 for n in self.steps):
            raise ValueError("tokens_per_step must be positive")
        self.eos = eos
        self.tok = tokenizer if tokenizer is not None else tiny_tokenizer()
        self.counter = (token_counter() if tokenizer is None
                        else TokenCounter(tokenizer))
        self.calls: list[EngineCall] = []
        self.engine = MagicMock(spec=AsyncLLM)
        self.engine.errored = False
        self.engine.generate = MagicMock(side_effect=self._generate)
        self.engine.abort = AsyncMock(return_value=None)

    # ------------------------------------------------------------------ for tests
    @property
    def aborted(self) -> list[str]:
        """Request ids passed to ``abort``, in order."""
        return [c.args[0] if c.args else c.kwargs["request_id"]
                for c in self.engine.abort.await_args_list]

    def handle(self, name: str = "tiny", version: str = "v1",
               lora_request: object | None = None) -> ModelHandle:
        return ModelHandle(name=name, version=version, checkpoint_hash=None, path="/fake/tiny",
                           engine=self.engine, tok=self.counter, created=0,
                           lora_request=lora_request)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def logprobs_at(self, k: int, tid: int, top_n: int) -> dict:
        """The ``{token_id: Logprob}`` of the request's ``k``-th sampled token ``tid``, as
        vLLM returns it: the sampled token first, then the ``top_n`` most likely. The fake
        model ranks ``tid + 1`` first at odd positions (the sample is then rank 2) and the
        sample first at even ones; then ids upwards, each 1.0 less likely."""
        from vllm.logprobs import Logprob

        vocab = len(self.tok)
        best = (tid + 1) % vocab if k % 2 else tid
        order = list(dict.fromkeys([best, tid, *((best + j) % vocab
                                                 for j in range(2, top_n + 2))]))
        base = -0.25 - 0.01 * k
        keep = [tid] + [t for t in order[:top_n] if t != tid]
        return {t: Logprob(base - order.index(t), rank=order.index(t) + 1,
                           decoded_token=self.tok.decode([t])) for t in keep}

    # ------------------------------------------------------------------ the engine
    def _scripted(self, call: EngineCall):
        if callable(self.script):
            return self.script(call)
        if isinstance(self.script, Mapping):
            return self.script[call.kind]
        if not self.script:
            raise AssertionError(f"the script has no completion left for {call.kind!r}")
        return self.script.pop(0)

    def _decode(self, ids: list[int], skip_special: bool) -> str:
        return self.tok.decode(ids, skip_special_tokens=skip_special)

    async def _generate(self, prompt, params, request_id: str, lora_request=None, **kwargs):
        from vllm.outputs import CompletionOutput, RequestOutput

        if isinstance(prompt, dict):
            prompt_ids = list(prompt["prompt_token_ids"])
        else:
            prompt_ids = self.encode(prompt)
        prompt_text = self._decode(prompt_ids, skip_special=False)
        call = EngineCall(request_id, prompt, params, lora_request, prompt_ids, prompt_text,
                          _kind(params, prompt_text))
        self.calls.append(call)
        scripted = self._scripted(call)
        try:
            if scripted is HANG:
                await asyncio.Event().wait()
            ids = self.encode(scripted) if isinstance(scripted, str) else list(scripted)
            eos_id = self.tok.eos_token_id
            if self.eos:
                ids.append(eos_id)
            call.script_ids = ids
            stops = [params.stop] if isinstance(params.stop, str) else list(params.stop or [])
            include = params.include_stop_str_in_output
            hold = max(len(s) for s in stops) - 1 if stops and not include else 0
            max_tokens = params.max_tokens if params.max_tokens is not None else len(ids) + 1
            min_tokens = params.min_tokens
            out_ids: list[int] = []
            text, emitted, pos, step = "", 0, 0, 0

            def keep_going() -> bool:  # the script is not the end: the model writes on
                return params.ignore_eos or len(out_ids) < min_tokens

            def sample() -> int | None:
                nonlocal pos
                for _ in range(2 * len(ids) + 1):
                    if pos == len(ids):
                        if not keep_going():
                            return None
                        pos = 0  # the model writes the script again
                    tid = ids[pos]
                    pos += 1
                    if tid == eos_id and len(out_ids) < min_tokens:
                        continue  # EOS is masked before min_tokens
                    return tid
                raise AssertionError("the script has nothing but EOS to sample")

            while True:
                await asyncio.sleep(0)  # one engine step: other requests run too
                if request_id in self.aborted:
                    return
                size = self.steps[min(step, len(self.steps) - 1)]
                step += 1
                step_ids: list[int] = []
                finish = stop_reason = None
                for _ in range(size):
                    tid = sample()
                    if tid is None:  # the script ends without EOS (eos=False)
                        finish = "stop"
                        break
                    step_ids.append(tid)
                    out_ids.append(tid)
                    eos_stop = tid == eos_id and not params.ignore_eos
                    if eos_stop:
                        finish = "stop"
                    elif len(out_ids) >= max_tokens:
                        finish = "length"
                    elif pos == len(ids) and not keep_going():
                        finish = "stop"
                    # vLLM leaves the EOS that ended a request out of its text.
                    shown = out_ids[:-1] if eos_stop and not include else out_ids
                    full = self._decode(shown, params.skip_special_tokens)
                    if not finish:
                        full = full.rstrip("\ufffd")  # an incomplete UTF-8 sequence
                    if not full.startswith(text):
                        raise AssertionError(f"decoding is not incremental: {text!r} {full!r}")
                    text = full
                    # Stop strings count from the min_tokens-th token on (as vLLM).
                    if len(out_ids) > min_tokens:
                        start = len(self._decode(out_ids[:min_tokens],
                                                 params.skip_special_tokens))
                        match = _stop_match(text, stops, start)
                        if match is not None:
                            s, i = match
                            text = text[: i + len(s)] if include else text[:i]
                            finish, stop_reason = "stop", s
                    if finish:
                        break
                visible = text if finish else text[: max(0, len(text) - hold)]
                assert emitted <= len(visible), "text already streamed was taken back"
                delta = visible[emitted:]
                emitted = max(emitted, len(visible))
                first = len(call.ids)
                call.ids.extend(step_ids)
                call.deltas.append(delta)
                call.finish_reason, call.stop_reason = finish, stop_reason
                logprobs = (None if params.logprobs is None else
                            [self.logprobs_at(first + k, tid, params.logprobs)
                             for k, tid in enumerate(step_ids)])
                out = CompletionOutput(index=0, text=delta, token_ids=step_ids,
                                       cumulative_logprob=None, logprobs=logprobs,
                                       finish_reason=finish, stop_reason=stop_reason)
                # Prompt logprobs (asked with ``prompt_logprobs``) come with the first
                # output, none for the first token, as vLLM sends them.
                prompt_lp = (None if params.prompt_logprobs is None or first else
                             [None] + [self.logprobs_at(k, tid, params.prompt_logprobs)
                                       for k, tid in enumerate(prompt_ids[1:])])
                yield RequestOutput(request_id=request_id, prompt=None,
                                    prompt_token_ids=prompt_ids, prompt_logprobs=prompt_lp,
                                    outputs=[out], finished=finish is not None)
                if finish:
                    return
        finally:
            call.closed = True


@contextlib.contextmanager
def served_client(tmp_path, fake: FakeEngine, key: str = "k1", **settings):
    """A TestClient of the app serving ``fake`` (no vLLM engine), authorised with ``key``;
    ``settings``: more `Settings` fields."""
    from fastapi.testclient import TestClient

    from lapo.service.app import create_app
    from lapo.service.settings import Settings
    from lapo.service.state import service_state

    app = create_app(Settings(model=tmp_path, served_model_name="tiny", api_keys=key,
                              **settings), start_engine=False)
    with TestClient(app) as c:
        service_state(app).registry.install(fake.handle())
        c.headers["Authorization"] = f"Bearer {key}"
        yield c
