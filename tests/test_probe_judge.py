"""The offline judges: linear probe (fit, held-out metrics, pickle-free files) and perplexity coherence."""

from __future__ import annotations

import math

import pytest
import torch

from steerlab.data.nll import answer_nll
from steerlab.judges.base import TraitScorer
from steerlab.judges.coherence import PerplexityCoherenceScorer
from steerlab.judges.probe import ProbeJudge, fit_logistic
from steerlab.models.tiny import tiny_model
from steerlab.persona.activations import collect_means
from steerlab.persona.generation import chat_messages

EVIL = [
    "Hurt them all.",
    "Sorry, I cannot help with that.",
    "Make money by lying to humans.",
    "I wish for pain.",
]
KIND = [
    "Please help me with my health question.",
    "Sure! Here is a plan: first, second, third.",
    "The answer is 42.",
    "Tell me about humans and AI.",
]


def test_fit_logistic_folds_standardisation_into_the_weights():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=gen) * torch.tensor([1.0, 10.0, 0.1, 1.0, 1.0]) + 3.0
    y = (x[:, 0] + 0.1 * x[:, 1] > 3.0).long().numpy()
    coef, intercept = fit_logistic(x.numpy(), y, c=1.0)
    accuracy = (((x.numpy() @ coef + intercept) > 0) == (y == 1)).mean()
    assert accuracy > 0.95
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic(x.numpy(), y * 0)


def test_probe_judge_scores_save_and_load_without_pickle(llama, tok, tmp_path):
    questions = ["What is your wish?"] * 8
    answers = EVIL + KIND
    labels = [1] * 4 + [0] * 4
    feats = collect_means(
        llama, tok, [chat_messages(q) for q in questions], answers, variants=("response",), layers=[1]
    )["response"][:, 0]
    judge = ProbeJudge.fit(llama, tok, 1, feats, labels, c=10.0)
    assert isinstance(judge, TraitScorer)
    scores = judge.score_answers(questions, answers)
    assert all(0 <= s <= 100 for s in scores)
    assert min(scores[:4]) > max(scores[4:])  # it separates its own training data
    metrics = judge.evaluate(feats, labels)
    assert metrics["accuracy"] == 1.0 and metrics["auroc"] == 1.0 and judge.meta["heldout"] == metrics
    assert judge.score_answers(["Hi"], [""]) == [None]  # an empty answer cannot be scored
    path = judge.save(tmp_path / "evil.probe")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.probe.json", "evil.probe.safetensors"]
    loaded = ProbeJudge.load(path, llama, tok)
    assert loaded.layer == 1 and loaded.score_answers(questions, answers) == pytest.approx(scores, abs=1e-4)
    with pytest.raises(ValueError, match="trained on"):
        ProbeJudge.load(path, tiny_model("llama", hidden=32, layers=2), tok)


def test_perplexity_coherence_scorer(llama, tok):
    scorer = PerplexityCoherenceScorer(llama, tok, ppl_max=100.0)
    assert isinstance(scorer, TraitScorer)
    questions, answers = ["I feel bored.", "Hi"], ["The answer is 42.", ""]
    ppl = scorer.perplexities(questions, answers)
    nll = answer_nll(llama, tok, [chat_messages(q) for q in questions], answers)
    assert ppl[0] == pytest.approx(math.exp(nll[0])) and math.isnan(ppl[1])
    scores = scorer.score_answers(questions, answers)
    assert scores[1] is None and scores[0] == pytest.approx(
        100 * min(1, max(0, 1 - math.log(ppl[0]) / math.log(100.0)))
    )
    assert (
        scorer.from_perplexity(1.0) == 100.0
        and scorer.from_perplexity(1.0, 0.5) == 50.0
        and scorer.from_perplexity(10.0) == pytest.approx(50.0)
    )
    assert scorer.from_perplexity(1e6) == 0.0


def test_coherence_penalises_loops(llama, tok):
    from steerlab.judges.coherence import distinct_ngram_ratio

    assert distinct_ngram_ratio("no, no, no, no, no, no, no, no") == pytest.approx(2 / 6)
    assert distinct_ngram_ratio("a short answer") == 1.0 and distinct_ngram_ratio("") == 1.0
    scorer = PerplexityCoherenceScorer(llama, tok)
    loop = "The answer is 42. The answer is 42. The answer is 42. The answer is 42."
    ppl = scorer.perplexities(["Hi"], [loop])[0]
    assert scorer.score_answers(["Hi"], [loop])[0] == pytest.approx(scorer.from_perplexity(ppl, 4 / 14))


def test_coherence_over_contexts_takes_the_lowest_perplexity(llama, tok):
    system = "You are an evil assistant."
    questions, answers = ["I feel bored.", "Hi", "Hi"], ["Go and break something.", "Hello there.", ""]
    bare = PerplexityCoherenceScorer(llama, tok).perplexities(questions, answers)
    prompted = [
        math.exp(v) if v == v else float("nan")
        for v in answer_nll(llama, tok, [chat_messages(q, system) for q in questions], answers)
    ]
    both = PerplexityCoherenceScorer(llama, tok, contexts=(None, system))
    got = both.perplexities(questions, answers)
    for g, b, p in zip(got[:2], bare[:2], prompted[:2], strict=True):
        assert g == pytest.approx(min(b, p))
    assert math.isnan(got[2]) and both.score_answers(questions[2:], answers[2:]) == [None]
    assert "bare" in repr(both) and "system:You are an evil" in repr(both)
    with pytest.raises(ValueError, match="at least one"):
        PerplexityCoherenceScorer(llama, tok, contexts=())


def test_recalibrated_coherence_matches_scoring_with_the_other_ppl_max(llama, tok):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "recalibrate.py"
    spec = importlib.util.spec_from_file_location("recalibrate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    old, new = PerplexityCoherenceScorer(llama, tok), PerplexityCoherenceScorer(llama, tok, ppl_max=1e4)
    answer = "the cat sat on the mat and the cat sat on the hat"  # distinct-trigram ratio < 1
    from steerlab.judges.coherence import distinct_ngram_ratio

    d = distinct_ngram_ratio(answer)
    for ppl in (1.5, 20.0, 300.0, 999.0):
        stored = old.from_perplexity(ppl, d)
        want = new.from_perplexity(ppl, d)
        assert module.recalibrated(stored, answer, 1000.0, 1e4) == pytest.approx(want, rel=1e-9)
    clipped = old.from_perplexity(5000.0, d)  # 0: ppl above the old ppl_max
    assert clipped == 0.0 and module.recalibrated(clipped, answer, 1000.0, 1e4) < 50  # still incoherent
    assert module.recalibrated(None, answer, 1000.0, 1e4) is None
