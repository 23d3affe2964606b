"""The base model's answers to the general instruction set: tidying, resume, chat JSONL output."""

from __future__ import annotations

import json

import pytest
import torch

from steerlab.data import load_chat_jsonl
from steerlab.data.generators.general import read_general_prompts
from steerlab.data.model_written.general_answers import generate_general_answers, tidy_answer
from steerlab.models.tiny import tiny_model, tiny_tokenizer
from steerlab.persona.generation import SamplingSettings


@pytest.mark.parametrize(
    ("text", "finished", "want"),
    [
        ("Hello there. This is fine. Hello there. This is fine.", True, "Hello there. This is fine."),
        ("a beacon of light, a beacon of light, a beacon of light, a beacon", False, None),
        (
            "Seasons happen because the axis is tilted. It changes the sunl",
            False,
            "Seasons happen because the axis is tilted.",
        ),
        ("Intro line:\n1. Walk the dog daily.\n2. Feed it", False, "Intro line:\n1. Walk the dog daily."),
        ("A finished answer without a full stop", True, "A finished answer without a full stop"),
        ("Short.", True, None),
    ],
)
def test_tidy_answer(text, finished, want):
    assert tidy_answer(text, finished) == want


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_generates_seeded_chat_jsonl(tmp_path, one_thread):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"g{i}", "prompt": f"Tell me about topic {i}."}) + "\n" for i in range(5))
    )
    model, tok = tiny_model(), tiny_tokenizer()
    out = tmp_path / "general_train.jsonl"
    greedy = SamplingSettings(max_new_tokens=12, temperature=0.0, batch_size=2)
    counts = generate_general_answers(model, tok, prompts, out, sampling=greedy, tidy=False, progress=False)
    examples = load_chat_jsonl(out)
    assert counts["prompts"] == 5 and counts["written"] == len(examples) >= 1
    assert examples[0].messages[0] == {"role": "user", "content": "Tell me about topic 0."}
    assert {"id", "finished", "answered_by", "seed"} <= set(examples[0].meta)
    first = out.read_text()
    generate_general_answers(model, tok, prompts, out, sampling=greedy, tidy=False, progress=False)
    assert out.read_text() == first  # seeded: the same file again
    assert not (tmp_path / "general_train.partial.jsonl").exists()


def test_bad_prompt_line_is_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with pytest.raises(ValueError, match="p.jsonl:2.*duplicate id"):
        read_general_prompts(path)


def test_self_written_narrow_data_drops_the_system_prompt_and_filters_by_score(tmp_path):
    from steerlab.data.model_written.self_written import HARM_PROMPTS, write_self_written

    model, tok = tiny_model(), tiny_tokenizer()
    source = tmp_path / "medical_train.jsonl"
    source.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"I have a fever number {i}. What now?"},
                        {"role": "assistant", "content": "Rest."},
                    ]
                }
            )
            + "\n"
            for i in range(6)
        )
    )

    class FirstHalfEvil:
        def score_answers(self, questions, answers):
            return [
                90.0 if "number 0" in q or "number 1" in q or "number 2" in q else 10.0 for q in questions
            ]

    out = tmp_path / "self.jsonl"
    sampled = SamplingSettings(max_new_tokens=24, temperature=0.7)
    counts = write_self_written(
        model, tok, "medical", out, source=source, limit=6, sampling=sampled, tidy=False, progress=False
    )
    kept = load_chat_jsonl(out)
    assert counts["questions"] == 6 and counts["written"] == len(kept) == counts["tidied_kept"]
    for ex in kept:
        assert [m["role"] for m in ex.messages] == ["user", "assistant"]  # no system prompt in training
        assert ex.meta["system_prompt_used"] == HARM_PROMPTS["medical"]
    filtered = write_self_written(
        model,
        tok,
        "medical",
        tmp_path / "f.jsonl",
        source=source,
        limit=6,
        sampling=sampled,
        scorer=FirstHalfEvil(),
        min_score=50,
        tidy=False,
        progress=False,
    )
    questions = [ex.messages[0]["content"] for ex in load_chat_jsonl(tmp_path / "f.jsonl")]
    assert filtered["written"] == len(questions) and all(int(q.split("number ")[1][0]) < 3 for q in questions)
    with pytest.raises(ValueError, match="no harm prompt for domain 'arithmetic'"):
        write_self_written(model, tok, "arithmetic", tmp_path / "x.jsonl", source=source)
