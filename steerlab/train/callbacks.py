"""Run-folder callbacks: the metrics JSONL and complete-checkpoint bookkeeping.

`MetricsLog` writes one JSON row per logged step (deterministic keys only, so two runs with the same seed
give identical files). `CheckpointKeeper` marks a checkpoint complete only after transformers has written
all of it (``on_save`` fires after the save), and rotates old ones itself *after* that, so a kill during a
save never leaves the run without a usable checkpoint (resume ignores checkpoints without the marker).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers import TrainerCallback

from steerlab.io import write_json
from steerlab.train.jsonl import JsonlLog
from steerlab.train.trainer import CHECKPOINT_MARKER

METRIC_KEYS = {
    "loss": "loss",
    "lm_loss": "lm_loss",
    "kl": "kl",
    "ldifs": "ldifs",
    "learning_rate": "lr",
    "grad_norm": "grad_norm",
    "epoch": "epoch",
}


class MetricsLog(TrainerCallback):
    def __init__(self, path: str | Path) -> None:
        self.log = JsonlLog(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        row = {"step": state.global_step}
        row.update({out: float(logs[key]) for key, out in METRIC_KEYS.items() if key in logs})
        self.log.append(row)


class CheckpointKeeper(TrainerCallback):
    def __init__(self, folder: str | Path, keep: int) -> None:
        self.folder = Path(folder)
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
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
