"""Where evaluation samples come from: a checkpoint in the in-process vLLM engine, or any
OpenAI-compatible endpoint. Both return the same `Sample` records, scored by one checker and
counted by the protocol module.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from lapo import protocol as p
from lapo.adapters import adapter_base, adapter_rank, is_adapter, vllm_lora_rank
from lapo.checker import check
from lapo.evaluation.data import EvalItem
from lapo.prompt import chat_text, with_budget
from lapo.think import LAPO_DEFAULT, ThinkProfile, TokenCounter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    item_id: str
    level: int
    correct: bool
    completion_tokens: int
    reasoning_tokens: int
    budgeted_tokens: int  # the length a budget statement promises (protocol definition)
    declared: int | None
    finish_reason: str | None


@dataclass(frozen=True)
class SamplingSettings:
    k: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    budget: int | None


def build_prompt(tokenizer, item: EvalItem, budget: int | None,
                 profile: ThinkProfile) -> str:
    """The chat-templated prompt; with a budget, the statement opens the think span (where
    the checkpoint's ``profile`` says it starts)."""
    return with_budget(chat_text(tokenizer, item.messages), budget, profile)


_MODEL_OPENS = ThinkProfile("model", "text")


def score(item: EvalItem, text: str, token_ids, counter: TokenCounter,
          budget: int | None = None, finish_reason: str | None = None) -> Sample:
    """One generated sample of a checkpoint, scored and counted by its think profile (the
    same checker and counter as the rewards; ``budget``: injected into the prompt)."""
    counts = counter(token_ids, declared=budget)
    correct = check(item.gold, text, item.checker, counter.profile, budget is not None)
    return Sample(item.id, item.level, correct, counts.completion_tokens,
                  counts.reasoning_tokens, counts.budgeted_tokens, counts.declared,
                  finish_reason)


def _base_of(adapter: Path) -> Path:
    # Relative base paths are read from the working directory first, as training writes them.
    return adapter_base(adapter, first=(Path.cwd(),))


class EngineSampler:
    """A checkpoint in the real vLLM engine, in-process (`AsyncLLM`).

    A LoRA adapter folder (PEFT's adapter_config.json, as `lapo serve` serves it) runs on its
    base with LoRA on, prompted through the adapter's own tokenizer and chat template. `use`
    points the sampler at another checkpoint the same engine can serve (the base itself, or
    another adapter of it), so several adapters of one base share one engine start.
    """

    def __init__(self, model_path: str | Path, max_model_len: int = 2048, engine=None) -> None:
        """``engine``: a `lapo.engine.EngineConfig` for ``model_path`` (the pipeline's
        [engine] section); None: float32, eager, ``max_model_len``, 128 sequences."""
        from lapo.engine import EngineConfig, start_async_engine

        path = Path(model_path)
        cfg = engine or EngineConfig(model=str(path), max_model_len=max_model_len,
                                     max_num_seqs=128, dtype="float32", enforce_eager=True)
        if is_adapter(path):
            cfg = dataclasses.replace(cfg, model=str(_base_of(path)), enable_lora=True,
                                      max_lora_rank=vllm_lora_rank(adapter_rank(path)))
        self.base = Path(cfg.model).resolve()
        self.max_lora_rank = cfg.max_lora_rank if cfg.enable_lora else 0
        self._lora_ids = 0
        self.engine = start_async_engine(cfg)
        self.use(path)

    def serves(self, model_path: str | Path) -> bool:
        """Whether `use` can point this engine at ``model_path``."""
        path = Path(model_path)
        if not is_adapter(path):
            return path.resolve() == self.base
        return (adapter_rank(path) <= self.max_lora_rank
                and _base_of(path) == self.base)

    def use(self, model_path: str | Path) -> None:
        """Sample from ``model_path`` from now on (`serves` must hold)."""
        from transformers import AutoTokenizer

        path = Path(model_path)
        if not self.serves(path):
            raise ValueError(f"{path} is neither the engine's checkpoint {self.base} nor an "
                             f"adapter of it at LoRA rank <= {self.max_lora_rank}")
        self.lora = None
        if is_adapter(path):
            from vllm.lora.request import LoRARequest

            self._lora_ids += 1
            self.lora = LoRARequest(path.name, self._lora_ids, str(path.resolve()))
        # An adapter's own tokenizer files carry its chat template (its think span), if any.
        tokenizer_at = path if (path / "tokenizer_config.json").is_file() else self.base
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_at)
        self.counter = TokenCounter(self.tokenizer)

    async def sample(self, item: EvalItem, s: SamplingSettings, index: int) -> list[Sample]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        profile = self.counter.profile
        prompt = build_prompt(self.tokenizer, item, s.budget, profile)
        params = SamplingParams(
            n=s.k, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
            seed=s.seed * 1_000_003 + index, skip_special_tokens=profile.skip_special_tokens,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final = None
        # Token ids, tokenized as the service does (no added specials: the chat template
        # wrote them), so evaluation scores the very prompt the server would send.
        engine_prompt = {"prompt_token_ids": self.counter.encode(prompt)}
        async for out in self.engine.generate(engine_prompt, params, lora_request=self.lora,
                                              request_id=uuid.uuid4().hex):
            final = out
        return [score(item, o.text, o.token_ids, self.counter, s.budget, o.finish_reason)
                for o in final.outputs]

    def close(self) -> None:
        self.engine.shutdown()


class EndpointSampler:
    """Any OpenAI-compatible server. Token counts come from our service's per-choice ``lapo``
    object when present, else from a local tokenizer (``tokenizer_path``), else from usage."""

    def __init__(self, base_url: str, model: str, tokenizer_path: str | None = None,
                 api_key: str | None = None, timeout: float = 600.0) -> None:
        import os

        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(timeout=timeout, headers=headers)
        self.tokenizer = None
        if tokenizer_path:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)

    async def check_reachable(self) -> None:
        import httpx

        try:
            r = await self.client.get(f"{self.base_url}/models")
        except httpx.HTTPError as exc:
            raise ConnectionError(f"endpoint {self.base_url} is unreachable: {exc}") from exc
        if r.status_code >= 400:
            raise ConnectionError(f"endpoint {self.base_url}/models answered {r.status_code}")

    async def sample(self, item: EvalItem, s: SamplingSettings, index: int) -> list[Sample]:
        body = {
            "model": self.model, "messages": item.messages, "n": s.k,
            "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
            "seed": s.seed * 1_000_003 + index,
        }
        if s.budget is not None:
            body["reasoning_budget"] = s.budget  # our service's extension
        r = await self.client.post(f"{self.base_url}/chat/completions", json=body)
        if r.status_code >= 400:
            raise RuntimeError(f"endpoint answered {r.status_code}: {r.text[:300]}")
        data = r.json()
        usage = data.get("usage") or {}
        n = max(1, len(data["choices"]))
        samples = []
        for choice in data["choices"]:
            msg = choice["message"]
            reasoning = msg.get("reasoning_content") or msg.get("reasoning")
            content = msg.get("content") or ""
            if reasoning is not None:
                text, opens = reasoning + p.THINK_CLOSE + content, True
            else:
                text, opens = content, p.THINK_CLOSE in content
            # The server split the text already: rebuilt as "reasoning</think>answer", its
            # span is open from the start; a server that does not split leaves it to us.
            profile = LAPO_DEFAULT if opens else _MODEL_OPENS
            split = profile.split(text)
            declared = s.budget if s.budget is not None else p.parse_budget(split.reasoning)
            lapo = choice.get("lapo")
            if lapo:
                completion = lapo.get("completion_tokens") or usage.get("completion_tokens", 0) // n
                reasoning_tokens = lapo.get("reasoning_tokens", lapo["actual_reasoning_tokens"])
                budgeted = lapo["actual_reasoning_tokens"]
                declared = lapo.get("declared_reasoning_tokens", declared)
            elif self.tokenizer is not None:
                enc = self.tokenizer.encode
                completion = len(enc(text, add_special_tokens=False))
                reasoning_tokens = len(enc(split.reasoning, add_special_tokens=False))
                stmt, rest = p.split_statement(split.reasoning)
                budgeted = len(enc(rest, add_special_tokens=False)) if stmt else reasoning_tokens
            else:
                details = usage.get("completion_tokens_details") or {}
                completion = usage.get("completion_tokens", 0) // n
                reasoning_tokens = budgeted = (details.get("reasoning_tokens") or 0) // n
            samples.append(Sample(
                item.id, item.level, check(item.gold, text, item.checker, profile), completion,
                reasoning_tokens, budgeted, declared, choice.get("finish_reason"),
            ))
        return samples

    async def aclose(self) -> None:
        await self.client.aclose()
