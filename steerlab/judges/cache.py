"""On-disk cache of judge scores, so rerunning an evaluation costs no API calls.

SQLite, one row per key: ``sha256`` of the judge's identity (endpoint, requested model, the model the server
lists), the rendered prompt and every setting that can change the score — never the API key. The endpoint
is in the key because a local server answers for any model name: scores a llama.cpp server gave under the
name ``gpt-4.1-mini`` must never come back as GPT-4.1-mini's. Each row stores the score (NULL for "answered
without a number") and the model name the server reported, not the prompt. Failed requests are not stored,
so a rerun retries them. Safe to share between threads and processes (SQLite locking).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs

_MISSING = object()


def default_cache_path() -> Path:
    """``$STEERLAB_CACHE_DIR/judge_scores.sqlite``, else the user cache dir for steerlab."""
    root = os.environ.get("STEERLAB_CACHE_DIR") or platformdirs.user_cache_dir("steerlab")
    return Path(root) / "judge_scores.sqlite"


def cache_key(judge: Mapping[str, str], prompt: str, settings: Mapping[str, Any]) -> str:
    """Stable key for one judgement; ``judge`` holds ``endpoint``, ``requested_model`` and ``listed_model``,
    ``settings`` must be JSON-serialisable. Raises ValueError when one of the three judge fields is missing."""
    missing = {"endpoint", "requested_model", "listed_model"} - set(judge)
    if missing:
        raise ValueError(f"cache_key needs the judge's {sorted(missing)}")
    blob = json.dumps(
        {"judge": dict(judge), "prompt": prompt, "settings": dict(settings)},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ScoreCache:
    """``get(key)`` -> score, None (cached "no number"), or ``MISSING``; ``put(key, score)`` stores one."""

    MISSING = _MISSING

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL, model TEXT, created REAL)"
            )
            self._conn.commit()
        except sqlite3.DatabaseError as err:
            raise ValueError(f"judge cache {self.path} is not a usable SQLite file: {err}") from err

    def get(self, key: str) -> Any:
        """The cached score (None for an unparseable one) or ``MISSING``."""
        entry = self.get_entry(key)
        return entry if entry is _MISSING else entry[0]

    def get_entry(self, key: str) -> Any:
        """``(score, reported model)`` or ``MISSING``."""
        with self._lock:
            row = self._conn.execute("SELECT score, model FROM scores WHERE key = ?", (key,)).fetchone()
        return _MISSING if row is None else (row[0], row[1] or "")

    def put(self, key: str, score: float | None, model: str = "") -> None:
        """Store ``score`` (0-100 or None) and the model the server reported, replacing an earlier entry."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO scores (key, score, model, created) VALUES (?, ?, ?, ?)",
                (key, score, model, time.time()),
            )
            self._conn.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"ScoreCache({str(self.path)!r})"
