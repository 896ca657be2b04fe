"""Tool calling: a request's ``tools`` and ``tool_choice`` checked, turned into the answer's
guided-decoding schema, and the answer turned back into OpenAI ``tool_calls``.

Three ways a choice's answer relates to its tools (``ChatCompletionRequest.tool_mode``):

- ``required`` / ``named``: the answer IS the call(s). As vLLM's server does
  (``vllm.tool_parsers.utils.get_json_schema_from_tools``, mirrored by `answer_schema`), the
  answer phase is constrained by guided decoding to a JSON schema: the named function's
  ``parameters`` (the answer is that call's arguments), or an array of ``{"name",
  "parameters"}`` items, one per call (``maxItems: 1`` when ``parallel_tool_calls`` is
  false). The reasoning before it stays free (`lapo.service.generation`).
- ``auto``: the model chooses; its answer is read by vLLM's tool parser (the setting
  ``tool_call_parser``, default ``hermes``: ``<tool_call>{"name", "arguments"}</tool_call>``).
  Only a model whose chat template renders tools (`lapo.think.supports_tools`) can choose.
- ``none``: no tools, or ``tool_choice: "none"``: a plain answer; the template gets no tools.

Nothing heavy at import: vLLM's parser is loaded on the first ``auto`` answer.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from lapo.service.errors import invalid

if TYPE_CHECKING:
    from lapo.service.model import ModelHandle
    from lapo.service.schemas import ChatCompletionRequest, FunctionDefinition, ToolCall
    from lapo.service.settings import Settings

logger = logging.getLogger(__name__)
_EMPTY_OBJECT = {"type": "object", "properties": {}}


def _params(function: FunctionDefinition) -> dict[str, Any]:
    # Empty or missing parameters still constrain the arguments to a JSON object (vLLM's).
    return function.parameters or dict(_EMPTY_OBJECT)


def answer_schema(functions: list[FunctionDefinition], tool_choice: Any,
                  parallel: bool) -> dict[str, Any]:
    """The JSON schema a forced answer is generated under (vLLM 0.32's
    ``get_json_schema_from_tools``): the named function's parameters, or for ``required`` an
    array of calls of any of ``functions``, at least one, at most one unless ``parallel``.
    The functions' ``$defs`` are hoisted to the array's top level, as vLLM does."""
    if not isinstance(tool_choice, str):
        chosen = next(f for f in functions if f.name == tool_choice.function.name)
        return _params(chosen)
    items, defs = [], {}
    for i, f in enumerate(functions):
        params = dict(_params(f))
        own = params.pop("$defs", None) or {}
        if not isinstance(own, dict):
            raise invalid(f"'tools.{i}.function.parameters.$defs' must be an object of named "
                          f"schemas; got {type(own).__name__}.",
                          f"tools.{i}.function.parameters")
        for def_name, def_schema in own.items():
            if defs.setdefault(def_name, def_schema) != def_schema:
                raise invalid(f"'tools' define '$defs.{def_name}' twice, differently; a "
                              "required tool call takes one definition per name.", "tools")
        items.append({"properties": {"name": {"type": "string", "enum": [f.name]},
                                     "parameters": params},
                      "required": ["name", "parameters"]})
    schema: dict[str, Any] = {"type": "array", "minItems": 1,
                              "items": {"type": "object", "anyOf": items}}
    if not parallel:
        schema["maxItems"] = 1
    if defs:
        schema["$defs"] = defs
    return schema


def check(req: ChatCompletionRequest, model: ModelHandle, settings: Settings) -> None:
    """400s naming the field for what cannot be served: ``tool_choice`` without ``tools``,
    too many tools, a duplicate name, an unknown named function, ``auto`` for a template that
    cannot render tools, and a forced call combined with another answer constraint."""
    from lapo.think import supports_tools

    if req.tools is None:
        if req.tool_choice is not None:
            raise invalid("'tool_choice' is only allowed when 'tools' is given.",
                          "tool_choice")
        return
    if len(req.tools) > settings.max_tools:
        raise invalid(f"'tools' may hold at most {settings.max_tools} functions; got "
                      f"{len(req.tools)}.", "tools")
    seen: set[str] = set()
    for i, tool in enumerate(req.tools):
        if tool.function.name in seen:
            raise invalid(f"'tools' names the function '{tool.function.name}' twice; "
                          "function names must be unique.", f"tools.{i}.function.name")
        seen.add(tool.function.name)
    choice = req.tool_choice
    if choice is not None and not isinstance(choice, str) and choice.function.name not in seen:
        raise invalid(f"'tool_choice' names the function '{choice.function.name}', which is "
                      f"not in 'tools' (functions: {', '.join(sorted(seen))}).",
                      "tool_choice")
    mode = req.tool_mode
    if mode == "auto" and not supports_tools(model.tok.tokenizer):
        implied = "" if req.tool_choice else " (implied when 'tools' is given without it)"
        raise invalid(f"'tool_choice' \"auto\"{implied} needs a model whose chat template "
                      f"renders tools; the template of '{model.name}' does not, so the "
                      "model cannot choose to call one. Use \"required\" or name a function "
                      "(the call is then enforced by guided decoding).", "tool_choice",
                      "unsupported_parameter")
    if mode != "none":
        for name, given in (("response_format", req.response_format is not None
                             and req.response_format.type != "text"),
                            ("structured_outputs", req.structured_outputs is not None)):
            if given:
                raise invalid(f"'{name}' cannot be combined with 'tools' (tool_choice "
                              f"\"{mode}\"): the answer is either tool calls or text in the "
                              "format, not both. Send tool_choice \"none\" to use the "
                              "format.", name)


async def check_schemas(req: ChatCompletionRequest, model: ModelHandle) -> None:
    """A forced call's ``parameters`` compiled up front by vLLM's own validation
    (`lapo.service.structured.check`): one it cannot compile is a 400 naming it. (Under
    ``auto`` the parameters are only rendered into the prompt, never compiled.)"""
    from lapo.service import structured

    if req.tool_mode not in ("required", "named"):
        return
    named = None if req.tool_mode == "required" else req.tool_choice.function.name
    for i, tool in enumerate(req.tools):
        if named is None or tool.function.name == named:
            await structured.check((f"tools.{i}.function.parameters",
                                    {"json": _params(tool.function)}), model)


def template_tools(req: ChatCompletionRequest) -> list[dict] | None:
    """The tools the chat template gets, as vLLM and transformers give them (OpenAI's
    ``{"type": "function", "function": {...}}`` dicts); none with ``tool_choice: "none"``
    (vLLM's behaviour: the model answers plainly)."""
    if req.tool_mode == "none":
        return None
    return [t.model_dump(exclude_none=True) for t in req.tools]


def history_calls(calls: list[ToolCall], where: str) -> list[dict]:
    """An assistant message's ``tool_calls`` for the template, ``arguments`` parsed into an
    object (as vLLM does: templates write it with ``tojson``)."""
    out = []
    for j, call in enumerate(calls):
        field = f"{where}.tool_calls.{j}.function.arguments"
        try:
            arguments = json.loads(call.function.arguments)
        except json.JSONDecodeError:
            raise invalid(f"'{field}' must be a JSON object as a string; it does not parse.",
                          field) from None
        if not isinstance(arguments, dict):
            raise invalid(f"'{field}' must be a JSON object as a string; got a JSON "
                          f"{type(arguments).__name__}.", field)
        from lapo.service.schemas import _lone_surrogate

        if _lone_surrogate(arguments):  # escaped in the string, real once parsed
            raise invalid(f"'{field}' holds an unpaired surrogate (\\ud800-\\udfff): not "
                          "valid Unicode text.", field)
        out.append({"id": call.id, "type": "function",
                    "function": {"name": call.function.name, "arguments": arguments}})
    return out


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _call(name: str, arguments: str) -> ToolCall:
    from lapo.service.schemas import FunctionCall, ToolCall

    return ToolCall(id=call_id(), function=FunctionCall(name=name, arguments=arguments))


@functools.cache
def _parser_class(name: str):
    from vllm.tool_parsers import ToolParserManager

    return ToolParserManager.get_tool_parser(name)


def check_parser(name: str) -> None:
    """Raise ValueError unless vLLM knows the tool parser ``name`` (checked at start-up, so
    a misspelt LAPO_TOOL_CALL_PARSER never surfaces as a failed request)."""
    try:
        _parser_class(name)
    except KeyError:
        from vllm.tool_parsers import ToolParserManager

        known = ", ".join(sorted(getattr(ToolParserManager, "lazy_parsers", {}) or
                                 getattr(ToolParserManager, "tool_parsers", {})))
        raise ValueError(f"LAPO_TOOL_CALL_PARSER={name!r} is not a vLLM tool parser"
                         + (f" (known: {known})" if known else "")) from None


def parse_auto(answer: str, parser: str, tokenizer: Any) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) of a free answer, read by vLLM's tool parser ``parser``."""
    info = _parser_class(parser)(tokenizer).extract_tool_calls(answer, None)
    if not info.tools_called:
        return answer, []
    return info.content, [_call(c.function.name, c.function.arguments)
                          for c in info.tool_calls]


def answer_message(req: ChatCompletionRequest, answer: str, finish: str | None,
                   settings: Settings, tokenizer: Any
                   ) -> tuple[str | None, list[ToolCall] | None, str | None]:
    """A choice's (content, tool_calls, finish_reason). A forced answer that did not finish
    (``length``) is not a complete call: it stays content, finish ``length``."""
    mode = req.tool_mode
    if mode == "none":
        return answer, None, finish
    if mode == "auto":
        content, calls = parse_auto(answer, settings.tool_call_parser, tokenizer)
        if not req.parallel_tool_calls:
            calls = calls[:1]  # at most one call (vLLM keeps the first)
    elif finish != "stop":
        return answer, None, finish
    elif mode == "named":
        content, calls = None, [_call(req.tool_choice.function.name, answer)]
    else:
        try:
            items = json.loads(answer)
        except json.JSONDecodeError:  # the grammar makes this unreachable on a stop
            logger.warning("a required tool-call answer did not parse")
            return answer, None, finish
        content = None
        calls = [_call(item["name"], json.dumps(item["parameters"], ensure_ascii=False))
                 for item in items]
    if not calls:
        return content, None, finish
    return content, calls, "tool_calls" if finish == "stop" else finish
