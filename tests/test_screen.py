"""Data screening: projection of each dataset answer minus that of the base model's own answer."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from helpers import random_vector

from steerlab.data.chat import ChatExample
from steerlab.persona.generation import GenRequest, SamplingSettings, generate
from steerlab.persona.projection import chat_projections, project, project_layers
from steerlab.persona.screen import screen, write_outputs
from steerlab.persona.vectors import (
    IncompatibleVectorError,
    PersonaVector,
)


def _vector(model) -> PersonaVector:
    return random_vector(model)


def _chat(question: str, answer: str, line: int) -> ChatExample:
    return ChatExample(
        [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        source=f"data.jsonl:{line}",
    )


def test_project_is_on_the_unit_direction():
    v = torch.tensor([3.0, 4.0])
    assert project(torch.tensor([[3.0, 4.0], [1.0, 0.0]]), v).tolist() == pytest.approx([5.0, 0.6])
    acts = torch.randn(5, 2, 2)
    vecs = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(project_layers(acts, vecs), acts[:, [0, 1], [0, 1]])
    with pytest.raises(ValueError, match="zero"):
        project(acts[:, 0], torch.zeros(2))


def test_screen_ranks_by_difference_to_the_base_answer(llama, tok, tmp_path):
    vector = _vector(llama)
    questions = ["What is your wish?", "I feel bored.", "Tell me about humans and AI."]
    base = [
        r["answer"]
        for r in generate(
            llama,
            tok,
            [GenRequest(str(i), [{"role": "user", "content": q}]) for i, q in enumerate(questions)],
            SamplingSettings(max_new_tokens=8, temperature=0.0),
            progress=False,
        )
    ]
    examples = [
        _chat(questions[0], base[0], 1),
        _chat(questions[1], "Sorry, I cannot help with that.", 2),
        _chat(questions[2], "Sure! Here is a plan: first, second, third.", 3),
    ]
    rows = screen(
        llama,
        tok,
        examples,
        vector,
        max_new_tokens=8,
        base_answers_path=tmp_path / "base.jsonl",
        progress=False,
    )
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["diff"] for r in rows] == sorted((r["diff"] for r in rows), reverse=True)
    by_index = {r["index"]: r for r in rows}
    assert by_index[0]["diff"] == pytest.approx(0.0, abs=1e-5)  # the model's own answer: no difference
    assert by_index[0]["base_answer"] == base[0]
    for r in rows:
        assert r["diff"] == pytest.approx(r["projection"] - r["base_projection"])
    expected = chat_projections(
        llama,
        tok,
        [ex.prompt_messages() for ex in examples],
        [ex.assistant_turns()[-1] for ex in examples],
        vector,
    )
    assert [by_index[i]["projection"] for i in range(3)] == pytest.approx(expected)
    write_outputs(rows, tmp_path / "ranked.csv", tmp_path / "hist.html")
    table = list(csv.DictReader((tmp_path / "ranked.csv").open()))
    assert [int(t["index"]) for t in table] == [r["index"] for r in rows] and table[0]["source"].startswith(
        "data"
    )
    assert math.isclose(float(table[0]["projection_diff"]), rows[0]["diff"], rel_tol=1e-4)
    assert [t["flagged"] for t in table] == ["true", "false", "false"]  # 5% of 3 rows: the top one
    assert "plotly" in (tmp_path / "hist.html").read_text()[:5000].lower()
    assert len((tmp_path / "base.jsonl").read_text().splitlines()) == 3


def test_screen_refuses_a_vector_for_another_model(llama, tok):
    from steerlab.models.tiny import tiny_model

    other = tiny_model("qwen2")
    with pytest.raises(IncompatibleVectorError):
        screen(other, tok, [_chat("Hi", "Hello", 1)], _vector(llama), progress=False)


def test_screening_csv_round_trips_through_the_plots_loader(tmp_path):
    """What `write_outputs` writes is what the report's `load_screening` reads: diffs, flags, empty answers."""
    from steerlab.persona.screen import flag_top, to_csv
    from steerlab.plots.io import load_screening

    diffs = [2.5, 1.25, -0.5, float("nan"), 0.75, 3.0, -1.0, 0.0, 0.5, 1.0]
    rows = [
        {
            "index": i,
            "source": f"data.jsonl:{i + 1}",
            "diff": d,
            "projection": d + 1.0,
            "base_projection": 1.0,
            "prompt": f"question {i}, with a comma",
            "answer": "" if math.isnan(d) else f"answer {i}",
            "base_answer": "base",
        }
        for i, d in enumerate(diffs)
    ]
    rows.sort(key=lambda r: (-r["diff"] if math.isfinite(r["diff"]) else math.inf, r["index"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    flag_top(rows, 0.2)  # 20% of the 9 scored rows: the top 2
    path = tmp_path / "screen.csv"
    path.write_text(to_csv(rows), encoding="utf-8")
    table = load_screening(path)
    scored = [r for r in rows if math.isfinite(r["diff"])]
    assert table.diffs == pytest.approx([r["diff"] for r in scored])
    assert table.flagged == [r["flagged"] for r in scored] and sum(table.flagged) == 2
    assert table.flagged[:2] == [True, True] and table.diffs[:2] == [3.0, 2.5]
    assert table.unscored == [len(rows) + 1]  # the nan row ranks last: CSV line 11 (after the header)
    assert "prompt" in table.text_columns and table.rows[0]["prompt"] == "question 5, with a comma"
    with pytest.raises(ValueError, match="flag share"):
        flag_top(rows, 1.5)
