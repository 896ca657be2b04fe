"""OpenAI-compatible request and response models for /v1/chat/completions, and vLLM's
/tokenize and /detokenize.

Requests forbid unknown fields: a parameter we do not implement is refused with a 400 naming
it, never silently ignored. Limits that depend on settings or on the served model (n, message
count, lengths, token ids, the chat template's variables) are checked by `ChatService` and
`lapo.service.chat_template`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lapo.service import tools

# vLLM's default engine limit on logprobs per token (``max_logprobs``), and OpenAI's.
MAX_TOP_LOGPROBS = 20
_INT32_MAX = 2**31 - 1
Bias = Annotated[float, Field(ge=-100.0, le=100.0)]


def stop_list(value: str | list[str] | None) -> list[str] | None:
    """``stop`` as a list (OpenAI accepts one string), every sequence non-empty."""
    if isinstance(value, str):
        value = [value]
    if value is not None and any(s == "" for s in value):
        raise ValueError("stop sequences must be non-empty strings")
    return value


def _logit_bias_keys(value: dict[str, float] | None) -> dict[str, float] | None:
    for key in value or {}:
        try:
            int(key)
        except ValueError:
            raise ValueError(f"keys must be token ids (integers, as strings); got {key!r}"
                             ) from None
    return value


def _template_kwargs(value: Any) -> Any:
    """JSON scalars only: a template switch (``enable_thinking``) or a string; never a list
    or an object for the template to walk."""
    if not isinstance(value, dict):
        return value  # pydantic answers "should be a valid dictionary"
    for key, item in value.items():
        if not (item is None or isinstance(item, bool | int | float | str)):
            raise ValueError(f"values must be JSON scalars (string, number, boolean or null); "
                             f"{key!r} is {type(item).__name__}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _lone_surrogate(value: Any, path: str = "") -> str | None:
    """Where in a JSON value a string holds a lone surrogate (``"\\ud800"``), else None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
    elif isinstance(value, dict):
        for key, item in value.items():
            found = _lone_surrogate(key, path) or _lone_surrogate(item, f"{path}.{key}"
                                                                  if path else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _lone_surrogate(item, f"{path}.{i}")
            if found:
                return found
    return None


class _Request(_Strict):
    """A request body: its text must be valid Unicode (JSON can escape a lone surrogate,
    which no tokenizer or response can encode)."""

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data: Any) -> Any:
        where = _lone_surrogate(data)
        if where:
            raise ValueError(f"the text at '{where}' is not valid Unicode (a lone UTF-16 "
                             "surrogate)")
        return data


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class FunctionCall(_Strict):
    name: str
    arguments: str = Field(description="the call's arguments: a JSON object, as a string")


class ToolCall(_Strict):
    """One function call of an assistant message (in a request's history and in a
    response's ``message.tool_calls``)."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # Before ``content``: its check reads them.
    tool_calls: list[ToolCall] | None = Field(None, description="assistant messages only: "
                                              "the calls it made (its content may be null)")
    tool_call_id: str | None = Field(None, description="tool messages only: the call this "
                                     "message answers")
    content: str | list[TextPart] | None = Field(None, validate_default=True)
    name: str | None = None
    # An assistant message as this server returned it (the openai SDK sends a response's
    # message back as is): its reasoning is accepted, and not rendered (the reasoning of
    # earlier turns is not part of the prompt, as in vLLM's reasoning templates).
    reasoning_content: str | None = None
    reasoning: str | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and not (info.data.get("role") == "assistant"
                                  and info.data.get("tool_calls")):
            raise ValueError("required (it may be null or absent only in an assistant "
                             "message with 'tool_calls')")
        return value

    @model_validator(mode="after")
    def _roles(self):
        if self.role != "assistant" and (self.reasoning_content, self.reasoning) != (None,
                                                                                   None):
            raise ValueError("'reasoning_content' and 'reasoning' are only allowed in "
                             "assistant messages")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("'tool_calls' is only allowed in assistant messages")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message needs 'tool_call_id', and only a tool message "
                             "takes it")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class JsonSchemaFormat(_Strict):
    """OpenAI's ``response_format.json_schema``; ``strict`` is accepted either way: the
    schema is always enforced by guided decoding."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    """OpenAI's ``response_format``: plain ``text``, any JSON object, or a JSON schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_type(self):
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("'json_schema' is required with type 'json_schema' and only "
                             "allowed with it")
        return self


class FunctionDefinition(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="JSON schema of the arguments (default: any object)")
    strict: bool | None = None  # accepted either way: a forced call's schema is enforced


class FunctionTool(_Strict):
    """OpenAI's chat ``tools`` item: a function the model may call."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    """``tool_choice`` naming one function: the answer is a call of it."""

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class StructuredOutputs(_Strict):
    """vLLM's ``structured_outputs`` extension (its ``StructuredOutputsParams``): exactly one
    constraint (``json``, ``regex``, ``choice``, ``grammar`` or ``json_object``), plus vLLM's
    whitespace options."""

    json_: dict[str, Any] | str | None = Field(None, alias="json")
    regex: str | None = Field(None, min_length=1)
    choice: list[str] | None = Field(None, min_length=1)
    grammar: str | None = Field(None, min_length=1)
    json_object: Literal[True] | None = None
    # vLLM 0.32 reads these from the engine's structured_outputs_config, never from the
    # request: a per-request value would be silently ignored, so one is refused.
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one(self):
        for name in ("disable_any_whitespace", "disable_additional_properties",
                     "whitespace_pattern"):
            if getattr(self, name) not in (None, False):
                raise ValueError(f"'{name}' is not applied per request by this server's vLLM "
                                 "(0.32 takes it from the engine's structured-outputs "
                                 "configuration); leave it out")
        given = [n for n in ("json_", "regex", "choice", "grammar", "json_object")
                 if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'json', 'regex', 'choice', 'grammar' and "
                             f"'json_object'; got {len(given)}")
        return self

    def params(self) -> dict[str, Any]:
        """Keyword arguments of vLLM's ``StructuredOutputsParams``."""
        return self.model_dump(by_alias=True, exclude_none=True,
                               include={"json_", "regex", "choice", "grammar", "json_object"})


class ChatCompletionRequest(_Request):
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
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, Bias] | None = Field(
        None, description="Token id (as a string) -> bias added to its logit, in [-100, 100]; "
        "ids must be below the served model's vocabulary size.")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = Field(
        None, description="Constrain the answer (after the think span, never the reasoning) "
        "to JSON: {\"type\": \"json_object\"} or {\"type\": \"json_schema\", "
        "\"json_schema\": {\"name\", \"schema\", \"strict\"}}.")
    tools: list[FunctionTool] | None = Field(
        None, min_length=1, description="Functions the model may call (`lapo.service.tools`).")
    tool_choice: ToolChoice | None = Field(
        None, description="\"none\", \"auto\" (the default with tools), \"required\" or "
        "{\"type\": \"function\", \"function\": {\"name\"}}; the last two are enforced "
        "by guided decoding on the answer.")
    parallel_tool_calls: bool = Field(True, description="false: at most one call.")

    # ---- vLLM extensions (vLLM's extra chat-completion parameters, with vLLM's meaning) ----
    # Sampling: every engine request of a choice uses them (effort mode's statement phase,
    # the main request, a hard cap's continuation).
    top_k: int | None = Field(None, ge=-1, le=_INT32_MAX,
                              description="vLLM: sample from the k most likely tokens "
                              "(0 or -1: all).")
    min_p: float | None = Field(None, ge=0.0, le=1.0,
                                description="vLLM: drop tokens below min_p x the top "
                                "token's probability.")
    # vLLM takes any value > 0; near 0 it divides logits into inf (NaN sampling).
    repetition_penalty: float | None = Field(None, ge=0.01, le=2.0,
                                             description="vLLM: > 1 penalises tokens already "
                                             "in the prompt or the output (1: off).")
    # Output: the completion's requests only (the main request and a continuation), never
    # effort mode's statement phase, whose text is not part of the completion.
    ignore_eos: bool = Field(False, description="vLLM: keep generating past EOS (to "
                             "max_completion_tokens); used by benchmarks.")
    min_tokens: int = Field(0, ge=0, description="vLLM: no EOS (and no stop string) before "
                            "this many completion tokens.")
    skip_special_tokens: bool = Field(True, description="vLLM: leave special tokens out of "
                                      "the text.")
    include_stop_str_in_output: bool = Field(False, description="vLLM: keep the stop string "
                                             "that ended the completion in its text.")
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="vLLM: variables for the chat template (e.g. {\"enable_thinking\": "
        "false}); JSON scalars, only names the served template reads.")
    structured_outputs: StructuredOutputs | None = Field(
        None, description="vLLM: constrain the answer (after the think span) by guided "
        "decoding: one of json (a schema), regex, choice, grammar, json_object.")
    # ---------------------------------------------------------------------------------

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
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        return stop_list(value)

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _tool_choice_word(cls, value: Any) -> Any:
        # One message for a wrong word (not one per member of the union).
        if isinstance(value, str) and value not in ("none", "auto", "required"):
            raise ValueError("must be 'none', 'auto', 'required' or {\"type\": \"function\", "
                             f"\"function\": {{\"name\": ...}}}}; got {value!r}")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias_keys(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return _logit_bias_keys(value)

    @field_validator("chat_template_kwargs", mode="before")
    @classmethod
    def _kwargs(cls, value: Any) -> Any:
        return _template_kwargs(value)

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    @model_validator(mode="after")
    def _checks(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")

        if (self.structured_outputs is not None and self.response_format is not None
                and self.response_format.type != "text"):
            raise ValueError("give at most one of 'response_format' and 'structured_outputs'")
        if self.messages[-1].role == "assistant":
            raise ValueError("the last message must not be from the assistant "
                             "(continuing a partial assistant turn is not supported)")
        return self

    @property
    def completion_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def n_logprobs(self) -> int | None:
        """vLLM's ``SamplingParams.logprobs``: top alternatives per token (0: the sampled
        token's own only), None: no logprobs."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def tool_mode(self) -> Literal["none", "auto", "required", "named"]:
        """How the answer relates to ``tools``: ``none`` (no tools, or not to be called),
        ``auto`` (the model chooses; its output is parsed), ``required`` / ``named`` (the
        answer is tool calls, enforced by guided decoding)."""
        if not self.tools:
            return "none"
        choice = self.tool_choice or "auto"
        return "named" if isinstance(choice, NamedToolChoice) else choice

    @property
    def constraint(self) -> tuple[str, dict[str, Any]] | None:
        """(the field that asked, vLLM ``StructuredOutputsParams`` keyword arguments) of the
        answer's constraint, or None."""
        if self.tool_mode in ("required", "named"):
            return "tool_choice", {"json": tools.answer_schema(
                [t.function for t in self.tools], self.tool_choice, self.parallel_tool_calls)}
        return answer_constraint(self.response_format, self.structured_outputs)


def answer_constraint(response_format: ResponseFormat | None,
                      structured: StructuredOutputs | None
                      ) -> tuple[str, dict[str, Any]] | None:
    if structured is not None:
        return "structured_outputs", structured.params()
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return "response_format", {"json_object": True}
    return "response_format", {"json": response_format.json_schema.schema_}


class LapoInfo(BaseModel):
    declared_reasoning_tokens: int | None
    actual_reasoning_tokens: int
    reasoning_tokens: int
    budget_source: Literal["model", "request", "effort", "none"]
    budget_error: float | None
    enforced: bool
    # Seconds the request waited for an admission slot (LAPO_SCHEDULING decides the order).
    queue_wait_s: float | None = None


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails


def _none(value: Any) -> bool:
    return value is None


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None
    reasoning: str | None
    tool_calls: list[ToolCall] | None = Field(None, exclude_if=_none)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    """Every generated token of the choice, reasoning and answer, in order (as vLLM's
    servers with a reasoning parser return them); not a hard cap's forced ``</think>``."""

    content: list[TokenLogprob] | None


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None
    lapo: LapoInfo


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[Choice]
    usage: Usage


class DeltaFunctionCall(BaseModel):
    name: str | None = Field(None, exclude_if=_none)
    arguments: str


class DeltaToolCall(BaseModel):
    """A stream's piece of one tool call; ``index`` numbers the calls of the message."""

    index: int
    id: str | None = Field(None, exclude_if=_none)
    type: Literal["function"] | None = Field(None, exclude_if=_none)
    function: DeltaFunctionCall


class DeltaMessage(BaseModel):
    """A stream's increment of the message: only the fields it carries are sent (the first
    chunk the role, then reasoning or answer text; the last ``{}``)."""

    role: Literal["assistant"] | None = Field(None, exclude_if=_none)
    content: str | None = Field(None, exclude_if=_none)
    reasoning_content: str | None = Field(None, exclude_if=_none)
    reasoning: str | None = Field(None, exclude_if=_none)
    tool_calls: list[DeltaToolCall] | None = Field(None, exclude_if=_none)


class ChunkChoice(BaseModel):
    """One choice in a stream chunk; ``lapo`` only on the choice's last chunk."""

    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None
    lapo: LapoInfo | None = Field(None, exclude_if=_none)


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion. ``usage`` is sent only when the
    request asked for it (``stream_options.include_usage``): null on every chunk but the
    last, which has no choices; `dump` applies that rule."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None = None

    def dump(self, include_usage: bool) -> dict:
        return self.model_dump(exclude=None if include_usage else {"usage"})


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


class TokenizeRequest(_Request):
    """vLLM's ``POST /tokenize``: a ``prompt`` (tokenized as is) or chat ``messages``
    (through the served chat template, as /v1/chat/completions builds its prompt)."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    add_generation_prompt: bool | None = Field(
        None, description="messages only (default true): open the assistant's turn.")
    add_special_tokens: bool | None = Field(
        None, description="Add the tokenizer's special tokens (BOS) around the text (default: "
        "true for a prompt, false for messages, whose template adds its own).")
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="messages only: variables for the chat template.")
    return_token_strs: bool = False

    @field_validator("chat_template_kwargs", mode="before")
    @classmethod
    def _kwargs(cls, value: Any) -> Any:
        return _template_kwargs(value)

    @model_validator(mode="after")
    def _one_input(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' and 'messages'")
        if self.prompt is not None:
            for name in ("add_generation_prompt", "chat_template_kwargs"):
                if getattr(self, name) is not None:
                    raise ValueError(f"'{name}' applies to 'messages' only")
        return self


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(_Request):
    model: str | None = None
    tokens: list[int] = Field(description="token ids, each below the tokenizer's size")


class DetokenizeResponse(BaseModel):
    prompt: str


class VersionInfo(BaseModel):
    version: str = Field(description="the vLLM engine's version (what vLLM's /version says)")
    lapo_version: str


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error, OpenAI-shaped."""

    error: ErrorDetail
