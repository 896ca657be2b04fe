"""Servers for the benchmarks: start `lapo serve` or the stock vLLM OpenAI server on a free port,
wait until it is ready, stop it; and the bench's prompt set.

Used by `lapo bench` (`lapo.loadtests.bench`), `python -m lapo.loadtests.ab`,
`python -m lapo.loadtests.profile` and `python -m lapo.loadtests.soak`; not a command itself.

Each server runs in its own process group (stopped and killed as one, frozen with SIGSTOP by
the bench's alternating rounds) but in the caller's session: a process in a new session
(``setsid``, ``start_new_session``) lands in a new scheduler autogroup, and with the load
generator in another autogroup on the same cores the server ran ~3x slower (docs/LOAD.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lapo.task import generate


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, path: str, timeout: float = 300) -> None:
    """Until ``url + path`` answers 200; raises if ``proc`` exits or ``timeout`` passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _reap(proc: subprocess.Popen) -> None:
    """Wait up to 60 s for a signalled server, then SIGKILL its process group."""
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 60 s."""
    _signal(proc, signal.SIGTERM)
    _reap(proc)


def stop_all(procs: dict) -> None:
    """Stop every server of ``procs`` (name -> process), thawing a frozen one first; they
    shut down side by side (SIGTERM to all, then the waits)."""
    for proc in procs.values():
        _signal(proc, signal.SIGCONT)
        _signal(proc, signal.SIGTERM)
    for proc in procs.values():
        _reap(proc)


def bench_prompts(requests: int) -> list[str]:
    """``requests`` held-out questions, every level, repeated as needed (the bench's load)."""
    prompts = [p.question for p in generate("heldout", max(1, requests // 5) + 1, seed=7)]
    return (prompts * (requests // len(prompts) + 1))[:requests]


def start_ours(model: Path, port: int, max_model_len: int | None = None,
               python_args: tuple[str, ...] = (),
               extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`lapo serve` in its own process group; ``python_args`` go before ``-m lapo.cli``
    (e.g. ``("-m", "cProfile", "-o", FILE)``); ``extra_env`` over this process's environment."""
    env = {**os.environ, **(extra_env or {}), "LAPO_MODEL": str(model), "LAPO_PORT": str(port),
           "LAPO_API_KEYS": ""}
    if max_model_len:
        env["LAPO_MAX_MODEL_LEN"] = str(max_model_len)
    return subprocess.Popen([sys.executable, *python_args, "-m", "lapo.cli", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            process_group=0)


def start_raw_vllm(model: Path, port: int, max_model_len: int | None = None,
                   same_flags: bool = False) -> subprocess.Popen:
    """The stock vLLM OpenAI server on ``model``, served as "bench".

    By default at vLLM's own defaults: only the model, port, served name and reasoning parser
    are passed (what a user who would run raw vLLM instead of us runs). ``same_flags``: with
    our engine's flags (`lapo.engine.vllm_cli_flags` of the engine `lapo serve` builds), which
    isolates the cost of our API layer."""
    from lapo import env
    from lapo.engine import EngineConfig, vllm_cli_flags

    env.configure()
    if same_flags:
        cfg = EngineConfig(model=str(model))
        if max_model_len:
            cfg.max_model_len = max_model_len
        engine = vllm_cli_flags(cfg)
    else:
        engine = ["--model", str(model)]
        if max_model_len:  # only to fit a test's small checkpoint; the bench passes none
            engine += ["--max-model-len", str(max_model_len)]
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *engine,
           "--port", str(port), "--host", "127.0.0.1", "--served-model-name", "bench",
           "--reasoning-parser", "deepseek_r1"]
    return subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, process_group=0)
