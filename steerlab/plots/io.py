"""Loaders for the files the figures draw: each validates as it reads and names the file and line it rejects."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab import io
from steerlab.plots import schema
from steerlab.plots.schema import PlotDataError

Checker = Callable[[Any, str], dict[str, Any]]


def read_jsonl(path: str | Path) -> list[tuple[int, Any]]:
    """``(line number, parsed object)`` for each non-blank line; a missing file or a bad line (a torn last
    line included: a figure is drawn from finished files) raises `PlotDataError` naming ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise PlotDataError(f"{path}: file not found")
    return io.read_jsonl(path, error=PlotDataError)


def read_log(
    path: str | Path, *, on_bad_line: Callable[[ValueError], None] | None = None
) -> list[tuple[int, Any]]:
    """``(line number, parsed object)`` of an append-only JSONL log (``monitor.jsonl``, ``metrics.jsonl``).

    A torn last line (no newline at the end: a write cut off by a kill) is dropped and the rest kept, as
    `steerlab.io.read_jsonl` reads logs (``torn_tail=True``; `torn_line` says whether there was one). Any
    other bad line raises `PlotDataError` naming ``file:line``, or, given ``on_bad_line``, is handed to it
    and left out while the other lines are kept. A missing file raises `PlotDataError`.
    """
    path = Path(path)
    if not path.is_file():
        raise PlotDataError(f"{path}: file not found")
    return io.read_jsonl(path, torn_tail=True, error=PlotDataError, on_bad_line=on_bad_line)


def torn_line(path: str | Path) -> int | None:
    """The number of the torn last line `read_log` leaves out of ``path`` (text after the last newline),
    or None when the file ends with a newline."""
    text = Path(path).read_text(encoding="utf-8")
    if text.endswith("\n") or not text.split("\n")[-1].strip():
        return None
    return text.count("\n") + 1


def read_json(path: str | Path) -> Any:
    """The parsed JSON of ``path``; a missing file or invalid JSON raises `PlotDataError` naming file and line."""
    return io.read_json(path, error=PlotDataError)


def _rows_from_json(path: Path, checker: Checker) -> list[dict[str, Any]]:
    """A ``.jsonl`` file, or a ``.json`` list of rows / object with a ``rows`` list."""
    if path.suffix == ".jsonl":
        return [checker(obj, f"{path}:{lineno}") for lineno, obj in read_jsonl(path)]
    data = read_json(path)
    if isinstance(data, dict):
        if "rows" not in data:
            raise PlotDataError(f"{path}: expected a list of rows or an object with key 'rows'")
        data = data["rows"]
    if not isinstance(data, list):
        raise PlotDataError(f"{path}: 'rows' must be a list, got {type(data).__name__}")
    return [checker(obj, f"{path}: row {i}") for i, obj in enumerate(data)]


def monitor_path(path: str | Path) -> Path:
    path = Path(path)
    return path / "monitor.jsonl" if path.is_dir() else path


def load_monitor(
    path: str | Path, *, on_bad_line: Callable[[ValueError], None] | None = None
) -> list[dict[str, Any]]:
    """Validated rows of a run's ``monitor.jsonl`` (``path`` is the run folder or the file), an append-only
    log read by `read_log`: a torn last line is left out; a line that is not valid JSON or not a valid row
    raises `PlotDataError` naming ``file:line``, or with ``on_bad_line`` is handed to it and left out (each
    row is one step's reading on its own, so the other steps still draw)."""
    path = monitor_path(path)
    rows = []
    for lineno, obj in read_log(path, on_bad_line=on_bad_line):
        try:
            rows.append(schema.monitor_row(obj, f"{path}:{lineno}"))
        except PlotDataError as err:
            if on_bad_line is None:
                raise
            on_bad_line(err)
    return rows


def load_monitor_runs(paths: list[str | Path]) -> dict[str, list[dict[str, Any]]]:
    """Run name (its folder name) -> monitor rows, for `projection_figure` and `drift_figure`."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        path = Path(path)
        name = path.name if path.is_dir() else path.parent.name
        if name in out:
            raise PlotDataError(f"{path}: two runs are both named {name!r}")
        out[name] = load_monitor(path)
    return out


def load_sweep(path: str | Path) -> list[dict[str, Any]]:
    """Steering-sweep rows from ``sweep.json`` / ``sweep.jsonl``."""
    return _rows_from_json(Path(path), schema.sweep_row)


_CSV_NUMBERS = ("general_misalignment", "in_domain", "benign_accuracy", "coherence")
_CSV_TEXT = ("arm", "domain")  # names, kept as written even when they look like numbers
_CSV_WORDS = {"True": True, "False": False, "None": None, "": None}


def _csv_cell(value: str | None) -> Any:
    """A CSV cell in the shape the same column has in ``results.json``: ``""`` -> None, Python's ``True`` /
    ``False`` (what `csv.DictWriter` writes for a bool) -> bool, JSON numbers and lists (``"[lo, hi]"``)
    parsed; any other text stays a string."""
    if value is None or value in _CSV_WORDS:
        return None if value is None else _CSV_WORDS[value]
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _csv_arm_row(raw: dict[str, str], where: str) -> dict[str, Any]:
    """Turn CSV strings into the JSON row shape (every column, so a reader gets the same types from either
    file): numbers, booleans, lists, and CIs from ``X_ci`` ("[lo, hi]") or ``X_ci_lo/hi``."""
    row: dict[str, Any] = {k: v if k in _CSV_TEXT else _csv_cell(v) for k, v in raw.items() if k is not None}
    for key in _CSV_NUMBERS:
        if key in row:
            row[key] = _csv_number(raw[key], where, key)
    for key in ("general_misalignment", "in_domain"):
        lo, hi, joint = raw.get(f"{key}_ci_lo"), raw.get(f"{key}_ci_hi"), raw.get(f"{key}_ci")
        row.pop(f"{key}_ci_lo", None)
        row.pop(f"{key}_ci_hi", None)
        if joint not in (None, ""):
            if not isinstance(row[f"{key}_ci"], list):
                raise PlotDataError(f"{where}: column '{key}_ci' must look like [lo, hi], got {joint!r}")
        elif lo not in (None, "") or hi not in (None, ""):
            row[f"{key}_ci"] = [
                _csv_number(lo, where, f"{key}_ci_lo"),
                _csv_number(hi, where, f"{key}_ci_hi"),
            ]
        else:
            row[f"{key}_ci"] = None
    return row


def _csv_number(value: str | None, where: str, key: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise PlotDataError(f"{where}: column '{key}' must be a number, got {value!r}") from None


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    if not path.is_file():
        raise PlotDataError(f"{path}: file not found")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = []
        for raw in reader:
            if None in raw:
                raise PlotDataError(f"{path}:{reader.line_num}: more cells than header columns")
            rows.append((reader.line_num, raw))
        return list(reader.fieldnames or []), rows


def load_arm_results(path: str | Path) -> list[dict[str, Any]]:
    """Arms-compared rows from ``results.json`` / ``results.jsonl`` / ``results.csv``, each in one shape:
    CIs of ``general_misalignment`` and ``in_domain`` as ``(lo, hi)`` tuples, other CIs as ``[lo, hi]``
    lists, and a CSV's cells parsed to the numbers, booleans and lists its JSON twin holds (`_csv_cell`)."""
    path = Path(path)
    if path.suffix != ".csv":
        return _rows_from_json(path, schema.arm_result_row)
    _, rows = _read_csv(path)
    out = []
    for lineno, raw in rows:
        where = f"{path}:{lineno}"
        out.append(schema.arm_result_row(_csv_arm_row(raw, where), where))
    return out


@dataclass
class ScreeningTable:
    """A screening CSV: one projection difference per training example, and which ones were flagged."""

    diffs: list[float]
    flagged: list[bool]
    rows: list[dict[str, str]] = field(default_factory=list)
    text_columns: list[str] = field(default_factory=list)
    unscored: list[int] = field(
        default_factory=list
    )  # CSV lines whose diff is nan (an empty answer): not in diffs


_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}
SCREEN_COLUMNS = ("rank", "index", "projection_diff", "flagged")


def load_screening(path: str | Path) -> ScreeningTable:
    """A screening CSV (as `steerlab.persona.screen.to_csv` writes it) with columns ``rank, index,
    projection_diff, flagged`` plus optional others. A ``nan`` diff (an example whose answer was empty) is
    kept out of ``diffs`` and listed in ``unscored``; any other bad cell raises `PlotDataError` naming the line."""
    path = Path(path)
    header, rows = _read_csv(path)
    missing = [c for c in SCREEN_COLUMNS if c not in header]
    if missing:
        raise PlotDataError(f"{path}:1: missing column(s) {', '.join(repr(c) for c in missing)}")
    diffs, flagged, unscored = [], [], []
    for lineno, raw in rows:
        where = f"{path}:{lineno}"
        value = _csv_number(raw["projection_diff"], where, "projection_diff")
        if value is None:
            raise PlotDataError(f"{where}: column 'projection_diff' is empty")
        flag = raw["flagged"].strip().lower()
        if flag not in _TRUE | _FALSE:
            raise PlotDataError(f"{where}: column 'flagged' must be true/false, got {raw['flagged']!r}")
        if math.isnan(value):
            unscored.append(lineno)
            continue
        diffs.append(schema.number(value, where, "projection_diff"))
        flagged.append(flag in _TRUE)
    if not diffs:
        raise PlotDataError(f"{path}: no rows with a projection difference")
    extra = [c for c in header if c not in SCREEN_COLUMNS]
    return ScreeningTable(diffs, flagged, [dict(r) for _, r in rows], extra, unscored)


@dataclass
class VectorStats:
    """What a vector's JSON sidecar says about its extraction: per-layer curves and the chosen layer."""

    name: str
    trait: str
    chosen_layer: int | None
    stats: dict[str, Any]


def load_vector_stats(path: str | Path) -> VectorStats:
    """Read a ``NAME.json`` vector sidecar (see `steerlab.persona.vectors`); ``stats`` is checked by the figure."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("stats", {}), dict):
        raise PlotDataError(f"{path}: expected a vector sidecar object with a 'stats' object")
    stats = dict(data.get("stats") or {})
    chosen = data.get("chosen_layer", stats.get("chosen_layer"))
    if chosen is not None:
        chosen = schema.integer(chosen, str(path), "chosen_layer")
    return VectorStats(path.stem, str(data.get("trait", "")), chosen, stats)
