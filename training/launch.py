"""The launch a dry run plans for: ranks, machines, DeepSpeed ZeRO stage and offload, GPU memory.

Read from ``--world-size``, ``$WORLD_SIZE`` and the accelerate config (YAML), never from a
running process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lapo.training.config import ConfigError


@dataclass(frozen=True)
class Launch:
    world_size: int = 1
    gpu_memory_gib: float = 80.0
    source: str = "default: one process"
    accelerate_config: str | None = None
    distributed: str = "NO"  # accelerate's distributed_type
    machines: int = 1
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    ds_grad_accum: Any = None  # deepspeed_config.gradient_accumulation_steps
    mixed_precision: str | None = None

    @property
    def deepspeed(self) -> bool:
        return self.distributed == "DEEPSPEED"

    def describe(self) -> str:
        how = (f"DeepSpeed ZeRO-{self.zero_stage}" if self.deepspeed else
               self.distributed if self.distributed != "NO" else "no accelerate config")
        extra = ", optimizer offloaded to CPU" if self.offload_optimizer else ""
        return (f"{self.world_size} rank(s) ({self.source}), {self.machines} machine(s), "
                f"{how}{extra}, {self.gpu_memory_gib:g} GiB per GPU")


def read_launch(accelerate_config: Path | None = None, world_size: int | None = None,
                gpu_memory_gb: float = 80.0, env: dict | None = None) -> Launch:
    """World size: ``world_size`` given, else ``$WORLD_SIZE``, else the accelerate config's
    ``num_processes`` (all machines together), else 1."""
    env = os.environ if env is None else env
    acc: dict = {}
    if accelerate_config is not None:
        import yaml

        try:
            acc = yaml.safe_load(Path(accelerate_config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--accelerate-config {accelerate_config}: cannot read it "
                              f"({exc})") from exc
    ds = acc.get("deepspeed_config") or {}
    if world_size is not None:
        size, source = world_size, "--world-size"
    elif env.get("WORLD_SIZE"):
        size, source = int(env["WORLD_SIZE"]), "$WORLD_SIZE"
    elif acc.get("num_processes"):
        size, source = int(acc["num_processes"]), f"num_processes of {accelerate_config}"
    else:
        size, source = 1, "default: one process"
    if size < 1:
        raise ConfigError(f"world size must be >= 1, got {size} ({source})")
    return Launch(
        world_size=size, gpu_memory_gib=gpu_memory_gb, source=source,
        accelerate_config=str(accelerate_config) if accelerate_config else None,
        distributed=str(acc.get("distributed_type", "NO")).upper(),
        machines=int(acc.get("num_machines", 1)), zero_stage=int(ds.get("zero_stage", 0)),
        offload_optimizer=ds.get("offload_optimizer_device", "none") not in ("none", None),
        offload_params=ds.get("offload_param_device", "none") not in ("none", None),
        ds_grad_accum=ds.get("gradient_accumulation_steps"),
        mixed_precision=acc.get("mixed_precision"))
