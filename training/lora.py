"""LoRA (PEFT) through every trainer stage: one adapter over the imported base, trained on.

With ``[lora] enabled = true`` each stage's folder is a PEFT adapter (``adapter_config.json``,
``adapter_model.safetensors``) plus the tokenizer files (the reasoning base's chat template)
and the manifest. The next stage loads base + that adapter as trainable and goes on training
the SAME adapter (TRL takes the `PeftModel`), so the published result is one rank-r adapter
over the unchanged imported weights: small enough to commit, served on the imported base by
vLLM's LoRA support (which cannot add tokens: the vocabulary stays the base's, and the think
tags are text, `lapo.think` kind ``text``).

The vLLM engines the pipeline starts itself (warm-up rollouts, evaluation) get the adapter
merged into a full float32 copy under ``<run>/work/merged/<stage>`` (`servable`): the same
numbers as base + adapter, without vLLM's LoRA kernels.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from lapo.adapters import ADAPTER_CONFIG, VLLM_LORA_RANKS, adapter_base, is_adapter

logger = logging.getLogger(__name__)


@dataclass
class LoraConfig:
    """The [lora] section: one PEFT LoRA adapter trained through every stage."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    # Every linear layer of a Llama/Qwen block: the attention and the MLP.
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])

    def __post_init__(self) -> None:
        # vLLM serves any rank up to its largest (the engine's max_lora_rank rounded up to
        # one of VLLM_LORA_RANKS); the recipe trains at one of them exactly, so the served
        # engine's max_lora_rank is the adapter's rank and no LoRA memory is padding.
        if self.enabled and self.r not in VLLM_LORA_RANKS:
            ranks = ", ".join(map(str, VLLM_LORA_RANKS))
            raise ValueError(f"[lora] r must be one vLLM serves ({ranks}), got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"[lora] alpha must be > 0, got {self.alpha}")
        if not self.target_modules:
            raise ValueError("[lora] target_modules must name at least one module")

    def peft_config(self):
        from peft import LoraConfig as PeftLoraConfig

        return PeftLoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                              target_modules=list(self.target_modules), task_type="CAUSAL_LM")


def base_of(folder: Path) -> Path:
    """The base checkpoint an adapter folder was trained on: `lapo.adapters.adapter_base`
    (the service's rule), the working directory first, since training configs name paths
    relative to it (the stages load and hash the base from there)."""
    return adapter_base(folder, first=(Path.cwd(),))


def load_trainable(folder: Path, lora: LoraConfig):
    """The model a trainer stage starts from: base + ``folder``'s adapter (trainable) when
    ``folder`` is an adapter; a fresh adapter on ``folder`` when LoRA is on; else the full
    model."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if is_adapter(folder):
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(base_of(folder), dtype="float32")
        return PeftModel.from_pretrained(base, folder, is_trainable=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32")
    if lora.enabled:
        from peft import get_peft_model

        return get_peft_model(model, lora.peft_config())
    return model


def name_base(out: Path, base_ref: str) -> None:
    """Write ``base_ref`` (the config's base path, e.g. ``models/smollm2-135m-instruct``) as
    the adapter's ``base_model_name_or_path``: PEFT records the path it loaded from, which may
    be this machine's absolute path."""
    path = Path(out) / ADAPTER_CONFIG
    if path.is_file():
        config = json.loads(path.read_text())
        config["base_model_name_or_path"] = base_ref
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        # PEFT's model card template (empty sections); the manifest says what this is.
        (Path(out) / "README.md").unlink(missing_ok=True)


def carry_base_name(parent: Path, out: Path) -> None:
    """Give the adapter in ``out`` the base name its parent adapter records."""
    if is_adapter(parent) and is_adapter(out):
        config = json.loads((Path(parent) / ADAPTER_CONFIG).read_text())
        name_base(out, config["base_model_name_or_path"])


def servable(folder: Path, work: Path) -> Path:
    """A full checkpoint folder vLLM can load for ``folder``: itself, or for an adapter its
    merge into the base (made once, under ``work/merged/<folder name>``)."""
    folder = Path(folder)
    if not is_adapter(folder):
        return folder
    out = Path(work) / "merged" / folder.name
    stamp = out / "adapter_hash"
    from lapo.manifest import checkpoint_hash

    digest = checkpoint_hash(folder)
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return out
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_of(folder), dtype="float32")
    model = PeftModel.from_pretrained(base, folder).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder).save_pretrained(out)
    stamp.write_text(digest + "\n")
    logger.info("merged adapter %s into %s", folder, out)
    return out
