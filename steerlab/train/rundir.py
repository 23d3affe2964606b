"""The run folder: created or checked on start, tidied on resume, and the final model saved atomically.

Resume (``resume=True``): the saved config must equal the current one; training restarts from the newest
*complete* checkpoint (model, optimizer, scheduler, RNG and data position are transformers'), incomplete
checkpoints are deleted, and log rows after the checkpoint's step are dropped because the resumed run
writes them again (same seed, same values): nothing before the kill is lost or duplicated.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from torch import nn

from steerlab.io import same_setting, vanished_path, write_json, write_text
from steerlab.train.config import ConfigError, ExperimentConfig, config_from_dict, dump_config
from steerlab.train.jsonl import JsonlLog
from steerlab.train.trainer import last_complete_checkpoint

if TYPE_CHECKING:
    from steerlab.train.trainer import SteerlabTrainer

log = logging.getLogger(__name__)
LOGS = ("metrics.jsonl", "monitor.jsonl")


class RunStateError(RuntimeError):
    """The run folder is in a state that does not fit the request (exists without --resume, config changed)."""


@dataclass
class RunResult:
    """Where a run wrote, how far it got, and the trained model (None when it was complete already)."""

    run_dir: Path
    final_dir: Path
    global_step: int
    model: nn.Module | None = None

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return JsonlLog(self.run_dir / "metrics.jsonl").rows()

    @property
    def monitor(self) -> list[dict[str, Any]]:
        return JsonlLog(self.run_dir / "monitor.jsonl").rows()


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[-1])


def prepare_run_dir(cfg: ExperimentConfig, resume: bool, is_main: bool) -> Path | None:
    """Check and tidy the run folder; returns the checkpoint to resume from (or None).

    Raises `RunStateError` when the folder exists and ``resume`` is False.
    """
    run_dir, saved = cfg.run_dir, cfg.run_dir / "config.yaml"
    if not resume and is_main and run_dir.exists() and any(run_dir.iterdir()):
        raise RunStateError(f"{run_dir} already exists: pass --resume to continue it, or choose another name")
    if is_main and (not resume or not saved.is_file()):
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(saved, dump_config(cfg))
    if not resume:
        return None
    ckpt_dir = run_dir / "checkpoints"
    ckpt = last_complete_checkpoint(ckpt_dir)
    if is_main:
        for partial in ckpt_dir.glob("checkpoint-*") if ckpt_dir.is_dir() else ():
            if ckpt is None or _step_of(partial) > _step_of(ckpt):
                log.warning("removing incomplete checkpoint %s", partial)
                shutil.rmtree(partial, ignore_errors=True)
        step = _step_of(ckpt) if ckpt else -1
        for name in LOGS:
            dropped = JsonlLog(run_dir / name).truncate_after(step)
            if dropped:
                log.info("%s: dropped %d rows after step %d (they are recomputed)", name, dropped, step)
    return ckpt


def check_saved_config(cfg: ExperimentConfig) -> None:
    """A resumed run must use the config it started with; raises `RunStateError` naming the changed keys."""
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
    if _diff_keys(before, now):
        raise RunStateError(
            f"{saved}: the config changed since the run started ({', '.join(sorted(_diff_keys(before, now)))}); "
            "use a new name for a new experiment"
        )


_ABSENT = object()


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in set(a) | set(b):
            out += _diff_keys(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{prefix}{key}.")
        return out
    if same_setting(a, b):
        return []
    gone = " (a saved path that no longer exists: its content cannot be compared)" if vanished_path(a) else ""
    return [prefix.rstrip(".") + gone]


def save_final(trainer: SteerlabTrainer, cfg: ExperimentConfig, final_dir: Path, is_main: bool) -> None:
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
        (tmp / "training_args.bin").unlink(missing_ok=True)
        os.replace(tmp, final_dir)
    trainer.accelerator.wait_for_everyone()


def final_step(final_dir: Path) -> int:
    """The step a finished run's ``final/`` was saved at (-1 if it does not say)."""
    info = final_dir / "steerlab.json"
    return int(json.loads(info.read_text())["global_step"]) if info.is_file() else -1
