"""Table-driven tests of the LAPO protocol: statement, think split (whole and streamed), counts."""

from __future__ import annotations

import pytest

from lapo import protocol as p

# ----------------------------------------------------------------- the budget statement

PARSE_CASES = [
    # (reasoning text, expected declared budget)
    (" I will answer the question with 57 tokens.\n3+4=7", 57),
    ("I will answer the question with 57 tokens.", 57),
    ("\nI will answer the question with   120   tokens. ok", 120),  # paper's \s*
    (" I will answer the question with 1 tokens.", 1),
    ("3+4=7, so 7.", None),  # absent is None ...
    ("", None),
    (" I will answer the question with 0 tokens.", None),  # ... and 0 is rejected, never 0
    (" I will answer the question with 99999999 tokens.", None),  # absurd
    (f" I will answer the question with {p.MAX_BUDGET + 1} tokens.", None),
    (f" I will answer the question with {p.MAX_BUDGET} tokens.", p.MAX_BUDGET),
    (" I will answer the question with -5 tokens.", None),
    (" I will answer the question with tokens.", None),
    (" I will answer the question with 12", None),  # incomplete
    # Deep in the reasoning it is not a declaration, just text.
    ("x" * 200 + " I will answer the question with 57 tokens.", None),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES)
def test_parse_budget(text: str, expected: int | None) -> None:
    assert p.parse_budget(text) == expected


@pytest.mark.parametrize("n", [1, 57, 4096, p.MAX_BUDGET])
def test_statement_round_trips(n: int) -> None:
    statement = p.budget_statement(n)
    assert (p.THINK_OPEN + statement).startswith("<think> I will answer the question with ")
    assert p.parse_budget(statement) == n
    assert p.split_statement(statement + "\nrest") == (statement, "\nrest")


@pytest.mark.parametrize("n", [0, -1, p.MAX_BUDGET + 1])
def test_statement_rejects_absurd(n: int) -> None:
    with pytest.raises(ValueError, match="budget must be in"):
        p.budget_statement(n)


# ----------------------------------------------------------------- the think span
# (completion, prompt_opens_think, reasoning, answer, closed)
SPLIT_CASES = [
    ("a b</think>42", True, "a b", "42", True),  # template opened <think>
    ("<think>a b</think>42", False, "a b", "42", True),  # model opened it
    ("  \n<think>a</think>42", False, "a", "42", True),  # whitespace before the tag
    ("a b c", True, "a b c", "", False),  # stopped inside the reasoning
    ("<think>a b", False, "a b", "", False),
    ("42", False, "", "42", False),  # never opened: all answer
    ("</think>42", True, "", "42", True),  # empty reasoning
    ("a</think>", True, "a", "", True),  # empty answer
    ("a</think>b</think>c", True, "a", "b</think>c", True),  # first close wins
    ("x <think>a</think>b", False, "", "x <think>a</think>b", False),  # tag not at start
    ("", True, "", "", False),
    ("", False, "", "", False),
]


@pytest.mark.parametrize(("text", "opens", "reasoning", "answer", "closed"), SPLIT_CASES)
def test_split_whole(text, opens, reasoning, answer, closed) -> None:
    split = p.split_think(text, prompt_opens_think=opens)
    assert (split.reasoning, split.answer, split.closed) == (reasoning, answer, closed)


def _chunkings(text: str) -> list[list[str]]:
    """Whole, one char at a time, and every two-piece cut: tags split at every offset."""
    out = [[text], list(text)]
    out += [[text[:i], text[i:]] for i in range(1, len(text))]
    out += [[text[:i], text[i : i + 3], text[i + 3 :]] for i in range(len(text))]
    return out


def _stream(chunks: list[str], opens: bool) -> tuple[str, str, p.ThinkStreamSplitter]:
    splitter = p.ThinkStreamSplitter(prompt_opens_think=opens)
    reasoning, answer = "", ""
    seen_answer = False
    for chunk in chunks:
        r, a = splitter.feed(chunk)
        # Reasoning deltas all come before answer deltas.
        assert not (seen_answer and r)
        seen_answer = seen_answer or bool(a)
        reasoning, answer = reasoning + r, answer + a
    r, a = splitter.finish()
    assert not (seen_answer and r)
    return reasoning + r, answer + a, splitter


@pytest.mark.parametrize(("text", "opens", "reasoning", "answer", "closed"), SPLIT_CASES)
def test_split_streaming_matches_whole(text, opens, reasoning, answer, closed) -> None:
    for chunks in _chunkings(text):
        got_r, got_a, splitter = _stream(chunks, opens)
        assert (got_r, got_a, splitter.closed) == (reasoning, answer, closed), chunks


def test_streaming_holds_back_only_a_possible_tag() -> None:
    splitter = p.ThinkStreamSplitter()
    assert splitter.feed("abc </th") == ("abc ", "")  # "</th" might be the close tag
    assert splitter.feed("ink") == ("", "")
    assert splitter.feed("> 42") == ("", " 42")
    splitter = p.ThinkStreamSplitter()
    assert splitter.feed("a </") == ("a ", "")
    assert splitter.feed("b>") == ("</b>", "")  # it was not the tag after all


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([" I will answer the question with 57 tokens.", "\n3"], 57),
        ([" I will answer the ques", "tion with 5", "7 tok", "ens.\n"], 57),
        ([" I will answer the question with 5", "7 tokens."], 57),  # decided at finish
        (["3+4=7 so the answer is seven which ", "is certainly right. " * 4], None),
        ([" I will answer the question with 0 tokens.\n"], None),
    ],
)
def test_budget_stream_reader(chunks: list[str], expected: int | None) -> None:
    reader = p.BudgetStreamReader()
    for chunk in chunks:
        reader.feed(chunk)
    assert reader.finish() == expected
    assert p.parse_budget("".join(chunks)) == expected


# ----------------------------------------------------------------- token accounting

# A toy vocabulary: one token per piece, decode joins them.
VOCAB = ["<think>", "</think>", "<eos>", " I", " will", " answer", " the", " question",
         " with", " 5", " tokens", ".", "\n", "a", "b", "c", "4", "2", " "]
ID = {t: i for i, t in enumerate(VOCAB)}
STATEMENT = [" I", " will", " answer", " the", " question", " with", " 5", " tokens", "."]


def _ids(pieces: list[str]) -> list[int]:
    return [ID[t] for t in pieces]


def _decode(ids) -> str:
    return "".join(VOCAB[i] for i in ids)


# (pieces, prompt_opens, injected, completion, reasoning, budgeted, answer, declared, closed)
COUNT_CASES = [
    (["a", "b", "c", "</think>", "4", "2", "<eos>"], True, None, 7, 3, 3, 2, None, True),
    ([*STATEMENT, "\n", "a", "b", "</think>", "4", "<eos>"], True, None, 15, 12, 3, 1, 5, True),
    (["a", "b", "</think>", "4"], True, 5, 4, 2, 2, 1, 5, True),  # budget injected in prompt
    (["<think>", "a", "</think>", "4", "<eos>"], False, None, 5, 1, 1, 1, None, True),
    ([" ", "<think>", "a", "</think>", "4"], False, None, 5, 1, 1, 1, None, True),
    (["4", "2", "<eos>"], False, None, 3, 0, 0, 2, None, False),  # never opened
    (["a", "b", "c"], True, None, 3, 3, 3, 0, None, False),  # cut inside the reasoning
    (["a", "b", "<eos>"], True, None, 3, 2, 2, 0, None, False),
    ([*STATEMENT], True, None, 9, 9, 0, 0, 5, False),
]


@pytest.mark.parametrize(
    ("pieces", "opens", "injected", "completion", "reasoning", "budgeted", "answer", "declared",
     "closed"),
    COUNT_CASES,
)
def test_count_tokens(pieces, opens, injected, completion, reasoning, budgeted, answer,
                      declared, closed) -> None:
    counts = p.count_tokens(
        _ids(pieces), _decode, ID["<think>"], ID["</think>"], {ID["<eos>"]},
        prompt_opens_think=opens, declared=injected,
    )
    assert counts == p.TokenCounts(completion, reasoning, budgeted, answer, declared, closed)


def test_budget_error_definition() -> None:
    counts = p.TokenCounts(20, 15, 6, 2, declared=5, closed=True)
    assert counts.budget_error == pytest.approx(0.2)  # (6 - 5) / 5
    assert p.TokenCounts(20, 15, 15, 2, declared=None, closed=True).budget_error is None
