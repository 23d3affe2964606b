"""Run-folder callbacks: the metrics JSONL and complete-checkpoint bookkeeping.

`MetricsLog` writes one JSON row per logged step: the trainer's own values plus every loss key the run's
arms declare (deterministic keys only, so two runs with the same seed give identical files). A key that is
neither is not written; a declared key the trainer did not log is an error, never a silent gap. `CheckpointKeeper` marks a checkpoint complete only after transformers has written
all of it (``on_save`` fires after the save), and rotates old ones itself *after* that, so a kill during a
save never leaves the run without a usable checkpoint (resume ignores checkpoints without the marker).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from steerlab.io import write_json
from steerlab.train.jsonl import JsonlLog
from steerlab.train.trainer import CHECKPOINT_MARKER

# the trainer's own values: logged key -> column name
TRAINER_KEYS = {
    "loss": "loss",
    "lm_loss": "lm_loss",
    "learning_rate": "lr",
    "grad_norm": "grad_norm",
    "epoch": "epoch",
}


class MetricsLog(TrainerCallback):
    """One row per logged training step: ``step``, the trainer's values, and ``loss_keys`` (the arms' terms)."""

    def __init__(self, path: str | Path, loss_keys: Iterable[str] = ()) -> None:
        self.log = JsonlLog(path)
        self.loss_keys = tuple(loss_keys)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        missing = [key for key in self.loss_keys if key not in logs]
        if missing:
            raise RuntimeError(f"step {state.global_step}: the arms' loss terms {missing} were not logged")
        row: dict[str, float] = {"step": state.global_step}
        row.update({out: float(logs[key]) for key, out in TRAINER_KEYS.items() if key in logs})
        row.update({key: float(logs[key]) for key in self.loss_keys})
        self.log.append(row)


class CheckpointKeeper(TrainerCallback):
    """Marks a saved checkpoint complete, then keeps the newest ``keep`` complete ones."""

    def __init__(self, folder: str | Path, keep: int) -> None:
        self.folder = Path(folder)
        self.keep = keep

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        ckpt = self.folder / f"checkpoint-{state.global_step}"
        if ckpt.is_dir():
            write_json(ckpt / CHECKPOINT_MARKER, {"step": state.global_step})
        done = sorted(
            (p for p in self.folder.glob("checkpoint-*") if (p / CHECKPOINT_MARKER).is_file()),
            key=lambda p: int(p.name.split("-")[-1]),
        )
        for old in done[: max(0, len(done) - self.keep)]:
            shutil.rmtree(old, ignore_errors=True)
