"""`lapo bench`: the same streaming load against our service and the raw vLLM OpenAI server.

The targets, on the same checkpoint on this machine: raw vLLM at its own defaults (only model,
port, served name and reasoning parser passed: what a user would run instead of us) and raw
vLLM with our engine's flags (the same engine, so the ratio is our API layer's cost). All are
up at once, but the load goes to one at a time, in alternating rounds, the others frozen
(SIGSTOP: an idle vLLM CPU engine still takes CPU), with the same prompts, seeds, sampling
settings and concurrency, at each concurrency level in turn. Printed per target (medians over
rounds): throughput (requests/s, completion tokens/s), TTFT p50/p95 (first token of any kind),
inter-token latency (mean gap between streamed chunks), end-to-end p50/p95/p99; then ours over
each raw server: the median of the per-round paired ratios, their quartiles, and the ratio of
the two medians; then a summary against the targets (throughput >= 0.97x, TTFT p50 <= 1.05x).

The servers are started and stopped by `lapo.loadtests.servers` (each in its own process group, in
this command's session: see there why not a new session). `alternate`, `compare` and
`print_report` are reused by `python -m lapo.loadtests.ab`.

    lapo bench --requests 96 --concurrency 8,16,32 --rounds 5 --out runs/bench.json
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

from lapo.loadtests.report import shown_path, write_report
from lapo.loadtests.servers import (
    bench_prompts,
    free_port,
    start_ours,
    start_raw_vllm,
    stop_all,
    wait_ready,
)
from lapo.paths import default_model


@dataclass
class Run:
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    errors: int = 0
    wall: float = 0.0

    def summary(self, n: int) -> dict:
        def q(xs: list[float], p: float) -> float | None:
            if not xs:
                return None
            xs = sorted(xs)
            return round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 2)

        return {
            "requests": n, "errors": self.errors,
            "requests_per_s": round(n / self.wall, 3),
            "completion_tokens_per_s": round(self.completion_tokens / self.wall, 1),
            "ttft_p50_ms": q(self.ttft, 0.5), "ttft_p95_ms": q(self.ttft, 0.95),
            "itl_mean_ms": round(statistics.fmean(self.itl) * 1000, 3) if self.itl else None,
            "e2e_p50_ms": q(self.e2e, 0.5), "e2e_p95_ms": q(self.e2e, 0.95),
            "e2e_p99_ms": q(self.e2e, 0.99),
        }


async def drive(url: str, model: str, prompts: list[str], concurrency: int,
                max_tokens: int) -> Run:
    run = Run()
    sem = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, prompt: str, seed: int) -> None:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens, "temperature": 0.6, "top_p": 0.95, "seed": seed,
                "stream": True, "stream_options": {"include_usage": True}}
        async with sem:
            t0 = time.perf_counter()
            first, last = None, None
            try:
                async with client.stream("POST", f"{url}/v1/chat/completions",
                                         json=body) as r:
                    if r.status_code != 200:
                        run.errors += 1
                        return
                    async for line in r.aiter_lines():
                        if not line.startswith("data: {"):
                            continue
                        chunk = json.loads(line[6:])
                        now = time.perf_counter()
                        if chunk.get("usage"):
                            run.completion_tokens += chunk["usage"]["completion_tokens"]
                        delta = (chunk["choices"][0].get("delta") or {}) if chunk["choices"] else {}
                        if delta.get("content") or delta.get("reasoning_content") or delta.get(
                                "reasoning"):
                            if first is None:
                                first = now
                                run.ttft.append(now - t0)
                            elif last is not None:
                                run.itl.append(now - last)
                            last = now
            except httpx.HTTPError:
                run.errors += 1
                return
            run.e2e.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(timeout=300) as client:
        # Warm-up outside the measurement (first-request costs on both sides).
        await asyncio.gather(*(one(client, prompts[i], 10_000 + i) for i in range(2)))
        run = Run()  # `one` records into the new run from here on
        t0 = time.perf_counter()
        await asyncio.gather(*(one(client, p, i) for i, p in enumerate(prompts)))
        run.wall = time.perf_counter() - t0
    return run


KEYS = ("requests_per_s", "completion_tokens_per_s", "ttft_p50_ms", "ttft_p95_ms",
        "itl_mean_ms", "e2e_p50_ms", "e2e_p95_ms", "e2e_p99_ms")


def compare(per_round: dict[str, list[dict]], a: str = "lapo", b: str = "raw_vllm",
            label: str = "lapo_over_raw") -> dict:
    """From each target's per-round summaries: medians per target, the median of the paired
    per-round ratios a/b with their quartiles (4+ rounds), and the ratio of medians."""
    results = {name: {k: round(statistics.median(r[k] for r in rounds_), 3)
                      if all(isinstance(r[k], int | float) for r in rounds_) else rounds_[0][k]
                      for k in rounds_[0]} for name, rounds_ in per_round.items()}
    ratios, ratio_rounds, spread, of_medians = {}, {}, {}, {}
    for key in KEYS:
        pairs = [x[key] / y[key] for x, y in zip(per_round[a], per_round[b], strict=True)
                 if x.get(key) and y.get(key)]
        if pairs:
            ratio_rounds[key] = [round(x, 3) for x in pairs]
            ratios[key] = round(statistics.median(pairs), 3)
            if len(pairs) >= 4:  # quartiles of the paired ratios: how much to trust the median
                q1, _, q3 = statistics.quantiles(pairs, n=4)
                spread[key] = [round(q1, 3), round(q3, 3)]
        x, y = results[a][key], results[b][key]
        if x and y:
            of_medians[key] = round(x / y, 3)
    return {"results": results, f"ratio_{label}": ratios, "ratio_quartiles": spread,
            "ratio_of_medians": of_medians, "ratio_per_round": ratio_rounds,
            "per_round": per_round}


def alternate(procs: dict, urls: dict, served: dict[str, tuple[str, str]], rounds: int,
              prompts: list[str], concurrency: int, max_tokens: int) -> dict[str, list[dict]]:
    """``rounds`` rounds of the same load on each server in turn; only the measured server runs,
    the others are frozen (SIGSTOP), since an idle vLLM CPU engine still takes CPU on a small
    machine. ``served``: name -> (model name, readiness path). Per-round summaries by name."""
    per_round: dict[str, list[dict]] = {name: [] for name in procs}
    for _ in range(rounds):
        for name, (model, ready) in served.items():
            for other, proc in procs.items():
                os.killpg(proc.pid, signal.SIGCONT if other == name else signal.SIGSTOP)
            wait_ready(urls[name], procs[name], ready)
            run = asyncio.run(drive(urls[name], model, prompts, concurrency, max_tokens))
            per_round[name].append(run.summary(len(prompts)))
    return per_round


# name -> (how to start it, readiness path, the model name it serves or None: the folder's)
TARGETS = {
    "lapo": (start_ours, "/ready", None),
    "raw_vllm": (start_raw_vllm, "/v1/models", "bench"),
    "raw_vllm_same_flags": (partial(start_raw_vllm, same_flags=True), "/v1/models", "bench"),
}
# What each comparison pairs, and the label of its ratios.
COMPARISONS = {"vs_defaults": ("lapo", "raw_vllm", "lapo_over_raw"),
               "vs_same_flags": ("lapo", "raw_vllm_same_flags", "lapo_over_same_flags")}
TARGET_THROUGHPUT, TARGET_TTFT = 0.97, 1.05


def run_bench(model: Path | None = None, requests: int = 64,
              concurrency: int | Sequence[int] = (8, 16, 32), out: Path | None = None,
              max_tokens: int = 256, max_model_len: int | None = None, rounds: int = 3,
              same_flags: bool = True) -> dict:
    """Our service, raw vLLM at its defaults and (``same_flags``) raw vLLM with our engine
    flags, all up at once, driven in alternating rounds (ours, raw, raw same flags, ours, ...)
    at each concurrency, the ones not measured frozen with SIGSTOP. Each round's ratio pairs it
    with the raw rounds next to it; the report gives per-round figures, their medians, and the
    median of the paired ratios, so drift and noise on shared cores show instead of deciding
    the result. ``max_model_len`` (tests only) is passed to every server.
    """
    model = Path(model or default_model())
    levels = [concurrency] if isinstance(concurrency, int) else list(concurrency)
    prompts = bench_prompts(requests)
    names = [n for n in TARGETS if same_flags or n != "raw_vllm_same_flags"]
    procs, urls = {}, {}
    try:
        # Ours first, alone: its compile fills the compile cache (keyed by the graph's content),
        # so the raw servers, started together once it is ready, load the same graph from it.
        for group in (names[:1], names[1:]):
            for name in group:
                port = free_port()
                procs[name] = TARGETS[name][0](model, port, max_model_len)
                urls[name] = f"http://127.0.0.1:{port}"
            for name in group:
                wait_ready(urls[name], procs[name], TARGETS[name][1])
        served = {n: (TARGETS[n][2] or model.name, TARGETS[n][1]) for n in names}
        by_level = {}
        for level in levels:
            per_round = alternate(procs, urls, served, rounds, prompts, level, max_tokens)
            by_level[str(level)] = {
                key: compare({a: per_round[a], b: per_round[b]}, a, b, label)
                for key, (a, b, label) in COMPARISONS.items() if b in per_round}
    finally:
        stop_all(procs)
    report = {"model": shown_path(model), "requests": requests, "concurrency": levels,
              "max_tokens": max_tokens, "rounds": rounds, "machine": f"{os.cpu_count()} CPUs",
              "summary": summarize(by_level), "by_concurrency": by_level}
    for level, comparisons in by_level.items():
        for key, comparison in comparisons.items():
            a, b, label = COMPARISONS[key]
            print(f"\n== concurrency {level}: {a} vs {b}")
            print_report(comparison, (a, b), f"ratio_{label}")
    print_summary(report["summary"])
    write_report(out, report)
    return report


def summarize(by_level: dict) -> list[dict]:
    """One row per concurrency and comparison: the throughput and TTFT p50 ratios (median of
    paired rounds, and of medians) and whether both meet the targets by both estimates."""
    rows = []
    for level, comparisons in by_level.items():
        for key, comparison in comparisons.items():
            label = COMPARISONS[key][2]
            paired, of_medians = comparison[f"ratio_{label}"], comparison["ratio_of_medians"]
            row = {"concurrency": int(level), "comparison": key}
            for metric in ("completion_tokens_per_s", "ttft_p50_ms"):
                row[metric] = {"paired": paired.get(metric), "of_medians": of_medians.get(metric)}
            tput = [v for v in row["completion_tokens_per_s"].values() if v is not None]
            ttft = [v for v in row["ttft_p50_ms"].values() if v is not None]
            row["meets_targets"] = bool(tput and ttft) and min(tput) >= TARGET_THROUGHPUT \
                and max(ttft) <= TARGET_TTFT
            rows.append(row)
    return rows


def print_summary(rows: list[dict]) -> None:
    print(f"\ntargets: throughput >= {TARGET_THROUGHPUT}x, TTFT p50 <= {TARGET_TTFT}x "
          "(paired median / ratio of medians)")
    print(f"{'concurrency':>11} {'comparison':>14} {'tokens/s ratio':>18} {'TTFT p50 ratio':>18}"
          f" {'met':>5}")
    for r in rows:
        t, f = r["completion_tokens_per_s"], r["ttft_p50_ms"]
        print(f"{r['concurrency']:>11} {r['comparison']:>14} "
              f"{t['paired']!s:>8} / {t['of_medians']!s:<7} {f['paired']!s:>8} / "
              f"{f['of_medians']!s:<7} {'yes' if r['meets_targets'] else 'no':>5}")


def print_report(report: dict, names: tuple[str, str] = ("lapo", "raw_vllm"),
                 ratio: str = "ratio_lapo_over_raw") -> None:
    first, second = names
    keys = list(report["results"][first])
    print(f"{'metric':28} {first:>12} {second:>12} {'ratio':>9} {'IQR':>15} {'of medians':>10}")
    for key in keys:
        a, b = report["results"][first][key], report["results"][second][key]
        r = report[ratio].get(key, "")
        iqr = report.get("ratio_quartiles", {}).get(key, "")
        iqr = f"{iqr[0]}-{iqr[1]}" if iqr else ""
        of_medians = report.get("ratio_of_medians", {}).get(key, "")
        print(f"{key:28} {a!s:>12} {b!s:>12} {r!s:>9} {iqr:>15} {of_medians!s:>10}")
    for key, values in report.get("ratio_per_round", {}).items():
        print(f"  per round {key:18} {values}")
