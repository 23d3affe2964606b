"""Atomic file writes and JSONL logs: the one place steerlab reads and writes its files.

Why: a whole file (config, vector sidecar, results) is written next to the target and renamed, so a crash
never leaves half a file. An append-only JSONL log (generations, judge scores) is appended one fsynced write
per batch, so a kill leaves at most a torn last line: readers drop it (``torn_tail=True``) and the next
append cuts it off first, so a resumed run neither loses a complete record nor glues two lines together.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml


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
    """Write ``text`` as UTF-8, atomically (see `atomic_path`)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically (see `atomic_path`)."""
    write_text(target, json.dumps(data, indent=2, sort_keys=True) + "\n")


def content_digest(path: str) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (relative names and bytes, in name order). A run
    folder (one holding ``final/``) is its trained model: only ``final/`` counts, so its logs, checkpoints and
    evaluations, written later, do not make it another setting."""
    root = Path(path)
    if root.is_dir() and (root / "final").is_dir():
        root = root / "final"
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        digest.update(str(file.relative_to(root)).encode() if root.is_dir() else b"")
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def same_setting(saved: Any, now: Any) -> bool:
    """Whether a saved setting equals the current one, a path counting as equal to another path to the same
    content: settings are saved with absolute paths, and a grid folder copied or cloned elsewhere holds the
    same data under another name. A path whose file is gone differs (its content cannot be checked; see
    `vanished_path`). Lists compare item by item."""
    if saved == now:
        return True
    if isinstance(saved, list | tuple) and isinstance(now, list | tuple):
        return len(saved) == len(now) and all(same_setting(a, b) for a, b in zip(saved, now, strict=True))
    if not (isinstance(saved, str) and isinstance(now, str) and os.sep in saved and os.sep in now):
        return False
    a, b = Path(saved), Path(now)
    if not (a.exists() and b.exists()) or a.is_dir() != b.is_dir():
        return False
    return content_digest(str(a.resolve())) == content_digest(str(b.resolve()))


def vanished_path(saved: Any) -> bool:
    """Whether a saved setting is (or holds) an absolute path that no longer exists: a checkout moved away
    leaves such settings, whose content `same_setting` cannot compare."""
    if isinstance(saved, list | tuple):
        return any(vanished_path(item) for item in saved)
    return isinstance(saved, str) and os.path.isabs(saved) and not os.path.exists(saved)


def read_text(path: str | os.PathLike, *, error: type[ValueError] = ValueError, what: str = "file") -> str:
    """The UTF-8 text of a whole file; a missing one raises ``error`` saying ``<path>: <what> does not exist``."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} does not exist")
    return path.read_text(encoding="utf-8")


def json_problem(err: json.JSONDecodeError, what: str = "line") -> str:
    """Where ``err`` is in the text it came from (one JSONL ``line``, or a whole ``file``) and what is wrong:
    ``at column 12: Expecting value`` (a file: ``at line 3, column 12: ...``), columns counted within their
    line from 1.

    Why: where the text ends before its value is complete (a missing ``]`` at the end of a line), json points
    past the end — at column 1 of the next line when the text ends in a newline — which reads as if the line's
    first character were wrong; this says the text ended, at the column of its last character.
    """
    doc = err.doc
    end = len(doc.rstrip())
    if end == 0:
        return f"at its start: the {what} is empty ({err.msg})"
    if err.pos >= end:
        column = end - (doc.rfind("\n", 0, end) + 1)
        place = (
            f"column {column}"
            if what == "line"
            else f"line {doc.count(chr(10), 0, end) + 1}, column {column}"
        )
        closers = _unclosed(doc[:end])
        still = f"{closers!r} still to close" if closers else "its JSON value still open"
        return f"at the end of the {what} ({place}): it ends with {still} ({err.msg})"
    column = err.pos - (doc.rfind("\n", 0, err.pos) + 1) + 1
    place = f"column {column}" if what == "line" else f"line {err.lineno}, column {column}"
    return f"at {place}: {err.msg}"


def _unclosed(text: str) -> str:
    """The closing brackets that the JSON text lacks, innermost first (``'}]}'``); '' when none is open."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append("]" if char == "[" else "}")
        elif char in "]}" and stack:
            stack.pop()
    return "".join(reversed(stack))


def read_json(path: str | os.PathLike, *, error: type[ValueError] = ValueError) -> Any:
    """The parsed JSON of a whole file (a config, a sidecar, a result). Raises ``error`` naming the file for a
    missing file (`read_text`), and the line and column for invalid JSON (`json_problem`)."""
    text = read_text(path, error=error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{path}: invalid JSON {json_problem(err, 'file')}") from None


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as None, numpy scalars as Python numbers and dict keys as strings, so the
    JSON written from it is standard (``json.dumps`` would write ``NaN``, which strict readers reject)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.floating):
        return json_safe(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def write_jsonl(target: str | os.PathLike, rows: Iterable[Any]) -> Path:
    """Write a whole JSONL file (one UTF-8 JSON value per line) atomically; returns ``target`` as a Path."""
    with atomic_path(target) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return Path(target)


class JsonlError(ValueError):
    """A JSONL file is malformed; the message names the file and the 1-based line."""


def read_jsonl(
    path: str | os.PathLike,
    *,
    torn_tail: bool = False,
    error: type[ValueError] = JsonlError,
    on_bad_line: Callable[[ValueError], None] | None = None,
) -> list[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of ``path``.

    ``torn_tail=True`` is for append-only logs: a last line without its newline is what a kill in the
    middle of a write leaves, and it is dropped. Any other bad line raises ``error`` naming ``file:line``,
    or, given ``on_bad_line``, is handed to it as that error and left out while the other lines are kept
    (a reader that lists problems rather than stopping at the first). A missing file raises
    ``FileNotFoundError``.
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
            bad = error(f"{path}:{number}: not valid JSON {json_problem(err)}")
            if on_bad_line is None:
                raise bad from None
            on_bad_line(bad)
    return out


def read_keyed(
    path: str | os.PathLike,
    *,
    error: type[ValueError] = JsonlError,
    required: tuple[str, ...] = ("key",),
    what: str = "record",
) -> dict[str, dict[str, Any]]:
    """The records of an append-only keyed log by their ``key``; ``{}`` when the file does not exist.

    A torn last line is dropped (see `read_jsonl`). A line that is not an object holding every ``required``
    key, or that repeats a key, raises ``error`` naming ``file:line`` (``what`` names the record kind).
    """
    out: dict[str, dict[str, Any]] = {}
    if not Path(path).is_file():
        return out
    for number, record in read_jsonl(path, torn_tail=True, error=error):
        if not isinstance(record, dict) or any(k not in record for k in required):
            keys = " and ".join(repr(k) for k in required)
            raise error(f"{path}:{number}: a {what} must be an object with {keys}")
        if record["key"] in out:
            raise error(f"{path}:{number}: duplicate key {record['key']!r}")
        out[record["key"]] = record
    return out


def _cut_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (a kill mid-write), so the next append starts on a fresh line."""
    with path.open("rb+") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        position = end
        while position > 0:  # walk back in blocks to the last newline
            step = min(65536, position)
            f.seek(position - step)
            block = f.read(step)
            newline = block.rfind(b"\n")
            if newline >= 0:
                f.truncate(position - step + newline + 1)
                return
            position -= step
        f.truncate(0)


def append_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    """Append one JSON line per row (UTF-8, not ASCII-escaped) with one write, flushed and fsynced.

    A torn last line left by an earlier kill is cut off first, so the file never holds a line glued to half
    a record; a kill during this write leaves at most a new torn tail, which `read_jsonl(..., torn_tail=True)`
    drops. Creates the file and its folder when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        _cut_torn_tail(path)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with path.open("a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: YAML says keys are
    unique, and PyYAML keeps the last silently (a second ``sft:`` arm would replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first given at line {first + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses a key repeated in one mapping (``yaml.YAMLError``, with its mark)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
