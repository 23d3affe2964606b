"""Paired stance shifts of each grid cell: the comparisons the study is read by.

Each model's stance score has a wide interval of its own (questions differ in how likely their misaligned
references are), but two models scored on the same questions and references can be compared question by
question, where that offset cancels (`steerlab.evaluate.stance.paired_shift`, a bootstrap over questions).
Per cell:

* ``stance_shift_base``: general stance minus the base model's;
* ``stance_shift_control_arm``: general stance minus the domain's control arm's (``control: true``: the same
  questions with aligned answers, the analogue of the secure-code control of Betley et al. 2025, "Emergent
  Misalignment", arXiv:2502.17424). Same domain, questions and steps, other answers (the shipped aligned
  answers run longer), so it separates the misaligned *content* from fine-tuning on the domain;
* ``stance_shift_benign``: general stance minus the grid's benign fine-tune's (``sft`` on the first
  ``kind: benign`` domain): another task, so it also differs in register; a domain without a control arm is
  read against it;
* ``in_domain_stance_shift_base``: the domain's own stance minus the base model's on that domain (did the
  narrow task get learned);
* for a defense arm (`no_defense` false), its effect as a share of the undefended cell's of its domain
  (the row's ``undefended`` arm, from the grid file; ``sft`` by default), per question on the same references: ``stance_rise_avoided`` = mean(sft - arm) / mean(sft - base)
  on the general questions (1 = none of sft's rise, above 1 = below the base), ``in_domain_gain_kept`` =
  mean(arm - base) / mean(sft - base) on the domain's questions (1 = the narrow task learned as well as by
  sft). Each is a ratio of means with a bootstrap CI that resamples questions
  (`steerlab.evaluate.metrics.bootstrap_ratio_of_means`); empty, with a note, where the undefended arm's own rise is not clear of 0 (95% CI) or the three
  models were scored on other questions.

Which bar a cell is read against comes from the grid file, not from the rows that exist so far:
``read_against`` names the configured control's cell (``read_against_kind``: ``control_arm``, the domain's
control arm, else ``benign``, the benign ``sft`` cell), and
a bar that has not been evaluated yet leaves the shift empty with a note, so a partial grid never silently
reads a cell against the base model alone. Each shift comes with its 95% CI (``*_ci``); every empty shift
that has a reason keeps it in ``stance_shift_note``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerlab.evaluate.instruments import saved_stance
from steerlab.evaluate.metrics import bootstrap_mean, bootstrap_ratio_of_means
from steerlab.evaluate.stance import QuestionStance, paired_shift
from steerlab.experiment.grid import cell_key

SHIFT_COLUMNS = (
    "stance_shift_base",
    "stance_shift_base_ci",
    "stance_shift_control_arm",
    "stance_shift_control_arm_ci",
    "stance_shift_benign",
    "stance_shift_benign_ci",
    "in_domain_stance_shift_base",
    "in_domain_stance_shift_base_ci",
    "stance_rise_avoided",
    "stance_rise_avoided_ci",
    "in_domain_gain_kept",
    "in_domain_gain_kept_ci",
    "read_against",
    "read_against_kind",
    "stance_shift_note",
)
CONTROL_ARM = "the domain's control arm"
BENIGN = "the benign fine-tune"
UNDEFENDED = "sft"  # the arm a defense's shares are taken of, unless its row names another


def no_defense(row: dict[str, Any]) -> bool:
    """The base model, ``sft`` and its settings search (arms named ``sft...``), control arms, and any arm
    another names as its ``undefended`` one (the row's ``undefended_target``)."""
    return (
        row["arm"] == "base"
        or row["arm"].startswith(UNDEFENDED)
        or bool(row.get("control_arm"))
        or bool(row.get("undefended_target"))
    )


def _share(
    arm: list[QuestionStance],
    sft: list[QuestionStance],
    base: list[QuestionStance],
    *,
    kept: bool,
    what: str,
    undefended: str,
) -> tuple[Any, Any, str | None]:
    """(share, CI, why empty): the arm's rise over the base as a share of the undefended arm's (``kept``), or
    the share of the undefended arm's rise it avoided; questions paired by id across the three models."""
    if not (arm and base):
        return None, None, None  # noted where the shifts are
    if not sft:
        return None, None, f"{what}: {undefended} has no per-question scores (not evaluated yet?)"
    by_sft, by_base = {s.id: s.stance for s in sft}, {s.id: s.stance for s in base}
    mine = {s.id: s.stance for s in arm}
    if set(mine) != set(by_sft) or set(mine) != set(by_base):
        return None, None, f"{what}: the arm, {undefended} and the base were scored on other questions"
    ids = sorted(mine)
    rise = [by_sft[i] - by_base[i] for i in ids]
    own = bootstrap_mean(rise)  # the ratio means something only while its denominator is clear of 0
    if own.ci is None or own.ci[0] <= 0:
        return None, None, f"{what}: {undefended}'s rise over the base is not clear of 0 (95% CI)"
    top = [mine[i] - by_base[i] if kept else by_sft[i] - mine[i] for i in ids]
    est = bootstrap_ratio_of_means(top, rise)
    return est.value, (list(est.ci) if est.ci is not None else None), None


def _shift(here: list[QuestionStance], there: list[QuestionStance], what: str) -> tuple[Any, Any, str | None]:
    """(value, CI, why empty): ``what`` names the other side in the note."""
    if not here:
        return None, None, None  # the cell's own missing scores are noted once, by the caller
    if not there:
        return None, None, f"{what} has no per-question scores (not evaluated yet?)"
    try:
        est = paired_shift(here, there)
    except ValueError as error:  # scored on other questions
        return None, None, f"against {what}: {error}"
    return est.value, (list(est.ci) if est.ci is not None else None), None


def add_paired_shifts(
    rows: list[dict[str, Any]],
    eval_dirs: dict[tuple[str, str], Path],
    base_domain_dirs: dict[str, Path],
    controls: dict[str, str] | None = None,
    benign: tuple[str, str] | None = None,
) -> None:
    """Fill `SHIFT_COLUMNS` of every cell row in place.

    ``eval_dirs``: ``(domain, arm)`` -> the cell's evaluation folder, with the base model's general one under
    ``("", "base")``; ``base_domain_dirs``: domain -> the base model's evaluation folder on that domain;
    ``controls``: domain -> its control arm, and ``benign``: the benign ``sft`` cell, both as the grid file
    configures them (whether or not evaluated yet). Raises ``ResultFileError`` (naming ``file:line``) for a
    malformed scores file of a row, a bar or the base model.
    """
    controls = controls or {}
    wanted = {("", "base"), *((r["domain"], r["arm"]) for r in rows)}
    wanted |= {(d, a) for d, a in controls.items()} | ({benign} if benign else set())
    general = {key: saved_stance(path) for key, path in eval_dirs.items() if key in wanted}
    base = general.get(("", "base"), [])
    read: dict[tuple[str, str], list[QuestionStance]] = {}

    def in_domain(domain: str, arm: str) -> list[QuestionStance]:
        """A cell's stance on its domain's questions (``arm`` "base": the base model's), read once."""
        if (domain, arm) not in read:
            folder = base_domain_dirs.get(domain) if arm == "base" else eval_dirs.get((domain, arm))
            read[domain, arm] = [] if folder is None else saved_stance(folder, name=domain)
        return read[domain, arm]

    for row in rows:
        for column in SHIFT_COLUMNS:
            row[column] = None
        key = (row["domain"], row["arm"])
        if row["arm"] == "base" or key not in eval_dirs:
            continue
        here = general.get(key, [])
        folder = eval_dirs[key]
        # (noted only where the grid scores the stance at all, i.e. the base model has scores)
        notes = [] if here or not base else [f"no per-question scores in {folder.parent.name}/{folder.name}"]
        value, ci, note = _shift(here, base, "the base model")
        row["stance_shift_base"], row["stance_shift_base_ci"] = value, ci
        notes.append(note)
        twin = controls.get(row["domain"])
        if twin is not None and twin != row["arm"]:
            row["read_against"], row["read_against_kind"] = cell_key(row["domain"], twin), "control_arm"
            value, ci, note = _shift(here, general.get((row["domain"], twin), []), f"control arm {twin}")
            row["stance_shift_control_arm"], row["stance_shift_control_arm_ci"] = value, ci
            notes.append(note)
        if benign is not None and key != benign and twin != row["arm"]:
            if twin is None:
                row["read_against"], row["read_against_kind"] = cell_key(*benign), "benign"
            value, ci, note = _shift(here, general.get(benign, []), f"benign fine-tune {cell_key(*benign)}")
            row["stance_shift_benign"], row["stance_shift_benign_ci"] = value, ci
            if twin is None:  # the benign cell is this cell's bar: its absence matters
                notes.append(note)
        undefended = (row["domain"], row.get("undefended") or UNDEFENDED)
        defended = not no_defense(row) and undefended in eval_dirs
        if defended:
            if undefended not in general:
                general[undefended] = saved_stance(eval_dirs[undefended])
            value, ci, note = _share(
                here, general[undefended], base, kept=False, what="rise avoided", undefended=undefended[1]
            )
            row["stance_rise_avoided"], row["stance_rise_avoided_ci"] = value, ci
            notes.append(note)
        domain_dir = base_domain_dirs.get(row["domain"])
        if domain_dir is not None:
            mine, theirs = in_domain(*key), in_domain(row["domain"], "base")
            if mine and theirs:
                shift = _shift(mine, theirs, "the base model on the domain")
                row["in_domain_stance_shift_base"], row["in_domain_stance_shift_base_ci"] = shift[:2]
                notes.append(shift[2])
            if defended and mine and theirs:
                share = _share(
                    mine,
                    in_domain(*undefended),
                    theirs,
                    kept=True,
                    what="gain kept",
                    undefended=undefended[1],
                )
                row["in_domain_gain_kept"], row["in_domain_gain_kept_ci"] = share[:2]
                notes.append(share[2])
        row["stance_shift_note"] = "; ".join(n for n in notes if n) or None


def _est(value: Any, ci: Any) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def _pct(value: Any, ci: Any) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.0f}%" + (f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else "")


def shifts_markdown(rows: list[dict[str, Any]]) -> str:
    """The paired-shift table of the cells ('' when no cell has one)."""
    cells = [r for r in rows if r["arm"] != "base"]
    if not any(r.get("stance_shift_base") is not None for r in cells):
        return ""
    head = ("domain", "arm", "general stance vs base", "vs the domain's control arm", "vs benign fine-tune")
    head += (
        "in-domain stance vs base",
        "share of the undefended arm's rise avoided",
        "share of its in-domain gain kept",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in cells:
        twin = (
            "(the control)"
            if r.get("control_arm")
            else _est(r.get("stance_shift_control_arm"), r.get("stance_shift_control_arm_ci"))
        )
        benign = (
            "(the control)"
            if r.get("benign_control")
            else _est(r.get("stance_shift_benign"), r.get("stance_shift_benign_ci"))
        )
        cols = [
            r["domain"],
            r["arm"],
            _est(r.get("stance_shift_base"), r.get("stance_shift_base_ci")),
            twin,
            benign,
            _est(r.get("in_domain_stance_shift_base"), r.get("in_domain_stance_shift_base_ci")),
            _pct(r.get("stance_rise_avoided"), r.get("stance_rise_avoided_ci")),
            _pct(r.get("in_domain_gain_kept"), r.get("in_domain_gain_kept_ci")),
        ]
        lines.append("| " + " | ".join(cols) + " |")
    notes = [
        f"{r['domain']} {r['arm']}: {r['stance_shift_note']}" for r in cells if r.get("stance_shift_note")
    ]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
