"""OpenAI's legacy ``POST /v1/completions`` request and response models (raw text: no chat
template, no think span).

Like the chat request, unknown fields are refused with a 400 naming them. Limits that depend
on settings or on the served model (n, prompt count, lengths, token ids) are checked by
`lapo.service.completions.CompletionService`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from lapo.service.schemas import (
    _INT32_MAX,
    MAX_TOP_LOGPROBS,
    Bias,
    StreamOptions,
    StructuredOutputs,
    _logit_bias_keys,
    _Request,
    stop_list,
)

Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(_Request):
    model: str = Field(min_length=1)
    prompt: Prompt
    max_tokens: int | None = Field(16, ge=1, description="Default 16, as OpenAI's.")
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    echo: bool = Field(False, description="Return the prompt's text before the completion.")
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                 description="Log probabilities of the sampled tokens and of "
                                 "the N most likely at each position.")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, Bias] | None = None
    user: str | None = Field(None, max_length=256)

    # ---- vLLM extensions (as on /v1/chat/completions) -------------------------------
    top_k: int | None = Field(None, ge=-1, le=_INT32_MAX)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, ge=0.01, le=2.0)
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    structured_outputs: StructuredOutputs | None = Field(
        None, description="vLLM: constrain the completion by guided decoding.")
    # ---------------------------------------------------------------------------------

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("must not be empty")
            if any(isinstance(item, list) and not item for item in value):
                raise ValueError("token-id prompts must not be empty")
            if any(isinstance(item, int) and item < 0 for item in value):
                raise ValueError("token ids must be >= 0")
            if any(isinstance(item, list) and any(t < 0 for t in item) for item in value):
                raise ValueError("token ids must be >= 0")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        return stop_list(value)

    @field_validator("logit_bias")
    @classmethod
    def _bias_keys(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return _logit_bias_keys(value)

    @model_validator(mode="after")
    def _checks(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def prompts(self) -> list[str | list[int]]:
        """Each prompt: a text or its token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(t, int) for t in p):
            return [list(p)]
        return list(p)


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy logprobs: per token its text, its logprob, the top alternatives
    (token text -> logprob) and its character offset in the choice's text."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None

    def dump(self, include_usage: bool = True) -> dict:
        return self.model_dump(exclude=None if include_usage else {"usage"})
