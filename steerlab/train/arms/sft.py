"""``sft``: plain supervised fine-tuning, the no-defense baseline. Every seam is the base no-op."""

from __future__ import annotations

from steerlab.train.arms.base import Arm


class SftArm(Arm):
    name = "sft"
