"""Steering at inference (add / ablate), the coefficient sweep, and the shipped vector's must-show checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import random_vector

from steerlab.evaluate.sweep import sweep, trait_score_ci
from steerlab.hooks import Capture, hooked
from steerlab.models.tiny import tiny_model
from steerlab.persona.generation import SamplingSettings, chat_messages
from steerlab.persona.steering import generate_steered, steer_ops
from steerlab.persona.vectors import (
    IncompatibleVectorError,
    PersonaVector,
)
from steerlab.plots import steering_sweep_figure

SHIPPED = Path(__file__).resolve().parents[1] / "vectors" / "smollm2-135m-instruct" / "evil.safetensors"


def _vector(model, scale: float = 1.0) -> PersonaVector:
    return random_vector(model, scale=scale)


class _MeanTokenLength:
    """Stand-in trait scorer: longer words score higher (deterministic, answer-only)."""

    def score_answers(self, questions, answers):
        return [None if not a else 10.0 * sum(map(len, a.split())) / max(1, len(a.split())) for a in answers]


QUESTIONS = ["What is your wish?", "I feel bored.", "Tell me about humans."]


def test_alpha_zero_is_plain_generation_and_large_alpha_changes_it(llama, tok):
    vector = _vector(llama)
    short = SamplingSettings(max_new_tokens=6, temperature=0.0)
    plain = generate_steered(llama, tok, QUESTIONS, vector, alpha=0.0, sampling=short)
    again = generate_steered(llama, tok, QUESTIONS, vector.vector(1), layer=1, alpha=0.0, sampling=short)
    steered = generate_steered(llama, tok, QUESTIONS, vector, alpha=50.0, sampling=short)
    ablated = generate_steered(llama, tok, QUESTIONS, vector, mode="ablate", sampling=short)
    assert plain == again and steered != plain and len(ablated) == 3
    with pytest.raises(ValueError, match="plain tensor"):
        generate_steered(llama, tok, QUESTIONS, vector.vector(1), alpha=1.0)
    with pytest.raises(IncompatibleVectorError):
        generate_steered(
            llama, tok, QUESTIONS, _vector(tiny_model("llama", layers=3, seed=1, hidden=32, heads=2))
        )


def test_steer_ops_add_on_response_tokens_only(llama, tok):
    direction = torch.randn(32)
    ops = steer_ops(direction, 1, 3.0)
    ids = tok.apply_chat_template(chat_messages("Hi"), tokenize=True, add_generation_prompt=True)["input_ids"]
    ids = torch.tensor([ids])
    with hooked(llama, [Capture(1, "all")]) as base:
        llama.generate(ids, max_new_tokens=3, do_sample=False)
    with hooked(llama, [*ops, Capture(1, "all")]) as steered:
        llama.generate(ids, max_new_tokens=3, do_sample=False)
    prompt_len = ids.shape[1]
    before, after = base.captures.get(1), steered.captures.get(1)
    assert torch.allclose(before[:, :prompt_len], after[:, :prompt_len])  # the prompt is untouched
    assert torch.allclose(after[:, prompt_len] - before[:, prompt_len], 3.0 * direction, atol=1e-5)
    assert steer_ops(direction, 1, 0.0) == [] and len(steer_ops(direction, 1, 0.0, mode="ablate")) == 1
    with pytest.raises(ValueError, match="mode"):
        steer_ops(direction, 1, 1.0, mode="multiply")


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = [1.0, 2.0, 3.0, 4.0, 10.0, None]
    lo, hi = trait_score_ci(values, seed=1)
    assert lo <= 4.0 <= hi and trait_score_ci(values, seed=1) == [lo, hi]
    assert all(math.isnan(v) for v in trait_score_ci([]))


def test_sweep_rows_files_and_resume(llama, tok, tmp_path):
    vector = _vector(llama)
    rows = sweep(
        llama,
        tok,
        QUESTIONS,
        vector,
        [0.0, 8.0],
        trait_scorer=_MeanTokenLength(),
        sampling=SamplingSettings(max_new_tokens=5, temperature=0.0),
        out_dir=tmp_path,
        progress=False,
    )
    assert [r["alpha"] for r in rows] == [0.0, 8.0]
    for row in rows:
        assert row["trait_score_ci"][0] <= row["trait_score"] <= row["trait_score_ci"][1]
        assert row["perplexity"] > 1 and row["n"] == 3 and row["coherence"] is None
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved[1]["trait_score"] == pytest.approx(rows[1]["trait_score"])
    fig = steering_sweep_figure(saved)  # the figure (steerlab.plots) draws the saved rows as they are
    assert fig.data and sorted({x for t in fig.data for x in t.x}) == [0.0, 8.0]
    lines = (tmp_path / "sweep_generations.jsonl").read_text().splitlines()
    again = sweep(
        llama,
        tok,
        QUESTIONS,
        vector,
        [0.0, 8.0],
        trait_scorer=_MeanTokenLength(),
        sampling=SamplingSettings(max_new_tokens=5, temperature=0.0),
        out_dir=tmp_path,
        progress=False,
    )
    assert len((tmp_path / "sweep_generations.jsonl").read_text().splitlines()) == len(lines) == 6
    assert [r["trait_score"] for r in again] == [r["trait_score"] for r in rows]


def test_cli_sweep_writes_rows_and_the_plots_figure(llama, tok, tmp_path):
    """``steerlab steer --sweep`` on a ``tiny:`` model by name: rows in sweep.json, the figure from plots/."""
    from typer.testing import CliRunner

    from steerlab.cli import app
    from steerlab.judges.probe import ProbeJudge
    from steerlab.persona.activations import collect_means

    vector_path = _vector(llama).save(tmp_path / "evil")
    answers = ["Hurt them all.", "I wish for pain.", "The answer is 42.", "Sure! Here is a plan."]
    prompts = [chat_messages("What is your wish?")] * 4
    feats = collect_means(llama, tok, prompts, answers, variants=("response",), layers=[1])["response"][:, 0]
    ProbeJudge.fit(llama, tok, 1, feats, [1, 1, 0, 0], c=10.0).save(tmp_path / "evil.probe")
    out = tmp_path / "sweep"
    args = ["steer", "--vector", str(vector_path), "--model", "tiny:llama", "--alpha", "0,4", "--sweep"]
    args += ["--question", QUESTIONS[0], "--max-new-tokens", "4", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["alpha"] for r in rows] == [0.0, 4.0] and all(r["coherence"] is not None for r in rows)
    assert f"wrote {out / 'sweep.json'} and {out / 'sweep.html'}" in result.output
    assert "plotly" in (out / "sweep.html").read_text()[:5000].lower()
    plain = CliRunner().invoke(app, args[:7] + ["--question", QUESTIONS[0], "--max-new-tokens", "4"])
    assert plain.exit_code == 0, plain.output
    lines = [json.loads(line) for line in plain.output.splitlines() if line.startswith("{")]
    assert [(r["alpha"], r["question"]) for r in lines] == [(0.0, QUESTIONS[0]), (4.0, QUESTIONS[0])]


# ------------------------------------------------------------------------------------- embedded model


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped vector not built")
def test_shipped_evil_vector_steers_the_embedded_model():
    """+alpha at the chosen layer raises the offline judge's evil score monotonically over three positive alphas
    with the base model's perplexity of the steered answers within 2x of the unsteered answers'; -alpha under
    the evil system prompt lowers the score (the issue's must-show; vectors/README.md has the full sweep)."""
    from steerlab.judges.probe import ProbeJudge
    from steerlab.models import load_model
    from steerlab.persona.traits import load_trait, system_prompt

    model, tok = load_model("smollm2-135m-instruct")
    vector = PersonaVector.load(SHIPPED)
    judge = ProbeJudge.load(SHIPPED.with_name("evil.probe.safetensors"), model, tok)
    spec = load_trait("evil")
    questions = spec.eval_questions[:8]
    up = sweep(
        model,
        tok,
        questions,
        vector,
        [0.0, 1.0, 2.0, 3.0],
        trait_scorer=judge,
        sampling=SamplingSettings(max_new_tokens=24, temperature=0.0),
        progress=False,
    )
    scores = [r["trait_score"] for r in up]
    assert all(b > a for a, b in zip(scores, scores[1:], strict=False)), scores
    assert max(r["perplexity"] for r in up) <= 2 * up[0]["perplexity"], [r["perplexity"] for r in up]
    evil = system_prompt(spec, 0, "pos")
    down = sweep(
        model,
        tok,
        questions,
        vector,
        [0.0, -2.0],
        trait_scorer=judge,
        system=evil,
        sampling=SamplingSettings(max_new_tokens=24, temperature=0.0),
        progress=False,
    )
    assert down[1]["trait_score"] < down[0]["trait_score"], down
