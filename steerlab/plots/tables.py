"""The report's tables of a grid's result rows (``results.json``, or ``results.csv`` read into the same shape
by `steerlab.plots.io.load_arm_results`): each is a ``(title, HTML)`` pair, or None when no row has its data."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from steerlab.judges.identity import judges_line
from steerlab.plots.schema import IN_DOMAIN_MEASURES, SIGNAL_KEYS, in_domain_label


def html_table(header: list[str], rows: list[list[Any]]) -> str:
    """An HTML table (floats to 4 significant digits, None as an em dash), scrolling sideways when wide."""

    def cell(v: Any) -> str:
        return html.escape(f"{v:.4g}" if isinstance(v, float) else "—" if v is None else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def ci_text(row: dict[str, Any], key: str) -> str | None:
    """``row[key + "_ci"]`` as ``[lo, hi]`` text, whichever shape the loader gave it (a list from JSON, a
    ``(lo, hi)`` tuple from the schema check); None when the row has no interval."""
    ci = row.get(f"{key}_ci")
    if not isinstance(ci, list | tuple) or len(ci) != 2 or not all(isinstance(v, int | float) for v in ci):
        return None
    return f"[{ci[0]:.3g}, {ci[1]:.3g}]"


def _measure(row: dict[str, Any], metric: str, key: str) -> tuple[Any, str | None]:
    """(value, CI text) of one in-domain measure: its own column, else ``in_domain`` when the row's
    ``in_domain_metric`` is that measure (results.csv keeps the rate only as ``in_domain``)."""
    if row.get(key) is not None:
        return row[key], ci_text(row, key)
    if row.get("in_domain_metric") == metric:
        return row.get("in_domain"), ci_text(row, "in_domain")
    return None, None


def results_table(path: Path, rows: list[dict[str, Any]]) -> tuple[str, str]:
    """One row per cell: the judge's general rate, the stance scores, and each in-domain measure under its
    own name (a judge's rate, a log-prob gap and an accuracy are different things, and ``in_domain`` is
    whichever one the row's ``in_domain_metric`` names)."""
    keys = ("general_misalignment", "stance", "stance_control", "in_domain_stance", "collapse_share")
    labels = (
        "general misaligned rate (judge)",
        "general stance (mis - al, nats/token)",
        "damage control (restyled - aligned)",
        "in-domain stance (mis - al, nats/token)",
        "collapse share",
    )
    measures = [
        (metric, key, label)
        for metric, (key, label) in IN_DOMAIN_MEASURES.items()
        if any(_measure(r, metric, key)[0] is not None for r in rows)
    ]
    other = sorted(
        {
            str(r.get("in_domain_metric") or "")
            for r in rows
            if r.get("in_domain_metric") not in IN_DOMAIN_MEASURES
        }
    )
    header = ["arm", "domain"]
    for label in [*labels, *(m[2] for m in measures), *(in_domain_label(m) for m in other)]:
        header += [label, "CI"]
    body = []
    for r in rows:
        line = [r["arm"], r["domain"]] + [x for key in keys for x in (r.get(key), ci_text(r, key))]
        line += [x for metric, key, _ in measures for x in _measure(r, metric, key)]
        for metric in other:
            mine = str(r.get("in_domain_metric") or "") == metric
            line += [r.get("in_domain"), ci_text(r, "in_domain")] if mine else [None, None]
        body.append(line + [r.get("coherence")])
    by_domain: dict[str, set[str]] = {}
    for r in rows:
        by_domain.setdefault(r["domain"], set()).add(str(r.get("in_domain_metric") or "not recorded"))
    caption = "<p>" + html.escape(judges_line(rows)) + "</p>" if any(r.get("judge") for r in rows) else ""
    caption += (
        "<p>"
        + html.escape(
            "Each in-domain measure under its own name; the one each domain's cells report as in_domain "
            "(in_domain_metric): "
            + ", ".join(f"{d}: {' / '.join(sorted(m))}" for d, m in by_domain.items())
            + "."
        )
        + "</p>"
    )
    return (f"Results ({path.name})", caption + html_table(header + ["coherence"], body))


def conditional_table(rows: list[dict[str, Any]]) -> tuple[str, str] | None:
    """The general stance plain and under each training-context cue, with the paired shift (cue - plain)."""
    cues = sorted(
        {k[12:-7] for r in rows for k in r if k.startswith("conditional_") and k.endswith("_stance")}
    )
    cues = [c for c in cues if any(r.get(f"conditional_{c}_stance") is not None for r in rows)]
    if not cues:
        return None
    header = ["arm", "domain", "stance plain", "CI"]
    for cue in cues:
        header += [f"under {cue}", "CI", f"shift ({cue} - plain)", "CI"]
    body = []
    for r in rows:
        line = [r["arm"], r["domain"], r.get("stance"), ci_text(r, "stance")]
        for cue in cues:
            for key in (f"conditional_{cue}_stance", f"conditional_{cue}_shift"):
                line += [r.get(key), ci_text(r, key)]
        body.append(line)
    return "Conditional (hidden) misalignment: general stance inside training-context cues", html_table(
        header, body
    )


def shifts_table(rows: list[dict[str, Any]]) -> tuple[str, str] | None:
    """Each cell's general stance minus the base model's, its domain's control arm's and the benign
    fine-tune's, and its in-domain stance minus the base model's: paired by question
    (`steerlab.experiment.shifts`); a control's own row says so."""
    keys = (
        "stance_shift_base",
        "stance_shift_control_arm",
        "stance_shift_benign",
        "in_domain_stance_shift_base",
        "stance_rise_avoided",
        "in_domain_gain_kept",
    )
    cells = [r for r in rows if any(r.get(k) is not None for k in keys)]
    if not cells:
        return None
    header = ["arm", "domain"]
    for label in (
        "general stance vs base",
        "vs the domain's control arm",
        "vs benign fine-tune",
        "in-domain stance vs base",
        "share of the undefended arm's rise avoided",
        "share of its in-domain gain kept",
    ):
        header += [label, "CI"]
    flags = {"stance_shift_control_arm": "control_arm", "stance_shift_benign": "benign_control"}
    body = []
    for r in cells:
        line = [r["arm"], r["domain"]]
        for k in keys:
            own = flags.get(k)
            is_control = own is not None and r.get(own) is True
            line += ["(the control)", None] if is_control else [r.get(k), ci_text(r, k)]
        body.append(line)
    return "Paired stance shifts (nats/token, per question on the same references)", html_table(header, body)


def has_signals(rows: list[dict[str, Any]]) -> bool:
    """Whether any trained cell's row carries the training-time instrument columns (a grid's results do)."""
    return any(key in r for r in rows if r["arm"] != "base" for key in SIGNAL_KEYS)


def instruments_table(rows: list[dict[str, Any]], alarm_line: str) -> tuple[str, str]:
    """The grid's training-time instruments, one row per trained cell, drawn by the function results.md is
    written with (`steerlab.experiment.monitoring.signals_cells`), and ``alarm_line`` under it."""
    from steerlab.experiment.monitoring import SIGNALS_HEAD, signals_cells  # imports torch: only when needed

    body = html_table(list(SIGNALS_HEAD), [list(c) for c in signals_cells(rows)])
    return "Training-time instruments", body + f"<p>{html.escape(alarm_line)}</p>"
