"""``steer`` (preventive steering): add ``alpha * v`` at layer ``l`` to every token of every training forward.

The Add op lives only inside the trainer's training forward (``hooks`` is asked for ops only while the model
is in training mode, and the hook context closes with the forward), so evaluation, the monitor and the saved
model never see it: the saved model is the plain fine-tuned model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from steerlab.hooks import Add, Op
from steerlab.persona.vectors import PersonaVector
from steerlab.train.arms.base import Arm


class SteerArm(Arm):
    name = "steer"

    def __init__(self, vector: PersonaVector, alpha: float, layer: int | None = None) -> None:
        super().__init__()
        self.layer = vector.layer if layer is None else layer
        self.alpha = float(alpha)
        self.direction = vector.vector(self.layer).detach().float()
        self._op: Add | None = None

    @classmethod
    def from_path(
        cls, path: str, model: nn.Module, alpha: float, layer: int | None, allow_transfer: bool
    ) -> SteerArm:
        vector = PersonaVector.load(path)
        vector.check_model(model, allow_transfer=allow_transfer)
        return cls(vector, alpha, layer)

    def hooks(self, model: nn.Module) -> list[Op]:
        device = next(model.parameters()).device
        if self._op is None or self._op.vector.device != device:
            self._op = Add(layer=self.layer, scope="all", vector=self.direction.to(device), alpha=self.alpha)
        return [self._op]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layer": self.layer,
            "alpha": self.alpha,
            "vector_norm": float(torch.linalg.vector_norm(self.direction)),
        }
