"""Where the API process spends its CPU under load: `lapo serve` under cProfile.

Starts the server under ``cProfile``, drives the bench's streaming load at it, stops it with
SIGTERM (a graceful exit writes the profile) and prints CPU time by layer (our code, the
ASGI stack, vLLM's front end, the rest), our code's CPU per streamed chunk, the process's
measured CPU time (profiling inflates it), and the top functions by own time. The engine
core runs in its own process and is not in this profile.

    python -m lapo.loadtests.profile --requests 64 --concurrency 8 --out runs/profile.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pstats
import signal
import sys
import tempfile
from pathlib import Path

LAYERS = (("ours", ("/service/", "/lapo/", "/training/")),
          ("asgi", ("/starlette/", "/uvicorn/", "/fastapi/", "/anyio/", "/h11/", "/httptools/",
                    "/pydantic/", "/pydantic_core/")),
          ("vllm", ("/vllm/",)), ("tokenizers", ("/transformers/", "/tokenizers/")),
          ("asyncio", ("/asyncio/",)))


# cProfile books these as own time, but they are waits: the event loop's poll (idle), and the
# streaming response's task group, whose time suspended in `await` is counted as its own.
WAITS = {"<method 'poll' of 'select.poll' objects>", "<method 'select' of 'select.epoll' "
         "objects>", "create_collapsing_task_group"}


def _layer(filename: str) -> str:
    for name, marks in LAYERS:
        if any(m in filename for m in marks):
            return name
    return "other"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from lapo.loadtests.bench import drive
    from lapo.loadtests.report import write_report
    from lapo.loadtests.servers import bench_prompts, free_port, start_ours, wait_ready
    from lapo.paths import default_model

    model = Path(args.model or default_model())
    prompts = bench_prompts(args.requests)
    port = free_port()
    prof = Path(tempfile.mkdtemp()) / "serve.prof"
    proc = start_ours(model, port, 2048, ("-m", "cProfile", "-o", str(prof)))
    url = f"http://127.0.0.1:{port}"
    try:
        import psutil

        wait_ready(url, proc, "/ready")
        server = psutil.Process(proc.pid)
        before = server.cpu_times()
        run = asyncio.run(drive(url, model.name, prompts, args.concurrency, args.max_tokens))
        after = server.cpu_times()
        cpu_measured = (after.user + after.system) - (before.user + before.system)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)

    stats = pstats.Stats(str(prof))
    by_layer: dict[str, float] = {}
    rows = []
    for (filename, line, func), (_, ncalls, tottime, _cum, _) in stats.stats.items():
        if func in WAITS:
            layer = "waiting"  # not CPU: see WAITS
        else:
            layer = _layer(filename)
        by_layer[layer] = by_layer.get(layer, 0.0) + tottime
        if layer != "waiting":
            rows.append((tottime, ncalls, layer, f"{Path(filename).name}:{line}({func})"))
    rows.sort(reverse=True)
    total = sum(v for k, v in by_layer.items() if k != "waiting")
    summary = run.summary(len(prompts))
    report = {
        "model": model.name, "requests": args.requests, "concurrency": args.concurrency,
        "load": {k: summary[k] for k in ("requests_per_s", "completion_tokens_per_s",
                                          "ttft_p50_ms", "itl_mean_ms")},
        "cpu_s_by_layer": {k: round(v, 2) for k, v in sorted(by_layer.items(),
                                                              key=lambda kv: -kv[1])},
        "cpu_s_profiled_busy": round(total, 2),
        "cpu_s_server_process_measured": round(cpu_measured, 2),
        "ours_us_per_streamed_chunk": round(1e6 * by_layer.get("ours", 0.0) / max(
            1, len(run.itl) + len(run.ttft)), 1),
        "top_functions": [{"own_s": round(t, 3), "calls": n, "layer": layer, "function": f}
                          for t, n, layer, f in rows[:args.top]],
    }
    print(json.dumps({k: v for k, v in report.items() if k != "top_functions"}, indent=2))
    for row in report["top_functions"]:
        print(f"{row['own_s']:8.3f}s {row['calls']:>9} {row['layer']:>10}  {row['function']}")
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
