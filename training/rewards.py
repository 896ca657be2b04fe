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

Several ranks (torchrun / accelerate launch): what TRL 1.16 hands a reward function is this
rank's share of the generation batch, not whole groups. `GRPOTrainer._get_train_sampler`
repeats each prompt G times in a row (``RepeatSampler``, the same seed on every rank); the
dataloader yields batches of ``per_device_train_batch_size * steps_per_generation`` and
accelerate's ``BatchSamplerShard`` gives rank r every batch whose index is r modulo the world
size, so rank r holds the r-th contiguous slice of the generation batch. Whether a group
stays on one rank depends on that slice being a multiple of G. TRL itself only needs the
rewards: `_calculate_rewards` ends with ``gather(rewards_per_func)`` (rank order), the
advantages are computed per group of G over the gathered batch, and each rank keeps
``process_slice = [rank * n_local, (rank + 1) * n_local)`` (`_generate_and_score_completions`).
Our rewards need more than a rank's slice: the range (P30-P70) and M(q) are statistics of a
group's lengths. So each reward computes its own completions' features (correct, lengths),
exchanges them (`lapo.training.distributed.exchange`, rank order, i.e. the generation batch as TRL
gathers it), scores every group of the whole batch, applies the M(q) update for all of it and
returns its own slice: every rank applies the same updates in the same order, and holds the
same M(q).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lapo.checker import check
from lapo.think import TokenCounter

ALPHA = 0.7
BETA = 0.8
SIGMA_FRAC = 0.25  # sigma = SIGMA_FRAC * n, floor SIGMA_MIN tokens
SIGMA_MIN = 4.0
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

    Training prompts read it at access time (see `lapo.training.data`), so an update reaches the
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

    def digest(self) -> str:
        """sha256 of the JSON form: equal digests, equal mappings (ranks compare them)."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

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
             counter: TokenCounter, injected: Sequence[bool] | None = None) -> list[bool]:
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


# ``exchange(local) -> (every rank's items in rank order, offset of this rank's)``.
Exchange = Callable[[list], tuple[list, int]]


def _default_exchange(local: list) -> tuple[list, int]:
    from lapo.training.distributed import exchange

    return exchange(local)


def _score_exchanged(reward, local: list, completions, log=None, extra=None) -> list[float]:
    """This rank's rollouts ``local`` -> the whole generation batch (``reward.exchange``) ->
    ``reward.score`` on it (every rank the same M(q) updates) -> this rank's slice, one
    reward per sample; batch metrics to TRL's ``log_metric`` (``extra(batch)`` adds some)."""
    batch, offset = reward.exchange(local)
    rewards = reward.score(batch)
    if log:
        log("lapo/correct", statistics.fmean(r.correct for r in batch))
        log("lapo/budgeted_tokens", statistics.fmean(r.length for r in batch))
        for name, value in (extra(batch) if extra else {}).items():
            log(name, value)
    return _one_per_sample(rewards[offset:offset + len(local)], completions)


@dataclass(frozen=True)
class _Rollout1:
    problem_id: str
    length: int
    correct: bool


class Stage1Reward:
    """Stage 1 (discovery) reward; records M(q) into ``memory`` as a side effect.

    ``exchange`` shares the rollouts' features between ranks (default: the process group,
    a no-op on one process); tests pass their own.
    """

    __name__ = "lapo_stage1"

    def __init__(self, counter: TokenCounter, memory: LengthMemory, alpha: float = ALPHA,
                 slope: float = RANGE_SLOPE, exchange: Exchange | None = None) -> None:
        self.counter, self.memory, self.alpha, self.slope = counter, memory, alpha, slope
        self.exchange = exchange or _default_exchange

    def __call__(self, prompts, completions, completion_ids, problem_id, answer,
                 **kwargs) -> list[float]:
        texts = [_completion_text(c) for c in completions]
        correct = _correct(answer, texts, kwargs.get("checker"), self.counter)
        local = [_Rollout1(pid, self.counter(ids).budgeted_tokens, ok)
                 for pid, ids, ok in zip(problem_id, completion_ids, correct, strict=True)]
        return _score_exchanged(self, local, completions, kwargs.get("log_metric"))

    def score(self, batch: Sequence[_Rollout1]) -> list[float]:
        """Rewards for a whole generation batch; records M(q) for each of its groups."""
        rewards = [0.0] * len(batch)
        for pid, idx in _groups([r.problem_id for r in batch]).items():
            ok = [batch[i].length for i in idx if batch[i].correct]
            self.memory.record(pid, ok)
            if not ok:
                continue
            lo, hi = (percentile(ok, 30), percentile(ok, 70)) if len(ok) >= 2 else (ok[0], ok[0])
            for i in idx:
                if batch[i].correct:
                    rewards[i] = 1.0 + self.alpha * range_reward(batch[i].length, lo, hi,
                                                                 self.slope)
        return rewards


@dataclass(frozen=True)
class _Rollout2:
    problem_id: str
    target: int  # the injected n, or -1 (self-declared)
    length: int  # budgeted tokens
    declared: int | None
    correct: bool


class Stage2Reward:
    """Stage 2 (internalization) reward; applies the Eq. 8 update to ``memory``.

    Columns: ``target`` is the n the prompt was built with (-1 when the model must declare its
    own budget), ``problem_id`` and ``answer`` as in stage 1. ``exchange`` as in stage 1.
    """

    __name__ = "lapo_stage2"

    def __init__(self, counter: TokenCounter, memory: LengthMemory, beta: float = BETA,
                 sigma_frac: float = SIGMA_FRAC, sigma_min: float = SIGMA_MIN,
                 exchange: Exchange | None = None) -> None:
        self.counter, self.memory = counter, memory
        self.beta, self.sigma_frac, self.sigma_min = beta, sigma_frac, sigma_min
        self.exchange = exchange or _default_exchange

    def sigma(self, n: float) -> float:
        return max(self.sigma_min, self.sigma_frac * n)

    def __call__(self, prompts, completions, completion_ids, problem_id, answer, target,
                 **kwargs) -> list[float]:
        texts = [_completion_text(c) for c in completions]
        correct = _correct(answer, texts, kwargs.get("checker"), self.counter,
                           [t > 0 for t in target])
        local = []
        for pid, ids, t, ok in zip(problem_id, completion_ids, target, correct, strict=True):
            c = self.counter(ids, declared=t if t > 0 else None)
            local.append(_Rollout2(pid, int(t), c.budgeted_tokens, c.declared, ok))
        def self_declared_share(batch) -> dict[str, float]:
            own = [r for r in batch if r.target <= 0]
            return {"lapo/self_declared_share":
                    sum(r.declared is not None for r in own) / max(1, len(own))}

        return _score_exchanged(self, local, completions, kwargs.get("log_metric"),
                                self_declared_share)

    def score(self, batch: Sequence[_Rollout2]) -> list[float]:
        """Rewards for a whole generation batch (against M(q) as it was before the batch),
        then the Eq. 8 update for each of its groups."""
        rewards = []
        for r in batch:
            if not r.correct:
                rewards.append(0.0)
                continue
            entry = self.memory.get(r.problem_id)
            if r.target > 0:  # injected budget: the paper's Eq. 6
                bonus = gaussian(r.length - r.target, self.sigma(r.target))
            elif r.declared is not None:  # self-declared: honest and efficient
                ref = entry.median if entry else r.declared
                bonus = 0.5 * gaussian(r.length - r.declared, self.sigma(r.declared))
                bonus += 0.5 * gaussian(max(0.0, r.declared - ref), self.sigma(ref))
            else:
                bonus = 0.0
            rewards.append(1.0 + self.beta * bonus)
        for pid, idx in _groups([r.problem_id for r in batch]).items():
            self.memory.update_eq8(pid, [batch[i].length for i in idx if batch[i].correct])
        return rewards
