"""Ranks for `lapo train`: who is the main process, barriers, gathers, one save per checkpoint.

One process (``lapo train ...``) is world size 1 and every helper here is a no-op. Under a
launcher every rank runs the same pipeline:

    torchrun --nproc_per_node 2 -m lapo.cli train --config configs/tiny-test.toml   # CPU, gloo
    accelerate launch --config_file configs/accelerate-deepspeed-zero2.yaml \\
        -m lapo.cli train --config configs/gpu-r1-distill-1.5b.toml               # GPUs

`init` joins the launcher's process group through accelerate's `PartialState` (gloo when
``cpu``, so torchrun ranks on CPU are accelerate's MULTI_CPU; NCCL or DeepSpeed on GPUs). The
trainers (TRL) reuse that group. Everything else goes through plain ``torch.distributed``
calls, which do not depend on accelerate's shared state (each `TrainingArguments` resets it).

torch and accelerate are imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Set by torchrun (and accelerate launch, which runs it) for the training ranks. A vLLM engine
# the main process starts for itself must not see them: its worker would take them for its own
# process group.
_LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                 "GROUP_WORLD_SIZE", "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME",
                 "MASTER_ADDR", "MASTER_PORT")


def init(cpu: bool, timeout_s: float = 7200.0) -> tuple[int, int]:
    """Join the launcher's process group (if any); returns ``(rank, world_size)``.

    ``timeout_s`` bounds every collective, the barriers included: the other ranks wait at one
    while the main process runs the warm-up generation or the evaluation.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from datetime import timedelta

        from accelerate import PartialState

        PartialState(cpu=cpu, timeout=timedelta(seconds=timeout_s))
    return rank(), world_size()


def close() -> None:
    """Leave the process group (each rank, after its last collective). Without it gloo's
    threads may still run while the interpreter exits, and a rank that had finished its work
    aborted ("terminate called without an active exception", SIGABRT: once in 15 CI runs)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _group() -> Any | None:
    """``torch.distributed`` when a process group with more than one rank exists."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def world_size() -> int:
    dist = _group()
    return dist.get_world_size() if dist else 1


def rank() -> int:
    dist = _group()
    return dist.get_rank() if dist else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    dist = _group()
    if dist:
        dist.barrier()


def all_gather(obj: T) -> list[T]:
    """``obj`` from every rank, in rank order (``[obj]`` on one process)."""
    dist = _group()
    if dist is None:
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def exchange(local: list[T]) -> tuple[list[T], int]:
    """Concatenate every rank's ``local`` list in rank order; returns it with the offset of
    this rank's own items in it (``(local, 0)`` on one process)."""
    parts = all_gather(local)
    me = rank()
    return [x for part in parts for x in part], sum(len(p) for p in parts[:me])


def check_same(value: Any, what: str) -> None:
    """Raise on every rank unless every rank holds the same ``value``."""
    values = all_gather(value)
    if any(v != values[0] for v in values):
        raise RuntimeError(f"{what} differs between ranks: {values}")


def on_main(fn: Callable[..., T], *args: Any, what: str) -> T:
    """Run ``fn(*args)`` on the main process only; every rank returns its result.

    The broadcast is the barrier: the other ranks wait until the main process is done, and
    raise (naming ``what``) if it failed instead of waiting at the next collective.
    """
    dist = _group()
    if dist is None:
        return fn(*args)
    box: list = [None]
    error: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            box[0] = (True, fn(*args))
        except BaseException as exc:  # noqa: B036 - re-raised below, after telling the others
            error = exc
            box[0] = (False, f"{type(exc).__name__}: {exc}")
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    ok, value = box[0]
    if not ok:
        raise RuntimeError(f"{what} failed on the main process: {value}")
    return value


@contextmanager
def engine_env() -> Iterator[None]:
    """Hide the launcher's rank variables while the main process starts a vLLM engine of its
    own (warm-up generation, evaluation); a no-op on one process."""
    # TORCHELASTIC_USE_AGENT_STORE (set by torchrun) makes every tcp:// rendezvous a client of
    # the launcher's store: an engine's own process group would wait on a port nobody serves.
    saved = {k: os.environ.pop(k) for k in list(os.environ)
             if k in _LAUNCHER_ENV or k.startswith("TORCHELASTIC_")}
    try:
        yield
    finally:
        os.environ.update(saved)


def free_memory() -> None:
    """Return a finished trainer's cached accelerator memory before the next engine starts
    (vLLM sizes its KV cache from the memory it finds free)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def save_trained(trainer, tokenizer, out: Path) -> Path:
    """Save a trained model through its trainer, written once (by the main process).

    Every rank must call it: ``Trainer.save_model`` collects the weights (DeepSpeed ZeRO-3
    shards them) and writes them, and the tokenizer, on the main process only. The checkpoint
    gets the generation ids `lapo.tiny.save_checkpoint` gives (ChatML's turn end and padding
    when the vocabulary has them) and no pickled ``training_args.bin``.
    """
    from lapo.tiny import BOS, IM_END

    out = Path(out)
    vocab = tokenizer.get_vocab()
    eos = vocab.get(IM_END) or tokenizer.eos_token_id  # as save_checkpoint chooses them
    pad = vocab.get(BOS) or tokenizer.pad_token_id
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos if pad is None else pad
    trainer.save_model(str(out))
    if is_main():
        (out / "training_args.bin").unlink(missing_ok=True)
    barrier()
    return out
