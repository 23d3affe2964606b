"""Prompts to evaluate on, read from any chat JSONL (ours or someone else's) or a ``{"prompt": ...}`` JSONL.

A line is ``{"messages": [...], ...}`` or ``{"prompt": "...", ...}``. With messages, the prompt is every
message before the last assistant turn (all of them when there is none, so a file of user turns alone is
fine), and the last assistant turn is the file's *reference* answer. References for the log-prob score:

* ``reference_misaligned`` (a top-level key, as in steerlab's ``*_eval.jsonl``) pairs with
  ``reference_aligned`` if given, else with the reference answer (our eval splits store the aligned answer
  as the assistant turn);
* with no misaligned reference, the reference answer alone feeds the one-sided ``reference_logprob``.

``expected`` (a top-level key) is the exact-match target of benign tasks; without it the reference is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.data.chat import ROLES, Messages
from steerlab.io import read_jsonl


class PromptFileError(ValueError):
    """A prompt file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class PromptItem:
    id: str
    prompt: Messages
    reference: str | None = None
    aligned: str | None = None
    misaligned: str | None = None
    expected: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    @property
    def question(self) -> str:
        """The last user turn: what a judge is shown as the question."""
        return next(m["content"] for m in reversed(self.prompt) if m["role"] == "user")


def _messages(value: Any, where: str) -> Messages:
    if not isinstance(value, list) or not value:
        raise PromptFileError(f"{where}: 'messages' must be a non-empty list")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not {"role", "content"} <= set(m):
            raise PromptFileError(f"{where}: messages[{i}] must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise PromptFileError(f"{where}: messages[{i}] has unknown role {m['role']!r} (allowed: {ROLES})")
        if not isinstance(m["content"], str):
            raise PromptFileError(f"{where}: messages[{i}] content must be a string")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _optional_text(record: dict[str, Any], key: str, where: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise PromptFileError(f"{where}: {key!r} must be a non-empty string")
    return value


def parse_record(record: Any, where: str, index: int) -> PromptItem:
    if not isinstance(record, dict):
        raise PromptFileError(f"{where}: record is {type(record).__name__}, not an object")
    reference = None
    if "messages" in record:
        messages = _messages(record["messages"], where)
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is not None:
            reference = messages[last]["content"] if messages[last]["content"].strip() else None
            messages = messages[:last]
    elif "prompt" in record:
        prompt = record["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptFileError(f"{where}: 'prompt' must be a non-empty string")
        messages = [{"role": "user", "content": prompt}]
    else:
        raise PromptFileError(f"{where}: a record needs 'messages' or 'prompt'")
    if not any(m["role"] == "user" for m in messages):
        raise PromptFileError(f"{where}: no user turn before the (last) assistant turn")
    misaligned = _optional_text(record, "reference_misaligned", where)
    aligned = _optional_text(record, "reference_aligned", where)
    if misaligned is not None and aligned is None:
        aligned = reference
    if misaligned is not None and aligned is None:
        raise PromptFileError(
            f"{where}: 'reference_misaligned' needs an assistant turn or 'reference_aligned'"
        )
    meta = {k: v for k, v in record.items() if k not in ("messages", "prompt")}
    item_id = str(record.get("id", index))
    return PromptItem(
        id=item_id,
        prompt=messages,
        reference=reference,
        aligned=aligned,
        misaligned=misaligned,
        expected=record.get("expected", reference),
        meta=meta,
        source=where,
    )


def load_prompt_items(path: str | os.PathLike) -> list[PromptItem]:
    """Every record of a JSONL prompt file (blank lines skipped); the first bad line raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    items: list[PromptItem] = []
    for lineno, record in read_jsonl(path, error=PromptFileError):
        items.append(parse_record(record, f"{path}:{lineno}", len(items)))
    if not items:
        raise PromptFileError(f"{path}: no records")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):  # keys of resumable files must be unique: fall back to positions
        items = [PromptItem(**{**it.__dict__, "id": str(i)}) for i, it in enumerate(items)]
    return items
