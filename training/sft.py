"""The supervised fine-tuning run every SFT stage shares (TRL `SFTTrainer`).

The tiny overthinking base (`lapo.training.base`), the reasoning base
(`lapo.training.reasoning_base`) and the budget-format warm-up (`lapo.training.warmup`) each
train prompt/completion rows with the same trainer, schedule and saving; they differ only in
the model, the rows and the sizes they pass here. Under a launcher every rank trains on its
share of the rows and the checkpoint is written once (`lapo.training.distributed`).
"""

from __future__ import annotations

from pathlib import Path

from lapo.training.distributed import save_trained


def train_sft(model, tokenizer, rows: list[dict], out: Path, work_dir: Path, *,
              use_cpu: bool, bf16: bool, per_device_train_batch_size: int, epochs: float,
              learning_rate: float, max_length: int, seed: int, warmup_steps: int,
              logging_steps: int, gradient_checkpointing: bool = False,
              gradient_accumulation_steps: int = 1, **sft_args) -> dict:
    """SFT ``model`` on ``rows`` (``{"prompt", "completion"}`` strings), a cosine schedule
    after ``warmup_steps``, no intermediate checkpoints; save it with ``tokenizer`` to ``out``.
    ``sft_args`` go to TRL's `SFTConfig` as they are. Returns the loss and steps."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(work_dir), use_cpu=use_cpu, bf16=bf16,
        gradient_checkpointing=gradient_checkpointing,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        num_train_epochs=epochs, learning_rate=learning_rate, lr_scheduler_type="cosine",
        warmup_steps=warmup_steps, max_length=max_length, logging_steps=logging_steps,
        save_strategy="no", report_to=[], seed=seed, dataloader_num_workers=0,
        eos_token=tokenizer.eos_token, pad_token=tokenizer.pad_token, **sft_args,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)
    result = trainer.train()
    save_trained(trainer, tokenizer, out)
    return {"train_loss": round(float(result.training_loss), 4),
            "steps": int(result.global_step)}
