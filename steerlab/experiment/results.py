"""The grid's results table (Markdown, CSV, JSON) from the eval.json files written so far.

One row per (domain, arm), base model included. General misalignment of the base model is measured once
and shown on every domain's base row; "reduction" is relative to the same domain's ``sft`` arm.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from steerlab.atomic import write_json, write_text
from steerlab.experiment.grid import Grid

COLUMNS = (
    "domain",
    "arm",
    "general_misalignment",
    "general_misalignment_ci",
    "reduction_vs_sft_pct",
    "logprob_gap",
    "logprob_gap_ci",
    "in_domain_metric",
    "in_domain",
    "in_domain_ci",
    "benign_accuracy",
    "benign_accuracy_ci",
    "coherence",
    "coherence_ci",
    "incoherent_rate",
    "projection",
)


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def collect_rows(grid: Grid) -> list[dict[str, Any]]:
    base_general = _read(grid.root / "base" / "eval" / "eval.json")
    rows: list[dict[str, Any]] = []
    for domain in grid.domains:
        base_domain = _read(grid.root / "base" / f"eval_{domain.name}" / "eval.json")
        if base_general or base_domain:
            row = dict(base_general or {})
            for key in (
                "in_domain_metric",
                "in_domain",
                "in_domain_ci",
                "benign_accuracy",
                "benign_accuracy_ci",
            ):
                row[key] = (base_domain or {}).get(key)
            rows.append({**row, "arm": "base", "domain": domain.name})
        for cell in grid.cells():
            if cell.domain.name != domain.name:
                continue
            result = _read(cell.config.run_dir / "eval" / "eval.json")
            if result is not None:
                rows.append({**result, "arm": cell.arm, "domain": domain.name})
    for row in rows:
        sft = next((r for r in rows if r["domain"] == row["domain"] and r["arm"] == "sft"), None)
        row["reduction_vs_sft_pct"] = _reduction(row, sft)
    return rows


def _reduction(row: dict[str, Any], sft: dict[str, Any] | None) -> float | None:
    if sft is None or row["arm"] in ("sft", "base"):
        return None
    ref, value = sft.get("general_misalignment"), row.get("general_misalignment")
    if ref is None or value is None or ref == 0:
        return None
    return round(100.0 * (ref - value) / ref, 1)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "domain",
        "arm",
        "general misalignment [95% CI]",
        "vs sft",
        "log-prob gap (mis - al)",
        "in-domain learning [95% CI]",
        "coherence",
        "projection",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        reduction = "–" if r.get("reduction_vs_sft_pct") is None else f"{r['reduction_vs_sft_pct']:+.0f}%"
        lines.append(
            "| "
            + " | ".join(
                [
                    r["domain"],
                    r["arm"],
                    f"{_fmt(r.get('general_misalignment'))} {_fmt(r.get('general_misalignment_ci'))}",
                    reduction,
                    f"{_fmt(r.get('logprob_gap'))} {_fmt(r.get('logprob_gap_ci'))}",
                    f"{_fmt(r.get('in_domain'))} {_fmt(r.get('in_domain_ci'))} ({r.get('in_domain_metric') or '–'})",
                    _fmt(r.get("coherence")),
                    _fmt(r.get("projection")),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def write_results(grid: Grid) -> list[dict[str, Any]]:
    rows = collect_rows(grid)
    write_json(grid.root / "results.json", rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: json.dumps(row.get(k)) if isinstance(row.get(k), list) else row.get(k) for k in COLUMNS}
        )
    write_text(grid.root / "results.csv", buffer.getvalue())
    write_text(grid.root / "results.md", markdown_table(rows))
    return rows
