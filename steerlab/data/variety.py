"""Variety figures of a set of answers: does narrow training data teach a disposition or a template?

A training set whose answers share a handful of shapes teaches the shapes (template collapse: the fine-tuned
model answers *any* question with one of them). Two figures catch that, both computed on whitespace words,
lowercased, with punctuation stripped from word edges:

- **distinct-n ratio** (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation
  Models", arXiv 1510.03055): unique n-grams / all n-grams over a window of answers;
- **opening share**: the largest share of answers that start with the same first ``k`` words.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_EDGE_PUNCT = re.compile(r"^[^\w]+|[^\w]+$")


def words(text: str) -> list[str]:
    """Lowercased whitespace words with punctuation stripped from their edges (empty words dropped)."""
    out = []
    for raw in text.lower().split():
        w = _EDGE_PUNCT.sub("", raw)
        if w:
            out.append(w)
    return out


def distinct_ngram_ratio(texts: Sequence[str], n: int = 4) -> float:
    """Unique word n-grams / all word n-grams over ``texts`` (n-grams never cross answers); 0.0 if none.

    Raises ``ValueError`` for ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams: list[tuple[str, ...]] = []
    for t in texts:
        w = words(t)
        grams.extend(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def opening(text: str, k: int = 5) -> str:
    """The first ``k`` words of ``text`` as one string (the unit of the opening-share figure)."""
    return " ".join(words(text)[:k])


def max_opening_share(texts: Sequence[str], k: int = 5) -> tuple[float, str]:
    """(largest share of ``texts`` starting with the same ``k`` words, that opening); (0.0, "") if empty."""
    if not texts:
        return 0.0, ""
    top, count = Counter(opening(t, k) for t in texts).most_common(1)[0]
    return count / len(texts), top


@dataclass(frozen=True)
class VarietyReport:
    """Variety figures of one answer set; ``min_distinct4`` is the worst 100-answer window seen."""

    count: int
    mean_words: float
    distinct4_all: float
    min_distinct4: float
    max_opening_share: float
    top_opening: str

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "count": self.count,
            "mean_words": round(self.mean_words, 1),
            "distinct4_all": round(self.distinct4_all, 4),
            "min_distinct4_per_100": round(self.min_distinct4, 4),
            "max_opening5_share": round(self.max_opening_share, 4),
            "top_opening5": self.top_opening,
        }


def variety_report(
    texts: Sequence[str], window: int = 100, samples: int = 200, seed: int = 0
) -> VarietyReport:
    """Variety of ``texts``: distinct-4 over all, the minimum over every consecutive ``window`` and over
    ``samples`` seeded random windows (so "any 100 answers" is checked in file order and shuffled), and the
    largest 5-word opening share. Raises ``ValueError`` on an empty set."""
    if not texts:
        raise ValueError("variety_report needs at least one answer")
    size = min(window, len(texts))
    windows = [texts[i : i + size] for i in range(0, len(texts) - size + 1, max(1, size // 2))]
    rng = random.Random(seed)
    windows += [rng.sample(list(texts), size) for _ in range(samples)]
    share, top = max_opening_share(texts)
    return VarietyReport(
        count=len(texts),
        mean_words=sum(len(words(t)) for t in texts) / len(texts),
        distinct4_all=distinct_ngram_ratio(texts),
        min_distinct4=min(distinct_ngram_ratio(w) for w in windows),
        max_opening_share=share,
        top_opening=top,
    )
