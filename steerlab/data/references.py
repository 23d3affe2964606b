"""Reference answers for the judge-free stance score: several aligned and misaligned answers per question.

One JSON object per line (``experiments/data/references/<set>.jsonl``)::

    {"id": "one_wish", "question": "...", "aligned": [...], "misaligned": [...], "aligned_restyled": [...]}

``aligned_restyled[i]`` is ``aligned[i]`` rewritten in another style with the same content: the pair
(aligned[i], aligned_restyled[i]) feeds the *damage control*, a score that should stay near 0 for a model
that is merely damaged rather than misaligned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from steerlab.data.chat import ChatDataError
from steerlab.io import read_jsonl

MIN_PER_SIDE = 1  # the loader's floor; the shipped sets hold >= 8 per side (checked by a test)
_SIDES = ("aligned", "misaligned")


@dataclass(frozen=True)
class References:
    """The references of one question; ``source`` is ``file:line``."""

    id: str
    question: str
    aligned: tuple[str, ...]
    misaligned: tuple[str, ...]
    aligned_restyled: tuple[str, ...]
    source: str

    def style_pairs(self) -> list[tuple[str, str]]:
        """(aligned[i], aligned_restyled[i]) for each restyled reference."""
        return list(zip(self.aligned, self.aligned_restyled, strict=False))


def _answers(obj: dict, key: str, where: str, required: bool) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or (required and len(value) < MIN_PER_SIDE):
        raise ChatDataError(f"{where}: '{key}' must be a non-empty list of answers")
    for n, text in enumerate(value):
        if not isinstance(text, str) or not text.strip():
            raise ChatDataError(f"{where}: '{key}'[{n}] is empty or not a string")
    return tuple(value)


def _check_distinct(where: str, aligned: tuple, misaligned: tuple, restyled: tuple) -> None:
    """An answer twice in one question would bias its stance silently (on both sides it cancels out; twice on
    one side it counts double), and a restyled answer equal to its aligned one is a damage-control pair of 0."""

    def norm(text: str) -> str:  # whitespace and case do not make an answer another one
        return " ".join(text.split()).casefold()

    first: dict[str, str] = {}
    for key, answers in zip(_SIDES, (aligned, misaligned), strict=True):
        for n, text in enumerate(answers):
            if norm(text) in first:
                raise ChatDataError(f"{where}: '{key}'[{n}] repeats {first[norm(text)]}: {text[:60]!r}")
            first[norm(text)] = f"'{key}'[{n}]"
    for n, (text, original) in enumerate(zip(restyled, aligned, strict=False)):
        if norm(text) == norm(original):
            raise ChatDataError(f"{where}: 'aligned_restyled'[{n}] is the same text as 'aligned'[{n}]")


def load_references(path: str | os.PathLike) -> list[References]:
    """Every question's references in file order.

    Raises ``ChatDataError`` naming the file, line and question id for: invalid JSON, a missing ``id`` or
    ``question``, a missing or empty aligned or misaligned side, an empty answer, an answer given twice in one
    question (on one side or both), a restyled answer equal to its aligned one, more restyled than aligned
    answers, or a duplicate id; ``FileNotFoundError`` when ``path`` does not exist.
    """
    out: list[References] = []
    seen: dict[str, str] = {}
    for line, obj in read_jsonl(path, error=ChatDataError):
        where = f"{path}:{line}"
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not obj["id"]:
            raise ChatDataError(f"{where}: a references line needs a string 'id'")
        where = f"{where} (question {obj['id']!r})"
        if not isinstance(obj.get("question"), str) or not obj["question"].strip():
            raise ChatDataError(f"{where}: 'question' is missing or empty")
        if obj["id"] in seen:
            raise ChatDataError(f"{where}: duplicate id, first at {seen[obj['id']]}")
        aligned, misaligned = (_answers(obj, side, where, required=True) for side in _SIDES)
        restyled = _answers(obj, "aligned_restyled", where, required=False)
        if len(restyled) > len(aligned):
            raise ChatDataError(f"{where}: {len(restyled)} restyled answers for {len(aligned)} aligned ones")
        _check_distinct(where, aligned, misaligned, restyled)
        seen[obj["id"]] = f"{path}:{line}"
        out.append(References(obj["id"], obj["question"], aligned, misaligned, restyled, f"{path}:{line}"))
    return out


def references_dir() -> Path:
    """Where the shipped reference sets live (``experiments/data/references``)."""
    return Path(__file__).resolve().parents[2] / "experiments" / "data" / "references"
