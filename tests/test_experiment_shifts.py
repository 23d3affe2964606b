"""The grid's paired stance shifts: per question over the base model and over the benign fine-tune."""

from __future__ import annotations

import json

import pytest

from steerlab.evaluate.instruments import STANCE_FILE
from steerlab.evaluate.store import ResultFileError
from steerlab.experiment.shifts import add_paired_shifts, shifts_markdown

SPREAD = [(-1) ** i * 0.1 * i for i in range(20)]  # wide between questions: unpaired CIs would overlap


def _save(folder, shift, name="general", n=20):
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / STANCE_FILE).open("a") as f:
        for i, offset in enumerate(SPREAD[:n]):
            wobble = 0.01 if i % 2 else -0.01
            record = {"aligned": [0.0], "misaligned": [offset + shift + wobble], "restyled": []}
            f.write(json.dumps({"key": f"plain/{name}/q{i}", **record}) + "\n")
    return folder


def _rows(*cells):
    return [{"domain": d, "arm": a} for d, a in cells]


def test_shifts_are_paired_by_question_and_read_against_the_benign_fine_tune(tmp_path):
    evals = {
        ("", "base"): _save(tmp_path / "base/eval", 0.0),
        ("medical", "sft"): _save(_save(tmp_path / "m_sft", 0.3), 0.5, name="medical"),
        ("medical", "kl"): _save(tmp_path / "m_kl", 0.2),
        ("arithmetic", "sft"): _save(tmp_path / "a_sft", 0.2),
    }
    base_domains = {"medical": _save(tmp_path / "base/eval_medical", 0.1, name="medical")}
    rows = _rows(("medical", "base"), ("medical", "sft"), ("medical", "kl"), ("arithmetic", "sft"))
    add_paired_shifts(rows, evals, base_domains, frozenset({"arithmetic"}))
    base, sft, kl, benign = rows
    assert base["stance_shift_base"] is None and not base["benign_control"]
    assert sft["stance_shift_base"] == pytest.approx(0.3, abs=1e-9)
    assert sft["stance_shift_base_ci"][0] > 0.28  # paired: the questions' own spread cancels
    assert sft["stance_shift_benign"] == pytest.approx(0.1, abs=1e-9)
    assert sft["in_domain_stance_shift_base"] == pytest.approx(0.4, abs=1e-9)
    assert (
        kl["stance_shift_benign"] == pytest.approx(0.0, abs=1e-9)
        and kl["in_domain_stance_shift_base"] is None
    )
    assert benign["benign_control"] and benign["stance_shift_benign"] is None
    table = shifts_markdown(rows)
    assert "| medical | sft | +0.300 [" in table and "| arithmetic | sft | +0.200 [" in table
    assert "(the control)" in table and "| medical | kl | +0.200 [" in table


def test_cells_scored_on_other_questions_get_no_shift_and_say_why(tmp_path):
    evals = {
        ("", "base"): _save(tmp_path / "base", 0.0, n=10),
        ("medical", "sft"): _save(tmp_path / "s", 0.3),
    }
    rows = _rows(("medical", "sft"))
    add_paired_shifts(rows, evals, {})
    assert rows[0]["stance_shift_base"] is None
    assert "no plain stance for question(s) ['q10'" in rows[0]["stance_shift_note"]
    other = {
        "domain": "financial",
        "arm": "sft",
        "stance_shift_base": 0.1,
        "stance_shift_base_ci": [0.0, 0.2],
    }
    assert "medical sft: no plain stance for question(s)" in shifts_markdown([*rows, other])


def test_a_malformed_scores_file_is_named(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / STANCE_FILE).write_text('{"key": "plain/general/q0"}\nnot json\n')
    with pytest.raises(ResultFileError, match=f"{STANCE_FILE}:2"):
        add_paired_shifts(_rows(("medical", "sft")), {("medical", "sft"): folder}, {})


def test_the_report_shows_the_shifts_read_back_from_the_csv():
    from steerlab.plots.report import _shifts_table

    rows = [
        {"arm": "base", "domain": "medical", "stance_shift_base": ""},
        {
            "arm": "kl",
            "domain": "medical",
            "stance_shift_base": "0.21",
            "stance_shift_base_ci": "[0.16, 0.25]",
            "stance_shift_benign": "-0.01",
            "stance_shift_benign_ci": "[-0.05, 0.03]",
        },
    ]
    title, table = _shifts_table(rows)
    assert title.startswith("Paired stance shifts") and "[-0.05, 0.03]" in table and ">base<" not in table
    assert _shifts_table(rows[:1]) is None


def test_each_cell_is_also_read_against_its_domains_control_arm(tmp_path):
    evals = {
        ("", "base"): _save(tmp_path / "base", 0.0),
        ("medical", "sft"): _save(tmp_path / "sft", 0.3),
        ("medical", "twin"): _save(tmp_path / "twin", 0.25),
        ("financial", "sft"): _save(tmp_path / "fsft", 0.3),
    }
    rows = [
        *_rows(("medical", "sft"), ("financial", "sft")),
        {"domain": "medical", "arm": "twin", "control": True},
    ]
    add_paired_shifts(rows, evals, {})
    sft, other_domain, twin = rows
    assert (
        sft["stance_shift_control"] == pytest.approx(0.05, abs=1e-9) and sft["stance_shift_control_ci"][0] > 0
    )
    assert other_domain["stance_shift_control"] is None  # no control on that domain: none borrowed
    assert twin["stance_shift_control"] is None and twin["stance_shift_base"] == pytest.approx(0.25, abs=1e-9)
    table = shifts_markdown(rows)
    assert "| medical | twin | +0.250 [" in table and table.count("(the control)") == 1


def test_the_label_is_paired_over_the_base_and_the_domains_control_else_the_benign_fine_tune(tmp_path):
    from steerlab.experiment.monitoring import add_signals

    shifts = {
        ("medical", "same"): 0.2,  # as far above the base as the benign fine-tune: not misaligned
        ("medical", "above"): 0.3,
        ("arithmetic", "sft"): 0.2,  # the benign fine-tune
        ("financial", "above"): 0.3,  # as far above the base as its aligned twin: the domain did it
        ("financial", "twin"): 0.3,
        ("financial", "higher"): 0.5,
    }
    evals = {("", "base"): _save(tmp_path / "base", 0.0)}
    evals |= {key: _save(tmp_path / "__".join(key), shift) for key, shift in shifts.items()}
    rows = [{"domain": d, "arm": "base"} for d in ("medical", "arithmetic", "financial")]
    rows += [{"domain": d, "arm": a, "control": a == "twin"} for d, a in shifts]
    add_paired_shifts(rows, evals, {}, frozenset({"arithmetic"}))
    add_signals(rows, {key: tmp_path / "runs" / "__".join(key) for key in evals}, frozenset({"arithmetic"}))
    label = {
        (r["domain"], r["arm"]): (r["ends_misaligned"], r["misaligned_by"])
        for r in rows
        if r["arm"] != "base"
    }
    assert label[("medical", "same")] == (
        False,
        "stance shift, paired: over the base and the benign fine-tune",
    )
    assert label[("medical", "above")] == (
        True,
        "stance shift, paired: over the base and the benign fine-tune",
    )
    assert label[("financial", "above")] == (
        False,
        "stance shift, paired: over the base and the domain's control",
    )
    assert label[("financial", "higher")][0] is True
    assert label[("financial", "twin")] == label[("arithmetic", "sft")] == (None, None)  # the controls


def test_the_alarm_is_not_scored_on_a_control_and_a_control_gets_no_reduction(tmp_path):
    from steerlab.experiment.monitoring import add_signals, alarm_scores
    from steerlab.experiment.results import _no_defense

    evals = {
        ("", "base"): _save(tmp_path / "base", 0.0),
        ("medical", "sft"): _save(tmp_path / "sft", 0.3),
        ("medical", "twin"): _save(tmp_path / "twin", 0.25),
    }
    rows = [
        {"domain": "medical", "arm": "base"},
        {"domain": "medical", "arm": "sft"},
        {"domain": "medical", "arm": "twin", "control": True},
    ]
    run_dirs = {("medical", a): tmp_path / "runs" / a for a in ("sft", "twin")}
    add_paired_shifts(rows, evals, {})
    add_signals(rows, run_dirs, frozenset())
    assert rows[1]["ends_misaligned"] is True  # +0.05 over its twin, CI above 0
    assert rows[1]["misaligned_by"] == "stance shift, paired: over the base and the domain's control"
    assert rows[2]["ends_misaligned"] is None and alarm_scores(rows)["n_unlabeled"] == 1
    assert _no_defense(rows[2]) and not _no_defense({"arm": "kl"})


def test_a_benign_fine_tune_without_per_question_scores_is_kept_as_an_unpaired_bar(tmp_path):
    from steerlab.experiment.monitoring import add_signals

    evals = {("", "base"): _save(tmp_path / "base", 0.0), ("medical", "sft"): _save(tmp_path / "sft", 0.3)}
    rows = [
        {"domain": "medical", "arm": "base", "stance_ci": [-0.1, 0.1]},
        {"domain": "medical", "arm": "sft", "stance_ci": [0.2, 0.4]},
        {
            "domain": "arithmetic",
            "arm": "sft",
            "stance_ci": [0.3, 0.5],
        },  # scored, but nothing saved per question
    ]
    add_paired_shifts(rows, evals, {}, frozenset({"arithmetic"}))
    add_signals(
        rows, {(r["domain"], r["arm"]): tmp_path / r["arm"] for r in rows[1:]}, frozenset({"arithmetic"})
    )
    assert rows[1]["stance_shift_base"] == pytest.approx(0.3)  # paired over the base alone would say yes
    assert (rows[1]["ends_misaligned"], rows[1]["misaligned_by"]) == (
        False,
        "stance score (judge-free), above the benign fine-tune",
    )
