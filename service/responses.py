"""OpenAI's Responses API on the chat path: a Responses request becomes a
`ChatCompletionRequest` (`to_chat`), `ChatService` runs it (admission, limits, budgets,
metrics and the ``lapo`` object are the chat path's), and its completion or its SSE chunks
become a Responses object or the Responses event stream.

Stateless: nothing is stored; one choice (``n`` is 1). Errors the chat path raises name the
Responses field (``max_output_tokens``, ``input``, ``text.format``, ...), not chat's.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from lapo.service.errors import APIError, _validation_message, invalid
from lapo.service.responses_schemas import (
    FunctionCallInput,
    FunctionCallItem,
    FunctionCallOutputInput,
    IncompleteDetails,
    InputMessage,
    MessageItem,
    OutputText,
    OutputTokensDetails,
    ReasoningItem,
    ReasoningText,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
)
from lapo.service.scheduling import Scheduled
from lapo.service.schemas import ChatCompletionRequest, LapoInfo

if TYPE_CHECKING:
    from lapo.service.chat import ChatService
    from lapo.service.model import ModelHandle

logger = logging.getLogger(__name__)

# The chat field an error names -> the Responses field the client sent.
_RENAMED = {"messages": "input", "max_tokens": "max_output_tokens",
            "max_completion_tokens": "max_output_tokens", "response_format": "text.format",
            "reasoning_effort": "reasoning.effort"}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# ------------------------------------------------------------------ request translation


def chat_messages(req: ResponsesRequest) -> list[dict[str, Any]]:
    """``instructions`` and ``input`` as chat messages: function calls join the assistant
    turn before them as ``tool_calls``, their outputs become ``tool`` messages, and earlier
    reasoning items are dropped (the model reasons again)."""
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    if isinstance(req.input, str):
        return [*messages, {"role": "user", "content": req.input}]
    for item in req.input:
        if isinstance(item, InputMessage):
            messages.append({"role": item.role, "content": item.text()})
        elif isinstance(item, FunctionCallInput):
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputInput):
            messages.append({"role": "tool", "tool_call_id": item.call_id,
                             "content": item.text()})
    return messages


def _response_format(req: ResponsesRequest) -> dict[str, Any] | None:
    fmt = req.text.format if req.text is not None else None
    if fmt is None or fmt.type != "json_schema":
        return None if fmt is None else {"type": fmt.type}
    schema = {"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict,
              "description": fmt.description}
    return {"type": "json_schema",
            "json_schema": {k: v for k, v in schema.items() if v is not None}}


def _tool_choice(req: ResponsesRequest) -> str | dict[str, Any] | None:
    choice = req.tool_choice
    if choice is None or isinstance(choice, str):
        return choice
    return {"type": "function", "function": {"name": choice.name}}


def to_chat(req: ResponsesRequest) -> ChatCompletionRequest:
    """The chat request that serves ``req``; a 400 naming the Responses field if chat
    refuses it."""
    body: dict[str, Any] = {
        "model": req.model, "messages": chat_messages(req), "stream": req.stream,
        "max_completion_tokens": req.max_output_tokens, "temperature": req.temperature,
        "top_p": req.top_p, "user": req.user,
        "reasoning_effort": req.reasoning.effort if req.reasoning else None,
        "response_format": _response_format(req),
        "tool_choice": _tool_choice(req), "parallel_tool_calls": req.parallel_tool_calls,
        "reasoning_budget": req.reasoning_budget,
    }
    if req.tools:
        body["tools"] = [{"type": "function", "function": t.model_dump(
            exclude={"type"}, exclude_none=True)} for t in req.tools]
    if req.budget_enforcement != "soft":
        body["budget_enforcement"] = req.budget_enforcement
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    body = {k: v for k, v in body.items() if v is not None}
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ())]
        param = ".".join(loc) or "input"
        raise renamed(invalid(_validation_message(first), param,
                              "unsupported_parameter" if first.get("type") == "extra_forbidden"
                              else "invalid_value")) from None


def renamed(exc: APIError) -> APIError:
    """A chat-path error as the Responses client sees it: the field it sent is named."""
    param, message = exc.param, exc.message
    if param:
        head, _, rest = param.partition(".")
        if head == "tools" and ".function." in param:  # chat's nesting, not Responses'
            message = message.replace(param, param.replace(".function.", "."))
            param = param.replace(".function.", ".")
        elif head in ("messages", "response_format"):
            param = _RENAMED[head]
        elif head in _RENAMED:
            param = ".".join(filter(None, [_RENAMED[head], rest]))
    for old, new in _RENAMED.items():
        message = message.replace(f"'{old}", f"'{new}")
    return APIError(exc.status, message, type=exc.type, param=param, code=exc.code,
                    headers=exc.headers)


# ------------------------------------------------------------------ response shaping


def _base(req: ResponsesRequest, model: str, status: str) -> ResponseObject:
    """A response with the request's settings echoed, no output yet."""
    echo: dict[str, Any] = {}
    if req.text is not None and req.text.format is not None:
        echo["text"] = {"format": req.text.format.model_dump(by_alias=True, exclude_none=True)}
    if req.tool_choice is not None:
        choice = req.tool_choice
        echo["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump()
    if req.parallel_tool_calls is not None:
        echo["parallel_tool_calls"] = req.parallel_tool_calls
    return ResponseObject(
        id=_new_id("resp"), created_at=int(time.time()), status=status, model=model,
        instructions=req.instructions, max_output_tokens=req.max_output_tokens,
        temperature=req.temperature, top_p=req.top_p,
        tools=[t.model_dump() for t in req.tools or []],
        reasoning=req.reasoning.model_dump() if req.reasoning else
        {"effort": None, "summary": None}, metadata=req.metadata or {}, user=req.user,
        **echo)


def _usage(usage: dict[str, Any] | None) -> ResponseUsage | None:
    if usage is None:
        return None
    details = usage.get("completion_tokens_details") or {}
    return ResponseUsage(input_tokens=usage["prompt_tokens"],
                         output_tokens=usage["completion_tokens"],
                         output_tokens_details=OutputTokensDetails(
                             reasoning_tokens=details.get("reasoning_tokens", 0)),
                         total_tokens=usage["total_tokens"])


def _finish(response: ResponseObject, finish_reason: str | None,
            usage: dict[str, Any] | None, lapo: dict[str, Any] | None) -> ResponseObject:
    """The response once its choice is done: status, usage and the ``lapo`` object."""
    if finish_reason == "length":
        response.status = "incomplete"
        response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
    else:
        response.status = "completed"
    response.usage = _usage(usage)
    response.lapo = None if lapo is None else LapoInfo.model_validate(lapo)
    return response


def _call_item(call: dict[str, Any]) -> FunctionCallItem:
    function = call.get("function") or {}
    return FunctionCallItem(id=_new_id("fc"), call_id=call.get("id") or _new_id("call"),
                            name=function.get("name") or "",
                            arguments=function.get("arguments") or "")


def from_chat(req: ResponsesRequest, completion: dict[str, Any]) -> ResponseObject:
    """A chat completion (``model_dump()``) as a Responses object: the reasoning item, then
    the message, or the function calls (after any text the model wrote before them)."""
    response = _base(req, completion["model"], "in_progress")
    [choice] = completion["choices"]
    message, finish = choice["message"], choice["finish_reason"]
    if message.get("reasoning_content"):
        response.output.append(ReasoningItem(
            id=_new_id("rs"), content=[ReasoningText(text=message["reasoning_content"])]))
    calls = message.get("tool_calls") or []
    if message.get("content") or not calls:
        response.output.append(MessageItem(
            id=_new_id("msg"), status="incomplete" if finish == "length" else "completed",
            content=[OutputText(text=message.get("content") or "")]))
    response.output.extend(_call_item(c) for c in calls)
    return _finish(response, finish, completion.get("usage"), choice.get("lapo"))


async def complete(chat: ChatService, req: ResponsesRequest, chat_req: ChatCompletionRequest,
                   model: ModelHandle, sched: Scheduled | None = None
                   ) -> tuple[ResponseObject, dict[str, str]]:
    """The response and its ``x-lapo-*`` headers."""
    try:
        completion, headers, _ = await chat.complete(chat_req, model, sched)
    except APIError as exc:
        raise renamed(exc) from None
    return from_chat(req, completion.model_dump()), headers


async def stream(chat: ChatService, req: ResponsesRequest, chat_req: ChatCompletionRequest,
                 model: ModelHandle, sched: Scheduled | None = None) -> AsyncIterator[str]:
    """Validate first (errors become HTTP errors), then return the event stream."""
    try:
        chunks = await chat.stream(chat_req, model, sched)
    except APIError as exc:
        raise renamed(exc) from None
    return events(req, model.name, chunks)


# ------------------------------------------------------------------ the event stream


class _Item:
    """The output item being streamed: its index, model, and text so far."""

    def __init__(self, index: int, item: ReasoningItem | MessageItem | FunctionCallItem,
                 key: int | None = None) -> None:
        self.index, self.item, self.key, self.text = index, item, key, []


class EventStream:
    """The Responses events of one chat stream: `chunk` turns each chat chunk into events,
    `end` closes the open item and sends the finished response."""

    def __init__(self, req: ResponsesRequest, model: str) -> None:
        self.response = _base(req, model, "in_progress")
        self.sequence = 0
        self.open: _Item | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.lapo: dict[str, Any] | None = None

    def event(self, type_: str, **fields: Any) -> str:
        body = {"type": type_, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {type_}\ndata: {json.dumps(body)}\n\n"

    def start(self) -> Iterator[str]:
        snapshot = self.response.model_dump()
        yield self.event("response.created", response=snapshot)
        yield self.event("response.in_progress", response=snapshot)

    def chunk(self, body: dict[str, Any]) -> Iterator[str]:
        if body.get("usage"):
            self.usage = body["usage"]
        for choice in body.get("choices", []):
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                yield from self._reasoning(delta["reasoning_content"])
            if delta.get("content"):
                yield from self._text(delta["content"])
            for call in delta.get("tool_calls") or []:
                yield from self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason, self.lapo = choice["finish_reason"], choice.get("lapo")

    def error(self, error: dict[str, Any]) -> str:
        return self.event("error", code=error.get("code"), message=error.get("message", ""),
                          param=error.get("param"))

    def end(self) -> Iterator[str]:
        yield from self._close()
        if not any(isinstance(i, MessageItem | FunctionCallItem) for i in self.response.output):
            yield from self._open(MessageItem(id=_new_id("msg"), status="in_progress",
                                              content=[]))
            yield from self._close()
        response = _finish(self.response, self.finish_reason, self.usage, self.lapo)
        kind = "response.incomplete" if response.status == "incomplete" else (
            "response.completed")
        yield self.event(kind, response=response.model_dump())

    # ---- items
    def _open(self, item, key: int | None = None) -> Iterator[str]:
        yield from self._close()
        self.open = _Item(len(self.response.output), item, key)
        yield self.event("response.output_item.added", output_index=self.open.index,
                         item=item.model_dump())
        if isinstance(item, MessageItem):
            yield self.event("response.content_part.added", item_id=item.id,
                             output_index=self.open.index, content_index=0,
                             part=OutputText(text="").model_dump())

    def _reasoning(self, text: str) -> Iterator[str]:
        if self.open is None or not isinstance(self.open.item, ReasoningItem):
            yield from self._open(ReasoningItem(id=_new_id("rs"), content=[]))
        self.open.text.append(text)
        yield self.event("response.reasoning_text.delta", item_id=self.open.item.id,
                         output_index=self.open.index, content_index=0, delta=text)

    def _text(self, text: str) -> Iterator[str]:
        if self.open is None or not isinstance(self.open.item, MessageItem):
            yield from self._open(MessageItem(id=_new_id("msg"), status="in_progress",
                                              content=[]))
        self.open.text.append(text)
        yield self.event("response.output_text.delta", item_id=self.open.item.id,
                         output_index=self.open.index, content_index=0, delta=text,
                         logprobs=[])

    def _call(self, call: dict[str, Any]) -> Iterator[str]:
        key = call.get("index", 0)
        if (self.open is None or not isinstance(self.open.item, FunctionCallItem)
                or self.open.key != key):
            item = _call_item({**call, "function": {**(call.get("function") or {}),
                                                    "arguments": ""}})
            item.status = "in_progress"
            yield from self._open(item, key)
        arguments = (call.get("function") or {}).get("arguments")
        if arguments:
            self.open.text.append(arguments)
            yield self.event("response.function_call_arguments.delta",
                             item_id=self.open.item.id, output_index=self.open.index,
                             delta=arguments)

    def _close(self) -> Iterator[str]:
        """The open item's done events; the item joins the response's output."""
        current, self.open = self.open, None
        if current is None:
            return
        item, text, at = current.item, "".join(current.text), current.index
        if isinstance(item, ReasoningItem):
            item.content = [ReasoningText(text=text)]
            yield self.event("response.reasoning_text.done", item_id=item.id, output_index=at,
                             content_index=0, text=text)
        elif isinstance(item, MessageItem):
            part = OutputText(text=text)
            item.content = [part]
            item.status = "incomplete" if self.finish_reason == "length" else "completed"
            yield self.event("response.output_text.done", item_id=item.id, output_index=at,
                             content_index=0, text=text, logprobs=[])
            yield self.event("response.content_part.done", item_id=item.id, output_index=at,
                             content_index=0, part=part.model_dump())
        else:
            item.arguments, item.status = text, "completed"
            yield self.event("response.function_call_arguments.done", item_id=item.id,
                             output_index=at, name=item.name, arguments=text)
        self.response.output.append(item)
        yield self.event("response.output_item.done", output_index=at, item=item.model_dump())


async def events(req: ResponsesRequest, model: str, chunks: AsyncIterator[str]
                 ) -> AsyncIterator[str]:
    """The Responses SSE body read off the chat stream's chunks; a fault the chat stream
    reports becomes an ``error`` event. Closing this closes the chat stream (its engine
    requests are aborted)."""
    out = EventStream(req, model)
    try:
        for text in out.start():
            yield text
        async for raw in chunks:
            data = raw.removeprefix("data: ").strip()
            if data == "[DONE]":
                break
            body = json.loads(data)
            if "error" in body:
                yield out.error(body["error"])
                return
            for text in out.chunk(body):
                yield text
        for text in out.end():
            yield text
    finally:
        await chunks.aclose()
