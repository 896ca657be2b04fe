"""vLLM's per-token logprobs in the OpenAI chat shape.

An engine output carries, for each new token, ``{token_id: Logprob(logprob, rank,
decoded_token)}``: the sampled token and the top-N alternatives. Each becomes
``{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}, ...]}``.

As vLLM's server: a token string is vLLM's decoded token (else the tokenizer's decoding of the
id), ``bytes`` its UTF-8 bytes, and a logprob of ``-inf`` is sent as -9999.0 (JSON has no
infinity). Unlike vLLM 0.32, ``top_logprobs`` lists the N most likely tokens by rank, as
OpenAI defines it (vLLM lists the sampled token first even when it is not among them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vllm.logprobs import Logprob

FLOOR = -9999.0


def _text(token_id: int, lp: Logprob | None, decode: Callable[[int], str]) -> str:
    return lp.decoded_token if lp is not None and lp.decoded_token is not None else decode(
        token_id)


def _item(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": max(logprob, FLOOR),
            "bytes": list(token.encode("utf-8", errors="replace"))}


def entries(token_ids: Sequence[int], positions: Sequence[dict | None] | None, top_n: int,
            decode: Callable[[int], str]) -> list[dict]:
    """One OpenAI logprobs entry per token of ``token_ids``.

    ``positions``: the engine output's ``logprobs`` (one ``{id: Logprob}`` per token, or None
    where the engine returned none); ``top_n``: alternatives per token.
    """
    out = []
    for i, tid in enumerate(token_ids):
        at = positions[i] if positions is not None and i < len(positions) else None
        chosen = at.get(tid) if at else None
        entry = _item(_text(tid, chosen, decode),
                      chosen.logprob if chosen is not None else FLOOR)
        ranked = sorted((lp.rank if lp.rank is not None else 1 << 30, -lp.logprob, token_id, lp)
                        for token_id, lp in (at or {}).items())
        entry["top_logprobs"] = [_item(_text(token_id, lp, decode), lp.logprob)
                                 for *_, token_id, lp in ranked[:top_n]]
        out.append(entry)
    return out
