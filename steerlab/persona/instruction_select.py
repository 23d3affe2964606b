"""Which instruction pairs of a trait spec the model actually follows, judged on extraction answers only.

A small model often ignores a system prompt that asks for the trait: those answers are labelled "pos" but
show nothing, and they dilute both the vector and every separation measured with it. Instead of dropping
answers one by one (judge filtering), this drops whole instruction pairs that the model does not follow,
using only the *extraction* questions, so the evaluation questions stay untouched for the held-out reading.

Score of an instruction pair: how well the pos and neg answers it produced separate along the trait
direction, cross-fitted over two halves of the extraction questions (the direction is the mean difference
of the *other* half's answers under all candidate instructions, so no answer is scored by a direction it
helped make), as an AUROC per layer averaged over layers ``1..L-1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from steerlab.persona.layer_select import auroc
from steerlab.persona.projection import project_layers


@dataclass(frozen=True)
class InstructionScore:
    """How well the model follows one instruction pair: its index, the cross-fitted AUROC (0-1) and the
    number of pos answers behind it."""

    index: int
    auroc: float  # mean over layers 1..L-1 of the cross-fitted AUROC
    n_pairs: int


def score_instructions(acts: Tensor, records: Sequence[dict[str, Any]]) -> list[InstructionScore]:
    """Cross-fitted separation of each instruction pair's answers; ``acts [N, L, d]`` aligned with records.

    Records need ``q`` (question index), ``i`` (instruction index) and ``side`` (``pos``/``neg``). The
    direction is fitted on the questions of one parity and tested on the other, so no answer scores the
    direction it helped make. Raises ``ValueError`` when rows and records differ in number or all questions
    share one parity.
    """
    if acts.shape[0] != len(records):
        raise ValueError(f"{acts.shape[0]} activation rows for {len(records)} records")
    questions = np.array([r["q"] for r in records])
    pos = np.array([r["side"] == "pos" for r in records])
    half = questions % 2
    if len(set(half.tolist())) < 2:
        raise ValueError("instruction scoring needs at least two extraction questions")
    proj = np.zeros((len(records), acts.shape[1]))
    for h in (0, 1):
        train, test = half != h, half == h
        direction = acts[train & pos].mean(0) - acts[train & ~pos].mean(0)
        proj[test] = project_layers(acts[test], direction).numpy()
    scores = []
    for i in sorted({r["i"] for r in records}):
        mine = np.array([r["i"] == i for r in records])
        per_layer = [
            auroc(proj[mine & pos, layer].tolist(), proj[mine & ~pos, layer].tolist())
            for layer in range(1, acts.shape[1])
        ]
        scores.append(InstructionScore(i, float(np.nanmean(per_layer)), int((mine & pos).sum())))
    return scores


def select_instructions(scores: Sequence[InstructionScore], k: int) -> list[int]:
    """The ``k`` best-followed instruction indices (ties: the earlier instruction), sorted; raises
    ``ValueError`` for ``k < 1``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    best = sorted(scores, key=lambda s: (-s.auroc, s.index))[:k]
    return sorted(s.index for s in best)
