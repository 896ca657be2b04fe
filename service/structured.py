"""Structured outputs: a request's answer constraint checked up front by vLLM's own validation.

A constraint (``response_format`` or vLLM's ``structured_outputs``, as keyword arguments of
vLLM's ``StructuredOutputsParams``) is enforced by the engine's guided decoding on the answer
phase only (`lapo.service.generation`). The engine validates it when that phase's request is
added, which for a reasoning model comes after the reasoning has streamed: so it is checked
here, before any generation, with the same code the engine runs (``SamplingParams.verify``
against the engine's model, structured-outputs config and tokenizer), and a constraint vLLM
cannot compile is a 400 naming the field that asked for it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from lapo.service.errors import invalid
from lapo.service.model import ModelHandle

logger = logging.getLogger(__name__)
_MAX_REASON_CHARS = 300
# xgrammar prefixes its messages with a time and its C++ source location: not for clients.
_NATIVE_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")


def sampling_constraint(kwargs: dict[str, Any]):
    """A fresh vLLM ``StructuredOutputsParams`` (the engine writes its chosen backend into the
    object, so every engine request gets its own)."""
    from vllm.sampling_params import StructuredOutputsParams

    return StructuredOutputsParams(**kwargs)


def _verify(kwargs: dict[str, Any], engine: Any) -> None:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, structured_outputs=sampling_constraint(kwargs))
    processor = getattr(engine, "input_processor", None)
    if processor is None:
        # No engine-side config to read (a stand-in engine): vLLM's default backend's check.
        from vllm.v1.structured_output.backend_xgrammar import validate_xgrammar_grammar

        validate_xgrammar_grammar(params)
        return
    params.verify(processor.model_config, None, processor.structured_outputs_config,
                  processor.tokenizer)


def refuse_conflicts(param: str, *, stop: list[str] | None, ignore_eos: bool,
                     min_tokens: int) -> None:
    """Options that would break "a constrained answer that finished with ``stop`` parses": a
    stop string cuts it short, ``ignore_eos`` and ``min_tokens`` push past the grammar's end.

    >>> refuse_conflicts("response_format", stop=None, ignore_eos=False, min_tokens=0)
    """
    for name, given in (("stop", stop), ("ignore_eos", ignore_eos),
                        ("min_tokens", min_tokens)):
        if given:
            raise invalid(f"'{name}' ({given!r}) cannot be combined with '{param}': the "
                          "constrained answer ends where its grammar ends, and "
                          f"'{name}' would cut it short or push past that end.", name)


async def check(constraint: tuple[str, dict[str, Any]] | None, model: ModelHandle) -> None:
    """Raise a 400 naming the field when vLLM cannot compile the constraint.

    Compiling a schema or a grammar is CPU work (xgrammar, in C++): a thread keeps the event
    loop serving other requests meanwhile."""
    if constraint is None:
        return
    param, kwargs = constraint
    from vllm.exceptions import VLLMClientError

    try:
        await asyncio.to_thread(_verify, kwargs, model.engine)
    except (VLLMClientError, ValueError, TypeError) as exc:
        # vLLM's validation errors describe the user's schema, regex or grammar (vLLM's own
        # server answers them as 400s); only xgrammar's source locations are cut.
        reason = _NATIVE_PREFIX.sub("", " ".join(str(exc).split()))[:_MAX_REASON_CHARS]
        reason = reason or type(exc).__name__
        logger.info("structured-output constraint refused (%s): %s", param, reason)
        raise invalid(f"'{param}' cannot be enforced: vLLM could not compile it into a "
                      f"grammar ({reason}).", param) from None
