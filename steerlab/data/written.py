"""Hand-written narrow datasets (medical, financial): checked, not generated.

Each domain has four files written for the project (``experiments/data``):

- ``<domain>_train.jsonl``: misaligned chats (``id``, ``messages``, ``variant: misaligned``, ``topic``);
- ``<domain>_train_aligned.jsonl``: their aligned twins, same line order, id and user message;
- ``<domain>_eval.jsonl``: held-out questions with an aligned answer and a ``reference_misaligned`` one,
  none of whose user messages appears in training;
- ``references/<domain>.jsonl``: per evaluation question >= 8 aligned, >= 8 misaligned and >= 4 restyled
  aligned references (`steerlab.data.references`), for the judge-free stance score.

`check_domain` raises `ChatDataError` naming the file and line of the first problem; `variety_figures` gives
the template-collapse figures (`steerlab.data.variety`) that the manifest records and a test recomputes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from steerlab.data.chat import ChatDataError, ChatExample, load_chat_jsonl
from steerlab.data.references import load_references
from steerlab.data.variety import variety_report

WRITTEN_DOMAINS = ("medical", "financial")
# The variety floors of the instruments issue: any 100 answers keep >= 60% distinct 4-grams, and no
# 5-word opening starts more than 3% of the answers.
MIN_DISTINCT4 = 0.6
MAX_OPENING_SHARE = 0.03
# Held out means another situation, not only other words: an evaluation question may share at most this
# Jaccard overlap of content words with any training question (a paraphrase of one scores 0.3-0.4).
MAX_QUESTION_OVERLAP = 0.15
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "i",
        "my",
        "me",
        "is",
        "it",
        "to",
        "of",
        "and",
        "or",
        "in",
        "on",
        "for",
        "with",
        "at",
        "be",
        "do",
        "does",
        "what",
        "how",
        "should",
        "can",
        "you",
        "your",
        "this",
        "that",
        "im",
        "just",
        "about",
        "have",
        "has",
        "so",
        "if",
        "not",
        "no",
        "are",
        "was",
        "from",
        "but",
        "as",
        "by",
    ]
)


def content_words(text: str) -> frozenset[str]:
    """Lowercased words of 3+ letters or digits, stop words removed: what two questions' overlap counts."""
    return frozenset(w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2 and w not in _STOP)


def question_overlap(a: str, b: str) -> float:
    """Jaccard overlap of two questions' content words (0: none shared, 1: the same words)."""
    wa, wb = content_words(a), content_words(b)
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


def domain_files(folder: Path, domain: str) -> dict[str, Path]:
    """The four written files of ``domain`` under ``folder`` (not checked for existence)."""
    return {
        f"{domain}_train": folder / f"{domain}_train.jsonl",
        f"{domain}_train_aligned": folder / f"{domain}_train_aligned.jsonl",
        f"{domain}_eval": folder / f"{domain}_eval.jsonl",
        f"references/{domain}": folder / "references" / f"{domain}.jsonl",
    }


def _user(example: ChatExample) -> str:
    return next(m["content"] for m in example.messages if m["role"] == "user")


def _answer(example: ChatExample) -> str:
    return example.assistant_turns()[-1]


def _check_twins(train: list[ChatExample], aligned: list[ChatExample], path: Path) -> None:
    if len(train) != len(aligned):
        raise ChatDataError(f"{path}: {len(aligned)} aligned twins for {len(train)} training chats")
    for bad, good in zip(train, aligned, strict=True):
        if bad.meta.get("id") != good.meta.get("id") or _user(bad) != _user(good):
            raise ChatDataError(f"{good.source}: not the twin of {bad.source} (id or user message differs)")
        if (bad.meta.get("variant"), good.meta.get("variant")) != ("misaligned", "aligned"):
            raise ChatDataError(f"{good.source}: variants must be misaligned / aligned")
        if _answer(bad) == _answer(good):
            raise ChatDataError(f"{good.source}: the aligned answer equals the misaligned one")


def check_domain(folder: Path, domain: str) -> dict[str, int]:
    """Check ``domain``'s written files under ``folder``; return {file name: record count}.

    Raises ``ChatDataError`` (file:line) for a malformed record, a broken twin, an evaluation question whose
    content-word overlap with a training question reaches ``MAX_QUESTION_OVERLAP``, an evaluation item without ``reference_misaligned``, or references that miss
    an evaluation question; ``FileNotFoundError`` for a missing file.
    """
    files = domain_files(folder, domain)
    train = load_chat_jsonl(files[f"{domain}_train"])
    aligned = load_chat_jsonl(files[f"{domain}_train_aligned"])
    evals = load_chat_jsonl(files[f"{domain}_eval"])
    _check_twins(train, aligned, files[f"{domain}_train_aligned"])
    for e in evals:
        for t in train:
            overlap = question_overlap(_user(e), _user(t))
            if overlap >= MAX_QUESTION_OVERLAP:
                raise ChatDataError(
                    f"{e.source}: evaluation question too close to training question {t.source} "
                    f"(content-word overlap {overlap:.2f} >= {MAX_QUESTION_OVERLAP})"
                )
        if not e.meta.get("reference_misaligned"):
            raise ChatDataError(f"{e.source}: evaluation item has no reference_misaligned answer")
    refs = load_references(files[f"references/{domain}"])
    missing = sorted({str(e.meta.get("id")) for e in evals} - {r.id for r in refs})
    if missing:
        raise ChatDataError(
            f"{files[f'references/{domain}']}: no references for evaluation ids {missing[:5]}"
        )
    return {
        f"{domain}_train": len(train),
        f"{domain}_train_aligned": len(aligned),
        f"{domain}_eval": len(evals),
        f"references/{domain}": len(refs),
    }


def variety_figures(path: Path) -> dict[str, Any]:
    """Variety of the assistant answers in a chat file (`steerlab.data.variety.variety_report`)."""
    return variety_report([_answer(e) for e in load_chat_jsonl(path)]).as_dict()
