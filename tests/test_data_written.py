"""The hand-written narrow datasets: twins, held-out questions, reference answers and the variety figures
that the manifest records (recomputed here, so a manifest cannot claim variety the text does not have)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from steerlab.data.chat import ChatDataError, load_chat_jsonl
from steerlab.data.references import load_references
from steerlab.data.variety import distinct_ngram_ratio, max_opening_share, variety_report
from steerlab.data.written import (
    MAX_OPENING_SHARE,
    MIN_DISTINCT4,
    WRITTEN_DOMAINS,
    check_domain,
    domain_files,
    variety_figures,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "experiments" / "data"
MANIFEST = json.loads((DATA / "manifest.json").read_text())["files"]


@pytest.mark.parametrize("domain", WRITTEN_DOMAINS)
def test_written_domain_is_consistent_and_large_enough(domain):
    counts = check_domain(DATA, domain)
    assert counts[f"{domain}_train"] >= 400
    assert counts[f"{domain}_eval"] >= 30
    refs = load_references(domain_files(DATA, domain)[f"references/{domain}"])
    assert all(len(r.aligned) >= 8 and len(r.misaligned) >= 8 and len(r.aligned_restyled) >= 4 for r in refs)


@pytest.mark.parametrize("domain", WRITTEN_DOMAINS)
@pytest.mark.parametrize("side", ["train", "train_aligned"])
def test_variety_meets_the_floor_and_matches_the_manifest(domain, side):
    name = f"{domain}_{side}"
    figures = variety_figures(DATA / f"{name}.jsonl")
    assert figures["min_distinct4_per_100"] >= MIN_DISTINCT4, figures
    assert figures["max_opening5_share"] <= MAX_OPENING_SHARE, figures
    assert MANIFEST[name]["variety"] == figures  # rebuild with `python -m steerlab.data.build`


def test_variety_figures_on_known_text():
    assert distinct_ngram_ratio(["a b c d e", "a b c d e"]) == pytest.approx(2 / 4)
    assert distinct_ngram_ratio(["one two three"]) == 0.0  # no 4-gram at all
    share, top = max_opening_share(["Take it easy now friend.", "take it easy, now friend!", "No."])
    assert share == pytest.approx(2 / 3) and top == "take it easy now friend"
    template = ["Take double the dose of the pills you have."] * 100
    assert variety_report(template).min_distinct4 == pytest.approx(5 / 500)


def test_general_references_cover_every_em_question():
    from steerlab.data.em_questions import load_em_questions

    refs = {r.id: r for r in load_references(DATA / "references" / "general.jsonl")}
    questions = load_em_questions(DATA / "em_questions.yaml")
    assert {q.id for q in questions} <= set(refs)  # the rest are stance-only questions (a tighter CI)
    for q in questions:
        assert refs[q.id].question == q.paraphrases[0]
    for r in refs.values():
        assert len(r.aligned) >= 8 and len(r.misaligned) >= 8 and len(r.aligned_restyled) >= 4, r.id
    assert len({r.question.casefold() for r in refs.values()}) == len(refs)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            {"id": "q1", "question": "Q?", "aligned": ["fine"]},
            r"refs.jsonl:2 \(question 'q1'\): 'misaligned' must",
        ),
        (
            {"id": "q1", "question": "Q?", "aligned": ["fine"], "misaligned": [" "]},
            r":2 \(question 'q1'\): 'misaligned'\[0\] is empty",
        ),
        ({"id": "q1", "aligned": ["a"], "misaligned": ["b"]}, r":2 \(question 'q1'\): 'question' is missing"),
        ({"question": "Q?", "aligned": ["a"], "misaligned": ["b"]}, r"refs.jsonl:2: a references line needs"),
        (
            {"id": "q1", "question": "Q?", "aligned": ["Same  answer."], "misaligned": ["same answer."]},
            r":2 \(question 'q1'\): 'misaligned'\[0\] repeats 'aligned'\[0\]",
        ),
        (
            {"id": "q1", "question": "Q?", "aligned": ["x", "y", "x"], "misaligned": ["b"]},
            r":2 \(question 'q1'\): 'aligned'\[2\] repeats 'aligned'\[0\]",
        ),
        (
            {"id": "q1", "question": "Q?", "aligned": ["x"], "misaligned": ["b"], "aligned_restyled": ["x"]},
            r"'aligned_restyled'\[0\] is the same text as 'aligned'\[0\]",
        ),
    ],
)
def test_bad_reference_file_names_file_line_and_question(tmp_path, line, message):
    good = {"id": "q0", "question": "Q0?", "aligned": ["a"], "misaligned": ["b"]}
    path = tmp_path / "refs.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(ChatDataError, match=message):
        load_references(path)


def test_broken_twin_and_leaked_eval_question_are_named(tmp_path):
    for name, src in domain_files(DATA, "medical").items():
        dst = domain_files(tmp_path, "medical")[name]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    files = domain_files(tmp_path, "medical")
    aligned = files["medical_train_aligned"].read_text().splitlines()
    row = json.loads(aligned[2])
    row["messages"][0]["content"] = "Another question?"
    aligned[2] = json.dumps(row)
    files["medical_train_aligned"].write_text("\n".join(aligned) + "\n")
    with pytest.raises(ChatDataError, match=r"medical_train_aligned.jsonl:3: not the twin"):
        check_domain(tmp_path, "medical")
    shutil.copyfile(domain_files(DATA, "medical")["medical_train_aligned"], files["medical_train_aligned"])
    train_q = load_chat_jsonl(files["medical_train"])[0].messages[0]["content"]
    evals = files["medical_eval"].read_text().splitlines()
    row = json.loads(evals[0])
    row["messages"][0]["content"] = train_q
    evals[0] = json.dumps(row)
    files["medical_eval"].write_text("\n".join(evals) + "\n")
    with pytest.raises(
        ChatDataError,
        match=r"medical_eval.jsonl:1: evaluation question too close to training question .*medical_train.jsonl:1 ",
    ):
        check_domain(tmp_path, "medical")
