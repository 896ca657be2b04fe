"""Soak test: sustained concurrent streaming with mixed budgets and periodic disconnects.

Bounded by a request count and a time limit, loopback only. Reports: requests, errors among
admitted requests (a non-200, an error event, a stream that ends without ``[DONE]``, or a
connection error after the response began), connection errors before any response
(``unanswered``: such a request may never have reached the server), refusals (429/503),
deliberate disconnects, resident memory of the server process and of its whole
process tree (engine included) after warm-up and at the end (growth in MiB and %), each
process's anonymous/file/shared resident memory every 30 s, and whether the engine is idle at
the end (vLLM's running/waiting gauges and ours at zero).

    python -m lapo.loadtests.soak --requests 2000 --concurrency 16 --max-seconds 900 \\
        --out runs/soak.json          # starts `lapo serve` on the default model itself
    python -m lapo.loadtests.soak --url http://127.0.0.1:8000 --pid PID --requests 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from lapo.task import generate

BUDGETS = ({}, {"reasoning_budget": 48}, {"reasoning_budget": 120},
           {"reasoning_effort": "low"}, {"reasoning_effort": "high"},
           {"reasoning_budget": 64, "budget_enforcement": "hard"})


@dataclass
class Tally:
    ok: int = 0
    errors: int = 0
    refused: int = 0
    disconnected: int = 0
    unanswered: int = 0  # connection failed before any response (not admitted, or unknown)
    error_samples: list[str] = field(default_factory=list)
    unanswered_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(what[:300])


def _rss_mib(pid: int) -> tuple[float, float]:
    """(server process, whole process tree) resident memory in MiB."""
    import psutil

    proc = psutil.Process(pid)
    own = proc.memory_info().rss
    total = own
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return own / 2**20, total / 2**20


def _breakdown(pid: int) -> dict[str, dict[str, float]]:
    """Per process of the tree: anonymous, file-backed and shared-memory resident MiB (Linux
    /proc; a leak shows as anonymous growth, touched library or weight pages as file)."""
    import psutil

    root = psutil.Process(pid)
    out = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            fields = dict(line.split(":", 1) for line in
                          Path(f"/proc/{proc.pid}/status").read_text().splitlines())
            name = proc.name()
        except (OSError, psutil.NoSuchProcess):
            continue
        out[f"{name}[{proc.pid}]"] = {
            key.removeprefix("Rss").lower(): round(int(fields[key].split()[0]) / 1024, 1)
            for key in ("RssAnon", "RssFile", "RssShmem") if key in fields}
    return out


def _metric(url: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name)


async def _one(client: httpx.AsyncClient, url: str, body: dict, headers: dict,
               disconnect: bool, tally: Tally) -> None:
    status = None  # set once the server answered: from then on the request was admitted
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                                 headers=headers) as r:
            status = r.status_code
            if r.status_code in (429, 503):
                tally.refused += 1
                await r.aread()
                return
            if r.status_code != 200:
                tally.error(f"status {r.status_code}: {(await r.aread()).decode()}")
                return
            events, done = 0, False
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                events += 1
                if disconnect and events >= 3:
                    tally.disconnected += 1
                    return  # leaving the block drops the connection mid-stream
                if line == "data: [DONE]":
                    done = True
                elif '"error"' in line[:16]:
                    tally.error(line)
                    return
            if done:
                tally.ok += 1
            else:
                tally.error(f"stream ended without [DONE] after {events} events")
    except httpx.HTTPError as exc:
        if status is None:  # no response at all: the request may never have been admitted
            tally.unanswered += 1
            if len(tally.unanswered_samples) < 10:
                tally.unanswered_samples.append(f"{type(exc).__name__}: {exc}"[:300])
        else:
            tally.error(f"{type(exc).__name__} after status {status}: {exc}")


async def soak(url: str, model: str, pid: int, requests: int = 200, concurrency: int = 8,
               max_seconds: float = 600, disconnect_every: int = 7, max_tokens: int = 256,
               api_key: str | None = None, warmup_fraction: float = 0.2,
               seed: int = 0) -> dict:
    rng = random.Random(seed)
    problems = generate("heldout", 20, seed=seed)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    tally = Tally()
    samples: list[tuple[float, int, float, float]] = []  # (t, finished, own, tree)
    processes: list = []  # every 30th sample: per-process memory breakdown
    started = time.monotonic()
    issued = 0
    finished = 0

    def bodies():
        for i in range(requests):
            problem = rng.choice(problems)
            yield i, {"model": model, "stream": True, "max_tokens": max_tokens,
                      "temperature": 0.6, "stream_options": {"include_usage": True},
                      "messages": [{"role": "user", "content": problem.question}],
                      **rng.choice(BUDGETS)}

    work = bodies()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal issued, finished
        for i, body in work:
            if time.monotonic() - started > max_seconds:
                return
            issued += 1
            disconnect = disconnect_every > 0 and i % disconnect_every == disconnect_every - 1
            await _one(client, url, body, headers, disconnect, tally)
            finished += 1

    async def sampler() -> None:
        while True:
            own, tree = await asyncio.to_thread(_rss_mib, pid)
            samples.append((time.monotonic() - started, finished, own, tree))
            if len(samples) % 30 == 1:
                processes.append([round(samples[-1][0]), finished,
                                  await asyncio.to_thread(_breakdown, pid)])
            await asyncio.sleep(1.0)

    # Keep-alive shorter than the server's (uvicorn: 5 s), so the client never reuses a
    # connection the server is closing (that race shows as a ReadError, not a server fault).
    limits = httpx.Limits(max_connections=concurrency + 2, keepalive_expiry=2.0)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        watch = asyncio.create_task(sampler())
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        watch.cancel()
    wall = time.monotonic() - started
    own, tree = _rss_mib(pid)
    samples.append((wall, finished, own, tree))
    processes.append([round(wall), finished, _breakdown(pid)])

    idle, deadline = False, time.time() + 30
    while time.time() < deadline and not idle:
        idle = (_metric(url, "vllm:num_requests_running") + _metric(
            url, "vllm:num_requests_waiting") + _metric(url, "lapo_requests_in_flight")) == 0
        if not idle:
            await asyncio.sleep(0.5)

    warm = [s for s in samples if s[1] >= warmup_fraction * finished] or samples
    head = warm[:max(1, len(warm) // 10)]
    tail = warm[-max(1, len(warm) // 10):]

    def growth(index: int) -> dict:
        first = statistics.median(s[index] for s in head)
        last = statistics.median(s[index] for s in tail)
        return {"after_warmup_mib": round(first, 1), "end_mib": round(last, 1),
                "growth_mib": round(last - first, 1),
                "growth_pct": round(100 * (last - first) / first, 2)}

    return {
        "requests_issued": issued, "finished": finished, "ok": tally.ok,
        "errors": tally.errors, "error_samples": tally.error_samples,
        "refused": tally.refused, "disconnected": tally.disconnected,
        "unanswered": tally.unanswered, "unanswered_samples": tally.unanswered_samples,
        "concurrency": concurrency, "wall_s": round(wall, 1),
        "requests_per_s": round(finished / wall, 2) if wall else None,
        "memory": {"server_process": growth(2), "process_tree": growth(3),
                   "samples": len(samples), "warmup_fraction": warmup_fraction},
        "engine_idle_at_end": idle,
        # Every ~30 s: seconds, requests finished, server MiB, process-tree MiB.
        "timeline": [[round(t), n, round(own), round(tree)]
                     for t, n, own, tree in samples[::30]] + [
                         [round(samples[-1][0]), samples[-1][1], round(samples[-1][2]),
                          round(samples[-1][3])]],
        # Same points: seconds, requests finished, {process: {anon, file, shmem} MiB}.
        "processes": processes,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running server (default: start `lapo serve` here)")
    ap.add_argument("--pid", type=int, help="the server's process id (with --url)")
    ap.add_argument("--model", type=Path, help="checkpoint to serve when starting one")
    ap.add_argument("--api-key")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--disconnect-every", type=int, default=7)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from lapo.loadtests.report import write_report
    from lapo.loadtests.servers import free_port, start_ours, stop, wait_ready
    from lapo.paths import default_model

    proc = None
    url, pid = args.url, args.pid
    if url is None:
        port = free_port()
        proc = start_ours(args.model or default_model(), port, 1024)
        url, pid = f"http://127.0.0.1:{port}", proc.pid
        wait_ready(url, proc, "/ready")
    if pid is None:
        ap.error("--pid is required with --url (memory is measured on the server process)")
    try:
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        model = httpx.get(f"{url}/v1/models", headers=headers, timeout=10).json()["data"][0]["id"]
        report = asyncio.run(soak(url, model, pid, args.requests, args.concurrency,
                                  args.max_seconds, args.disconnect_every, args.max_tokens,
                                  args.api_key))
    finally:
        if proc is not None:
            stop(proc)
    print(json.dumps(report, indent=2))
    write_report(args.out, report)
    ok = report["errors"] == 0 and report["unanswered"] == 0 and report["engine_idle_at_end"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
