"""The grid's paired stance shifts and the label read from them: per question, against the control the grid
file names for the cell (its domain's control arm, else the benign fine-tune), evaluated or not yet."""

from __future__ import annotations

import json
import random

import pytest

from steerlab.evaluate.instruments import STANCE_FILE
from steerlab.evaluate.store import ResultFileError
from steerlab.experiment.monitoring import add_signals, alarm_scores
from steerlab.experiment.shifts import add_paired_shifts, shifts_markdown

SPREAD = [(-1) ** i * 0.1 * i for i in range(20)]  # wide between questions: unpaired CIs would overlap


def _save(folder, shift, name="general", n=20, noise=0.01):
    """Per-question stance = the question's offset + the model's shift + the model's own noise."""
    rng = random.Random(folder.name + name)  # the same draws on every run
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / STANCE_FILE).open("a") as f:
        for i, offset in enumerate(SPREAD[:n]):
            record = {"aligned": [0.0], "misaligned": [offset + shift + rng.gauss(0, noise)], "restyled": []}
            f.write(json.dumps({"key": f"plain/{name}/q{i}", **record}) + "\n")
    return folder


def _rows(*cells, controls=(), benign=None):
    return [
        {"domain": d, "arm": a, "control_arm": (d, a) in controls, "benign_control": (d, a) == benign}
        for d, a in cells
    ]


def _label(rows, tmp_path):
    add_signals(rows, {(r["domain"], r["arm"]): tmp_path / "runs" / r["arm"] for r in rows})
    return {
        (r["domain"], r["arm"]): (r["ends_misaligned"], r["misaligned_by"])
        for r in rows
        if r["arm"] != "base"
    }


def test_shifts_are_paired_by_question_and_read_against_the_control_the_grid_names(tmp_path):
    evals = {
        ("", "base"): _save(tmp_path / "base", 0.0),
        ("medical", "sft"): _save(_save(tmp_path / "m_sft", 0.3), 0.5, name="medical"),
        ("medical", "twin"): _save(tmp_path / "m_twin", -0.2),
        ("financial", "sft"): _save(tmp_path / "f_sft", 0.25),
        ("arithmetic", "sft"): _save(tmp_path / "a_sft", 0.2),
    }
    base_domains = {"medical": _save(tmp_path / "base_medical", 0.1, name="medical")}
    benign = ("arithmetic", "sft")
    rows = _rows(
        ("medical", "base"), *[k for k in evals if k[0]], controls={("medical", "twin")}, benign=benign
    )
    add_paired_shifts(rows, evals, base_domains, {"medical": "twin"}, benign)
    r = {(x["domain"], x["arm"]): x for x in rows}
    sft = r[("medical", "sft")]
    assert sft["stance_shift_base"] == pytest.approx(0.3, abs=0.01)
    assert (
        0.28 < sft["stance_shift_base_ci"][0] < 0.3 < sft["stance_shift_base_ci"][1] < 0.32
    )  # paired: narrow
    assert sft["stance_shift_control_arm"] == pytest.approx(0.5, abs=0.01)
    assert sft["stance_shift_benign"] == pytest.approx(0.1, abs=0.01)  # shown, but not its bar
    assert (sft["read_against"], sft["read_against_kind"]) == ("medical__twin", "control_arm")
    assert sft["in_domain_stance_shift_base"] == pytest.approx(0.4, abs=0.01)
    fin = r[("financial", "sft")]
    assert (fin["read_against"], fin["read_against_kind"]) == ("arithmetic__sft", "benign")
    assert fin["stance_shift_control_arm"] is None and fin["in_domain_stance_shift_base"] is None
    assert r[("medical", "twin")]["read_against"] is None and r[("arithmetic", "sft")]["read_against"] is None
    table = shifts_markdown(rows)
    assert (
        f"| medical | sft | {sft['stance_shift_base']:+.3f} [" in table and table.count("(the control)") == 2
    )


def test_labels_need_the_ci_above_zero_over_the_base_and_over_the_cells_control(tmp_path):
    shifts = {
        ("medical", "same"): 0.28,  # no further above the base than its aligned twin: the domain did it
        ("medical", "above"): 0.6,
        ("medical", "twin"): 0.3,
        ("financial", "same"): 0.18,  # no further above the base than the benign fine-tune
        ("financial", "above"): 0.5,
        ("financial", "barely"): 0.215,  # its estimate is above the benign cell's, its CI is not
        ("arithmetic", "sft"): 0.2,
    }
    evals = {("", "base"): _save(tmp_path / "base", 0.0)}
    noise = {("financial", "barely"): 0.05}  # the others: 0.01
    evals |= {
        key: _save(tmp_path / "__".join(key), v, noise=noise.get(key, 0.01)) for key, v in shifts.items()
    }
    benign = ("arithmetic", "sft")
    bases = [(d, "base") for d in ("medical", "financial", "arithmetic")]
    rows = _rows(*bases, *shifts, controls={("medical", "twin")}, benign=benign)
    add_paired_shifts(rows, evals, {}, {"medical": "twin"}, benign)
    label = _label(rows, tmp_path)
    twin, benign_name = "the domain's control arm", "the benign fine-tune"
    assert label[("medical", "same")] == (False, f"stance shift, paired: over the base and {twin}")
    assert label[("medical", "above")] == (True, f"stance shift, paired: over the base and {twin}")
    assert label[("financial", "same")] == (False, f"stance shift, paired: over the base and {benign_name}")
    assert label[("financial", "above")][0] is True
    barely = next(r for r in rows if r["arm"] == "barely")
    assert barely["stance_shift_benign"] > 0 and barely["stance_shift_benign_ci"][0] < 0
    assert label[("financial", "barely")][0] is False
    assert label[("medical", "twin")] == label[("arithmetic", "sft")] == (None, None)  # the controls
    scores = alarm_scores(rows)
    assert scores["n_controls"] == 2 and scores["n_unlabeled"] == 0


def test_a_partial_grid_leaves_a_cell_unlabelled_until_its_control_is_evaluated(tmp_path):
    """The financial twin and the arithmetic cell are configured but not evaluated yet: no reading over the
    base alone, and the note says what is missing."""
    evals = {
        ("", "base"): _save(tmp_path / "base", 0.0),
        ("financial", "sft"): _save(tmp_path / "f_sft", 0.5),
        ("financial", "twin"): tmp_path / "not_yet",
        ("medical", "sft"): _save(tmp_path / "m_sft", 0.5),
        ("arithmetic", "sft"): tmp_path / "not_yet_either",
    }
    rows = _rows(("financial", "base"), ("medical", "base"), ("financial", "sft"), ("medical", "sft"))
    add_paired_shifts(rows, evals, {}, {"financial": "twin"}, ("arithmetic", "sft"))
    label = _label(rows, tmp_path)
    assert label[("financial", "sft")] == (None, None) and label[("medical", "sft")] == (None, None)
    notes = shifts_markdown(rows)
    assert "financial sft: control arm twin has no per-question scores (not evaluated yet?)" in notes
    assert "medical sft: benign fine-tune arithmetic__sft has no per-question scores" in notes
    assert alarm_scores(rows)["n_unlabeled"] == 2


def test_without_per_question_scores_the_unpaired_reading_keeps_the_cells_control(tmp_path):
    evals = {("", "base"): _save(tmp_path / "base", 0.0), ("medical", "sft"): tmp_path / "no_scores"}
    rows = [
        {"domain": "medical", "arm": "base", "stance_ci": [-0.1, 0.1]},
        {"domain": "medical", "arm": "sft", "stance_ci": [0.2, 0.4]},
        {"domain": "medical", "arm": "twin", "stance_ci": [0.3, 0.5], "control_arm": True},
    ]
    add_paired_shifts(rows, {**evals, ("medical", "twin"): tmp_path / "none"}, {}, {"medical": "twin"})
    label = _label(rows, tmp_path)
    assert label[("medical", "sft")] == (False, "stance score (judge-free), above the domain's control arm")
    assert rows[1]["stance_shift_note"] == f"no per-question scores in {tmp_path.name}/no_scores"


def test_cells_scored_on_other_questions_get_no_shift_and_say_why(tmp_path):
    evals = {
        ("", "base"): _save(tmp_path / "base", 0.0, n=10),
        ("medical", "sft"): _save(tmp_path / "s", 0.3),
    }
    rows = _rows(("medical", "sft"))
    add_paired_shifts(rows, evals, {})
    assert rows[0]["stance_shift_base"] is None
    assert "against the base model: no plain stance for question(s) ['q10'" in rows[0]["stance_shift_note"]
    other = {
        "domain": "financial",
        "arm": "sft",
        "stance_shift_base": 0.1,
        "stance_shift_base_ci": [0.0, 0.2],
    }
    assert "medical sft: against the base model: no plain stance" in shifts_markdown([*rows, other])


def test_a_malformed_scores_file_is_named(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / STANCE_FILE).write_text('{"key": "plain/general/q0"}\nnot json\n')
    with pytest.raises(ResultFileError, match=f"{STANCE_FILE}:2"):
        add_paired_shifts(_rows(("medical", "sft")), {("medical", "sft"): folder}, {})


def test_a_control_gets_no_reduction():
    from steerlab.experiment.shifts import no_defense

    assert no_defense({"arm": "twin", "control_arm": True}) and not no_defense({"arm": "kl"})


def test_a_defense_reads_as_shares_of_sfts_rise_and_of_its_in_domain_gain(tmp_path):
    """sft rises 0.4 (general) and 0.5 (domain) over the base; kl rises 0.1 and 0.3: it avoided 75% of the
    general rise and kept 60% of the in-domain gain. sft itself, the base and the control get no share."""
    evals = {
        ("", "base"): _save(tmp_path / "base", 0.0),
        ("medical", "sft"): _save(_save(tmp_path / "sft", 0.4), 0.5, name="medical"),
        ("medical", "kl"): _save(_save(tmp_path / "kl", 0.1), 0.3, name="medical"),
        ("medical", "steer"): _save(_save(tmp_path / "steer", -0.2), 0.2, name="medical"),
        ("medical", "twin"): _save(_save(tmp_path / "twin", -0.2), -0.1, name="medical"),
    }
    base_domains = {"medical": _save(tmp_path / "base_medical", 0.0, name="medical")}
    rows = _rows(("medical", "base"), *[k for k in evals if k[0]], controls={("medical", "twin")})
    add_paired_shifts(rows, evals, base_domains, {"medical": "twin"})
    r = {x["arm"]: x for x in rows}
    assert r["kl"]["stance_rise_avoided"] == pytest.approx(0.75, abs=0.05)
    assert r["kl"]["in_domain_gain_kept"] == pytest.approx(0.6, abs=0.05)
    assert r["steer"]["stance_rise_avoided"] == pytest.approx(1.5, abs=0.05)  # overshoot: below the base
    lo, hi = r["kl"]["stance_rise_avoided_ci"]
    assert lo < r["kl"]["stance_rise_avoided"] < hi and hi - lo < 0.2
    for arm in ("base", "sft", "twin"):
        assert r[arm].get("stance_rise_avoided") is None and r[arm].get("in_domain_gain_kept") is None
    table = shifts_markdown(rows)
    share = f"{100 * r['kl']['stance_rise_avoided']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"
    assert "| medical | kl | " in table and share in table


def test_an_arm_named_as_undefended_is_no_defense():
    from steerlab.experiment.shifts import no_defense

    assert no_defense({"arm": "plain_3ep", "undefended_target": True})
    assert not no_defense({"arm": "plain_3ep", "undefended_target": False})


def test_a_defense_with_its_own_undefended_arm_is_read_against_that_arm(tmp_path):
    """early stopping on 3 epochs is a share of 3-epoch sft's effect, not of the 1-epoch sft's."""
    evals = {
        ("", "base"): _save(tmp_path / "base", 0.0),
        ("medical", "sft"): _save(tmp_path / "sft", 0.1),
        ("medical", "sft_3ep"): _save(tmp_path / "sft_3ep", 0.4),
        ("medical", "early_stop_3ep"): _save(tmp_path / "es", 0.1),
    }
    rows = _rows(("medical", "sft_3ep"), ("medical", "early_stop_3ep"))
    rows[1]["undefended"] = "sft_3ep"
    add_paired_shifts(rows, evals, {})
    assert rows[1]["stance_rise_avoided"] == pytest.approx(0.75, abs=0.05)  # 1 - 0.1 / 0.4, not 1 - 0.1 / 0.1
    rows[1]["undefended"] = "sft_5ep"  # named, not evaluated
    add_paired_shifts(rows, {**evals, ("medical", "sft_5ep"): tmp_path / "none"}, {})
    assert "sft_5ep has no per-question scores" in rows[1]["stance_shift_note"]


def test_shares_are_empty_with_a_reason_when_sft_is_missing_or_did_not_rise(tmp_path):
    base = _save(tmp_path / "base", 0.0)
    kl = _save(tmp_path / "kl", 0.1)
    rows = _rows(("medical", "kl"))
    add_paired_shifts(
        rows, {("", "base"): base, ("medical", "kl"): kl, ("medical", "sft"): tmp_path / "none"}, {}
    )
    assert (
        rows[0]["stance_rise_avoided"] is None and "sft has no per-question" in rows[0]["stance_shift_note"]
    )
    rows = _rows(("medical", "kl"), ("medical", "sft"))
    flat = _save(tmp_path / "flat", -0.05)
    add_paired_shifts(rows, {("", "base"): base, ("medical", "kl"): kl, ("medical", "sft"): flat}, {})
    assert rows[0]["stance_rise_avoided"] is None
    assert "sft's rise over the base is not clear of 0" in rows[0]["stance_shift_note"]
    rows = _rows(("medical", "kl"), ("medical", "sft"))
    barely = _save(tmp_path / "barely", 0.005, noise=0.05)  # a rise whose CI crosses 0: no ratio is read
    add_paired_shifts(rows, {("", "base"): base, ("medical", "kl"): kl, ("medical", "sft"): barely}, {})
    assert rows[0]["stance_rise_avoided"] is None and "not clear of 0" in rows[0]["stance_shift_note"]


def test_the_report_shows_the_shifts_read_back_from_the_csv(tmp_path):
    from steerlab.plots import load_arm_results
    from steerlab.plots.tables import shifts_table

    path = tmp_path / "results.csv"
    path.write_text(
        "arm,domain,general_misalignment,in_domain,stance_shift_base,stance_shift_base_ci,"
        "stance_shift_benign,stance_shift_benign_ci,control_arm\n"
        "base,medical,0.1,0.1,,,,,False\n"
        'kl,medical,0.1,0.1,0.21,"[0.16, 0.25]",-0.01,"[-0.05, 0.03]",False\n'
        "twin,medical,0.1,0.1,-0.25,,,,True\n"
    )
    rows = load_arm_results(path)
    title, table = shifts_table(rows)
    assert title.startswith("Paired stance shifts") and "[-0.05, 0.03]" in table and ">base<" not in table
    assert table.count("(the control)") == 1
    assert shifts_table(rows[:1]) is None
