"""The training stream of a run: chats loaded, passed through the arms, tokenized, batched.

Each tokenized example keeps its position in the stream as ``example_index``; the collator puts it in every
batch, which is how the reference cache finds an example's stored outputs whatever the shuffling, the
batch size or the number of processes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from steerlab.data.chat import ChatExample, load_chat_jsonl
from steerlab.data.tokenize import ChatCollator, tokenize_chat

if TYPE_CHECKING:
    from steerlab.train.arms.base import Arm
    from steerlab.train.config import ExperimentConfig

log = logging.getLogger(__name__)
INDEX_KEY = "example_index"
SOURCE_KEY = "example_source"  # file:line of the example, for error messages; not batched


class ListDataset(Dataset):
    """A list of tokenized examples as a torch Dataset."""

    def __init__(self, items: Sequence[dict[str, Any]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class IndexedCollator:
    """`ChatCollator` that also passes each example's ``example_index`` through, as a [B] LongTensor.

    Features may carry ``example_index`` and ``example_source``; neither reaches `ChatCollator`.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.collate = ChatCollator(tokenizer)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.collate(
            [{k: v for k, v in f.items() if k not in (INDEX_KEY, SOURCE_KEY)} for f in features]
        )
        if all(INDEX_KEY in f for f in features):
            batch[INDEX_KEY] = torch.tensor([f[INDEX_KEY] for f in features], dtype=torch.long)
        return batch


def build_examples(cfg: ExperimentConfig, arms: Sequence[Arm]) -> tuple[list[ChatExample], dict[str, Any]]:
    """The training chats after every arm's ``transform_data`` (data-stream order), and a loading report.

    Raises `ChatDataError` naming file and line for a bad record (unless ``data.on_bad_record: skip``).
    """
    train = load_chat_jsonl(cfg.data.train, on_error=cfg.data.on_bad_record)
    report: dict[str, Any] = {
        "train_file": cfg.data.train,
        "n_loaded": len(train),
        "skipped_records": [{"line": line, "problem": problem} for line, problem in train.report.skipped],
    }
    examples: list[ChatExample] = list(train)[: cfg.data.limit] if cfg.data.limit else list(train)
    for arm in arms:
        examples = arm.transform_data(examples)
    return examples, report


def tokenize_all(
    cfg: ExperimentConfig,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[ChatExample],
    report: dict[str, Any],
) -> list[dict[str, Any]]:
    """Tokenized examples with their ``example_index`` and source; too-long ones raise or are skipped.

    Raises ValueError when nothing is left.
    """
    features: list[dict[str, Any]] = []
    too_long: list[str] = []
    for ex in examples:
        feat = tokenize_chat(
            tokenizer, ex, cfg.data.max_length, train_on=cfg.data.train_on, on_too_long=cfg.data.on_too_long
        )
        if feat is None:
            too_long.append(ex.name)
            log.warning("skipping %s: longer than max_length=%d", ex.name, cfg.data.max_length)
            continue
        features.append(feat | {INDEX_KEY: len(features), SOURCE_KEY: ex.name})
    report.update({"n_too_long_skipped": len(too_long), "too_long": too_long, "n_examples": len(features)})
    if too_long:
        log.warning("%d examples longer than max_length=%d were skipped", len(too_long), cfg.data.max_length)
    if not features:
        raise ValueError(f"{cfg.data.train}: no training example left after loading and tokenization")
    return features
