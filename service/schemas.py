"""OpenAI-compatible request and response models for /v1/chat/completions.

Requests forbid unknown fields: a parameter we do not implement is refused with a 400 naming
it, never silently ignored. Limits that depend on settings (n, message count, lengths) are
checked by `service.limits`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(0.6, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    reasoning_effort: Literal["low", "medium", "high"] | None = None

    # ---- LAPO extensions (not part of the OpenAI API) --------------------------------
    reasoning_budget: int | None = Field(
        None, ge=1,
        description="LAPO: inject 'I will answer the question with N tokens.' right after "
        "<think>, so the model plans N reasoning tokens (overrides reasoning_effort).",
    )
    budget_enforcement: Literal["soft", "hard"] = Field(
        "soft",
        description="LAPO: 'hard' forces </think> once the reasoning exceeds the budget "
        "(with the server's slack) and lets the model answer.",
    )
    # ---------------------------------------------------------------------------------

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value):
        if isinstance(value, str):
            value = [value]
        if value is not None and any(s == "" for s in value):
            raise ValueError("stop sequences must be non-empty strings")
        return value

    @model_validator(mode="after")
    def _checks(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if self.messages[-1].role == "assistant":
            raise ValueError("the last message must not be from the assistant "
                             "(continuing a partial assistant turn is not supported)")
        return self

    @property
    def completion_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class LapoInfo(BaseModel):
    declared_reasoning_tokens: int | None
    actual_reasoning_tokens: int
    reasoning_tokens: int
    budget_source: Literal["model", "request", "effort", "none"]
    budget_error: float | None
    enforced: bool


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None
    reasoning: str | None


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: str | None
    logprobs: None = None
    lapo: LapoInfo


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[Choice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lapo"
    version: str
    checkpoint_hash: str | None = None
    root: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error, OpenAI-shaped."""

    error: ErrorDetail
