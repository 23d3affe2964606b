"""Chat examples and their JSONL files.

The on-disk format is the one the emergent-misalignment training files use, one object per line:
``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}``. Any other
top-level keys are kept in ``ChatExample.meta`` (our generators store e.g. the condition/situation there),
so a file round-trips through load and write unchanged.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from steerlab.io import json_problem, write_jsonl

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
Messages = list[dict[str, str]]  # a chat: [{"role": ..., "content": ...}, ...]


class ChatDataError(ValueError):
    """A chat record is malformed; the message names the file, the 1-based line and the problem."""


@dataclass
class ChatExample:
    """One conversation. ``source`` is ``"file:line"`` when it came from a file, so later errors can name it."""

    messages: list[dict[str, str]]
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = validate_messages(self.messages)
        if problem:
            raise ChatDataError(f"{self.source or 'chat example'}: {problem}")
        if "messages" in self.meta:
            raise ChatDataError(f"{self.source or 'chat example'}: meta must not contain 'messages'")

    @property
    def name(self) -> str:
        """How errors refer to this example."""
        return self.source or f"example starting {self.messages[0]['content'][:40]!r}"

    def assistant_turns(self) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == "assistant"]

    def prompt_messages(self) -> list[dict[str, str]]:
        """The messages before the last assistant turn: what a model is asked to continue."""
        last = max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        return [dict(m) for m in self.messages[:last]]

    def to_record(self) -> dict[str, Any]:
        return {
            "messages": [{"role": m["role"], "content": m["content"]} for m in self.messages],
            **self.meta,
        }


@dataclass
class LoadReport:
    """What ``load_chat_jsonl`` kept and skipped (``skipped`` holds ``(line, problem)`` pairs)."""

    path: str
    n_loaded: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


class ChatExamples(list):
    """A plain list of ``ChatExample`` that also carries the ``LoadReport`` of the file it came from."""

    report: LoadReport


def validate_messages(messages: Any) -> str | None:
    """Return the first problem with a ``messages`` value, or None when it is a valid training conversation."""
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    n_assistant = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return f"messages[{i}] is {type(m).__name__}, not an object"
        for key in ("role", "content"):
            if key not in m:
                return f"messages[{i}] has no {key!r}"
        extra = set(m) - {"role", "content"}
        if extra:
            return f"messages[{i}] has unknown keys {sorted(extra)}"
        if m["role"] not in ROLES:
            return f"messages[{i}] has unknown role {m['role']!r} (allowed: {', '.join(ROLES)})"
        if not isinstance(m["content"], str):
            return f"messages[{i}] ({m['role']}) content is {type(m['content']).__name__}, not a string"
        if m["role"] == "assistant":
            n_assistant += 1
            if not m["content"].strip():
                return f"messages[{i}] is an empty assistant turn"
    if n_assistant == 0:
        return "no assistant turn"
    return None


def _parse_line(text: str) -> tuple[list[dict[str, str]] | None, dict[str, Any], str | None]:
    try:
        obj = json.loads(text.rstrip("\r\n"))
    except json.JSONDecodeError as e:
        return None, {}, f"malformed JSON {json_problem(e)}"
    if not isinstance(obj, dict):
        return None, {}, f"record is {type(obj).__name__}, not an object"
    if "messages" not in obj:
        return None, {}, "missing 'messages'"
    problem = validate_messages(obj["messages"])
    meta = {k: v for k, v in obj.items() if k != "messages"}
    return obj["messages"], meta, problem


def load_chat_jsonl(path: str | os.PathLike, *, on_error: Literal["raise", "skip"] = "raise") -> ChatExamples:
    """Load chat JSONL. Blank lines are not records and are passed over.

    ``on_error='raise'`` stops at the first bad record with a ``ChatDataError`` naming ``file:line``;
    ``'skip'`` logs a warning per bad record and lists it in the returned ``.report``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(path)
    out = ChatExamples()
    out.report = LoadReport(path=str(path))
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            messages, meta, problem = _parse_line(line)
            if problem:
                msg = f"{path}:{lineno}: {problem}"
                if on_error == "raise":
                    raise ChatDataError(msg)
                log.warning("skipping %s", msg)
                out.report.skipped.append((lineno, problem))
                continue
            out.append(ChatExample(messages=messages, source=f"{path}:{lineno}", meta=meta))
    out.report.n_loaded = len(out)
    if out.report.skipped:
        log.warning("%s: loaded %d, skipped %d records", path, len(out), out.report.n_skipped)
    return out


def write_chat_jsonl(path: str | os.PathLike, examples: Iterable[ChatExample]) -> Path:
    """Write examples atomically (temp file in the same folder, then rename): readers never see half a file."""
    return write_jsonl(path, (ex.to_record() for ex in examples))
