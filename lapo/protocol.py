"""The LAPO protocol: budget statement, think span, and length accounting.

This is the ONE definition shared by training rewards, `lapo eval` and the service, so the
training signal, the evaluation metric and the served numbers cannot drift apart. It has no
heavy imports (no torch, no transformers): token ids and a ``decode`` callable come in.

Format (LAPO, arXiv 2507.15758, §3.3; the paper's code writes the statement right after
``<think>``)::

    <think> I will answer the question with 57 tokens.
    ...reasoning...</think>answer

Definitions (written once, used everywhere):

- **think span**: the text between ``<think>`` and ``</think>``. ``<think>`` is usually
  written by the chat template at the end of the prompt (``prompt_opens_think=True``); it may
  also be the first thing the model writes. If the span was never opened, the whole completion
  is answer. If the completion stops before ``</think>``, everything after ``<think>`` is
  reasoning and the answer is empty.
- **reasoning tokens** (``reasoning_tokens``): the completion tokens inside the think span,
  excluding the two tags and including a budget statement the model wrote itself. This is
  what OpenAI's ``usage.completion_tokens_details.reasoning_tokens`` reports.
- **budgeted length** (``budgeted_tokens``): the reasoning tokens that FOLLOW the budget
  statement. The number N in "I will answer the question with N tokens." promises this length.
  Training rewards (stage 1 and 2), ``declared`` vs ``actual`` in evaluation, and the
  service's ``actual_reasoning_tokens`` all use it, so a statement injected into the prompt
  and one the model wrote itself are measured the same way.
  Without a statement, ``budgeted_tokens == reasoning_tokens``.
- **answer tokens**: completion tokens after ``</think>``, excluding a final end-of-sequence
  token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

BUDGET_TEMPLATE = "I will answer the question with {n} tokens."
# The paper's reward code finds the statement with this pattern.
BUDGET_PATTERN = re.compile(r"I will answer the question with\s*(\d+)\s*tokens")
# A full statement, as written by `budget_statement` (with its period and the optional
# space after <think>): what `split_statement` removes from the reasoning.
_STATEMENT_RE = re.compile(r"^\s*I will answer the question with\s*(\d+)\s*tokens\.?")

MIN_BUDGET = 1
# Larger than any context window we serve; a larger number is noise, not a plan.
MAX_BUDGET = 131_072
# How far into the reasoning the statement may start and still count as a declaration.
STATEMENT_SEARCH_CHARS = 64


def budget_statement(n: int) -> str:
    """The statement for budget ``n``, as placed right after ``<think>``.

    >>> THINK_OPEN + budget_statement(57)
    '<think> I will answer the question with 57 tokens.'
    """
    if not MIN_BUDGET <= n <= MAX_BUDGET:
        raise ValueError(f"budget must be in [{MIN_BUDGET}, {MAX_BUDGET}], got {n}")
    return " " + BUDGET_TEMPLATE.format(n=n)


def parse_budget(text: str) -> int | None:
    """The declared budget in ``text`` (reasoning text), or None when absent or absurd.

    Absent is None, never 0. Only a statement near the start of the reasoning counts (the
    protocol puts it right after ``<think>``).

    >>> parse_budget(" I will answer the question with 57 tokens. First, 3+4=7.")
    57
    >>> parse_budget("First, 3+4=7.") is None
    True
    >>> parse_budget(" I will answer the question with 0 tokens.") is None
    True
    """
    match = BUDGET_PATTERN.search(text, 0, STATEMENT_SEARCH_CHARS + 64)
    if match is None or match.start() > STATEMENT_SEARCH_CHARS:
        return None
    digits = match.group(1)
    if len(digits) > 7:
        return None
    n = int(digits)
    return n if MIN_BUDGET <= n <= MAX_BUDGET else None


def split_statement(reasoning: str) -> tuple[str, str]:
    """Split reasoning into (statement, rest); statement is "" when there is none.

    >>> split_statement(" I will answer the question with 5 tokens.\\n2+2=4")
    (' I will answer the question with 5 tokens.', '\\n2+2=4')
    """
    match = _STATEMENT_RE.match(reasoning)
    if match is None or parse_budget(match.group(0)) is None:
        return "", reasoning
    return match.group(0), reasoning[match.end() :]


# --------------------------------------------------------------------------- think span


@dataclass(frozen=True)
class ThinkSplit:
    reasoning: str
    answer: str
    # True when </think> was seen: the reasoning is complete.
    closed: bool
    # True when the think span was opened (by the prompt or by the completion).
    opened: bool


def split_think(completion: str, prompt_opens_think: bool = True,
                reasons: bool = True) -> ThinkSplit:
    """Split a whole completion into reasoning and answer (see the module docstring).

    ``reasons=False``: a model without a think span (its profile says so): all answer.
    """
    text = completion
    opened = prompt_opens_think
    if not reasons:
        return ThinkSplit("", completion, closed=False, opened=False)
    if not opened:
        stripped = text.lstrip()
        if stripped.startswith(THINK_OPEN):
            opened = True
            text = stripped[len(THINK_OPEN) :]
    if not opened:
        return ThinkSplit("", completion, closed=False, opened=False)
    end = text.find(THINK_CLOSE)
    if end < 0:
        return ThinkSplit(text, "", closed=False, opened=True)
    return ThinkSplit(text[:end], text[end + len(THINK_CLOSE) :], closed=True, opened=True)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-k:]):
            return k
    return 0


class ThinkStreamSplitter:
    """Streaming twin of `split_think`: feed text deltas, get (reasoning, answer) deltas.

    Tags may arrive split across deltas; a suffix that could be the start of a tag is held
    back until the next delta (or `finish`) decides. Concatenating every returned piece gives
    exactly what `split_think` returns on the whole text.
    """

    def __init__(self, prompt_opens_think: bool = True, reasons: bool = True) -> None:
        self._state = ("reasoning" if prompt_opens_think else "start") if reasons else "answer"
        self._held = ""
        self.opened = prompt_opens_think and reasons
        self.closed = False

    def feed(self, delta: str) -> tuple[str, str]:
        text = self._held + delta
        self._held = ""
        reasoning, answer = "", ""
        if self._state == "start":
            stripped = text.lstrip()
            if stripped.startswith(THINK_OPEN):
                self._state, self.opened = "reasoning", True
                text = stripped[len(THINK_OPEN) :]
            elif THINK_OPEN.startswith(stripped):
                # Only whitespace or a partial "<think>" so far: undecided.
                self._held = text
                return "", ""
            else:
                self._state = "answer"
        if self._state == "reasoning":
            end = text.find(THINK_CLOSE)
            if end >= 0:
                reasoning = text[:end]
                text = text[end + len(THINK_CLOSE) :]
                self._state, self.closed = "answer", True
            else:
                keep = _partial_suffix(text, THINK_CLOSE)
                reasoning, self._held = text[: len(text) - keep], text[len(text) - keep :]
                return reasoning, ""
        answer = text
        return reasoning, answer

    def finish(self) -> tuple[str, str]:
        """Flush what was held back at the end of the stream."""
        held, self._held = self._held, ""
        if self._state == "reasoning":
            return held, ""
        return "", held


class BudgetStreamReader:
    """Reads the declared budget from streamed reasoning deltas, as soon as it is decidable."""

    def __init__(self) -> None:
        self._text = ""
        self.done = False
        self.declared: int | None = None

    def feed(self, reasoning_delta: str) -> int | None:
        if self.done or not reasoning_delta:
            return self.declared
        self._text += reasoning_delta
        statement, _ = split_statement(self._text)
        if statement and len(self._text) > len(statement):
            # Something follows the digits: the number is complete.
            self.declared, self.done = parse_budget(statement), True
        elif len(self._text.lstrip()) > STATEMENT_SEARCH_CHARS and not statement:
            self.done = True
        return self.declared

    def finish(self) -> int | None:
        if not self.done:
            self.declared, self.done = parse_budget(self._text), True
        return self.declared


# --------------------------------------------------------------------------- token counts


@dataclass(frozen=True)
class TokenCounts:
    completion_tokens: int
    reasoning_tokens: int
    budgeted_tokens: int
    answer_tokens: int
    declared: int | None
    closed: bool

    @property
    def budget_error(self) -> float | None:
        """(actual − declared) / declared, on the budgeted length; None without a declaration."""
        if self.declared is None:
            return None
        return (self.budgeted_tokens - self.declared) / self.declared


def count_tokens(
    token_ids: Sequence[int],
    decode: Callable[[Sequence[int]], str],
    think_open_id: int,
    think_close_id: int,
    eos_ids: frozenset[int] | set[int] = frozenset(),
    prompt_opens_think: bool = True,
    declared: int | None = None,
) -> TokenCounts:
    """Count a completion's tokens by the module's definitions.

    ``token_ids`` are the completion's ids as the engine produced them (``<think>`` and
    ``</think>`` are single added tokens). ``declared`` is an injected budget (the statement
    sits in the prompt, so it costs no completion tokens); when None, a statement the model
    wrote at the start of its reasoning is parsed and its tokens are excluded from the
    budgeted length.
    """
    ids = list(token_ids)
    total = len(ids)
    start = 0
    opened = prompt_opens_think
    if not opened:
        # Leading whitespace-only tokens may precede <think>.
        for i, tid in enumerate(ids):
            if tid == think_open_id:
                opened, start = True, i + 1
                break
            if decode([tid]).strip():
                break
    if not opened:
        answer = total - (1 if ids and ids[-1] in eos_ids else 0)
        return TokenCounts(total, 0, 0, answer, None, closed=False)
    try:
        end = ids.index(think_close_id, start)
        closed = True
    except ValueError:
        end, closed = total, False
    reasoning_ids = ids[start:end]
    answer_ids = ids[end + 1 :] if closed else []
    return _span_counts(total, reasoning_ids, answer_ids, closed, decode, eos_ids, declared)


def _span_counts(total: int, reasoning_ids: list[int], answer_ids: list[int], closed: bool,
                 decode: Callable[[Sequence[int]], str], eos_ids, declared: int | None
                 ) -> TokenCounts:
    """The counts once the span is found (both counters): trailing EOS dropped, and a
    model-written statement parsed and excluded from the budgeted length."""
    # A trailing EOS inside an unclosed span is not reasoning either.
    if not closed and reasoning_ids and reasoning_ids[-1] in eos_ids:
        reasoning_ids = reasoning_ids[:-1]
    if answer_ids and answer_ids[-1] in eos_ids:
        answer_ids = answer_ids[:-1]
    budgeted = len(reasoning_ids)
    if declared is None:
        statement_len = statement_token_len(reasoning_ids, decode)
        if statement_len:
            declared = parse_budget(decode(reasoning_ids[:statement_len]))
            budgeted -= statement_len
    return TokenCounts(
        completion_tokens=total,
        reasoning_tokens=len(reasoning_ids),
        budgeted_tokens=budgeted,
        answer_tokens=len(answer_ids),
        declared=declared,
        closed=closed,
    )


def count_tokens_text(
    token_ids: Sequence[int],
    decode: Callable[[Sequence[int]], str],
    eos_ids: frozenset[int] | set[int] = frozenset(),
    prompt_opens_think: bool = True,
    declared: int | None = None,
) -> TokenCounts:
    """`count_tokens` for tags written as several tokens: the span is found in the decoded
    text and mapped back to token positions (a bisection over decoded prefixes, which only
    grow). Same definitions, same results as `count_tokens` where both apply."""
    ids = list(token_ids)
    total = len(ids)

    def first_prefix(pred) -> int:
        """Smallest k such that pred(decode(ids[:k])), or total + 1 when none."""
        lo, hi = 0, total + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if mid <= total and pred(decode(ids[:mid])):
                hi = mid
            else:
                lo = mid + 1
        return lo

    start, opened = 0, prompt_opens_think
    if not opened:
        head = decode(ids[:64])
        if head.lstrip().startswith(THINK_OPEN):
            opened = True
            start = first_prefix(lambda t: THINK_OPEN in t)
    if not opened:
        answer = total - (1 if ids and ids[-1] in eos_ids else 0)
        return TokenCounts(total, 0, 0, answer, None, closed=False)
    base = len(decode(ids[:start]))
    after = first_prefix(lambda t: THINK_CLOSE in t[base:])  # the tag's last token, + 1
    closed = after <= total
    if closed:
        tag_at = decode(ids[:after]).index(THINK_CLOSE, base)
        # The reasoning ends with the last token whose text ends before the tag.
        end = first_prefix(lambda t: len(t) > tag_at) - 1
        reasoning_ids, answer_ids = ids[start:end], ids[after:]
    else:
        reasoning_ids, answer_ids = ids[start:], []
    return _span_counts(total, reasoning_ids, answer_ids, closed, decode, eos_ids, declared)


def statement_token_len(reasoning_ids: Sequence[int], decode: Callable) -> int:
    """How many leading reasoning tokens make up a model-written budget statement (0 if none).

    The statement ends with its period; the first token prefix whose text holds the whole
    statement is its token length.
    """
    head = decode(list(reasoning_ids[:128]))
    statement, _ = split_statement(head)
    if not statement:
        return 0
    for k in range(1, min(len(reasoning_ids), 128) + 1):
        if len(decode(list(reasoning_ids[:k]))) >= len(statement):
            return k
    return 0
