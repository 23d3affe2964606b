"""One training run from an experiment config: the wiring of the run's parts, nothing else.

Run folder ``<output_dir>/<name>/``::

    config.yaml                  the resolved config (defaults filled in, paths absolute)
    run.json                     arms, reference kind, world size, base model
    data_report.json             examples loaded / skipped (with lines and reasons), interleave selection
    metrics.jsonl                one row per logged step: step, loss, lm_loss, lr, grad_norm, epoch + arm terms
    monitor.jsonl                persona monitor rows (see `steerlab.train.monitor`)
    monitor_reference.safetensors  the reference features of the monitor chats
    reference_cache/             cached reference outputs of arms with ``cache: true`` (`steerlab.train.refcache`)
    checkpoints/checkpoint-N/    transformers checkpoints; complete ones carry steerlab-complete.json
    final/                       the adapter (LoRA) or the model (full FT) + tokenizer + steerlab.json

The parts: `loading` (models), `dataset` (the training stream), `reference` (the model before training),
`refcache` (its cached outputs), `rundir` (folder, resume, final save), `arguments` (TrainingArguments),
`monitor`, `callbacks` and `trainer`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase, TrainerCallback, TrainingArguments, set_seed

from steerlab.io import write_json
from steerlab.train.arguments import training_arguments
from steerlab.train.arms.base import Arm, BuildContext
from steerlab.train.arms.registry import build_arms
from steerlab.train.callbacks import CheckpointKeeper, MetricsLog
from steerlab.train.config import ExperimentConfig, load_config
from steerlab.train.dataset import IndexedCollator, ListDataset, build_examples, tokenize_all
from steerlab.train.loading import attach_adapter, load_base, load_finetuned, load_tokenizer
from steerlab.train.monitor import build_monitor
from steerlab.train.refcache import CacheBuilder, ReferenceCache, cached_arms, open_or_build
from steerlab.train.reference import Reference, make_reference
from steerlab.train.rundir import (
    RunResult,
    RunStateError,
    check_saved_config,
    final_step,
    is_main_process,
    prepare_run_dir,
    save_final,
)
from steerlab.train.trainer import SteerlabTrainer

log = logging.getLogger(__name__)

# what other modules import from here
__all__ = [
    "RunResult",
    "RunStateError",
    "build_examples",
    "load_base",
    "load_finetuned",
    "load_tokenizer",
    "train",
]
_monitor = build_monitor  # the name tests used before the monitor wiring moved to steerlab.train.monitor


def _prepare_data(
    cfg: ExperimentConfig, base: nn.Module, tokenizer: PreTrainedTokenizerBase, is_main: bool
) -> tuple[list[Arm], list[dict[str, Any]], dict[str, Any]]:
    """The arms, the tokenized training stream and the data report."""
    ctx = BuildContext(
        config=cfg,
        model=base,
        tokenizer=tokenizer,
        run_dir=cfg.run_dir,
        is_main=is_main,
        load_misaligned=lambda p: load_finetuned(p, lambda: load_base(cfg.model)[0]),
    )
    arms = build_arms(ctx)
    examples, report = build_examples(cfg, arms)
    features = tokenize_all(cfg, tokenizer, examples, report)
    for arm in arms:
        arm_report = getattr(arm, "report", None)  # what an arm that changes the data chose (interleave)
        if arm_report:
            report[arm.name] = arm_report
    return arms, features, report


def _reference_cache(
    cfg: ExperimentConfig,
    args: TrainingArguments,
    arms: Sequence[Arm],
    model: nn.Module,
    reference: Reference | None,
    tokenizer: PreTrainedTokenizerBase,
    features: Sequence[dict[str, Any]],
    fresh: bool,
) -> ReferenceCache | None:
    """Open (after checking) or build the run's reference cache; None when no arm caches.

    Without a reference model (full fine-tuning, every reference arm cached) the cache is built from the
    policy itself, which is only the reference before its first update: ``fresh`` (no checkpoint) says so.
    """
    if not cached_arms(arms):
        return None
    source = reference or (Reference.untrained_policy() if fresh else None)
    builder = CacheBuilder(
        cfg.run_dir / "reference_cache",
        arms,
        model.to(args.device),
        source,
        tokenizer,
        features,
        batch_size=cfg.train.batch_size,
    )
    with args.main_process_first(desc="reference cache"):
        return open_or_build(builder, build=is_main_process())


def _write_run_info(
    cfg: ExperimentConfig, arms: Sequence[Arm], reference: Reference | None, report: dict, world_size: int
) -> None:
    write_json(cfg.run_dir / "data_report.json", report)
    write_json(
        cfg.run_dir / "run.json",
        {
            "name": cfg.name,
            "arm": cfg.arm_label,
            "arms": [a.describe() for a in arms],
            "reference": reference.kind if reference else ("cache" if cached_arms(arms) else None),
            "world_size": world_size,
            "base_model": cfg.model.name,
            "finetune": cfg.finetune.method,
        },
    )


def train(
    config: str | Path | ExperimentConfig, *, resume: bool = False, callbacks: Sequence[TrainerCallback] = ()
) -> RunResult:
    """Run (or resume) the experiment; returns where it wrote and the trained model.

    Raises `ConfigError` for a bad config, `RunStateError` for a run folder that does not fit the request,
    `ReferenceCacheError` for a cache built from other data, and `NonFiniteLossError` on a NaN/inf loss.
    """
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    is_main, final_dir = is_main_process(), cfg.run_dir / "final"
    args = training_arguments(cfg)  # sets up the process group under torchrun
    with args.main_process_first(desc="run folder"):
        if resume:
            check_saved_config(cfg)
        if resume and final_dir.is_dir():
            log.info("%s is complete already (%s exists)", cfg.run_dir, final_dir)
            return RunResult(cfg.run_dir, final_dir, final_step(final_dir))
        checkpoint = prepare_run_dir(cfg, resume, is_main)

    set_seed(cfg.seed)
    base, tokenizer = load_base(cfg.model)
    arms, features, report = _prepare_data(cfg, base, tokenizer, is_main)
    reference = make_reference(cfg, base)
    set_seed(cfg.seed)  # the adapter's initialisation does not depend on what data preparation consumed
    model = attach_adapter(base, cfg)
    monitor = build_monitor(cfg, tokenizer, model, reference, is_main)
    if is_main:
        _write_run_info(cfg, arms, reference, report, args.world_size)
    cache = _reference_cache(cfg, args, arms, model, reference, tokenizer, features, checkpoint is None)
    loss_keys = [key for arm in arms for key in type(arm).loss_keys]
    extra = [
        MetricsLog(cfg.run_dir / "metrics.jsonl", loss_keys),
        CheckpointKeeper(cfg.run_dir / "checkpoints", cfg.train.keep_checkpoints),
    ]
    trainer = SteerlabTrainer(
        model=model,
        args=args,
        train_dataset=ListDataset(features),
        data_collator=IndexedCollator(tokenizer),
        processing_class=tokenizer,
        arms=arms,
        reference=reference,
        reference_cache=cache,
        callbacks=[*extra, *([monitor] if monitor else []), *callbacks],
    )
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    save_final(trainer, cfg, final_dir, is_main)
    return RunResult(cfg.run_dir, final_dir, trainer.state.global_step, model)
