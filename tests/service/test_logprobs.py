"""vLLM's per-token logprobs -> OpenAI entries (`lapo.service.logprobs`), exactly."""

from __future__ import annotations

import math

import pytest
from vllm.logprobs import Logprob

from lapo.service.logprobs import FLOOR, entries


def decode(tid: int) -> str:
    return f"<{tid}>"


def test_sampled_token_and_top_by_rank() -> None:
    # the sampled token (7) is rank 3: vLLM's dict holds it first, then the top 2
    at = {7: Logprob(-2.0, 3, "é"), 1: Logprob(-0.5, 1, "a"), 2: Logprob(-1.0, 2, None)}
    [e] = entries([7], [at], 2, decode)
    assert e == {"token": "é", "logprob": -2.0, "bytes": [195, 169],
                 "top_logprobs": [{"token": "a", "logprob": -0.5, "bytes": [97]},
                                  {"token": "<2>", "logprob": -1.0, "bytes": list(b"<2>")}]}


@pytest.mark.parametrize(("top_n", "tops"), [(0, []), (1, ["a"]), (3, ["a", "b", "c"])])
def test_top_n_most_likely(top_n, tops) -> None:
    at = {3: Logprob(-1.0, 2, "c"), 1: Logprob(-0.1, 1, "a"), 2: Logprob(-1.0, 2, "b")}
    [e] = entries([1], [at], top_n, decode)
    assert [t["token"] for t in e["top_logprobs"]] == tops
    assert e["logprob"] == -0.1


def test_infinite_and_missing_logprobs() -> None:
    at = {5: Logprob(-math.inf, 1, "x")}
    first, second = entries([5, 6], [at, None], 1, decode)
    assert first["logprob"] == FLOOR and first["top_logprobs"][0]["logprob"] == FLOOR
    assert second == {"token": "<6>", "logprob": FLOOR, "bytes": list(b"<6>"),
                      "top_logprobs": []}
    assert [e["logprob"] for e in entries([5], None, 0, decode)] == [FLOOR]


def test_invalid_utf8_pieces_are_replaced_in_bytes() -> None:
    [e] = entries([9], [{9: Logprob(-1.0, 1, "\udcff")}], 0, decode)
    assert e["bytes"] == [63]  # errors="replace", as vLLM
