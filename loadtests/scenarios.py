"""Load-test scenarios on Locust: what each simulated client sends and what it measures.

Imported only by `lapo.loadtests.run` in its own process (Locust monkey-patches the interpreter
with gevent). Every streamed request reports, as Locust request events:

    chat            end-to-end latency (the request itself; failures are errors)
    ttft_reasoning  time to the first reasoning text
    ttft_answer     time to the first answer text
    itl             mean gap between streamed chunks of the request
"""

from __future__ import annotations

import json
import os
import random
import time

from locust import HttpUser, LoadTestShape, constant, task

from lapo.task import generate

SCENARIOS = ("steady", "burst", "long", "mixed", "disconnect", "swap")
TOTALS = {"requests": 0, "ok": 0, "completion_tokens": 0, "reasoning_tokens": 0,
          "disconnects": 0, "swaps": 0, "swap_failures": 0}
_PROBLEMS = {level: [p.question for p in generate("heldout", 20, seed=11, levels=(level,))]
             for level in (1, 2, 3, 4, 5)}


def scenario() -> str:
    return os.environ.get("LAPO_LOAD_SCENARIO", "steady")


class ChatUser(HttpUser):
    wait_time = constant(0)

    def _body(self) -> dict:
        s = scenario()
        level = 5 if s == "long" else random.randint(1, 5)
        body = {"model": os.environ.get("LAPO_LOAD_MODEL", "lapo"),
                "messages": [{"role": "user", "content": random.choice(_PROBLEMS[level])}],
                "max_tokens": int(os.environ.get("LAPO_LOAD_MAX_TOKENS",
                                                 "512" if s == "long" else "192")),
                "temperature": 0.6, "stream": True, "stream_options": {"include_usage": True}}
        if s == "mixed":
            mode = random.choice(["auto", "budget", "effort", "hard"])
            if mode == "budget":
                body["reasoning_budget"] = random.choice([16, 48, 96])
            elif mode == "effort":
                body["reasoning_effort"] = random.choice(["low", "medium", "high"])
            elif mode == "hard":
                body.update(reasoning_budget=24, budget_enforcement="hard")
        return body

    @task
    def chat(self) -> None:
        drop_after = 2 if scenario() == "disconnect" and random.random() < 0.5 else None
        headers = {"Authorization": f"Bearer {os.environ.get('LAPO_LOAD_API_KEY', 'none')}"}
        t0 = time.perf_counter()
        first_r = first_a = last = None
        gaps, chunks = [], 0
        TOTALS["requests"] += 1
        with self.client.post("/v1/chat/completions", json=self._body(), headers=headers,
                              stream=True, catch_response=True, name="chat") as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            done = False
            for raw in resp.iter_lines():
                line = raw.decode() if isinstance(raw, bytes) else raw
                if line == "data: [DONE]":
                    done = True
                    break
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    resp.failure("error event")
                    return
                now = time.perf_counter()
                if chunk.get("usage"):
                    TOTALS["completion_tokens"] += chunk["usage"]["completion_tokens"]
                    TOTALS["reasoning_tokens"] += chunk["usage"][
                        "completion_tokens_details"]["reasoning_tokens"]
                for c in chunk.get("choices", []):
                    delta = c.get("delta") or {}
                    if delta.get("reasoning_content") and first_r is None:
                        first_r = now
                    if delta.get("content") and first_a is None:
                        first_a = now
                    if delta.get("reasoning_content") or delta.get("content"):
                        if last is not None:
                            gaps.append(now - last)
                        last = now
                chunks += 1
                if drop_after is not None and chunks >= drop_after:
                    TOTALS["disconnects"] += 1
                    resp.success()  # a client that leaves on purpose is not an error
                    return
            if not done:
                resp.failure("stream ended without [DONE]")
                return
            resp.success()
            TOTALS["ok"] += 1
        fire = self.environment.events.request.fire
        for name, t in (("ttft_reasoning", first_r), ("ttft_answer", first_a)):
            if t is not None:
                fire(request_type="SSE", name=name, response_time=(t - t0) * 1000,
                     response_length=0, exception=None, context={})
        if gaps:
            fire(request_type="SSE", name="itl", response_time=1000 * sum(gaps) / len(gaps),
                 response_length=0, exception=None, context={})


class SwapUser(HttpUser):
    """In the swap scenario: one admin client swaps once, a few seconds into the run."""

    fixed_count = 1
    wait_time = constant(3600)

    @task
    def swap(self) -> None:
        time.sleep(float(os.environ.get("LAPO_LOAD_SWAP_AFTER", "3")))
        headers = {"Authorization": f"Bearer {os.environ['LAPO_ADMIN_KEY']}"}
        with self.client.post("/admin/models/swap", headers=headers, catch_response=True,
                              json={"path": os.environ["LAPO_LOAD_SWAP_PATH"]},
                              name="admin_swap", timeout=600) as resp:
            if resp.status_code == 200:
                TOTALS["swaps"] += 1
                resp.success()
            else:
                TOTALS["swap_failures"] += 1
                resp.failure(f"swap status {resp.status_code}")


class BurstShape(LoadTestShape):
    """Idle-ish, then a burst of users, then back down."""

    def __init__(self, low: int = 1, high: int = 8, duration: float = 20.0) -> None:
        super().__init__()
        self.low, self.high, self.duration = low, high, duration

    def tick(self):
        t = self.get_run_time()
        if t > self.duration:
            return None
        burst = self.duration / 3 <= t < 2 * self.duration / 3
        return (self.high, self.high) if burst else (self.low, self.low)
