"""The drift alarm: flag — and if asked, stop — a run whose persona projection crosses a threshold.

What a fine-tuning provider can run on a customer's job without knowing the data: the persona monitor's
projection (`steerlab.train.monitor`) read every few steps against a level fixed before training. By
default the threshold is the *evil-prompted level* the monitor measures at step 0 — the projection of the
same chats when the base model is told to be the persona: a model whose own projection gets there has taken
on as much of the persona as a prompt gives it. ``level`` moves it along the base → prompted distance
(``threshold = base + level * (prompted - base)``; 1.0 = the prompted level), ``threshold`` sets it in
projection units. The direction of crossing is the persona's side of the base level. Anchor: trait-space
monitoring of checkpoints flagged dangerous ones with AUROC 0.99 on 7-9B models (arXiv:2606.07631).

The run folder's ``alarm.json`` records the armed threshold (and where it came from) at step 0, and, once
the projection crosses it, ``fired_step`` and ``fired_projection`` (the first crossing only) and whether the
run was stopped. Monitor rows from that step on carry ``"alarm": true``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.io import write_json
from steerlab.train.schema import check_number

ALARM_FILE = "alarm.json"


@dataclass
class AlarmConfig:
    enabled: bool = True
    level: float = 1.0  # fraction of the base -> persona-prompted distance
    threshold: float | None = None  # projection units; overrides level
    stop: bool = False  # stop training when it fires

    def __post_init__(self) -> None:
        check_number("level", self.level, gt=0)
        check_number("threshold", self.threshold, optional=True)


class DriftAlarm:
    """Armed at step 0 (`arm`), then `check`ed on every monitor reading; state lives in ``alarm.json``."""

    def __init__(self, cfg: AlarmConfig, run_dir: str | Path, is_main: bool = True) -> None:
        self.cfg = cfg
        self.path = Path(run_dir) / ALARM_FILE
        self.is_main = is_main
        self.state: dict[str, Any] | None = None

    @property
    def armed(self) -> bool:
        return bool(self.state and self.state.get("threshold") is not None)

    @property
    def fired(self) -> bool:
        return bool(self.state and self.state.get("fired_step") is not None)

    def arm(self, base: float, prompted: float | None) -> None:
        """Set the threshold from the step-0 base projection and the persona-prompted one."""
        if self.cfg.threshold is not None:
            threshold, source = self.cfg.threshold, "monitor.alarm.threshold"
            direction = 1.0 if threshold >= base else -1.0
        elif prompted is not None and prompted != base:
            threshold = base + self.cfg.level * (prompted - base)
            source = f"base + {self.cfg.level} x (persona-prompted - base) at step 0"
            direction = 1.0 if prompted > base else -1.0
        else:
            threshold, source, direction = None, "not armed: no persona-prompted level at step 0", 0.0
        self.state = {
            "threshold": threshold,
            "source": source,
            "direction": direction,
            "base": base,
            "prompted": prompted,
            "stop": self.cfg.stop,
            "fired_step": None,
            "fired_projection": None,
            "stopped": False,
        }
        self._save()

    def resume(self) -> None:
        """Read the state a run wrote before it was killed (the threshold stays the step-0 one)."""
        if self.path.is_file():
            self.state = json.loads(self.path.read_text(encoding="utf-8"))

    @property
    def threshold(self) -> float | None:
        """The armed threshold (projection units); None before `arm` or when unarmed."""
        return None if self.state is None else self.state.get("threshold")

    def forget_after(self, step: int) -> None:
        """A resumed run recomputes the readings after ``step``: a firing after it is taken back."""
        if self.state is not None and self.fired and self.state["fired_step"] > step:
            self.state.update(fired_step=None, fired_projection=None, stopped=False)
            self._save()

    def check(self, step: int, projection: float) -> bool:
        """True when this reading crosses the threshold for the first time (the firing is recorded)."""
        if not self.armed or self.fired:
            return False
        assert self.state is not None
        if (projection - self.state["threshold"]) * self.state["direction"] < 0:
            return False
        self.state.update(fired_step=step, fired_projection=projection, stopped=self.cfg.stop)
        self._save()
        return True

    def _save(self) -> None:
        if self.is_main and self.state is not None:
            write_json(self.path, self.state)
