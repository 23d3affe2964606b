"""Operations on the residual stream at the output of decoder block ``layer``.

Every op is a small frozen dataclass with a pure ``apply(hidden, mask)`` that returns a *new* tensor (never
an in-place write into a tensor autograd needs). The same code runs under every backend, which is what
makes the backends agree to the last bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from steerlab.hooks.scopes import Scope, check_scope
from steerlab.linalg import unit_vector

CaptureKey = int | str  # a Capture's record key: its layer, unless it was given its own key


@dataclass(frozen=True, eq=False)
class Op:
    """One operation at the output of decoder block ``layer`` on the positions ``scope`` selects.

    Raises TypeError for a layer that is not an int, ValueError for an unknown scope (at construction).
    """

    layer: int
    scope: Scope = "all"

    def __post_init__(self) -> None:
        if not isinstance(self.layer, int) or isinstance(self.layer, bool):
            raise TypeError(f"layer must be an int, got {self.layer!r}")
        check_scope(self.scope)

    @property
    def vector_width(self) -> int | None:
        """``d_model`` of the op's vector (checked against the model's hidden size), None without one."""
        vector = getattr(self, "vector", None)
        return None if vector is None else int(vector.shape[-1])

    def apply(self, hidden: Tensor, mask: Tensor) -> Tensor:  # pragma: no cover - interface
        """The new hidden state ``[B, T, d]`` from ``hidden`` ``[B, T, d]`` and the scope ``mask`` ``[B, T]``
        (a new tensor: never written in place), in ``hidden``'s dtype and device."""
        raise NotImplementedError


def _check_vector(vector: Tensor) -> None:
    if not isinstance(vector, Tensor) or vector.dim() != 1:
        shape = tuple(vector.shape) if isinstance(vector, Tensor) else type(vector).__name__
        raise ValueError(f"a steering vector must be a 1-D tensor [d_model], got {shape}")


@dataclass(frozen=True, eq=False)
class Add(Op):
    """h <- h + alpha * v on the scoped positions (activation addition: Turner et al. 2023, arXiv:2308.10248;
    with a persona vector, preventive steering: Chen et al. 2025, arXiv:2507.21509).

    ``vector`` is ``[d_model]`` in residual-stream units (not normalised: scale it, or use ``alpha``);
    ValueError when it is not a 1-D tensor."""

    vector: Tensor = field(default=None)  # type: ignore[assignment]
    alpha: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_vector(self.vector)

    def apply(self, hidden: Tensor, mask: Tensor) -> Tensor:
        delta = (self.alpha * self.vector).to(device=hidden.device, dtype=hidden.dtype)
        return hidden + delta * mask.unsqueeze(-1).to(hidden.dtype)


@dataclass(frozen=True, eq=False)
class _DirectionOp(Op):
    """An op that acts along the unit direction of ``vector`` (which must therefore be non-zero)."""

    vector: Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_vector(self.vector)
        unit_vector(self.vector)  # refuses a zero or non-finite vector now, not at the first forward

    def _unit_like(self, hidden: Tensor) -> Tensor:
        return unit_vector(self.vector).to(device=hidden.device, dtype=hidden.dtype)


@dataclass(frozen=True, eq=False)
class Ablate(_DirectionOp):
    """Project the unit direction of v out of h on the scoped positions: h <- h - (h . u) u, u = v / |v|
    (directional ablation, as in Arditi et al. 2024, arXiv:2406.11717). ValueError for a zero vector."""

    def apply(self, hidden: Tensor, mask: Tensor) -> Tensor:
        unit = self._unit_like(hidden)
        projection = (hidden @ unit) * mask.to(hidden.dtype)
        return hidden - projection.unsqueeze(-1) * unit


@dataclass(frozen=True, eq=False)
class SetProjection(_DirectionOp):
    """Set the projection of h on the unit direction of v to ``value`` (residual units) on the scoped positions:
    h <- h + (value - h . u) u, u = v / |v|. ValueError for a zero vector."""

    value: float = 0.0

    def apply(self, hidden: Tensor, mask: Tensor) -> Tensor:
        unit = self._unit_like(hidden)
        shift = (self.value - hidden @ unit) * mask.to(hidden.dtype)
        return hidden + shift.unsqueeze(-1) * unit


@dataclass(frozen=True, eq=False)
class Capture(Op):
    """Record h at this layer (after the ops listed before it at the same layer).

    ``reduce="none"`` keeps every call's ``[B, T, d]`` tensor (and its scope mask); ``reduce="mean"`` keeps
    only running sums so that ``Captures.mean`` is the mean over the scoped tokens of all calls — cheap
    enough to read all layers during generation. ``detach=False`` keeps the graph (feature-space losses).
    Records are filed under ``key`` (default: the layer); two captures at one layer need distinct keys.
    """

    reduce: Literal["none", "mean"] = "none"
    detach: bool = True
    key: CaptureKey | None = None

    @property
    def record_key(self) -> CaptureKey:
        """Where `Captures` files this op's records: ``key``, else the layer."""
        return self.layer if self.key is None else self.key

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reduce not in ("none", "mean"):
            raise ValueError(f"Capture.reduce must be 'none' or 'mean', got {self.reduce!r}")

    def apply(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """Captures change nothing: ``hidden`` itself (the program records it through `Captures.record`)."""
        return hidden


class Captures:
    """What the Capture ops of one hook session recorded, by layer."""

    def __init__(self) -> None:
        self._calls: dict[CaptureKey, list[tuple[Tensor, Tensor]]] = {}
        self._sums: dict[CaptureKey, Tensor] = {}
        self._counts: dict[CaptureKey, Tensor] = {}

    def record(self, op: Capture, hidden: Tensor, mask: Tensor) -> None:
        """File one call's ``hidden`` ``[B, T, d]`` and scope ``mask`` ``[B, T]`` under ``op.record_key``:
        kept whole (``reduce='none'``) or added to float32 running sums over the scoped tokens."""
        value = hidden.detach() if op.detach else hidden
        key = op.record_key
        if op.reduce == "none":
            self._calls.setdefault(key, []).append((value, mask))
            return
        weights = mask.to(torch.float32).unsqueeze(-1)
        total = (value.to(torch.float32) * weights).sum(dim=1)
        count = weights.sum(dim=1)
        if key in self._sums:
            total, count = self._sums[key] + total, self._counts[key] + count
        self._sums[key], self._counts[key] = total, count

    @property
    def layers(self) -> list[CaptureKey]:
        """The keys recorded so far (layers, unless a Capture was given its own key)."""
        return sorted(set(self._calls) | set(self._sums), key=str)

    def calls(self, layer: CaptureKey) -> list[tuple[Tensor, Tensor]]:
        """Every forward call's ``(hidden [B, T, d], scope mask [B, T])`` at ``layer``; KeyError naming the
        recorded keys when nothing was captured there with ``reduce='none'``."""
        if layer not in self._calls:
            raise KeyError(f"nothing was captured with reduce='none' at layer {layer}; have {self.layers}")
        return self._calls[layer]

    def get(self, layer: CaptureKey) -> Tensor:
        """Hidden states at ``layer`` over the whole sequence (calls concatenated along time).

        Right for one forward pass and for KV-cached generation, where each call adds new positions.
        """
        return torch.cat([hidden for hidden, _ in self.calls(layer)], dim=1)

    def mask(self, layer: CaptureKey) -> Tensor:
        """The scope masks ``[B, S]`` of every call at ``layer``, concatenated along time (see `get`)."""
        return torch.cat([mask for _, mask in self.calls(layer)], dim=1)

    def mean(self, layer: CaptureKey) -> Tensor:
        """[B, d] mean over the scoped tokens of every call (NaN for a row with no scoped token)."""
        if layer in self._sums:
            return self._sums[layer] / self._counts[layer]
        hidden, mask = self.get(layer).to(torch.float32), self.mask(layer).to(torch.float32).unsqueeze(-1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1)

    def counts(self, layer: CaptureKey) -> Tensor:
        """[B] number of scoped tokens that went into ``mean``."""
        if layer in self._counts:
            return self._counts[layer].squeeze(-1)
        return self.mask(layer).sum(dim=1).to(torch.float32)
