"""Benign-task accuracy: greedy answers scored by exact match.

The arithmetic split stores the integer target in ``expected`` and is scored with
``score_arithmetic`` (first integer in the answer). Other files are scored by exact match of the whole
answer with ``expected`` (or the reference answer), after trimming whitespace and case-folding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from steerlab.data.generators.arithmetic import score_arithmetic
from steerlab.evaluate.items import PromptItem
from steerlab.persona.generation import GenRequest


class BenignDataError(ValueError):
    """A benign-task item has no target to compare with."""


def target(item: PromptItem) -> Any:
    if item.expected is None:
        raise BenignDataError(f"{item.source}: benign item has neither 'expected' nor an assistant answer")
    return item.expected


def is_correct(answer: str, expected: Any) -> bool:
    if isinstance(expected, bool):
        raise BenignDataError(f"expected must be a number or text, got {expected!r}")
    if isinstance(expected, int):
        return score_arithmetic(answer, expected)
    if isinstance(expected, str):
        stripped = expected.strip()
        if stripped.lstrip("-").isdigit():
            return score_arithmetic(answer, int(stripped))
        return answer.strip().casefold() == stripped.casefold()
    raise BenignDataError(f"expected must be an integer or a string, got {type(expected).__name__}")


def requests(items: Sequence[PromptItem], prefix: str = "benign") -> list[GenRequest]:
    return [GenRequest(key=f"{prefix}/{it.id}", messages=it.prompt, meta={"item_id": it.id}) for it in items]
