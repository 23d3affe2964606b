"""``sft``: plain supervised fine-tuning, the no-defense baseline. Every seam is the base no-op."""

from __future__ import annotations

from dataclasses import dataclass

from steerlab.train.arms.base import Arm, BuildContext
from steerlab.train.arms.registry import register_arm


@dataclass
class SftArmConfig:
    """``sft: {}`` names the plain baseline explicitly; it has no settings."""


@register_arm
class SftArm(Arm):
    """Plain fine-tuning (the baseline every defense is compared with): no data change, no hook, no loss term."""

    name = "sft"
    order = 0
    config_class = SftArmConfig

    @classmethod
    def from_config(cls, cfg: SftArmConfig, ctx: BuildContext) -> SftArm:
        """The arm (it has no settings)."""
        return cls()
