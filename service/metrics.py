"""LAPO metrics for Prometheus (``lapo_`` prefix), beside vLLM's own ``vllm:*`` metrics.

Labels are bounded: model, version, budget_source, finish_reason, method, result. Never a
prompt or a user id. Collection (`observe_*`) is separate from export (`/metrics` renders the
default registry).

Tokens saved, method ``profile``: for each choice, the checkpoint manifest's baseline profile
gives the base model's mean reasoning tokens for problems where the LAPO model declares a
similar budget (bucketed); the difference with the served reasoning tokens is an ESTIMATE.
Positive differences count in ``lapo_tokens_saved_total``, negative ones in
``lapo_tokens_overspent_total``: counters only rise, and net savings are saved − overspent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from lapo.service.scheduling import length_bucket

if TYPE_CHECKING:
    from lapo.service.admission import Admission
    from lapo.service.generation import ChoiceResult
    from lapo.service.model import ModelHandle

_MODEL = ("model", "version")
_CHOICE = (*_MODEL, "budget_source", "finish_reason")
TOKEN_BUCKETS = (8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048, 4096)
ERROR_BUCKETS = (-1.0, -0.5, -0.25, -0.1, -0.05, 0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter("lapo_requests", "Chat completion requests by outcome.",
                   [*_MODEL, "stream", "status"])
CHOICES = Counter("lapo_choices", "Completed choices.", _CHOICE)
COMPLETION_TOKENS = Counter("lapo_completion_tokens", "Completion tokens served.", _CHOICE)
REASONING_TOKENS = Counter(
    "lapo_reasoning_tokens",
    "Reasoning tokens served (what usage.completion_tokens_details.reasoning_tokens reports).",
    _CHOICE)
ANSWER_TOKENS = Counter("lapo_answer_tokens", "Answer tokens (after </think>) served.", _CHOICE)
REASONING_HIST = Histogram("lapo_request_reasoning_tokens",
                           "Reasoning tokens per choice.", _CHOICE, buckets=TOKEN_BUCKETS)
COMPLETION_HIST = Histogram("lapo_request_completion_tokens",
                            "Completion tokens per choice.", _CHOICE, buckets=TOKEN_BUCKETS)
ANSWER_HIST = Histogram("lapo_request_answer_tokens", "Answer tokens per choice.", _CHOICE,
                        buckets=TOKEN_BUCKETS)
DECLARED_HIST = Histogram("lapo_declared_reasoning_tokens",
                          "Declared reasoning budget per choice (model, request or effort).",
                          (*_MODEL, "budget_source"), buckets=TOKEN_BUCKETS)
ACTUAL_DECLARED_HIST = Histogram(
    "lapo_actual_reasoning_tokens_declared",
    "Actual (budgeted) reasoning tokens of choices that carried a declaration.",
    (*_MODEL, "budget_source"), buckets=TOKEN_BUCKETS)
BUDGET_ERROR = Histogram("lapo_budget_relative_error",
                         "(actual - declared) / declared per choice (signed).",
                         (*_MODEL, "budget_source"), buckets=ERROR_BUCKETS)
ENFORCED = Counter("lapo_hard_cap_enforcements",
                   "Choices whose reasoning was cut by a hard cap (</think> forced).", _MODEL)
SAVED = Counter("lapo_tokens_saved", "Reasoning tokens saved against the baseline (>= 0 part).",
                [*_MODEL, "method"])
OVERSPENT = Counter("lapo_tokens_overspent",
                    "Reasoning tokens spent beyond the baseline (the negative part of savings).",
                    [*_MODEL, "method"])
BASELINE = Counter("lapo_baseline_reasoning_tokens",
                   "Reasoning tokens the baseline model would have spent on the same choices.",
                   [*_MODEL, "method"])
COMPARED = Counter("lapo_compared_reasoning_tokens",
                   "Served reasoning tokens of the choices compared with the baseline.",
                   [*_MODEL, "method"])
TTFR = Histogram("lapo_time_to_first_reasoning_token_seconds",
                 "Seconds from request start to the first reasoning text.", _MODEL,
                 buckets=TIME_BUCKETS)
TTFA = Histogram("lapo_time_to_first_answer_token_seconds",
                 "Seconds from request start to the first answer text.", _MODEL,
                 buckets=TIME_BUCKETS)
LATENCY = Histogram("lapo_request_duration_seconds",
                    "End-to-end request latency (until the last byte of the response).",
                    [*_MODEL, "stream"],
                    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0))
IN_FLIGHT = Gauge("lapo_requests_in_flight", "Chat completion requests being served.", _MODEL,
                  multiprocess_mode="livesum")
MODEL_INFO = Gauge("lapo_model_info", "The served model (value 1 for the active version).",
                   [*_MODEL, "checkpoint_hash"])
SWAPS = Counter("lapo_swaps", "Checkpoint swaps by result.", ["result"])
SHADOW = Counter("lapo_shadow_runs",
                 "Shadow baseline runs by result (done, shed under load, error, cancelled).",
                 ["result"])
SHADOW_RUNNING = Gauge("lapo_shadow_runs_running",
                       "Shadow baseline runs in progress (at most LAPO_SHADOW_CONCURRENCY).")

# Reliability: back-pressure, timeouts, engine faults, shutdown.
REJECTED = Counter("lapo_requests_rejected",
                   "Requests refused before reaching the engine, by reason (queue_full: 429; "
                   "not_ready: 503 while loading, swapping, restarting or shutting down).",
                   ["reason"])
QUEUED = Gauge("lapo_admission_queue_depth", "Requests waiting for an admission slot.")
# Scheduling (LAPO_SCHEDULING): waits and end-to-end latency by the request's expected length
# (its scheduling key's bucket: `expected_bucket`), and how often the starvation bound fired.
_SCHED = ("policy", "expected_bucket")
QUEUE_WAIT = Histogram("lapo_queue_wait_seconds", "Seconds a request waited for an admission "
                       "slot.", _SCHED, buckets=(0.0, *TIME_BUCKETS, 60.0, 120.0))
SCHED_LATENCY = Histogram("lapo_scheduled_request_duration_seconds",
                          "End-to-end latency (admission wait included) by expected length.",
                          _SCHED, buckets=(*TIME_BUCKETS, 60.0, 120.0))
PROMOTED = Counter("lapo_scheduler_promotions", "Waiters the starvation bound promoted.",
                   ["policy"])


def observe_admission(admission: Admission) -> None:
    """The admission gauges (`Admission`'s change callback)."""
    ADMITTED.set(admission.active)
    QUEUED.set(admission.queued)


# Upper edges (tokens) of the expected-length buckets; the last is open.
EXPECTED_EDGES = (32, 64, 128, 256, 512, 1024)


def expected_bucket(key: float | None) -> str:
    """The label of an expected length: "le_N", "gt_1024", or "unknown"."""
    return length_bucket(key, EXPECTED_EDGES)
ADMITTED = Gauge("lapo_admission_active", "Requests holding an admission slot.")
TIMEOUTS = Counter("lapo_request_timeouts", "Requests stopped by the per-request timeout.",
                   ["stream"])
ENGINE_UP = Gauge("lapo_engine_up", "1 while the active engine is alive, 0 once it died.")
ENGINE_RESTARTS = Counter("lapo_engine_restarts",
                          "Restarts of a dead engine, by result (ok, failed).", ["result"])
for _r in ("queue_full", "not_ready"):
    REJECTED.labels(_r)
for _s in ("true", "false"):
    TIMEOUTS.labels(_s)
for _r in ("ok", "failed"):
    ENGINE_RESTARTS.labels(_r)


def baseline_tokens(profile: dict | None, declared: int | None) -> float | None:
    """The base model's expected reasoning tokens for a choice (profile method)."""
    if not profile:
        return None
    if declared is not None:
        for row in profile.get("buckets", []):
            if row["declared_le"] is None or declared <= row["declared_le"]:
                return float(row["base_mean_reasoning_tokens"])
    overall = profile.get("base_mean_reasoning_tokens")
    return float(overall) if overall is not None else None


def set_model(name: str, version: str, checkpoint_hash: str | None) -> None:
    MODEL_INFO.labels(name, version, checkpoint_hash or "").set(1)
    # Counters that may stay at zero for a while exist from the start (rate() sees 0, not
    # nothing); the others appear with their first observation.
    ENFORCED.labels(name, version)
    SWAPS.labels("ok")
    SWAPS.labels("failed")


def observe_choice(model: ModelHandle, result: ChoiceResult, started: float) -> None:
    """Record one finished choice of ``model``."""
    m, v = model.name, model.version
    src, fin = result.source, result.finish_reason or "abort"
    c = result.counts
    CHOICES.labels(m, v, src, fin).inc()
    COMPLETION_TOKENS.labels(m, v, src, fin).inc(c.completion_tokens)
    REASONING_TOKENS.labels(m, v, src, fin).inc(c.reasoning_tokens)
    ANSWER_TOKENS.labels(m, v, src, fin).inc(c.answer_tokens)
    REASONING_HIST.labels(m, v, src, fin).observe(c.reasoning_tokens)
    COMPLETION_HIST.labels(m, v, src, fin).observe(c.completion_tokens)
    ANSWER_HIST.labels(m, v, src, fin).observe(c.answer_tokens)
    if result.declared is not None:
        DECLARED_HIST.labels(m, v, src).observe(result.declared)
        ACTUAL_DECLARED_HIST.labels(m, v, src).observe(c.budgeted_tokens)
        BUDGET_ERROR.labels(m, v, src).observe(result.budget_error)
    if result.enforced:
        ENFORCED.labels(m, v).inc()
    if result.first_reasoning_at is not None:
        TTFR.labels(m, v).observe(result.first_reasoning_at - started)
    if result.first_answer_at is not None:
        TTFA.labels(m, v).observe(result.first_answer_at - started)
    base = baseline_tokens(model.baseline_profile, result.declared)
    if base is not None:
        diff = base - c.reasoning_tokens
        BASELINE.labels(m, v, "profile").inc(base)
        COMPARED.labels(m, v, "profile").inc(c.reasoning_tokens)
        (SAVED if diff >= 0 else OVERSPENT).labels(m, v, "profile").inc(abs(diff))


def observe_text_choice(model: ModelHandle, finish_reason: str | None, tokens: int) -> None:
    """Record one finished choice of a raw-text completion (``/v1/completions``): no think
    span, so no reasoning, budget or savings series (budget source ``none``)."""
    m, v, fin = model.name, model.version, finish_reason or "abort"
    CHOICES.labels(m, v, "none", fin).inc()
    COMPLETION_TOKENS.labels(m, v, "none", fin).inc(tokens)
    COMPLETION_HIST.labels(m, v, "none", fin).observe(tokens)
