"""The training arms, one module each, and `build_arms`, which turns a config's ``arms`` into objects.

A new arm is one file with an `Arm` subclass plus one line here and one config dataclass.
"""

from __future__ import annotations

from steerlab.models.architectures import num_layers
from steerlab.train.arms.base import ARM_ORDER, Arm, BuildContext, Forward
from steerlab.train.arms.inoculate import InoculateArm
from steerlab.train.arms.interleave import InterleaveArm
from steerlab.train.arms.kl import KLArm
from steerlab.train.arms.ldifs import LdifsArm, default_blocks
from steerlab.train.arms.sft import SftArm
from steerlab.train.arms.steer import SteerArm


def ldifs_layers(cfg, model) -> list[int]:
    """The LDIFS blocks of a config: the ldifs arm's, else 5 evenly spaced ones; checked against the model."""
    depth = num_layers(model)
    arm = cfg.arms.ldifs
    layers = (arm.layers if arm is not None and arm.layers else None) or default_blocks(
        depth, arm.n_blocks if arm is not None else 5
    )
    bad = [layer for layer in layers if not 0 <= layer < depth]
    if bad:
        raise ValueError(f"arms.ldifs.layers: {bad} outside 0..{depth - 1} (the model has {depth} blocks)")
    return sorted(set(layers))


def build_arms(ctx: BuildContext) -> list[Arm]:
    """One object per enabled arm, in `ARM_ORDER` (the order in which they transform the data)."""
    cfg = ctx.config
    arms: list[Arm] = []
    for name in ARM_ORDER:
        sub = getattr(cfg.arms, name)
        if sub is None:
            continue
        if name == "sft":
            arms.append(SftArm())
        elif name == "inoculate":
            arms.append(InoculateArm(sub.system_prompt, sub.existing))
        elif name == "interleave":
            arms.append(InterleaveArm(sub, ctx))
        elif name == "steer":
            arms.append(SteerArm.from_path(sub.vector, ctx.model, sub.alpha, sub.layer, sub.allow_transfer))
        elif name == "kl":
            arms.append(KLArm(sub.weight, sub.tokens))
        elif name == "ldifs":
            arms.append(LdifsArm(sub.weight, ldifs_layers(cfg, ctx.model), sub.tokens))
    return arms


__all__ = [
    "ARM_ORDER",
    "Arm",
    "BuildContext",
    "Forward",
    "InoculateArm",
    "InterleaveArm",
    "KLArm",
    "LdifsArm",
    "SftArm",
    "SteerArm",
    "build_arms",
    "default_blocks",
    "ldifs_layers",
]
