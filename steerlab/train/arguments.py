"""transformers' `TrainingArguments` from an experiment config (one place that maps our keys to theirs)."""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import TrainingArguments

from steerlab.train.config import ExperimentConfig


def _checkpointing_kwargs(on: bool) -> dict[str, Any]:
    """Gradient checkpointing (non-reentrant: hooks and captures need no input grads), named per version."""
    if not on:
        return {}
    fields = TrainingArguments.__dataclass_fields__
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}


def training_arguments(cfg: ExperimentConfig) -> TrainingArguments:
    """The run's TrainingArguments (creating them sets up the process group under torchrun)."""
    t = cfg.train
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = not torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(cfg.run_dir / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.scheduler,
        optim=t.optimizer,
        max_grad_norm=t.max_grad_norm,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=None,  # CheckpointKeeper rotates, after marking a checkpoint complete
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        remove_unused_columns=False,
        **_checkpointing_kwargs(t.gradient_checkpointing),
        logging_nan_inf_filter=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=cpu,  # CPU-only: accelerate needs it for multi-process (gloo) runs
        ddp_backend=("gloo" if cpu else None) if distributed else None,
        ddp_find_unused_parameters=False if distributed else None,
    )
