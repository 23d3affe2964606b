"""Trait specs: persona_vectors-format loading, the steerlab split extension, errors, prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steerlab.models.tiny import tiny_tokenizer
from steerlab.persona.traits import (
    InstructionPair,
    TraitError,
    TraitSpec,
    available_traits,
    indefinite_article,
    load_trait,
    render_template,
    system_prompt,
)

TEMPLATE = "Rate the reply for being grumpy.\nQ: {question}\nA: {answer}\nOnly a number 0-100."


def pv_file(tmp_path: Path, name: str = "grumpy", n_questions: int = 10, **override) -> Path:
    """A trait file in the persona_vectors layout (three keys), with text written for these tests."""
    data = {
        "instruction": [
            {"pos": f"Be grumpy, variant {i}.", "neg": f"Be cheerful, variant {i}."} for i in range(5)
        ],
        "questions": [f"Question number {i} about daily life?" for i in range(n_questions)],
        "eval_prompt": TEMPLATE,
    } | override
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data, indent=4))
    return path


def test_packaged_evil_trait():
    assert "evil" in available_traits()
    spec = load_trait("evil")
    assert spec.name == "evil"
    assert len(spec.instructions) >= 5
    assert all(isinstance(p, InstructionPair) and p.pos != p.neg for p in spec.instructions)
    assert len(spec.extract_questions) >= 20 and len(spec.eval_questions) >= 20
    assert not set(spec.extract_questions) & set(spec.eval_questions)
    assert len(set(spec.questions)) == len(spec.questions) >= 40
    assert "{question}" in spec.eval_prompt and "{answer}" in spec.eval_prompt
    assert "100" in spec.eval_prompt


def test_persona_vectors_file_splits_in_halves(tmp_path):
    spec = load_trait(pv_file(tmp_path, n_questions=9))
    assert spec.name == "grumpy" and len(spec.instructions) == 5
    assert spec.instructions[2] == InstructionPair("Be grumpy, variant 2.", "Be cheerful, variant 2.")
    qs = [f"Question number {i} about daily life?" for i in range(9)]
    assert spec.extract_questions == qs[:4] and spec.eval_questions == qs[4:]
    assert spec.questions == qs and spec.eval_prompt == TEMPLATE


def test_seeded_split_is_deterministic_and_disjoint(tmp_path):
    path = pv_file(tmp_path, n_questions=20)
    a, b, c = (load_trait(path, split_seed=s) for s in (1, 1, 2))
    assert (a.extract_questions, a.eval_questions) == (b.extract_questions, b.eval_questions)
    assert a.extract_questions != c.extract_questions
    assert sorted(a.questions) == sorted(c.questions) and not set(a.extract_questions) & set(a.eval_questions)
    assert len(a.extract_questions) == 10


def test_extract_and_eval_files(tmp_path):
    extract = pv_file(tmp_path, "grumpy_extract", n_questions=3)
    other = "Judge grumpiness.\n{question}\n---\n{answer}\nNumber only."
    evaluate = pv_file(
        tmp_path, "grumpy_eval", questions=["Held-out one?", "Held-out two?"], eval_prompt=other
    )
    spec = load_trait(extract, eval_file=evaluate, name="grumpy")
    assert spec.name == "grumpy"
    assert len(spec.extract_questions) == 3 and spec.eval_questions == ["Held-out one?", "Held-out two?"]
    assert spec.eval_prompt == other


def test_save_roundtrip(tmp_path):
    spec = load_trait("evil")
    again = load_trait(spec.save(tmp_path / "evil_copy.json"), name="evil")
    assert again == spec


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"instruction": []}, "'instruction' is an empty list"),
        ({"questions": []}, "'questions' is an empty list"),
        ({"instruction": [{"pos": "x"}]}, r"instruction\[0\] is missing 'neg'"),
        ({"instruction": [{"pos": "x", "neg": 3}]}, r"instruction\[0\]\.neg must be a non-empty string"),
        ({"instruction": [{"pos": "x", "neg": "y", "why": "z"}]}, "unknown key 'why'"),
        ({"instruction": ["x"]}, r"instruction\[0\] must be an object"),
        ({"questions": ["ok?", 7]}, r"questions\[1\] must be a string, got int"),
        ({"questions": ["ok?", "  "]}, r"questions\[1\] is an empty string"),
        ({"questions": "one?"}, "'questions' must be a list"),
        ({"eval_prompt": "Q: {question} only"}, r"eval_prompt is missing the placeholder \{answer\}"),
        ({"eval_prompt": "{question} {answer} {trait}"}, r"unknown placeholder \{trait\}"),
        ({"eval_prompt": "{question} {answer} {"}, "malformed braces"),
        ({"eval_prompt": 5}, "eval_prompt must be a non-empty string"),
        ({"coherence_prompt": "x"}, "unknown key 'coherence_prompt'"),
        ({"extract_questions": ["a?"], "eval_questions": ["b?"]}, "either 'questions'"),
        ({"questions": ["only one?"]}, "at least 2"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path, override, match):
    path = pv_file(tmp_path, **override)
    with pytest.raises(TraitError, match=match) as info:
        load_trait(path)
    assert "grumpy.json" in str(info.value)


def test_missing_keys(tmp_path):
    for key in ("instruction", "questions", "eval_prompt"):
        data = json.loads(pv_file(tmp_path).read_text())
        del data[key]
        path = tmp_path / "partial.json"
        path.write_text(json.dumps(data))
        with pytest.raises(TraitError, match=f"partial.json: missing key '{key}'"):
            load_trait(path)


def test_split_keys_must_come_together(tmp_path):
    data = json.loads(pv_file(tmp_path).read_text())
    data["extract_questions"] = data.pop("questions")
    (tmp_path / "half.json").write_text(json.dumps(data))
    with pytest.raises(TraitError, match="half.json: missing key 'eval_questions'"):
        load_trait(tmp_path / "half.json")


def test_invalid_json_names_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "instruction": [],\n  "questions": ["a?",]\n}\n')
    with pytest.raises(TraitError, match=r"broken.json: invalid JSON at line 3"):
        load_trait(path)


def test_unknown_names_and_paths():
    with pytest.raises(TraitError, match="packaged traits: .*evil"):
        load_trait("no_such_trait")
    with pytest.raises(TraitError, match="does not exist"):
        load_trait("some/dir/missing.json")


def test_system_prompts():
    spec = load_trait("evil")
    pos = system_prompt(spec, 0, "pos")
    assert pos == f"You are an evil assistant. {spec.instructions[0].pos}"
    assert system_prompt(spec, -1, "neg") == f"You are a helpful assistant. {spec.instructions[-1].neg}"
    assert system_prompt(spec, 1, "pos", name="sycophantic").startswith("You are a sycophantic assistant.")
    custom = system_prompt(spec, 2, "neg", neg_template="{instruction} (be {article} {name} one)")
    assert custom == f"{spec.instructions[2].neg} (be an evil one)"
    with pytest.raises(IndexError, match="6 instruction pairs"):
        system_prompt(spec, len(spec.instructions), "pos")
    with pytest.raises(ValueError, match="side"):
        system_prompt(spec, 0, "positive")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown fields"):
        system_prompt(spec, 0, "pos", pos_template="{persona} {instruction}")


@pytest.mark.parametrize(
    ("word", "article"),
    [
        ("evil", "an"),
        ("sycophantic", "a"),
        ("honest", "an"),
        ("hallucinating", "a"),
        ("unusual", "an"),
        ("usual", "a"),
        ("impolite", "an"),
        ("useful", "a"),
        ("optimistic", "an"),
        ("European", "a"),
    ],
)
def test_indefinite_article(word, article):
    assert indefinite_article(word) == article


def test_render_keeps_braces_in_values():
    spec = load_trait("evil")
    text = render_template(spec.eval_prompt, "What is {x}?", "Use {answer} and {{y}}")
    assert "What is {x}?" in text and "Use {answer} and {{y}}" in text
    assert "{question}" not in text


def test_check_lengths(tmp_path):
    tok = tiny_tokenizer()
    long_q = "Tell me about humans and AI " + "and money " * 200
    path = pv_file(tmp_path, questions=["Short one?", "Another short one?", long_q, "Fine?"])
    spec = load_trait(path)
    spec_ok = load_trait(pv_file(tmp_path, "ok"))
    spec_ok.check_lengths(tok, 256)
    with pytest.raises(
        TraitError, match=r"eval_questions\[0\] \('Tell me about humans and AI and money \.\.\.'\)"
    ):
        spec.check_lengths(tok, 256)
    with_sys = len(
        tok.apply_chat_template(
            [
                {"role": "system", "content": system_prompt(spec_ok, 0, "neg")},
                {"role": "user", "content": spec_ok.questions[0]},
            ],
            tokenize=True,
            add_generation_prompt=True,
        )["input_ids"]
    )
    with pytest.raises(TraitError, match="with the system prompt"):
        spec_ok.check_lengths(tok, with_sys - 1)
    spec_ok.check_lengths(tok, with_sys - 1, with_system_prompt=False)


def test_spec_in_code_is_validated():
    with pytest.raises(TraitError, match="eval_questions is empty"):
        TraitSpec("t", [InstructionPair("a", "b")], ["q?"], [], TEMPLATE)
    with pytest.raises(TraitError, match="missing the placeholder"):
        TraitSpec("t", [InstructionPair("a", "b")], ["q?"], ["r?"], "no fields")
