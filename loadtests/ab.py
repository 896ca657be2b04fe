"""A/B of one setting on our own server: two `lapo serve`, alternating rounds of the bench load.

Both servers serve the same checkpoint and differ only in the environment given with ``--a``
and ``--b`` (``NAME=VALUE``, repeatable); the rounds, freezing and ratios are `lapo bench`'s.

    python -m lapo.loadtests.ab --a ONEDNN_PRIMITIVE_CACHE_CAPACITY=8 \\
        --b ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024 --rounds 8 --out runs/ab.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lapo.loadtests.bench import alternate, compare, print_report
from lapo.loadtests.report import write_report
from lapo.loadtests.servers import bench_prompts, free_port, start_ours, stop_all, wait_ready


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"expected NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


def run_ab(model: Path, a: dict[str, str], b: dict[str, str], requests: int = 96,
           concurrency: int = 8, max_tokens: int = 256, rounds: int = 8) -> dict:
    prompts = bench_prompts(requests)
    procs, urls = {}, {}
    try:
        for name, env in (("a", a), ("b", b)):
            port = free_port()
            procs[name] = start_ours(model, port, 1024, extra_env=env)
            urls[name] = f"http://127.0.0.1:{port}"
        for name in procs:
            wait_ready(urls[name], procs[name], "/ready")
        served = {name: (model.name, "/ready") for name in procs}
        per_round = alternate(procs, urls, served, rounds, prompts, concurrency, max_tokens)
    finally:
        stop_all(procs)
    return {"model": model.name, "a": a, "b": b, "requests": requests,
            "concurrency": concurrency, "max_tokens": max_tokens, "rounds": rounds,
            **compare(per_round, "a", "b", "a_over_b")}


def main(argv: list[str] | None = None) -> int:
    from lapo.paths import default_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--b", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--model", type=Path)
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    report = run_ab(Path(args.model or default_model()), _env(args.a), _env(args.b),
                    args.requests, args.concurrency, args.max_tokens, args.rounds)
    print_report(report, ("a", "b"), "ratio_a_over_b")
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
