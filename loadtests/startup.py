"""Start and hot-swap times of `lapo serve`: compiled with an empty compile cache (cold),
compiled again on that cache (warm), and eager, one server after the other.

    python -m lapo.loadtests.startup --out runs/startup.json

Each scenario starts `lapo serve` on ``--model`` (seconds from the process start to ``/ready``:
Python imports, tokenizer, engine start with its compile or cache load, warm-up), then
hot-swaps it to ``--swap-to`` (another checkpoint of the same architecture) through the admin
API and records the swap's phases (load = the new engine's start, warm = its first request),
then stops it. The cold run's cache is a fresh folder (``LAPO_CACHE_DIR``, which holds vLLM's
and torch inductor's caches); the warm run reuses it, as a restarted container with the cache
volume does.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import time
from pathlib import Path

import httpx

from lapo.loadtests.report import write_report
from lapo.loadtests.servers import free_port, start_ours, stop, wait_ready
from lapo.paths import REPO_ROOT, default_model, models_dir

SCENARIOS = {  # name -> (eager, reuse the cache of the previous scenario)
    "compiled_cold_cache": ("false", False),
    "compiled_warm_cache": ("false", True),
    "eager": ("true", True),
}


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else path.name


def one(model: Path, swap_to: Path, cache: Path, eager: str) -> dict:
    key = secrets.token_hex(8)
    port = free_port()
    env = {"LAPO_CACHE_DIR": str(cache), "LAPO_ENFORCE_EAGER": eager, "LAPO_ADMIN_KEY": key,
           "LAPO_MODEL_ROOT": str(models_dir().resolve())}
    # Variables set by the caller's environment for the caches would bypass LAPO_CACHE_DIR.
    for var in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "XDG_CACHE_HOME", "HF_HOME",
                "TRITON_CACHE_DIR"):
        os.environ.pop(var, None)
    t0 = time.monotonic()
    proc = start_ours(model, port, extra_env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, "/ready", timeout=900)
        ready = time.monotonic() - t0
        t1 = time.monotonic()
        r = httpx.post(f"{url}/admin/models/swap", json={"path": str(swap_to.resolve())},
                       headers={"Authorization": f"Bearer {key}"}, timeout=900)
        swap_wall = time.monotonic() - t1
        r.raise_for_status()
        body = r.json()
    finally:
        stop(proc)
    return {"start_to_ready_s": round(ready, 2), "swap_s": round(swap_wall, 2),
            "swap_phases_s": body.get("phases_s")}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    ap.add_argument("--swap-to", type=Path, default=None, help="default: models/base")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    model = Path(args.model or default_model())
    swap_to = Path(args.swap_to or models_dir() / "base")
    results = {}
    with tempfile.TemporaryDirectory(prefix="lapo-startup-") as tmp:
        cache = Path(tmp) / "cache"
        for name, (eager, reuse) in SCENARIOS.items():
            if not reuse:
                cache = Path(tmp) / f"cache-{name}"
            print(f"== {name}", flush=True)
            results[name] = one(model, swap_to, cache, eager)
            print(json.dumps(results[name]), flush=True)
    report = {"model": _shown(model), "swap_to": _shown(swap_to),
              "machine": f"{os.cpu_count()} CPUs", "results": results}
    print(f"{'scenario':22} {'start->ready s':>15} {'swap s':>8} {'swap load s':>12}")
    for name, r in results.items():
        load = (r["swap_phases_s"] or {}).get("load")
        print(f"{name:22} {r['start_to_ready_s']:>15} {r['swap_s']:>8} {load!s:>12}")
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
