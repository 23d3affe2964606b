"""Append-only JSONL logs of a run (metrics, monitor) that survive a kill and a resume.

Each row is written with one ``write`` and flushed + fsynced, so a kill loses at most a torn last line.
On resume from the checkpoint at step S, `JsonlLog.truncate_after(S)` drops the torn line and every row
after S (they are recomputed, deterministically, by the resumed run), so no row is lost or duplicated.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from steerlab.io import append_jsonl, read_jsonl, write_jsonl


class JsonlLog:
    """One append-only log file (`steerlab.io` does the reading and writing)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` as one line, flushed and fsynced (a torn last line of a kill is cut off first)."""
        append_jsonl(self.path, [row])

    def rows(self) -> list[dict[str, Any]]:
        """All complete rows (a torn last line, from a kill mid-write, is left out); ``[]`` without a file.

        Raises ValueError naming ``file:line`` for a malformed row."""
        if not self.path.is_file():
            return []
        return [row for _, row in read_jsonl(self.path, torn_tail=True, error=ValueError)]

    def truncate_after(self, step: int) -> int:
        """Keep rows with ``step <= step``; returns how many rows were dropped."""
        if not self.path.is_file():
            return 0
        rows = self.rows()
        keep = [row for row in rows if int(row.get("step", 0)) <= step]
        write_jsonl(self.path, keep)
        return len(rows) - len(keep)

    def steps(self) -> set[int]:
        """The ``step`` of every complete row."""
        return {int(row["step"]) for row in self.rows() if "step" in row}
