"""`lapo bench --scheduling`: FCFS against shortest-declared-first under an open-loop load.

One `lapo serve` per policy (``fcfs``, ``declared``, ``random``: the control that orders by a
random key, so the gain that comes from the declaration being right shows), the same code and
checkpoint, ``LAPO_MAX_CONCURRENCY`` slots each (requests beyond them wait in the admission
line, where the policy decides). All are up at once; the load goes to one at a time, the
others frozen (SIGSTOP), as in `lapo bench`. First the capacity is measured on every server (a
closed loop holding every slot busy: completed requests per second; it also warms each
compiled engine), the FCFS server's figure setting the load; then, at each load factor (e.g.
0.5x, 0.8x, 1.2x, 1.5x of capacity), the same Poisson arrival times and prompts go to each
policy in turn, each factor starting with another policy. Every request streams; per policy
it reports throughput, mean / p50 / p90 / p99 end-to-end latency, TTFT p50, latency per
declared-length bucket, the longest admission wait and how many waiters the starvation bound
promoted, and each policy's ratios over FCFS.

    lapo bench --scheduling --requests 80 --factors 0.5,0.8,1.2,1.5 --out runs/sched.json
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from lapo.loadtests.bench import drive
from lapo.loadtests.report import shown_path, write_report
from lapo.loadtests.servers import bench_prompts, free_port, start_ours, stop_all, wait_ready
from lapo.paths import default_model
from lapo.service.scheduling import length_bucket

POLICIES = ("fcfs", "declared", "random")
# Declared-length buckets of the report (upper edges, tokens; the last is open).
BUCKETS = (64, 128, 256)


@dataclass
class Outcome:
    arrived: float
    e2e: float | None = None
    ttft: float | None = None
    declared: int | None = None
    waited: float | None = None
    tokens: int = 0
    error: str | None = None


@dataclass
class Load:
    offsets: list[float]
    prompts: list[str]
    outcomes: list[Outcome] = field(default_factory=list)


def poisson_offsets(n: int, rate: float, seed: int) -> list[float]:
    """``n`` arrival times (seconds from the start) of a Poisson process of ``rate`` per s.

    >>> offs = poisson_offsets(1000, 2.0, 0)
    >>> round(offs[-1] / 1000, 1)  # mean gap 1 / rate
    0.5
    """
    rng, t, out = random.Random(seed), 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append(t)
    return out


async def _one(client: httpx.AsyncClient, url: str, model: str, prompt: str, seed: int,
               max_tokens: int, start: float, offset: float) -> Outcome:
    await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
    t0 = time.perf_counter()
    out = Outcome(arrived=offset)
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0.6, "top_p": 0.95, "seed": seed,
            "stream": True, "stream_options": {"include_usage": True}}
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                out.error = f"http {r.status_code}"
                return out
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    out.error = chunk["error"].get("code") or "error"
                    return out
                if chunk.get("usage"):
                    out.tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    text = delta.get("content") or delta.get("reasoning_content")
                    if out.ttft is None and text:
                        out.ttft = time.perf_counter() - t0
                    lapo = choice.get("lapo")
                    if lapo:
                        out.declared = lapo.get("declared_reasoning_tokens")
                        out.waited = lapo.get("queue_wait_s")
    except httpx.HTTPError as exc:
        out.error = type(exc).__name__
        return out
    out.e2e = time.perf_counter() - t0
    return out


async def open_loop(url: str, model: str, load: Load, max_tokens: int) -> float:
    """Send ``load``'s requests at their arrival times (not waiting for answers); returns the
    wall time until the last one finished."""
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        load.outcomes = list(await asyncio.gather(*(
            _one(client, url, model, p, i, max_tokens, start, off)
            for i, (p, off) in enumerate(zip(load.prompts, load.offsets, strict=True)))))
        return time.perf_counter() - start


def _q(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p * len(xs)))], 3)


def bucket(declared: int | None) -> str:
    """The report's declared-length bucket ("none": the answer declared nothing)."""
    return length_bucket(declared, BUCKETS, "none")


def summary(outcomes: list[Outcome], wall: float) -> dict:
    """One policy's figures at one load (seconds)."""
    done = [o for o in outcomes if o.error is None and o.e2e is not None]
    e2e = [o.e2e for o in done]
    by_bucket: dict[str, list[float]] = {}
    for o in done:
        by_bucket.setdefault(bucket(o.declared), []).append(o.e2e)
    waits = [o.waited for o in done if o.waited is not None]
    return {
        "requests": len(outcomes), "errors": len(outcomes) - len(done),
        "throughput_rps": round(len(done) / wall, 3) if wall else None,
        "e2e_mean_s": round(statistics.fmean(e2e), 3) if e2e else None,
        "e2e_p50_s": _q(e2e, 0.5), "e2e_p90_s": _q(e2e, 0.9), "e2e_p99_s": _q(e2e, 0.99),
        "ttft_p50_s": _q([o.ttft for o in done if o.ttft is not None], 0.5),
        "longest_wait_s": round(max(waits), 3) if waits else None,
        "by_declared_bucket": {
            b: {"requests": len(xs), "e2e_mean_s": round(statistics.fmean(xs), 3),
                "e2e_p99_s": _q(xs, 0.99)}
            for b, xs in sorted(by_bucket.items())},
    }


def ratios(policy: dict, fcfs: dict) -> dict:
    """``policy`` over FCFS for the headline figures (None where undefined)."""
    out = {}
    for key in ("e2e_mean_s", "e2e_p50_s", "e2e_p90_s", "e2e_p99_s", "throughput_rps",
                "ttft_p50_s"):
        a, b = policy.get(key), fcfs.get(key)
        out[key] = round(a / b, 3) if a is not None and b else None
    # the longest-declared bucket both have requests in
    order = [f"le_{e}" for e in BUCKETS] + [f"gt_{BUCKETS[-1]}"]
    shared = [b for b in order
              if b in policy["by_declared_bucket"] and b in fcfs["by_declared_bucket"]]
    if shared:
        pa = policy["by_declared_bucket"][shared[-1]]["e2e_p99_s"]
        pb = fcfs["by_declared_bucket"][shared[-1]]["e2e_p99_s"]
        out["longest_bucket"] = shared[-1]
        out["longest_bucket_e2e_p99_s"] = round(pa / pb, 3) if pa and pb else None
    return out


def _promotions(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "lapo_scheduler_promotions_total")


def _only(procs: dict, name: str) -> None:
    for other, proc in procs.items():
        os.killpg(proc.pid, signal.SIGCONT if other == name else signal.SIGSTOP)


def run_scheduling_bench(model: Path | None = None, requests: int = 80,
                         factors: tuple[float, ...] = (0.5, 0.8, 1.2, 1.5),
                         max_concurrency: int = 4, bound_s: float = 30.0,
                         max_tokens: int = 512, policies: tuple[str, ...] = POLICIES,
                         max_model_len: int | None = 1024, seed: int = 0,
                         out: Path | None = None) -> dict:
    """The comparison described in the module docstring; returns (and writes) the report."""
    model = Path(model or default_model())
    prompts = bench_prompts(requests)
    random.Random(seed).shuffle(prompts)  # the levels mixed in arrival order
    procs, urls = {}, {}
    try:
        for policy in policies:
            port = free_port()
            procs[policy] = start_ours(model, port, max_model_len, extra_env={
                "LAPO_SCHEDULING": policy, "LAPO_MAX_CONCURRENCY": str(max_concurrency),
                "LAPO_STARVATION_BOUND_S": str(bound_s), "LAPO_MAX_QUEUE": str(requests)})
            urls[policy] = f"http://127.0.0.1:{port}"
        for policy in policies:
            wait_ready(urls[policy], procs[policy], "/ready")
        # Capacity: every slot busy (a closed loop of max_concurrency clients), on every server
        # in turn: it also warms each compiled engine at the batch sizes the load will use
        # (an engine's first batches of a new size run slowly). The first policy's figure
        # sets the load.
        capacities = {}
        for policy in policies:
            _only(procs, policy)
            wait_ready(urls[policy], procs[policy], "/ready")
            run = asyncio.run(drive(urls[policy], model.name, prompts, max_concurrency,
                                    max_tokens))
            capacities[policy] = round(len(prompts) / run.wall, 3)
            print(f"capacity ({policy}, {max_concurrency} slots): {capacities[policy]} "
                  "requests/s")
        capacity = capacities[policies[0]]
        by_factor = {}
        for factor in factors:
            offsets = poisson_offsets(requests, factor * capacity, seed + int(factor * 100))
            results = {}
            # each load factor starts with another policy (drift does not favour one)
            turn = len(by_factor) % len(policies)
            for policy in policies[turn:] + policies[:turn]:
                _only(procs, policy)
                wait_ready(urls[policy], procs[policy], "/ready")
                before = _promotions(urls[policy])
                load = Load(offsets, prompts)
                wall = asyncio.run(open_loop(urls[policy], model.name, load, max_tokens))
                results[policy] = summary(load.outcomes, wall)
                results[policy]["promotions"] = _promotions(urls[policy]) - before
                print(f"load {factor}x  {policy:8s} {json.dumps(results[policy])}")
            by_factor[str(factor)] = {
                "rate_rps": round(factor * capacity, 3), "results": results,
                "ratio_over_fcfs": {p: ratios(results[p], results["fcfs"])
                                    for p in policies if p != "fcfs" and "fcfs" in results}}
    finally:
        stop_all(procs)
    report = {"model": shown_path(model), "requests": requests, "max_concurrency": max_concurrency,
              "starvation_bound_s": bound_s, "max_tokens": max_tokens, "seed": seed,
              "machine": f"{os.cpu_count()} CPUs", "capacity_rps": round(capacity, 3),
              "capacity_by_policy_rps": capacities,
              "by_load_factor": by_factor}
    print_table(report)
    write_report(out, report)
    return report


def print_table(report: dict) -> None:
    print("\nload  policy    thr rps  mean s  p50 s  p90 s  p99 s  ttft s  max wait  promoted")
    for factor, row in report["by_load_factor"].items():
        for policy, r in row["results"].items():
            print(f"{factor:>4}x {policy:9s} {r['throughput_rps']!s:>7} {r['e2e_mean_s']!s:>7} "
                  f"{r['e2e_p50_s']!s:>6} {r['e2e_p90_s']!s:>6} {r['e2e_p99_s']!s:>6} "
                  f"{r['ttft_p50_s']!s:>7} {r['longest_wait_s']!s:>9} {r['promotions']:>9g}")
        for policy, ratio in row["ratio_over_fcfs"].items():
            print(f"      {policy} / fcfs: {json.dumps(ratio)}")
