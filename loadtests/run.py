"""Run one load-test scenario against a live service and print its report (JSON).

    python -m lapo.loadtests.run --url http://127.0.0.1:8000 --scenario mixed --users 8 \
        --seconds 60
    python -m lapo.loadtests.run --url ... --scenario swap --swap-path models/base  (LAPO_ADMIN_KEY)
    python -m lapo.loadtests.run --url ... --scenario steady --short             (the tests' mode)

Scenarios: steady (constant users), burst (1 -> N -> 1 users), long (level-5 problems, long
completions), mixed (auto / reasoning_budget / reasoning_effort / hard cap), disconnect (half
the clients drop their stream after two chunks), swap (a hot-swap in the middle of the run).
Reported: TTFT to first reasoning and first answer token, inter-token latency, end-to-end
latency (p50/p95/p99), requests/s, completion tokens/s, goodput (requests/s within the SLO),
error rate, reasoning share of tokens, tokens saved (from the server's metrics). Loopback only;
bounded by --seconds.
"""

from __future__ import annotations

# Locust needs gevent's monkey-patching before anything else imports ssl or sockets.
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

import gevent  # noqa: E402
import httpx  # noqa: E402


def _saved(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "lapo_tokens_saved_total":
                total += sample.value
            elif sample.name == "lapo_tokens_overspent_total":
                total -= sample.value
    return total


def _pct(entry, q: float) -> float | None:
    return round(entry.get_response_time_percentile(q), 1) if entry.num_requests else None


def run(args) -> dict:
    host = urlparse(args.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("load tests target loopback only")
    os.environ["LAPO_LOAD_SCENARIO"] = args.scenario
    os.environ["LAPO_LOAD_MODEL"] = args.model
    if args.api_key:
        os.environ["LAPO_LOAD_API_KEY"] = args.api_key
    if args.max_tokens:
        os.environ["LAPO_LOAD_MAX_TOKENS"] = str(args.max_tokens)
    if args.scenario == "swap":
        if not args.swap_path or not os.environ.get("LAPO_ADMIN_KEY"):
            raise SystemExit("the swap scenario needs --swap-path and LAPO_ADMIN_KEY")
        os.environ["LAPO_LOAD_SWAP_PATH"] = args.swap_path
        os.environ["LAPO_LOAD_SWAP_AFTER"] = str(max(1.0, args.seconds / 3))

    from locust.env import Environment

    from lapo.loadtests import scenarios

    users = [scenarios.ChatUser] + ([scenarios.SwapUser] if args.scenario == "swap" else [])
    shape = (scenarios.BurstShape(1, args.users, args.seconds)
             if args.scenario == "burst" else None)
    for cls in users:
        cls.host = args.url
    env = Environment(user_classes=users, shape_class=shape)
    runner = env.create_local_runner()
    saved_before = _saved(args.url)
    if shape is not None:
        runner.start_shape()
    else:
        runner.start(args.users + (1 if args.scenario == "swap" else 0),
                     spawn_rate=args.users + 1)
    gevent.sleep(args.seconds)
    if args.scenario == "swap":
        # Keep the load on until the swap has finished (bounded), then a little longer.
        deadline = time.monotonic() + 600
        while (scenarios.TOTALS["swaps"] + scenarios.TOTALS["swap_failures"] == 0
               and time.monotonic() < deadline):
            gevent.sleep(0.5)
        gevent.sleep(2)
    runner.quit()
    # Let in-flight streams finish (bounded).
    gevent.sleep(1)
    stats = env.stats
    chat = stats.get("chat", "POST")
    wall = max(1e-9, stats.total.last_request_timestamp - stats.total.start_time) \
        if stats.total.last_request_timestamp else float(args.seconds)
    totals = scenarios.TOTALS
    within_slo = 0
    if chat.num_requests:
        # Goodput: requests whose end-to-end latency met the SLO (from the histogram).
        within_slo = sum(n for ms, n in chat.response_times.items() if ms <= args.slo_ms)
    report = {
        "scenario": args.scenario, "users": args.users, "seconds": args.seconds,
        "requests": chat.num_requests, "errors": chat.num_failures,
        "error_rate": round(chat.num_failures / chat.num_requests, 4) if chat.num_requests
        else None,
        "requests_per_s": round(chat.num_requests / wall, 3),
        "completion_tokens_per_s": round(totals["completion_tokens"] / wall, 1),
        "goodput_requests_per_s": round(within_slo / wall, 3), "slo_ms": args.slo_ms,
        "reasoning_share": round(totals["reasoning_tokens"] / totals["completion_tokens"], 4)
        if totals["completion_tokens"] else None,
        "tokens_saved": round(_saved(args.url) - saved_before, 1),
        "disconnects": totals["disconnects"], "swaps": totals["swaps"],
        "swap_failures": totals["swap_failures"],
    }
    for name in ("chat", "ttft_reasoning", "ttft_answer", "itl"):
        entry = stats.get(name, "POST" if name == "chat" else "SSE")
        key = "e2e" if name == "chat" else name
        for q in (0.5, 0.95, 0.99):
            report[f"{key}_p{int(q * 100)}_ms"] = _pct(entry, q)
    return report


def main(argv: list[str] | None = None) -> int:
    from lapo.loadtests.scenarios import SCENARIOS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--scenario", choices=SCENARIOS, default="steady")
    parser.add_argument("--model", default="lapo")
    parser.add_argument("--api-key", default=os.environ.get("LAPO_API_KEY"))
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--slo-ms", type=float, default=10_000)
    parser.add_argument("--swap-path", default=None)
    parser.add_argument("--short", action="store_true", help="2 users, 8 s, 64 tokens")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.short:
        args.users, args.seconds, args.max_tokens = 2, 8.0, 64
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    bad = report["errors"] or report["swap_failures"] or (
        args.scenario == "swap" and report["swaps"] != 1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
