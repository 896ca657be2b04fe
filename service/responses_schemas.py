"""OpenAI's Responses API (``POST /v1/responses``, create only): request and response models.

The server is stateless: a request carries its whole conversation in ``input``, nothing is
stored, and the stateful fields (``previous_response_id``, ``conversation``, ``background``)
are refused with a 400 naming them. Unknown fields are refused as on chat; a few that OpenAI
clients send and that change nothing here (``include`` of encrypted reasoning, ``store``,
``prompt_cache_key``, ``service_tier``, ``safety_identifier``) are accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from lapo.service.schemas import LapoInfo, _Request, _Strict


class InputText(_Strict):
    """A text part of an input message; an ``output_text`` part (an earlier answer sent
    back) may carry its annotations and logprobs, which are dropped."""

    type: Literal["input_text", "output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class InputMessage(_Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[InputText]
    id: str | None = None
    status: str | None = None
    phase: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionCallInput(_Strict):
    """A function call the model made earlier (an output item sent back)."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputInput(_Strict):
    """The caller's result of a function call: a tool message in chat form."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[InputText]
    id: str | None = None
    status: str | None = None

    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return "".join(part.text for part in self.output)


class ReasoningInput(BaseModel):
    """An earlier reasoning item sent back: dropped (the model reasons again)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["reasoning"]


def _item_kind(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("type", "message")
    return getattr(value, "type", "message")


InputItem = Annotated[
    Annotated[InputMessage, Tag("message")]
    | Annotated[FunctionCallInput, Tag("function_call")]
    | Annotated[FunctionCallOutputInput, Tag("function_call_output")]
    | Annotated[ReasoningInput, Tag("reasoning")],
    Discriminator(_item_kind),
]


class TextFormat(_Strict):
    """``text.format``: plain text, any JSON object, or a JSON schema (flat, unlike chat's
    ``response_format.json_schema``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_with_type(self):
        if self.type == "json_schema" and (self.name is None or self.schema_ is None):
            raise ValueError("type 'json_schema' needs 'name' and 'schema'")
        if self.type != "json_schema" and any(
                v is not None for v in (self.name, self.schema_, self.description, self.strict)):
            raise ValueError(f"'name', 'schema', 'description' and 'strict' belong to type "
                             f"'json_schema' only, not {self.type!r}")
        return self


class TextConfig(_Strict):
    format: TextFormat | None = None


class ReasoningConfig(_Strict):
    """``effort`` sets the LAPO budget as ``reasoning_effort`` does on chat. ``summary`` is
    accepted: no summary is written, the reasoning item carries the full reasoning text."""

    effort: Literal["low", "medium", "high"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceFunction(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1)


def _stateless(field: str, what: str):
    def check(cls, value: Any) -> Any:
        if value not in (None, False):
            raise ValueError(f"this server is stateless: it stores no responses, so it "
                             f"cannot {what}; send the whole conversation in 'input'")
        return value

    return field_validator(field)(classmethod(check))


class ResponsesRequest(_Request):
    model: str = Field(min_length=1)
    input: str | list[InputItem] = Field(min_length=1)
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    reasoning: ReasoningConfig | None = None
    text: TextConfig | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | None = None
    parallel_tool_calls: bool | None = None
    stream: bool = False
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        None, max_length=16)

    # ---- sent by OpenAI clients; accepted because they change nothing here ----------------
    store: bool | None = Field(None, description="Accepted either way; nothing is ever "
                               "stored (the response says 'store': false).")
    include: list[Literal["reasoning.encrypted_content"]] | None = Field(
        None, description="Reasoning is returned in plain text, never encrypted.")
    prompt_cache_key: str | None = Field(None, max_length=256, description="Accepted; "
                                         "vLLM's prefix cache needs no key.")
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    service_tier: Literal["auto", "default"] | None = None
    safety_identifier: str | None = Field(None, max_length=256)
    truncation: Literal["disabled"] | None = Field(
        None, description="Only 'disabled' (OpenAI's default): an input longer than the "
        "context is a 400, never cut.")

    # ---- stateful fields: refused (a stateless server) -------------------------------------
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    background: bool | None = None

    _no_previous = _stateless("previous_response_id", "continue an earlier response")
    _no_conversation = _stateless("conversation", "keep a conversation")
    _no_background = _stateless("background", "run a response in the background")

    # ---- LAPO extensions (as on chat) ------------------------------------------------------
    reasoning_budget: int | None = Field(None, ge=1, description="LAPO: the reasoning "
                                         "budget N, injected as the budget statement.")
    budget_enforcement: Literal["soft", "hard"] = Field(
        "soft", description="LAPO: 'hard' forces </think> once the reasoning exceeds the "
        "budget (with the server's slack).")

    @field_validator("tools", mode="before")
    @classmethod
    def _function_tools_only(cls, value: Any) -> Any:
        for i, tool in enumerate(value if isinstance(value, list) else []):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise ValueError(f"only function tools are supported; tools[{i}] has type "
                                 f"{kind!r} (hosted tools such as web_search or file_search "
                                 "do not run on this server)")
        return value


# ------------------------------------------------------------------------ the response


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)


class MessageItem(BaseModel):
    type: Literal["message"] = "message"
    id: str
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"] = "completed"
    content: list[OutputText]


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningItem(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[Any] = Field(default_factory=list)
    content: list[ReasoningText]


class FunctionCallItem(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"] = "completed"


OutputItem = Annotated[ReasoningItem | MessageItem | FunctionCallItem,
                       Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseObject(BaseModel):
    """A response, with the request's settings echoed as OpenAI echoes them, and the LAPO
    object of its one choice (``null`` until it is done, in a stream's early events)."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete"]
    incomplete_details: IncompleteDetails | None = None
    error: None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    reasoning: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    user: str | None = None
    store: bool = False
    background: bool = False
    previous_response_id: None = None
    truncation: Literal["disabled"] = "disabled"
    service_tier: Literal["default"] = "default"
    lapo: LapoInfo | None = None
