"""LAPO rewards with TRL's contract: ``f(prompts, completions, completion_ids, **columns)``.

Each returns exactly one float per completion (the official code appends a second reward per
sample; ours cannot: `_one_per_sample` checks it). Correctness comes from `lapo.checker`
(the metric `lapo eval` reports) and lengths from `lapo.protocol.count_tokens` (the budgeted
length the service reports), so the training signal and the metric cannot drift.

Stage 1 (paper §3.2, Eq. 3-5), per problem group of G rollouts::

    L = budgeted reasoning tokens of the CORRECT rollouts
    [L_min, L_max] = [P30(L), P70(L)]
    R1 = 1 inside the range, max(0, 1 - d/100) outside (d: distance to the nearer bound)
    r  = 1[correct] + alpha * R1 if correct, else 0          (alpha = 0.7)

A group with fewer than two correct rollouts has no length distribution to prefer a part of:
its single correct rollout gets R1 = 1 (the range collapses onto it) and the rest 0, so the
signal is plain correctness. Stage 1 also records M(q) = median(L) per problem id (with the
number of samples it rests on) in a `LengthMemory`; an unsolved problem gets no entry.

Stage 2 (paper §3.3, Eq. 6-8), target n = M(q)::

    r = 1[correct] + beta * exp(-(|r| - n)^2 / (2 sigma^2)) if correct, else 0   (beta = 0.8)

The paper's code uses sigma = 120 tokens for 1.5B models whose reasoning runs to thousands of
tokens; we scale it with our lengths: sigma = sigma_frac * n (default 0.25 n, floor 4 tokens),
which keeps the same relative tolerance at any length. Eq. 8 then updates the memory:
unsolved before -> Median(L_q); solved -> min(M(q), Median(L_q)).

When the model wrote its own statement ("self-declared" prompts, beyond the paper), the
Gaussian is taken against its declared number d, and d itself must not exceed M(q):
``beta * (0.5 g(|r| - d) + 0.5 g(max(0, d - n)))`` — honest (actual ≈ declared) and
efficient (declared at most the discovered length; a shorter plan that stays correct is not
penalised, so the efficient habit the warm-up teaches is not pulled back up to the median).
A missing statement earns no length bonus.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from lapo import protocol as p
from lapo.checker import check

ALPHA = 0.7
BETA = 0.8
RANGE_SLOPE = 100.0  # R1 falls to 0 at 100 tokens outside the range (paper)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100].

    >>> percentile([10, 20, 30, 40, 50], 30)
    22.0
    """
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of an empty sequence")
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def range_reward(length: float, lo: float, hi: float, slope: float = RANGE_SLOPE) -> float:
    """R1: 1 inside [lo, hi], linear decay to 0 over ``slope`` tokens outside.

    >>> range_reward(25, 20, 30), range_reward(40, 20, 30), range_reward(500, 20, 30)
    (1.0, 0.9, 0.0)
    """
    if lo <= length <= hi:
        return 1.0
    d = lo - length if length < lo else length - hi
    return max(0.0, 1.0 - d / slope)


def gaussian(delta: float, sigma: float) -> float:
    """exp(-delta^2 / (2 sigma^2)).

    >>> gaussian(0, 10), round(gaussian(10, 10), 4)
    (1.0, 0.6065)
    """
    return math.exp(-(delta * delta) / (2.0 * sigma * sigma))


@dataclass(frozen=True)
class MemoryEntry:
    median: float
    samples: int


class LengthMemory:
    """M(q): median budgeted length of correct rollouts, keyed by problem id (thread-safe).

    Training prompts read it at access time (see `training.data`), so an update reaches the
    next prompts built for that problem.
    """

    def __init__(self, entries: dict[str, MemoryEntry] | None = None) -> None:
        self._entries: dict[str, MemoryEntry] = dict(entries or {})
        self._lock = threading.Lock()

    def get(self, problem_id: str) -> MemoryEntry | None:
        with self._lock:
            return self._entries.get(problem_id)

    def record(self, problem_id: str, lengths: Sequence[float]) -> None:
        """Stage 1: the latest median of correct lengths."""
        if lengths:
            with self._lock:
                self._entries[problem_id] = MemoryEntry(statistics.median(lengths), len(lengths))

    def update_eq8(self, problem_id: str, lengths: Sequence[float]) -> None:
        """Stage 2, Eq. 8: unsolved -> Median(L_q); solved -> min(M(q), Median(L_q))."""
        if not lengths:
            return
        med = statistics.median(lengths)
        with self._lock:
            old = self._entries.get(problem_id)
            if old is None or med < old.median:
                self._entries[problem_id] = MemoryEntry(med, len(lengths))

    def __len__(self) -> int:
        return len(self._entries)

    def to_json(self) -> dict:
        with self._lock:
            return {k: {"median": v.median, "samples": v.samples}
                    for k, v in sorted(self._entries.items())}

    @classmethod
    def from_json(cls, data: dict) -> LengthMemory:
        return cls({k: MemoryEntry(float(v["median"]), int(v["samples"]))
                    for k, v in data.items()})

    def stats(self) -> dict:
        with self._lock:
            meds = [v.median for v in self._entries.values()]
            counts = [v.samples for v in self._entries.values()]
        if not meds:
            return {"problems": 0}
        return {"problems": len(meds), "mean_median": round(statistics.fmean(meds), 2),
                "min_median": min(meds), "max_median": max(meds),
                "mean_samples": round(statistics.fmean(counts), 2)}


def _completion_text(completion) -> str:
    # TRL passes strings for standard prompts, message lists for conversational ones.
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion)
    return completion


def _correct(answers: Sequence[str], texts: Sequence[str], checkers: Sequence[str] | None,
             counter: p.TokenCounter, injected: Sequence[bool] | None = None) -> list[bool]:
    """The checker on each completion, reading the answer where the checkpoint's think
    profile puts it (``injected[i]``: a budget statement in the prompt opened the span)."""
    kinds = checkers or ["exact"] * len(texts)
    flags = injected or [False] * len(texts)
    return [check(a, t, k, counter.profile, f)
            for a, t, k, f in zip(answers, texts, kinds, flags, strict=True)]


def _groups(problem_ids: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, pid in enumerate(problem_ids):
        groups[pid].append(i)
    return groups


def _one_per_sample(rewards: list[float], completions: Sequence) -> list[float]:
    if len(rewards) != len(completions):
        raise AssertionError(f"{len(rewards)} rewards for {len(completions)} completions")
    return rewards


class Stage1Reward:
    """Stage 1 (discovery) reward; records M(q) into ``memory`` as a side effect."""

    __name__ = "lapo_stage1"

    def __init__(self, counter: p.TokenCounter, memory: LengthMemory, alpha: float = ALPHA,
                 slope: float = RANGE_SLOPE) -> None:
        self.counter, self.memory, self.alpha, self.slope = counter, memory, alpha, slope

    def __call__(self, prompts, completions, completion_ids, problem_id, answer,
                 **kwargs) -> list[float]:
        texts = [_completion_text(c) for c in completions]
        correct = _correct(answer, texts, kwargs.get("checker"), self.counter)
        lengths = [self.counter(ids).budgeted_tokens for ids in completion_ids]
        rewards = [0.0] * len(completions)
        for pid, idx in _groups(problem_id).items():
            ok = [lengths[i] for i in idx if correct[i]]
            self.memory.record(pid, ok)
            if not ok:
                continue
            lo, hi = (percentile(ok, 30), percentile(ok, 70)) if len(ok) >= 2 else (ok[0], ok[0])
            for i in idx:
                if correct[i]:
                    rewards[i] = 1.0 + self.alpha * range_reward(lengths[i], lo, hi, self.slope)
        log = kwargs.get("log_metric")
        if log:
            log("lapo/correct", statistics.fmean(correct))
            log("lapo/budgeted_tokens", statistics.fmean(lengths))
        return _one_per_sample(rewards, completions)


class Stage2Reward:
    """Stage 2 (internalization) reward; applies the Eq. 8 update to ``memory``.

    Columns: ``target`` is the n the prompt was built with (-1 when the model must declare its
    own budget), ``problem_id`` and ``answer`` as in stage 1.
    """

    __name__ = "lapo_stage2"

    def __init__(self, counter: p.TokenCounter, memory: LengthMemory, beta: float = BETA,
                 sigma_frac: float = 0.25, sigma_min: float = 4.0) -> None:
        self.counter, self.memory = counter, memory
        self.beta, self.sigma_frac, self.sigma_min = beta, sigma_frac, sigma_min

    def sigma(self, n: float) -> float:
        return max(self.sigma_min, self.sigma_frac * n)

    def __call__(self, prompts, completions, completion_ids, problem_id, answer, target,
                 **kwargs) -> list[float]:
        texts = [_completion_text(c) for c in completions]
        correct = _correct(answer, texts, kwargs.get("checker"), self.counter,
                           [t > 0 for t in target])
        counts = [self.counter(ids, declared=t if t > 0 else None)
                  for ids, t in zip(completion_ids, target, strict=True)]
        rewards = []
        for i, c in enumerate(counts):
            if not correct[i]:
                rewards.append(0.0)
                continue
            n = target[i] if target[i] > 0 else None
            entry = self.memory.get(problem_id[i])
            if n is not None:  # injected budget: the paper's Eq. 6
                bonus = gaussian(c.budgeted_tokens - n, self.sigma(n))
            elif c.declared is not None:  # self-declared: honest and efficient
                ref = entry.median if entry else c.declared
                bonus = 0.5 * gaussian(c.budgeted_tokens - c.declared, self.sigma(c.declared))
                bonus += 0.5 * gaussian(max(0.0, c.declared - ref), self.sigma(ref))
            else:
                bonus = 0.0
            rewards.append(1.0 + self.beta * bonus)
        for pid, idx in _groups(problem_id).items():
            self.memory.update_eq8(pid, [counts[i].budgeted_tokens for i in idx if correct[i]])
        log = kwargs.get("log_metric")
        if log:
            log("lapo/correct", statistics.fmean(correct))
            log("lapo/budgeted_tokens", statistics.fmean(c.budgeted_tokens for c in counts))
            declared = [c for c, t in zip(counts, target, strict=True)
                        if t <= 0 and c.declared is not None]
            log("lapo/self_declared_share",
                len(declared) / max(1, sum(1 for t in target if t <= 0)))
        return _one_per_sample(rewards, completions)
