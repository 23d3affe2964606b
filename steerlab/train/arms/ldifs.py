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

**Cached reference** (``cache: true``): one pass before training stores the reference features of the
chosen tokens at the chosen blocks in ``cache_dtype`` (float16 by default: a relative rounding error of
2^-11 per element, i.e. a distance floor near 1e-7, far below the values training reaches; float32 makes
the cached loss equal the live one). A value outside float16's range is an error naming the block
(use bfloat16 there). The loss is the same sum over the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from steerlab.hooks import Capture, Captures, Op
from steerlab.models.architectures import num_layers
from steerlab.train.arms.base import Arm, BuildContext, Forward, ReferenceArmConfig
from steerlab.train.arms.registry import register_arm
from steerlab.train.schema import check_number

if TYPE_CHECKING:
    from steerlab.train.config import ExperimentConfig

EPS = 1e-6
CACHE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class LdifsArmConfig(ReferenceArmConfig):
    """``ldifs:`` settings: ``weight`` (lambda), the blocks, the positions and the cache's dtype."""

    weight: float = 1.0  # lambda
    layers: list[int] | None = None  # default: n_blocks evenly spaced blocks
    n_blocks: int = 5
    tokens: Literal["assistant", "all"] = "all"
    cache_dtype: Literal["float16", "bfloat16", "float32"] = "float16"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("n_blocks", self.n_blocks, ge=1, integer=True)
        for i, layer in enumerate(self.layers or []):
            check_number(f"layers[{i}]", layer, ge=0, integer=True)


def default_blocks(n_layers: int, n_blocks: int = 5) -> list[int]:
    """``n_blocks`` evenly spaced blocks from the first to the last (fewer if the model is shallower)."""
    if n_blocks == 1:
        return [n_layers - 1]
    return sorted({round(i * (n_layers - 1) / (n_blocks - 1)) for i in range(n_blocks)})


def ldifs_layers(cfg: ExperimentConfig, model: nn.Module) -> list[int]:
    """The LDIFS blocks of an experiment config: the ldifs arm's, else 5 evenly spaced ones.

    Raises ValueError naming ``arms.ldifs.layers`` when a block is outside the model.
    """
    depth = num_layers(model)
    arm = cfg.arms.ldifs
    layers = (arm.layers if arm is not None and arm.layers else None) or default_blocks(
        depth, arm.n_blocks if arm is not None else 5
    )
    bad = [layer for layer in layers if not 0 <= layer < depth]
    if bad:
        raise ValueError(f"arms.ldifs.layers: {bad} outside 0..{depth - 1} (the model has {depth} blocks)")
    return sorted(set(layers))


def feature_distance(hidden: Tensor, ref_hidden: Tensor, mask: Tensor) -> Tensor:
    """Sum over masked tokens of ||h - h_ref||^2 / ||h_ref||^2, float32 scalar.

    ``hidden``/``ref_hidden`` are [..., d] (e.g. [B, T, d]) and ``mask`` their leading shape (e.g. [B, T]).
    """
    diff = (hidden.float() - ref_hidden.float()).pow(2).sum(-1)
    scale = ref_hidden.detach().float().pow(2).sum(-1) + EPS
    return (diff / scale * mask.to(diff.dtype)).sum()


@register_arm
class LdifsArm(Arm):
    """LDIFS, the l2 distance in feature space to the model before training (Mukhoti et al. 2023, "Fine-tuning
    can cripple your foundation model; preserving features may be the solution", arXiv:2308.13320; against
    emergent misalignment in Kaczér et al. 2025, arXiv:2508.06249): ``+ lambda |h_theta - h_ref|^2 / |h_ref|^2``
    over the residual stream at a few blocks. ValueError at construction for no layer."""

    name = "ldifs"
    order = 50
    label_order = 30
    config_class = LdifsArmConfig
    loss_keys = ("ldifs",)
    needs_reference = True
    cacheable = True

    def __init__(
        self, weight: float, layers: list[int], tokens: str = "all", cache_dtype: str = "float16"
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("ldifs needs at least one layer")
        self.loss_weights = {"ldifs": float(weight)}
        self.layers = sorted(set(layers))
        self.tokens = tokens
        self.cache_dtype = cache_dtype
        self._ops = [Capture(layer=layer, scope="all", reduce="none", detach=False) for layer in self.layers]

    @classmethod
    def from_config(cls, cfg: LdifsArmConfig, ctx: BuildContext) -> LdifsArm:
        """The arm at the config's blocks (default: evenly spaced); ValueError for a block outside the model."""
        return cls(cfg.weight, ldifs_layers(ctx.config, ctx.model), cfg.tokens, cfg.cache_dtype)

    def hooks(self, model: nn.Module) -> list[Op]:
        """Gradient-keeping captures of the residual stream at the arm's blocks."""
        return list(self._ops)

    def _mask(self, batch: dict[str, Tensor]) -> Tensor:
        return batch["assistant_mask" if self.tokens == "assistant" else "attention_mask"].bool()

    def extra_loss(self, model: nn.Module, batch: dict[str, Tensor], fwd: Forward) -> dict[str, Tensor]:
        """``{"ldifs": sum of block-averaged relative distances / global token count}``; RuntimeError when the
        reference (forward or cache) it needs was not passed."""
        mask = self._mask(batch)
        total = torch.zeros((), device=fwd.logits.device)
        if self.cache:
            if fwd.ref_cached is None or self.name not in fwd.ref_cached:
                raise RuntimeError("the ldifs arm reads the reference cache, but the trainer passed none")
            records = fwd.ref_cached[self.name]
            for layer in self.layers:
                hidden = fwd.captures.get(layer)[mask]
                ref = torch.cat([r[f"layer{layer}"] for r in records]).to(hidden.device)
                if ref.shape != hidden.shape:
                    raise RuntimeError(
                        f"ldifs cache: block {layer} has {tuple(ref.shape)}, the batch {tuple(hidden.shape)}"
                    )
                total = total + feature_distance(hidden, ref, torch.ones(len(ref), device=ref.device))
        else:
            if fwd.ref_captures is None:
                raise RuntimeError("the ldifs arm needs the reference forward, but the trainer ran none")
            for layer in self.layers:
                total = total + feature_distance(
                    fwd.captures.get(layer), fwd.ref_captures.get(layer).detach(), mask
                )
        return {"ldifs": total / (len(self.layers) * fwd.counts[f"feat_{self.tokens}"])}

    def cache_record(
        self, batch: dict[str, Tensor], ref_logits: Tensor, ref_captures: Captures
    ) -> list[dict[str, Tensor]]:
        """Per example: the reference features of its chosen tokens at each block, ``layer{l}`` [n, d].

        Raises ValueError naming the block when a value does not fit ``cache_dtype``.
        """
        mask, dtype = self._mask(batch), CACHE_DTYPES[self.cache_dtype]
        out: list[dict[str, Tensor]] = [{} for _ in range(len(mask))]
        for layer in self.layers:
            feats = ref_captures.get(layer).detach()
            stored = feats.to(dtype)
            if not torch.isfinite(stored).all() and torch.isfinite(feats).all():
                raise ValueError(
                    f"arms.ldifs.cache_dtype: block {layer}'s features exceed {self.cache_dtype}'s range "
                    f"(max |h| = {float(feats.abs().max()):.3g}); use bfloat16 or float32"
                )
            for b in range(len(mask)):
                out[b][f"layer{layer}"] = stored[b][mask[b]].cpu().contiguous()
        return out

    def cache_settings(self) -> dict[str, Any]:
        """The blocks, positions and dtype the cache was built with."""
        return {"layers": self.layers, "tokens": self.tokens, "cache_dtype": self.cache_dtype}

    def describe(self) -> dict[str, Any]:
        """Name, weight, blocks, positions (and the cache dtype when cached)."""
        return {
            "name": self.name,
            "weight": self.loss_weights["ldifs"],
            "layers": self.layers,
            "tokens": self.tokens,
        } | ({"cache": True, "cache_dtype": self.cache_dtype} if self.cache else {})
