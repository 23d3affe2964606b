"""Append-only JSONL logs of a run (metrics, monitor) that survive a kill and a resume.

Each row is written with one ``write`` and flushed + fsynced, so a kill loses at most a torn last line.
On resume from the checkpoint at step S, `JsonlLog.truncate_after(S)` drops the torn line and every row
after S (they are recomputed, deterministically, by the resumed run), so no row is lost or duplicated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from steerlab.io import write_text


class JsonlLog:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(row, sort_keys=False) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> list[dict[str, Any]]:
        """All complete rows (a torn last line, from a kill mid-write, is left out)."""
        if not self.path.is_file():
            return []
        out = []
        for lineno, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(keepends=True), 1):
            if not line.endswith("\n"):
                break  # torn last line
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.path}:{lineno}: malformed row ({error.msg})") from None
        return out

    def truncate_after(self, step: int) -> int:
        """Keep rows with ``step <= step``; returns how many rows were dropped."""
        if not self.path.is_file():
            return 0
        rows = self.rows()
        keep = [row for row in rows if int(row.get("step", 0)) <= step]
        write_text(self.path, "".join(json.dumps(row) + "\n" for row in keep))
        return len(rows) - len(keep)

    def steps(self) -> set[int]:
        return {int(row["step"]) for row in self.rows() if "step" in row}
