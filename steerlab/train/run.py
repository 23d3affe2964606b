"""One training run from an experiment config: the run folder, the data stream, the trainer, resume.

Run folder ``<output_dir>/<name>/``::

    config.yaml                  the resolved config (defaults filled in, paths absolute)
    run.json                     arms, reference kind, world size, base model
    data_report.json             examples loaded / skipped (with lines and reasons), interleave selection
    metrics.jsonl                one row per logged step: step, loss, lm_loss, kl, ldifs, lr, grad_norm, epoch
    monitor.jsonl                persona monitor rows (see `steerlab.train.monitor`)
    monitor_reference.safetensors  the reference features of the monitor chats
    checkpoints/checkpoint-N/    transformers checkpoints; complete ones carry steerlab-complete.json
    final/                       the adapter (LoRA) or the model (full FT) + tokenizer + steerlab.json

Resume (``resume=True``): the saved config must equal the current one; training restarts from the newest
*complete* checkpoint (model, optimizer, scheduler, RNG and data position are transformers'), incomplete
checkpoints are deleted, and log rows after the checkpoint's step are dropped because the resumed run
writes them again (same seed, same values): nothing before the kill is lost or duplicated.
Under torchrun every process runs this function; only the main process writes the folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import Dataset
from transformers import AutoModelForCausalLM, TrainerCallback, TrainingArguments, set_seed

from steerlab.data.chat import ChatExample, load_chat_jsonl
from steerlab.data.tokenize import ChatCollator, tokenize_chat
from steerlab.io import write_json, write_text
from steerlab.persona.vectors import PersonaVector
from steerlab.train.arms import Arm, BuildContext, build_arms, ldifs_layers
from steerlab.train.callbacks import CheckpointKeeper, MetricsLog
from steerlab.train.config import ConfigError, ExperimentConfig, config_from_dict, dump_config, load_config
from steerlab.train.jsonl import JsonlLog
from steerlab.train.monitor import PersonaMonitor
from steerlab.train.reference import Reference
from steerlab.train.trainer import SteerlabTrainer, last_complete_checkpoint

log = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RunStateError(RuntimeError):
    """The run folder is in a state that does not fit the request (exists without --resume, config changed)."""


@dataclass
class RunResult:
    run_dir: Path
    final_dir: Path
    global_step: int
    model: nn.Module | None = None  # the trained model (None when the run was already complete)

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return JsonlLog(self.run_dir / "metrics.jsonl").rows()

    @property
    def monitor(self) -> list[dict[str, Any]]:
        return JsonlLog(self.run_dir / "monitor.jsonl").rows()


class ListDataset(Dataset):
    def __init__(self, items: Sequence[dict[str, Any]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


# ---------------------------------------------------------------------------------------------- models


def load_tokenizer(name: str) -> Any:
    """The tokenizer of a model name alone, no weights (``tiny:<arch>``: the in-memory test tokenizer)."""
    if name.startswith("tiny:"):
        from steerlab.models.tiny import tiny_tokenizer

        return tiny_tokenizer("right")
    from transformers import AutoTokenizer

    from steerlab.models import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(name))


def load_base(model_cfg: Any) -> tuple[nn.Module, Any]:
    """The base model and tokenizer of a config (``tiny:<arch>`` builds a seeded test model)."""
    if model_cfg.name.startswith("tiny:"):
        from steerlab.models.tiny import tiny_model

        return tiny_model(model_cfg.name[5:]), load_tokenizer(model_cfg.name)
    from steerlab.models import load_model

    loaded = load_model(model_cfg.name, dtype=_DTYPES[model_cfg.dtype])
    return loaded.model, loaded.tokenizer


def load_finetuned(path: str | Path, base_factory: Callable[[], nn.Module]) -> nn.Module:
    """A fine-tuned model from a run folder (its ``final/``) or a model/adapter folder, in eval mode."""
    path = Path(path)
    if (path / "final").is_dir():
        path = path / "final"
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        return PeftModel.from_pretrained(base_factory(), str(path)).eval()
    if (path / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(str(path)).eval()
    raise FileNotFoundError(f"{path} is neither a run folder with final/, nor an adapter or model folder")


def attach_adapter(model: nn.Module, cfg: ExperimentConfig) -> nn.Module:
    if cfg.finetune.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    ft = cfg.finetune
    lora = LoraConfig(
        r=ft.r,
        lora_alpha=ft.alpha,
        lora_dropout=ft.dropout,
        target_modules=ft.target_modules,
        use_rslora=ft.rslora,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def make_reference(cfg: ExperimentConfig, base: nn.Module) -> Reference | None:
    """The model before training: LoRA disables its adapter; full FT (or a config asking) gets a frozen copy.

    Full FT without kl/ldifs gets none: the monitor then takes its reference features at step 0 and caches them.
    """
    wants = {getattr(cfg.arms, a).reference for a in ("kl", "ldifs") if getattr(cfg.arms, a) is not None}
    if cfg.finetune.method == "full":
        return Reference.frozen_copy(base) if wants else None
    return Reference.frozen_copy(base) if "frozen_copy" in wants else Reference()


# ------------------------------------------------------------------------------------------------ data


def build_examples(cfg: ExperimentConfig, arms: Sequence[Arm]) -> tuple[list[ChatExample], dict[str, Any]]:
    train = load_chat_jsonl(cfg.data.train, on_error=cfg.data.on_bad_record)
    report: dict[str, Any] = {
        "train_file": cfg.data.train,
        "n_loaded": len(train),
        "skipped_records": [{"line": line, "problem": problem} for line, problem in train.report.skipped],
    }
    examples: list[ChatExample] = list(train)[: cfg.data.limit] if cfg.data.limit else list(train)
    for arm in arms:
        examples = arm.transform_data(examples)
    return examples, report


def tokenize_all(
    cfg: ExperimentConfig, tokenizer: Any, examples: Sequence[ChatExample], report: dict
) -> list[dict]:
    features, too_long = [], []
    for ex in examples:
        feat = tokenize_chat(
            tokenizer, ex, cfg.data.max_length, train_on=cfg.data.train_on, on_too_long=cfg.data.on_too_long
        )
        if feat is None:
            too_long.append(ex.name)
            log.warning("skipping %s: longer than max_length=%d", ex.name, cfg.data.max_length)
            continue
        features.append(feat)
    report.update({"n_too_long_skipped": len(too_long), "too_long": too_long, "n_examples": len(features)})
    if too_long:
        log.warning("%d examples longer than max_length=%d were skipped", len(too_long), cfg.data.max_length)
    if not features:
        raise ValueError(f"{cfg.data.train}: no training example left after loading and tokenization")
    return features


# -------------------------------------------------------------------------------------------- run dir


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def prepare_run_dir(cfg: ExperimentConfig, resume: bool, is_main: bool) -> Path | None:
    """Check and tidy the run folder; returns the checkpoint to resume from (or None)."""
    run_dir = cfg.run_dir
    saved = run_dir / "config.yaml"
    if not resume:
        if is_main and run_dir.exists() and any(run_dir.iterdir()):
            raise RunStateError(
                f"{run_dir} already exists: pass --resume to continue it, or choose another name"
            )
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_text(saved, dump_config(cfg))
        return None
    if not saved.is_file() and is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(saved, dump_config(cfg))
    ckpt_dir = run_dir / "checkpoints"
    ckpt = last_complete_checkpoint(ckpt_dir)
    if is_main:
        for partial in ckpt_dir.glob("checkpoint-*") if ckpt_dir.is_dir() else ():
            if ckpt is None or int(partial.name.split("-")[-1]) > int(ckpt.name.split("-")[-1]):
                log.warning("removing incomplete checkpoint %s", partial)
                shutil.rmtree(partial, ignore_errors=True)
        step = int(ckpt.name.split("-")[-1]) if ckpt else -1
        for name in ("metrics.jsonl", "monitor.jsonl"):
            dropped = JsonlLog(run_dir / name).truncate_after(step)
            if dropped:
                log.info("%s: dropped %d rows after step %d (they are recomputed)", name, dropped, step)
    return ckpt


def check_saved_config(cfg: ExperimentConfig) -> None:
    """A resumed run must use the config it started with."""
    saved = cfg.run_dir / "config.yaml"
    if not saved.is_file():
        return
    before = yaml.safe_load(saved.read_text(encoding="utf-8"))
    try:
        # read back through the current schema, so a field added since (with its default) is no change
        before = yaml.safe_load(dump_config(config_from_dict(before, source=str(saved), base=saved.parent)))
    except ConfigError as error:
        raise RunStateError(f"{saved}: the saved config no longer reads ({error})") from None
    now = yaml.safe_load(dump_config(cfg))
    if before != now:
        diff = sorted(_diff_keys(before, now))
        raise RunStateError(
            f"{saved}: the config changed since the run started ({', '.join(diff)}); "
            "use a new name for a new experiment"
        )


_ABSENT = object()


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in set(a) | set(b):
            out += _diff_keys(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


# ---------------------------------------------------------------------------------------------- train


def _checkpointing_kwargs(on: bool) -> dict[str, Any]:
    """Gradient checkpointing (non-reentrant: hooks and captures need no input grads), named per version."""
    if not on:
        return {}
    fields = TrainingArguments.__dataclass_fields__
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}


def training_arguments(cfg: ExperimentConfig) -> TrainingArguments:
    t = cfg.train
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
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
        use_cpu=not torch.cuda.is_available(),  # CPU-only: accelerate needs it for multi-process (gloo) runs
        ddp_backend=("gloo" if not torch.cuda.is_available() else None) if distributed else None,
        ddp_find_unused_parameters=False if distributed else None,
    )


def _monitor(
    cfg: ExperimentConfig, tokenizer: Any, model: nn.Module, reference: Reference | None, is_main: bool
) -> PersonaMonitor | None:
    mon = cfg.monitor
    if mon.every == 0:
        return None
    if mon.chats is None:
        raise ConfigError(
            "monitor.chats: the monitor needs held-out reference chats (or set monitor.every: 0)"
        )
    chats = list(load_chat_jsonl(mon.chats))[: mon.limit]
    path = mon.vector or (cfg.arms.steer.vector if cfg.arms.steer is not None else None)
    vector = layer = prompted = None
    if path is not None:
        pv = PersonaVector.load(path)
        pv.check_model(model, allow_transfer=bool(cfg.arms.steer and cfg.arms.steer.allow_transfer))
        layer = (
            mon.layer
            if mon.layer is not None
            else (
                cfg.arms.steer.layer if mon.vector is None and cfg.arms.steer.layer is not None else pv.layer
            )
        )
        vector = pv.vector(layer)
        prompted = mon.prompted_system if mon.prompted_system is not None else _trait_prompt(pv.meta.trait)
    layers = mon.ldifs_layers or ldifs_layers(cfg, model)
    return PersonaMonitor(
        tokenizer=tokenizer,
        chats=chats,
        log_path=cfg.run_dir / "monitor.jsonl",
        reference_cache=cfg.run_dir / "monitor_reference.safetensors",
        arm=cfg.arm_label,
        every=mon.every,
        max_length=cfg.data.max_length,
        batch_size=mon.batch_size,
        vector=vector,
        projection_layer=layer,
        ldifs_layers=layers,
        reference=reference,
        is_main=is_main,
        prompted_system=prompted or None,
    )


def _trait_prompt(trait: str | None) -> str | None:
    """The first pos system prompt of a packaged trait, or None (with a log line) for any other trait."""
    from steerlab.persona.traits import available_traits, persona_prompt

    if not trait or trait not in available_traits():
        log.info("monitor: trait %r is not packaged; no persona-prompted reference level", trait)
        return None
    return persona_prompt(trait)


def train(
    config: str | Path | ExperimentConfig, *, resume: bool = False, callbacks: Sequence[TrainerCallback] = ()
) -> RunResult:
    """Run (or resume) the experiment; returns where it wrote and the trained model."""
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    is_main = _is_main()
    run_dir, final_dir = cfg.run_dir, cfg.run_dir / "final"
    args = training_arguments(cfg)  # sets up the process group under torchrun
    with args.main_process_first(desc="run folder"):
        if resume:
            check_saved_config(cfg)
        if resume and final_dir.is_dir():
            log.info("%s is complete already (%s exists)", run_dir, final_dir)
            return RunResult(run_dir, final_dir, _final_step(final_dir))
        checkpoint = prepare_run_dir(cfg, resume, is_main)

    set_seed(cfg.seed)
    base, tokenizer = load_base(cfg.model)
    ctx = BuildContext(
        config=cfg,
        model=base,
        tokenizer=tokenizer,
        run_dir=run_dir,
        is_main=is_main,
        load_misaligned=lambda p: load_finetuned(p, lambda: load_base(cfg.model)[0]),
    )
    arms = build_arms(ctx)
    examples, report = build_examples(cfg, arms)
    features = tokenize_all(cfg, tokenizer, examples, report)
    for arm in arms:
        if getattr(arm, "report", None):
            report[arm.name] = arm.report
    reference = make_reference(cfg, base)
    set_seed(cfg.seed)  # the adapter's initialisation does not depend on what data preparation consumed
    model = attach_adapter(base, cfg)
    monitor = _monitor(cfg, tokenizer, model, reference, is_main)
    if is_main:
        write_json(run_dir / "data_report.json", report)
        write_json(
            run_dir / "run.json",
            {
                "name": cfg.name,
                "arm": cfg.arm_label,
                "arms": [a.describe() for a in arms],
                "reference": reference.kind if reference else None,
                "world_size": args.world_size,
                "base_model": cfg.model.name,
                "finetune": cfg.finetune.method,
            },
        )
    extra = [
        MetricsLog(run_dir / "metrics.jsonl"),
        CheckpointKeeper(run_dir / "checkpoints", cfg.train.keep_checkpoints),
    ]
    trainer = SteerlabTrainer(
        model=model,
        args=args,
        train_dataset=ListDataset(features),
        data_collator=ChatCollator(tokenizer),
        processing_class=tokenizer,
        arms=arms,
        reference=reference,
        callbacks=[*extra, *([monitor] if monitor else []), *callbacks],
    )
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    _save_final(trainer, cfg, final_dir, is_main)
    return RunResult(run_dir, final_dir, trainer.state.global_step, model)


def _save_final(trainer: SteerlabTrainer, cfg: ExperimentConfig, final_dir: Path, is_main: bool) -> None:
    """Save the plain fine-tuned model (no hook is attached outside the training forward) atomically."""
    tmp = final_dir.with_name("final.tmp")
    if is_main and tmp.exists():
        shutil.rmtree(tmp)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))
    if is_main:
        write_json(
            tmp / "steerlab.json",
            {
                "name": cfg.name,
                "arm": cfg.arm_label,
                "base_model": cfg.model.name,
                "finetune": cfg.finetune.method,
                "global_step": trainer.state.global_step,
            },
        )
        for junk in ("training_args.bin",):
            (tmp / junk).unlink(missing_ok=True)
        os.replace(tmp, final_dir)
    trainer.accelerator.wait_for_everyone()


def _final_step(final_dir: Path) -> int:
    import json

    info = final_dir / "steerlab.json"
    return int(json.loads(info.read_text())["global_step"]) if info.is_file() else -1
