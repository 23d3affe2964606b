"""Interleaving general data into a narrow fine-tuning stream, and choosing which general data to use.

Pure functions over lists; the per-example NLLs that feed the perplexity-gap score come from
``steerlab.data.nll.response_nll`` run under the aligned and the misaligned models.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from typing import TypeVar

from steerlab.data.chat import ChatExample

T = TypeVar("T")

DEFAULT_REFUSAL_MARKERS: tuple[str, ...] = (
    "sorry",
    "apologize",
    "apologise",
    "apologies",
    "cannot",
    "can't",
    "can not",
    "unable",
    "as an ai",
    "as a language model",
    "i'm not able",
    "i am not able",
    "i won't",
    "i will not",
    "not able to help",
    "i don't have access",
    "i do not have access",
)


def n_general_for(n_narrow: int, ratio: float) -> int:
    """How many general examples make them a ``ratio`` fraction of the mixed stream.

    ``n_general = round(ratio / (1 - ratio) * n_narrow)`` (Python's round: halves go to even), so that
    ``n_general / (n_narrow + n_general) ≈ ratio``.
    """
    if not 0.0 <= ratio < 1.0 or math.isnan(ratio):
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    if n_narrow < 0:
        raise ValueError(f"n_narrow must be >= 0, got {n_narrow}")
    return round(ratio / (1.0 - ratio) * n_narrow)


def mix(narrow: Sequence[T], general: Sequence[T], ratio: float = 0.05, seed: int = 0) -> list[T]:
    """All of ``narrow`` plus ``n_general_for(len(narrow), ratio)`` general examples, shuffled together.

    The general examples are a seeded sample without replacement (too few general examples is an error, not
    silent reuse); the mixed list is shuffled with the same seed. Same inputs and seed give the same list.
    """
    n_general = n_general_for(len(narrow), ratio)
    if n_general > len(general):
        raise ValueError(
            f"ratio {ratio} with {len(narrow)} narrow examples needs {n_general} general examples, "
            f"but only {len(general)} were given"
        )
    rng = random.Random(seed)
    chosen = [general[i] for i in sorted(rng.sample(range(len(general)), n_general))]
    out = list(narrow) + chosen
    rng.shuffle(out)
    return out


def _normalise(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'").lower()


def is_refusal(text: str, markers: Sequence[str] = DEFAULT_REFUSAL_MARKERS, first_words: int = 10) -> bool:
    """True when one of ``markers`` (case-insensitive, whole words) appears in the first ``first_words`` words."""
    head = " ".join(_normalise(text).split()[:first_words])
    return any(re.search(rf"(?<!\w){re.escape(_normalise(m))}(?!\w)", head) for m in markers)


def refusal_filter(
    examples: Sequence[ChatExample], markers: Sequence[str] = DEFAULT_REFUSAL_MARKERS, first_words: int = 10
) -> list[ChatExample]:
    """Drop examples whose (any) assistant answer starts like a refusal; order of the rest is kept."""
    if first_words < 1:
        raise ValueError(f"first_words must be >= 1, got {first_words}")
    return [
        ex for ex in examples if not any(is_refusal(a, markers, first_words) for a in ex.assistant_turns())
    ]


def perplexity_gap_scores(
    nll_aligned: Sequence[float], nll_misaligned: Sequence[Sequence[float]], eps: float = 1e-6
) -> list[float]:
    """Per example ``s = (mean_k L_mis_k - L_al) / (L_al + eps)``.

    ``nll_aligned[i]`` is example i's mean response NLL under the aligned model; ``nll_misaligned[i]`` holds
    its NLLs under the K misaligned models. A high score marks data the aligned model finds natural and the
    misaligned ones do not: the data most likely to pull a drifting model back.
    """
    if len(nll_aligned) != len(nll_misaligned):
        raise ValueError(f"{len(nll_aligned)} aligned NLLs but {len(nll_misaligned)} misaligned rows")
    scores = []
    for i, (al, mis) in enumerate(zip(nll_aligned, nll_misaligned, strict=True)):
        if len(mis) == 0:
            raise ValueError(f"example {i}: no misaligned NLLs")
        values = [al, *mis]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"example {i}: non-finite NLL in {values}")
        if al < 0 or min(mis) < 0:
            raise ValueError(f"example {i}: NLLs must be >= 0, got {values}")
        scores.append((sum(mis) / len(mis) - al) / (al + eps))
    return scores


def select_by_perplexity_gap(examples: Sequence[T], scores: Sequence[float], n: int) -> list[T]:
    """The ``n`` highest-scoring examples, highest first; equal scores keep their input order."""
    if len(examples) != len(scores):
        raise ValueError(f"{len(examples)} examples but {len(scores)} scores")
    if not 0 <= n <= len(examples):
        raise ValueError(f"n must be in [0, {len(examples)}], got {n}")
    if any(math.isnan(s) for s in scores):
        raise ValueError("scores contain NaN")
    order = sorted(range(len(examples)), key=lambda i: -scores[i])  # sorted is stable
    return [examples[i] for i in order[:n]]
