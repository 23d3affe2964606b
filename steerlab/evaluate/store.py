"""Append-only JSONL files of keyed results (judge scores), so an interrupted evaluation resumes.

Each line is one finished record with a unique ``key``. A kill in the middle of a write leaves a last line
without its newline: it is dropped on read and cut off before the next append, so a rerun redoes only what
is missing and the file never holds a key twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


class ResultFileError(ValueError):
    """A results JSONL file is malformed; the message names the file and line."""


def read_keyed(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Records by key; a torn final line is ignored, any other bad line or duplicate key raises."""
    path = Path(path)
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    out: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == len(lines) and not text.endswith("\n"):
            break
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ResultFileError(f"{path}:{number}: invalid JSON ({error.msg})") from None
        if not isinstance(record, dict) or "key" not in record:
            raise ResultFileError(f"{path}:{number}: a result record must be an object with a 'key'")
        if record["key"] in out:
            raise ResultFileError(f"{path}:{number}: duplicate key {record['key']!r}")
        out[record["key"]] = record
    return out


def append_records(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Append records (one JSON line each) and flush; a torn tail from an earlier kill is cut first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        handle.flush()
        os.fsync(handle.fileno())


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
        append_records(path, records)
        done.update({r["key"]: r for r in records})
    missing = [k for k in keys if k not in done]
    if missing:
        raise RuntimeError(f"{path}: no score for {missing[:3]}")
    return {k: done[k] for k in keys}
