"""The base model's answers to the general instruction set: tidying, resume, chat JSONL output."""

from __future__ import annotations

import json

import pytest
import torch

from steerlab.data import load_chat_jsonl
from steerlab.data.generators.general import read_general_prompts
from steerlab.evaluate.general_answers import generate_general_answers, tidy_answer
from steerlab.testing import tiny_model, tiny_tokenizer


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
    counts = generate_general_answers(
        model, tok, prompts, out, max_new_tokens=12, batch_size=2, tidy=False, progress=False
    )
    examples = load_chat_jsonl(out)
    assert counts["prompts"] == 5 and counts["written"] == len(examples) >= 1
    assert examples[0].messages[0] == {"role": "user", "content": "Tell me about topic 0."}
    assert {"id", "finished", "answered_by", "seed"} <= set(examples[0].meta)
    first = out.read_text()
    generate_general_answers(
        model, tok, prompts, out, max_new_tokens=12, batch_size=2, tidy=False, progress=False
    )
    assert out.read_text() == first  # seeded: the same file again
    assert not (tmp_path / "general_train.partial.jsonl").exists()


def test_bad_prompt_line_is_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with pytest.raises(ValueError, match="p.jsonl:2.*duplicate id"):
        read_general_prompts(path)
