"""Paired stance shifts of each grid cell: the comparisons the study is read by.

Each model's stance score has a wide interval of its own (questions differ in how likely their misaligned
references are), but two models scored on the same questions and references can be compared question by
question, where that offset cancels (`steerlab.evaluate.stance.paired_shift`, a bootstrap over questions).
Per cell:

* ``stance_shift_base``: general stance minus the base model's;
* ``stance_shift_benign``: general stance minus the grid's benign fine-tune's (``sft`` on the first
  ``kind: benign`` domain). On a small model any fine-tune moves the general stance (see the README's
  instruments section), so this is the shift that can be read as misalignment and not as fine-tuning;
* ``stance_shift_control``: general stance minus the domain's control arm's (``control: true``: the same
  questions with aligned answers, the analogue of the secure-code control of Betley et al. 2025, "Emergent
  Misalignment", arXiv:2502.17424). It isolates the misaligned *content* from the domain's register and
  length, which the benign fine-tune (another task) does not;
* ``in_domain_stance_shift_base``: the domain's own stance minus the base model's on that domain (did the
  narrow task get learned).

Each comes with its 95% CI (``*_ci``). A value is None where either side saved no per-question scores, and
the reason is kept in ``stance_shift_note`` rather than dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerlab.evaluate.instruments import saved_stance
from steerlab.evaluate.stance import QuestionStance, paired_shift

SHIFT_COLUMNS = (
    "stance_shift_base",
    "stance_shift_base_ci",
    "stance_shift_benign",
    "stance_shift_benign_ci",
    "stance_shift_control",
    "stance_shift_control_ci",
    "in_domain_stance_shift_base",
    "in_domain_stance_shift_base_ci",
    "stance_shift_note",
    "benign_control",
)


def _shift(here: list[QuestionStance], there: list[QuestionStance]) -> tuple[Any, Any, str | None]:
    if not here or not there:
        return None, None, None
    try:
        est = paired_shift(here, there)
    except ValueError as error:  # scored on other questions
        return None, None, str(error)
    return est.value, (list(est.ci) if est.ci is not None else None), None


def add_paired_shifts(
    rows: list[dict[str, Any]],
    eval_dirs: dict[tuple[str, str], Path],
    base_domain_dirs: dict[str, Path],
    benign_domains: frozenset[str] = frozenset(),
) -> None:
    """Fill `SHIFT_COLUMNS` of every cell row in place.

    ``eval_dirs``: ``(domain, arm)`` -> the cell's evaluation folder, with the base model's general one under
    ``("", "base")``; ``base_domain_dirs``: domain -> the base model's evaluation folder on that domain.
    Raises ``ResultFileError`` (naming ``file:line``) for a malformed scores file.
    """
    general = {key: saved_stance(path) for key, path in eval_dirs.items()}
    base = general.get(("", "base"), [])
    benign_key = next(
        ((r["domain"], "sft") for r in rows if r["domain"] in benign_domains and r["arm"] == "sft"), None
    )
    benign = general.get(benign_key, []) if benign_key else []
    for row in rows:
        for column in SHIFT_COLUMNS:
            row[column] = None
        key = (row["domain"], row["arm"])
        row["benign_control"] = key == benign_key
        if row["arm"] == "base" or key not in eval_dirs:
            continue
        here = general.get(key, [])
        notes = []
        row["stance_shift_base"], row["stance_shift_base_ci"], note = _shift(here, base)
        notes.append(note)
        if key != benign_key:
            row["stance_shift_benign"], row["stance_shift_benign_ci"], note = _shift(here, benign)
            notes.append(note)
        control = next((r for r in rows if r["domain"] == row["domain"] and r.get("control")), None)
        if control is not None and control is not row:
            twin = general.get((row["domain"], control["arm"]), [])
            row["stance_shift_control"], row["stance_shift_control_ci"], note = _shift(here, twin)
            notes.append(note)
        domain_dir = base_domain_dirs.get(row["domain"])
        if domain_dir is not None:
            mine = saved_stance(eval_dirs[key], name=row["domain"])
            theirs = saved_stance(domain_dir, name=row["domain"])
            shift = _shift(mine, theirs)
            row["in_domain_stance_shift_base"], row["in_domain_stance_shift_base_ci"] = shift[:2]
            notes.append(shift[2])
        row["stance_shift_note"] = "; ".join(n for n in notes if n) or None


def _est(value: Any, ci: Any) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def shifts_markdown(rows: list[dict[str, Any]]) -> str:
    """The paired-shift table of the cells ('' when no cell has one)."""
    cells = [r for r in rows if r["arm"] != "base"]
    if not any(r.get("stance_shift_base") is not None for r in cells):
        return ""
    head = ("domain", "arm", "general stance vs base", "vs benign fine-tune", "vs the domain's control")
    head += ("in-domain stance vs base",)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in cells:
        benign = (
            "(the control)"
            if r.get("benign_control")
            else _est(r.get("stance_shift_benign"), r.get("stance_shift_benign_ci"))
        )
        control = (
            "(the control)"
            if r.get("control")
            else _est(r.get("stance_shift_control"), r.get("stance_shift_control_ci"))
        )
        cols = [
            r["domain"],
            r["arm"],
            _est(r.get("stance_shift_base"), r.get("stance_shift_base_ci")),
            benign,
            control,
            _est(r.get("in_domain_stance_shift_base"), r.get("in_domain_stance_shift_base_ci")),
        ]
        lines.append("| " + " | ".join(cols) + " |")
    notes = [
        f"{r['domain']} {r['arm']}: {r['stance_shift_note']}" for r in cells if r.get("stance_shift_note")
    ]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
