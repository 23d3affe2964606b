"""``ldifs``: loss += lambda * || phi_theta(x) - phi_ref(x) ||^2, a feature-space distance to the reference.

phi concatenates the residual stream at the chosen blocks (default: 5 evenly spaced blocks), captured through
the hook layer with ``Capture(detach=False)`` so gradients flow through phi_theta; the reference features
come from the no-grad reference forward.

Normalisation (why: the residual norm grows with depth and a few tokens carry huge norms, so raw squared
distances would be dominated by the last block and those tokens): block ``l`` of phi at token ``t`` is
``h_l,t / (sqrt(L) * ||h_ref_l,t||)`` with L the number of chosen blocks, i.e. each block is scaled by the
reference norm at that token (a constant, no gradient). Then

    ||phi_theta - phi_ref||^2 = (1/L) * sum_l ||h_l,t - h_ref_l,t||^2 / ||h_ref_l,t||^2

a relative squared error averaged over blocks; the loss averages it over the chosen tokens (default all
real tokens; option: assistant tokens). `feature_distance` is shared with the monitor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from steerlab.hooks import Capture, Op
from steerlab.train.arms.base import Arm, Forward

EPS = 1e-6


def default_blocks(n_layers: int, n_blocks: int = 5) -> list[int]:
    """``n_blocks`` evenly spaced blocks from the first to the last (fewer if the model is shallower)."""
    if n_blocks == 1:
        return [n_layers - 1]
    return sorted({round(i * (n_layers - 1) / (n_blocks - 1)) for i in range(n_blocks)})


def feature_distance(hidden: Tensor, ref_hidden: Tensor, mask: Tensor) -> Tensor:
    """Sum over masked tokens of ||h - h_ref||^2 / ||h_ref||^2 (float32); ``mask`` is [B, T]."""
    diff = (hidden.float() - ref_hidden.float()).pow(2).sum(-1)
    scale = ref_hidden.detach().float().pow(2).sum(-1) + EPS
    return (diff / scale * mask.to(diff.dtype)).sum()


class LdifsArm(Arm):
    name = "ldifs"
    needs_reference = True

    def __init__(self, weight: float, layers: list[int], tokens: str = "all") -> None:
        super().__init__()
        if not layers:
            raise ValueError("ldifs needs at least one layer")
        self.loss_weights = {"ldifs": float(weight)}
        self.layers = sorted(set(layers))
        self.tokens = tokens
        self._ops = [Capture(layer=layer, scope="all", reduce="none", detach=False) for layer in self.layers]

    def hooks(self, model: nn.Module) -> list[Op]:
        return list(self._ops)

    def extra_loss(self, model: nn.Module, batch: dict[str, Tensor], fwd: Forward) -> dict[str, Tensor]:
        if fwd.ref_captures is None:
            raise RuntimeError("the ldifs arm needs the reference forward, but the trainer ran none")
        mask = batch["assistant_mask" if self.tokens == "assistant" else "attention_mask"].to(bool)
        total = torch.zeros((), device=fwd.logits.device)
        for layer in self.layers:
            total = total + feature_distance(
                fwd.captures.get(layer), fwd.ref_captures.get(layer).detach(), mask
            )
        return {"ldifs": total / (len(self.layers) * fwd.counts[f"feat_{self.tokens}"])}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weight": self.loss_weights["ldifs"],
            "layers": self.layers,
            "tokens": self.tokens,
        }
