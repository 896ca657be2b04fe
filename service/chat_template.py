"""A request's chat template: its ``chat_template_kwargs`` checked against the served
template, the prompt rendered (template errors as 400s), and where the rendered prompt leaves
the think span.

Kwargs (vLLM's ``chat_template_kwargs``) are JSON scalars (the schema checks that) and must be
variables the served template reads: a name it ignores is refused, not silently dropped (vLLM
drops it), and names the server sets itself (``messages``, ``add_generation_prompt``,
``tools``, special tokens, ...) cannot be overridden. A switch such as Qwen3's
``enable_thinking: false`` can close the think span inside the prompt, or another template's
switch open it: `prompt_profile` gives the think profile of the prompt as rendered, so the
split and the token accounting follow it, and budgets are refused when no reasoning is left.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING

from lapo import protocol as p
from lapo.prompt import Prompt
from lapo.service.errors import APIError, invalid
from lapo.think import ThinkProfile, TokenCounter, template_source

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# Set by the server (or by transformers for the template), never by a request's kwargs.
RESERVED = frozenset({
    "messages", "conversation", "add_generation_prompt", "continue_final_message", "tools",
    "documents", "chat_template", "tokenize", "padding", "truncation", "max_length",
    "return_tensors", "return_dict", "return_assistant_tokens_mask", "tokenizer_kwargs",
    "raise_exception", "strftime_now", "bos_token", "eos_token", "unk_token", "pad_token",
    "sep_token", "cls_token", "mask_token", "additional_special_tokens",
})


@functools.lru_cache(maxsize=16)
def template_variables(source: str) -> frozenset[str] | None:
    """The variables ``source`` reads from its caller (None: it could not be parsed)."""
    import jinja2
    from jinja2 import meta

    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        env = _compile_jinja_template(source).environment  # transformers' own extensions
    except Exception:  # a private helper of transformers: fall back to plain Jinja
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"])
    try:
        return frozenset(meta.find_undeclared_variables(env.parse(source)))
    except jinja2.TemplateError:
        logger.warning("could not list the chat template's variables")
        return None


def check_kwargs(kwargs: dict | None, tokenizer: PreTrainedTokenizerBase, model_name: str,
                 max_chars: int, param: str = "chat_template_kwargs") -> None:
    """400 unless every key is a variable the served template reads, and every string value
    is at most ``max_chars`` characters (the limit of one message)."""
    if not kwargs:
        return
    readable = template_variables(template_source(tokenizer))
    usable = None if readable is None else sorted(readable - RESERVED)
    for key, value in kwargs.items():
        where = f"{param}.{key}"
        if key in RESERVED:
            raise invalid(f"'{where}' cannot be set: the server sets '{key}' itself.", where,
                          "unsupported_parameter")
        if usable is not None and key not in usable:
            takes = ", ".join(usable) or "none"
            raise invalid(f"'{where}': the chat template of '{model_name}' does not read "
                          f"'{key}' (chat_template_kwargs it takes: {takes}).", where,
                          "unsupported_parameter")
        if isinstance(value, str) and len(value) > max_chars:
            raise invalid(f"'{where}' may be at most {max_chars} characters; got "
                          f"{len(value)}.", where)


def render(messages: list[dict], tok: TokenCounter, kwargs: dict | None,
           tools: list[dict] | None = None) -> Prompt:
    """The chat prompt (`Prompt.chat`), template errors as 400s (`template_errors`).
    ``tools``: OpenAI function tools as dicts, given to the template as its ``tools`` (as
    vLLM and transformers do); None leaves the variable undefined."""
    variables = kwargs if tools is None else {**(kwargs or {}), "tools": tools}
    with template_errors(kwargs):
        return Prompt.chat(messages, tok, variables)


@contextmanager
def template_errors(kwargs: dict | None):
    """A template that refuses the request (its ``raise_exception``, a variable of the wrong
    type) is a 400 naming the kwargs, or the messages without them."""
    import jinja2

    param = "chat_template_kwargs" if kwargs else "messages"
    try:
        yield
    except jinja2.TemplateError as exc:
        # The template author's message (e.g. "roles must alternate"), not our internals.
        reason = str(exc)[:300]
        raise invalid(f"The chat template refused this request ('{param}'): {reason}",
                      param) from None
    except (TypeError, ValueError) as exc:
        if not kwargs:
            raise
        raise invalid(f"The chat template cannot render with these chat_template_kwargs "
                      f"({type(exc).__name__}); check their types.", param) from None


def prompt_profile(profile: ThinkProfile, text: str) -> tuple[ThinkProfile, bool]:
    """(the think profile of a prompt rendered with kwargs, whether it closed the span).

    The checkpoint's profile describes its template with no kwargs; a prompt that now ends
    with ``<think>`` opens the span (the completion starts inside it), one that ends with
    ``</think>`` has closed it (thinking switched off: whatever follows is the answer unless
    the model opens a span itself), and one that no longer ends with ``<think>`` leaves the
    opening to the model.
    """
    if not profile.reasons:
        return profile, False
    stripped = text.rstrip()
    if stripped.endswith(p.THINK_OPEN):
        return dataclasses.replace(profile, opens="prompt",
                                   prompt_suffix=text[len(stripped):]), False
    if profile.opens == "prompt" or stripped.endswith(p.THINK_CLOSE):
        return (dataclasses.replace(profile, opens="model", prompt_suffix=""),
                stripped.endswith(p.THINK_CLOSE))
    return profile, False


def refuse_budgets_without_thinking(given: list[tuple[str, object]]) -> None:
    """Budgets cannot apply once the kwargs closed the think span in the prompt."""
    if given:
        name, value = given[0]
        raise APIError(400, f"'{name}' ({value!r}) cannot apply: the chat_template_kwargs "
                       "close the think span in the prompt (thinking is switched off), so "
                       "there is no reasoning to budget.", param=name,
                       code="unsupported_parameter")
