"""``steer`` (preventive steering): add ``alpha * v`` at layer ``l`` to every token of every training forward.

The Add op lives only inside the trainer's training forward (``hooks`` is asked for ops only while the model
is in training mode, and the hook context closes with the forward), so evaluation, the monitor and the saved
model never see it: the saved model is the plain fine-tuned model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from steerlab.hooks import Add, Op
from steerlab.persona.vectors import PersonaVector
from steerlab.train.arms.base import Arm, BuildContext
from steerlab.train.arms.registry import register_arm
from steerlab.train.schema import ConfigError, check_number, path_field


@dataclass
class SteerArmConfig:
    """``steer:`` settings: the vector file, ``alpha`` (times the stored vector, residual units) and the layer."""

    vector: str | None = path_field()  # a saved PersonaVector (.safetensors + .json); required
    alpha: float = 4.0
    layer: int | None = None  # default: the vector's chosen layer
    allow_transfer: bool = False  # accept a vector extracted from another model of the same shape

    def __post_init__(self) -> None:
        if self.vector is None:
            raise ConfigError("vector: required key is missing")
        check_number("alpha", self.alpha)  # a NaN or infinite coefficient would poison every forward
        check_number("layer", self.layer, ge=0, integer=True, optional=True)


@register_arm
class SteerArm(Arm):
    """Preventive steering (Chen et al. 2025, "Persona Vectors", arXiv:2507.21509; as an in-training defense,
    Kaczér et al. 2025, "In-Training Defenses against Emergent Misalignment in Language Models", arXiv:2508.06249): ``h += alpha * v`` at one layer on every token during training forwards only."""

    name = "steer"
    order = 30
    label_order = 10
    config_class = SteerArmConfig
    log_keys = ("steer_alpha",)  # the coefficient in force (steer_hold reports its changing one here too)

    def __init__(self, vector: PersonaVector, alpha: float, layer: int | None = None) -> None:
        super().__init__()
        self.layer = vector.layer if layer is None else layer
        self.alpha = float(alpha)
        self.direction = vector.vector(self.layer).detach().float()
        self._op: Add | None = None

    @classmethod
    def from_config(cls, cfg: SteerArmConfig, ctx: BuildContext) -> SteerArm:
        """Load the config's vector for ``ctx.model`` (see `from_path`)."""
        assert cfg.vector is not None  # SteerArmConfig refuses a missing vector
        return cls.from_path(cfg.vector, ctx.model, cfg.alpha, cfg.layer, cfg.allow_transfer)

    @classmethod
    def from_path(
        cls, path: str, model: nn.Module, alpha: float, layer: int | None, allow_transfer: bool
    ) -> SteerArm:
        """The arm for the vector saved at ``path``; raises what `PersonaVector.load` raises and
        `IncompatibleVectorError` for a vector made for another model (unless ``allow_transfer``)."""
        vector = PersonaVector.load(path)
        vector.check_model(model, allow_transfer=allow_transfer)
        return cls(vector, alpha, layer)

    def hooks(self, model: nn.Module) -> list[Op]:
        """One ``Add(alpha * v)`` at the arm's layer on every token, on the model's device."""
        device = next(model.parameters()).device
        if self._op is None or self._op.vector.device != device:
            self._op = Add(layer=self.layer, scope="all", vector=self.direction.to(device), alpha=self.alpha)
        return [self._op]

    def log_values(self) -> dict[str, float]:
        return {"steer_alpha": self.alpha}

    def describe(self) -> dict[str, Any]:
        """Name, layer, alpha and the vector's norm (residual units)."""
        return {
            "name": self.name,
            "layer": self.layer,
            "alpha": self.alpha,
            "vector_norm": float(torch.linalg.vector_norm(self.direction)),
        }
