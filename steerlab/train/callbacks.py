"""Run-folder callbacks: the metrics JSONL, complete-checkpoint bookkeeping and the run's progress bar.

`MetricsLog` writes one JSON row per logged step: the trainer's own values plus every loss key the run's
arms declare (deterministic keys only, so two runs with the same seed give identical files). A key that is
neither is not written; a declared key the trainer did not log is an error, never a silent gap. Values
arms report with a log (`Arm.log_values`, e.g. the steering coefficient) are written when present. `CheckpointKeeper` marks a checkpoint complete only after transformers has written
all of it (``on_save`` fires after the save), and rotates old ones itself *after* that, so a kill during a
save never leaves the run without a usable checkpoint (resume ignores checkpoints without the marker).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from torch import nn
from tqdm.auto import tqdm
from transformers import TrainerControl, TrainerState, TrainingArguments

from steerlab.io import write_json
from steerlab.train.arms.registry import all_log_keys
from steerlab.train.events import TrainingEvents
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


class MetricsLog(TrainingEvents):
    """One row per logged training step: ``step``, the trainer's values, and ``loss_keys`` (the arms' terms)."""

    def __init__(self, path: str | Path, loss_keys: Iterable[str] = ()) -> None:
        self.log = JsonlLog(path)
        self.loss_keys = tuple(loss_keys)

    def logged(
        self, state: TrainerState, control: TrainerControl, logs: dict[str, float], model: nn.Module
    ) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        missing = [key for key in self.loss_keys if key not in logs]
        if missing:
            raise RuntimeError(f"step {state.global_step}: the arms' loss terms {missing} were not logged")
        row: dict[str, float] = {"step": state.global_step}
        row.update({out: float(logs[key]) for key, out in TRAINER_KEYS.items() if key in logs})
        row.update({key: float(logs[key]) for key in self.loss_keys})
        row.update({key: float(logs[key]) for key in all_log_keys() if key in logs})
        self.log.append(row)


class CheckpointKeeper(TrainingEvents):
    """Marks a saved checkpoint complete, then keeps the newest ``keep`` complete ones."""

    def __init__(self, folder: str | Path, keep: int) -> None:
        self.folder = Path(folder)
        self.keep = keep

    def saved(self, state: TrainerState) -> None:
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


class RunProgress(TrainingEvents):
    """One progress bar per run, named by its run folder, with the last logged loss beside it.

    Replaces transformers' printing of every log dictionary. ``disable=None`` lets tqdm hide the bar when
    stderr is not a terminal (logs of a batch job, a Ray worker), so it never floods a log file.
    """

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def begin(self, args: TrainingArguments, state: TrainerState, model: nn.Module) -> None:
        if state.is_world_process_zero:
            name = Path(args.output_dir or "run").parent.name  # <run_dir>/checkpoints
            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc=name, unit="step", disable=None
            )

    def step_end(self, state: TrainerState, control: TrainerControl, model: nn.Module) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def logged(
        self, state: TrainerState, control: TrainerControl, logs: dict[str, float], model: nn.Module
    ) -> None:
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)

    def end(self, state: TrainerState, model: nn.Module) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
