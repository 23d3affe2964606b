"""Small tensor helpers shared by the hook layer and everything above it.

It sits at the bottom of the flow (next to `steerlab.io`), so both `steerlab.hooks` and `steerlab.persona`
can import it without an upward import.
"""

from __future__ import annotations

import torch
from torch import Tensor


def unit_vector(vector: Tensor) -> Tensor:
    """``vector / |vector|`` along the last axis, in float32: ``[d]`` -> ``[d]``, ``[L, d]`` -> ``[L, d]`` (row-wise).

    steerlab's one unit-vector helper (hook ops, projections, the training monitor).
    Raises ``ValueError`` for a zero or non-finite norm (naming the row of a batch), rather than returning NaN.
    """
    vector = vector.float()
    norm = vector.norm(dim=-1, keepdim=True)
    bad = ~torch.isfinite(norm) | (norm == 0)
    if bool(bad.any()):
        where = "" if vector.dim() == 1 else f" (row {int(bad.flatten().nonzero()[0])})"
        raise ValueError(f"cannot take the direction of a zero or non-finite vector{where}")
    return vector / norm
