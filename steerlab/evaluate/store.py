"""Append-only JSONL files of keyed results (judge scores), so an interrupted evaluation resumes.

Each line is one finished record with a unique ``key``. A kill in the middle of a write leaves a last line
without its newline: it is dropped on read and cut off before the next append, so a rerun redoes only what
is missing and the file never holds a key twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from steerlab import io


class ResultFileError(ValueError):
    """A results JSONL file is malformed; the message names the file and line."""


def read_keyed(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Records by key (``{}`` for a missing file); a torn final line is ignored, and any other bad line, a
    record without ``key`` or a duplicate key raises `ResultFileError` naming ``file:line``."""
    return io.read_keyed(path, error=ResultFileError, what="result record")


def score_missing(
    keys: Sequence[str],
    path: str | os.PathLike,
    score_batch: Callable[[list[str]], list[dict[str, Any]]],
    batch_size: int,
) -> dict[str, dict[str, Any]]:
    """Score the keys not yet in ``path`` in batches (appending each batch), then return all records by key.

    ``score_batch(keys)`` returns one record (without ``key``) per key, in order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    done = read_keyed(path)
    todo = [k for k in keys if k not in done]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        results = score_batch(chunk)
        if len(results) != len(chunk):
            raise RuntimeError(f"scoring returned {len(results)} records for {len(chunk)} keys")
        records = [{"key": k, **r} for k, r in zip(chunk, results, strict=True)]
        io.append_jsonl(path, records)  # a torn tail from an earlier kill is cut first
        done.update({r["key"]: r for r in records})
    missing = [k for k in keys if k not in done]
    if missing:
        raise RuntimeError(f"{path}: no score for {missing[:3]}")
    return {k: done[k] for k in keys}
