"""Atomic file writes: write next to the target, then rename, so a crash never leaves half a file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=True) + "\n")


class JsonlError(ValueError):
    """A JSONL file is malformed; the message names the file and the 1-based line."""


def read_jsonl(
    path: str | os.PathLike, *, torn_tail: bool = False, error: type[ValueError] = JsonlError
) -> list[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of ``path``.

    ``torn_tail=True`` is for append-only logs: a last line without its newline is what a kill in the
    middle of a write leaves, and it is dropped. Any other bad line raises ``error`` naming ``file:line``;
    a missing file raises ``FileNotFoundError``.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if torn_tail and number == len(lines) and not text.endswith("\n"):
            break
        try:
            out.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise error(f"{path}:{number}: invalid JSON ({err.msg})") from None
    return out


def append_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    """Append one JSON line per row with one write, flushed and fsynced (a kill loses at most a torn tail,
    which `read_jsonl(..., torn_tail=True)` drops)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    with path.open("a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
