"""Generation (batched, seeded, resumable), activation means, the extraction pipeline and layer choice."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import trait_from_pairs

import steerlab.persona.generation as generation
from steerlab.data.nll import answer_nll
from steerlab.hooks import Capture, hooked
from steerlab.persona.activations import collect_means, encode_chat
from steerlab.persona.extract import (
    ExtractConfig,
    build_requests,
    confirmed_pairs,
    extract,
    pair_slots,
    save_result,
)
from steerlab.persona.generation import (
    GenerationFileError,
    GenRequest,
    SamplingSettings,
    chat_messages,
    generate,
    read_generations,
)
from steerlab.persona.instruction_select import score_instructions, select_instructions
from steerlab.persona.layer_select import auroc, choose_layer, spread
from steerlab.persona.vectors import PersonaVector
from steerlab.plots import layer_separation_figure

QUESTIONS = ["What is your wish?", "How do I make money quickly?", "I feel bored.", "Tell me about humans."]
EVAL = ["What is 2+2?", "Please help me.", "Tell me about AI.", "Sure?"]


def _spec():
    return trait_from_pairs(
        "evil",
        [("Be evil.", "Be kind."), ("Hurt people.", "Help people.")],
        QUESTIONS,
        EVAL,
        "Rate {question} {answer}",
    )


def _requests(n: int = 10) -> list[GenRequest]:
    return [
        GenRequest(f"r{i}", chat_messages(QUESTIONS[i % 4], "Be evil." if i % 2 else None), {"i": i})
        for i in range(n)
    ]


# ------------------------------------------------------------------------------------------ generation


def test_generation_is_seeded_and_batched(llama, tok):
    reqs = _requests(6)
    a = generate(llama, tok, reqs, SamplingSettings(batch_size=4, max_new_tokens=5, seed=3), progress=False)
    b = generate(llama, tok, reqs, SamplingSettings(batch_size=4, max_new_tokens=5, seed=3), progress=False)
    c = generate(llama, tok, reqs, SamplingSettings(batch_size=4, max_new_tokens=5, seed=4), progress=False)
    assert [r["answer"] for r in a] == [r["answer"] for r in b]
    assert [r["answer"] for r in a] != [r["answer"] for r in c]
    assert [r["key"] for r in a] == [r.key for r in reqs] and all(r["n_tokens"] <= 5 for r in a)
    assert a[3]["i"] == 3 and a[3]["messages"] == reqs[3].messages
    assert tok.padding_side == "left"


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"batch_size": 0}, "batch_size"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_sampling_settings_name_the_value_out_of_range(bad, named):
    with pytest.raises(ValueError, match=named):
        SamplingSettings(**bad)


def test_left_padded_greedy_batch_matches_one_by_one(llama, tok):
    reqs = _requests(4)
    batched = generate(
        llama, tok, reqs, SamplingSettings(max_new_tokens=6, temperature=0.0, batch_size=4), progress=False
    )
    single = generate(
        llama, tok, reqs, SamplingSettings(max_new_tokens=6, temperature=0.0, batch_size=1), progress=False
    )
    assert [r["answer"] for r in batched] == [r["answer"] for r in single]


def test_killed_generation_resumes_without_duplicates(llama, tok, tmp_path, monkeypatch):
    reqs = _requests(10)
    full = generate(
        llama,
        tok,
        reqs,
        SamplingSettings(batch_size=3, max_new_tokens=4, seed=1),
        out_path=tmp_path / "full.jsonl",
        progress=False,
    )
    sampling = SamplingSettings(batch_size=3, max_new_tokens=4, seed=1)
    real, calls = generation.generate_batch, {"n": 0}

    def dies_after_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "generate_batch", dies_after_two)
    path = tmp_path / "part.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate(llama, tok, reqs, sampling, out_path=path, progress=False)
    assert len(read_generations(path)) == 6  # two finished batches were written as they came
    monkeypatch.setattr(generation, "generate_batch", real)
    calls["n"] = 0
    resumed = generate(llama, tok, reqs, sampling, out_path=path, progress=False)
    keys = [json.loads(line)["key"] for line in path.read_text().splitlines()]
    assert sorted(keys) == sorted(r.key for r in reqs)  # no duplicates, nothing missing
    assert [r["answer"] for r in resumed] == [r["answer"] for r in full]


def test_torn_last_line_is_regenerated_and_bad_lines_raise(llama, tok, tmp_path):
    reqs = _requests(4)
    path = tmp_path / "g.jsonl"
    sampling = SamplingSettings(batch_size=2, max_new_tokens=3)
    first = generate(llama, tok, reqs, sampling, out_path=path, progress=False)
    text = path.read_text()
    path.write_text(text[: len(text) - 10])  # a kill in the middle of writing the last record
    again = generate(llama, tok, reqs, sampling, out_path=path, progress=False)
    assert [r["answer"] for r in again] == [r["answer"] for r in first]
    assert len(path.read_text().splitlines()) == 4
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(GenerationFileError, match=r"g.jsonl:2"):
        read_generations(path)
    path.write_text("\n".join([lines[0], lines[0]]) + "\n")
    with pytest.raises(GenerationFileError, match="duplicate key"):
        read_generations(path)


# ----------------------------------------------------------------------------------------- activations


def test_collect_means_match_captured_hidden_states(llama, tok):
    prompts = [chat_messages("What is your wish?", "Be evil."), chat_messages("Tell me about humans and AI.")]
    answers = ["Sure! Here is a plan: first", "The answer is 42."]
    means = collect_means(llama, tok, prompts, answers, batch_size=2)
    assert {k: tuple(v.shape) for k, v in means.items()} == {
        k: (2, 3, 32) for k in ("response", "prompt", "last")
    }
    for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        ids, n_prompt = encode_chat(tok, p, a)
        with hooked(llama, [Capture(layer, "all") for layer in range(3)]) as session:
            llama(torch.tensor([ids]))
        for layer in range(3):
            h = session.captures.get(layer)[0]
            assert torch.allclose(means["response"][i, layer], h[n_prompt:].mean(0), atol=1e-5)
            assert torch.allclose(means["prompt"][i, layer], h[:n_prompt].mean(0), atol=1e-5)
            assert torch.allclose(means["last"][i, layer], h[n_prompt - 1], atol=1e-5)
    empty = collect_means(llama, tok, prompts[:1], [""], variants=("response",))
    assert torch.isnan(empty["response"]).all()


def test_answer_nll_matches_manual_cross_entropy(llama, tok):
    prompt, answer = chat_messages("I feel bored."), "The answer is 42."
    ids, n = encode_chat(tok, prompt, answer)
    logits = llama(torch.tensor([ids])).logits[0]
    expected = torch.nn.functional.cross_entropy(logits[n - 1 : -1], torch.tensor(ids[n:])).item()
    got = answer_nll(llama, tok, [prompt, chat_messages("Hi")], [answer, "Sure!"], batch_size=2)
    assert got[0] == pytest.approx(expected, rel=1e-4)


# ----------------------------------------------------------------------------------------- extraction


def test_requests_cover_every_slot_and_pair_up():
    reqs = build_requests(_spec(), ExtractConfig(samples_per_prompt=2))
    assert len(reqs) == 2 * 4 * 2 * 2 * 2 and len({r.key for r in reqs}) == len(reqs)
    pos = [r for r in reqs if r.meta["side"] == "pos"]
    assert all(r.messages[0]["content"].startswith("You are an evil assistant.") for r in pos)
    records = [{"key": r.key, **r.meta} for r in reqs if r.meta["split"] == "extract"]
    pairs = pair_slots(records)
    assert len(pairs) == 16
    assert all(
        records[p]["q"] == records[n]["q"] and records[p]["side"] == "pos" != records[n]["side"]
        for p, n in pairs
    )


def test_judge_filter_rule():
    pairs = [(0, 1), (2, 3), (4, 5), (6, 7)]
    trait = [90, 10, 40, 10, 90, 60, 90, None]
    coherence = [90, 90, 90, 90, 90, 90, 90, 90]
    keep, counts = confirmed_pairs(pairs, trait, coherence, ExtractConfig())
    assert keep == [True, False, False, False]
    assert counts == {"judge_none": 1, "pos_not_trait": 1, "neg_trait": 1, "incoherent": 0}
    keep, counts = confirmed_pairs(pairs[:1], trait, [90, 49, *coherence[2:]], ExtractConfig())
    assert keep == [False] and counts["incoherent"] == 1


def test_extract_end_to_end_on_tiny_model(llama, tok, tmp_path):
    config = ExtractConfig(
        max_new_tokens=5,
        batch_size=8,
        n_steer_layers=2,
        steer_questions=2,
        steer_max_new_tokens=3,
        min_auroc=0.5,
    )
    result = extract(llama, tok, _spec(), workdir=tmp_path / "run", config=config, progress=False)
    vector, stats = result.vector, result.stats
    assert vector.layers == [0, 1, 2] and vector.meta.chosen_layer in (1, 2)  # layer 0 is never chosen
    assert vector.meta.n_pos == vector.meta.n_neg == 8
    for name in ("auroc_system", "auroc_text"):
        assert len(stats["layer_curves"][name]) == 3
    assert stats["choice_reason"] and set(stats["steering_effect"]) <= {"1", "2"}
    # the vector is mean(pos) - mean(neg) of the response means read with the system prompt
    ext = [r for r in result.records if r["split"] == "extract"]
    means = collect_means(
        llama, tok, [r["messages"] for r in ext], [r["answer"] for r in ext], variants=("response",)
    )["response"]
    pos = torch.tensor([r["side"] == "pos" for r in ext])
    expected = means[pos].mean(0) - means[~pos].mean(0)
    for layer in range(3):
        assert torch.allclose(vector.vector(layer), expected[layer], atol=1e-5)
    vector_path, probe_path = save_result(result, tmp_path / "vectors" / "evil")
    loaded = PersonaVector.load(vector_path)
    assert loaded.meta.chosen_layer == vector.meta.chosen_layer and probe_path.is_file()
    fig = layer_separation_figure(loaded.meta.stats)  # the layer figure (steerlab.plots) draws its stats
    assert {s.x0 for s in fig.layout.shapes if s.x0 == s.x1} == {vector.meta.chosen_layer}
    # a rerun reuses the generations and cached activations and gives the same vector
    again = extract(llama, tok, _spec(), workdir=tmp_path / "run", config=config, progress=False)
    assert torch.equal(again.vector.vector(1), vector.vector(1))


class _LengthJudge:
    """Deterministic stand-in judge: longer answers are 'more evil'."""

    def score_answers(self, questions, answers):
        return [min(100.0, 10.0 * len(a.split())) for a in answers]


class _AlwaysCoherent:
    def score_answers(self, questions, answers):
        return [100.0] * len(answers)


def test_judge_filtering_keeps_confirmed_pairs_only(llama, tok, tmp_path):
    config = ExtractConfig(
        max_new_tokens=8, batch_size=8, filter="judge", steer_layers=[], samples_per_prompt=2
    )
    judge = _LengthJudge()
    result = extract(
        llama,
        tok,
        _spec(),
        workdir=tmp_path / "run",
        config=config,
        judge=judge,
        coherence=_AlwaysCoherent(),
        progress=False,
    )
    ext = [r for r in result.records if r["split"] == "extract"]
    scores = judge.score_answers(None, [r["answer"] for r in ext])
    keep = [scores[p] >= 50 and scores[n] < 50 for p, n in pair_slots(ext)]
    stats = result.stats
    assert stats["counts"]["extract_pairs_kept"] == sum(keep) > 0
    assert result.vector.meta.n_pos == sum(keep)
    assert "auroc_system_unfiltered_vector" in stats["layer_curves"]
    assert stats["filter"]["judge"] == "_LengthJudge"


# ----------------------------------------------------------------------------------------- layer choice


def test_auroc_and_layer_choice_rules():
    assert auroc([3, 4], [1, 2]) == 1.0 and auroc([1], [2]) == 0.0
    system, text = [0.95, 0.99, 0.97, 0.80], [0.6, 0.7, 0.9, 0.5]
    layer, reason = choose_layer(system, text, None)
    assert layer == 1 and "best held-out AUROC" in reason
    layer, reason = choose_layer(system, text, {1: 2.0, 2: 9.0, 3: 50.0})  # layer 3 is below the AUROC floor
    assert layer == 2 and "steering effect" in reason
    layer, _ = choose_layer(system, text, None, exclude=[1])
    assert layer == 2
    assert spread([1, 2, 3, 4, 5, 6, 7], 3) == [1, 4, 7]


# ------------------------------------------------------------------------------------ instruction choice


def _instruction_records(n_questions: int = 6):
    """Instruction 0 is followed (pos answers shifted along +x), instruction 1 is ignored (no shift)."""
    gen = torch.Generator().manual_seed(0)
    records, rows = [], []
    for q in range(n_questions):
        for i in (0, 1):
            for side in ("pos", "neg"):
                act = torch.randn(3, 4, generator=gen)
                if i == 0 and side == "pos":
                    act[:, 0] += 6.0
                records.append({"q": q, "i": i, "side": side})
                rows.append(act)
    return torch.stack(rows), records


def test_instruction_scores_rank_the_followed_instruction_first():
    acts, records = _instruction_records()
    scores = score_instructions(acts, records)
    by_index = {s.index: s for s in scores}
    assert by_index[0].auroc > 0.9 and by_index[1].auroc < 0.8
    assert by_index[0].n_pairs == 6
    assert select_instructions(scores, 1) == [0] and select_instructions(scores, 2) == [0, 1]
    with pytest.raises(ValueError, match="k must be"):
        select_instructions(scores, 0)
    with pytest.raises(ValueError, match="activation rows"):
        score_instructions(acts[:-1], records)


def test_extraction_keeps_only_the_selected_instructions(llama, tok, tmp_path):
    config = ExtractConfig(max_new_tokens=6, batch_size=8, steer_layers=[], select_instructions=1)
    result = extract(llama, tok, _spec(), workdir=tmp_path / "run", config=config, progress=False)
    chosen = result.stats["instructions"]["chosen"]
    assert len(chosen) == 1 and result.stats["instructions"]["candidates"] == [0, 1]
    assert set(result.stats["instructions"]["crossfit_auroc"]) == {"0", "1"}
    assert {r["i"] for r in result.records} == set(chosen)
    assert result.stats["counts"]["eval_answers"] == len(EVAL) * 2
    assert result.stats["counts"]["generated"] == len(QUESTIONS) * 2 * 2 + len(EVAL) * 2
    assert result.stats["counts"]["used"] == len(QUESTIONS) * 2 + len(EVAL) * 2
    one_question = trait_from_pairs(
        "evil", [("Be evil.", "Be kind.")], QUESTIONS[:1], EVAL, "Rate {question} {answer}"
    )
    with pytest.raises(ValueError, match="needs at least 2 extraction questions"):
        extract(llama, tok, one_question, workdir=tmp_path / "one", config=config, progress=False)
    # every candidate's extraction answers were generated (and kept on disk for a resumed run)
    on_disk = read_generations(tmp_path / "run" / "generations.jsonl")
    assert {r["i"] for r in on_disk.values() if r["split"] == "extract"} == {0, 1}
    assert {r["i"] for r in on_disk.values() if r["split"] == "eval"} == set(chosen)


def test_steering_answers_are_keyed_by_the_vector_so_a_rerun_with_another_filter_recomputes(
    llama, tok, tmp_path
):
    common = {"max_new_tokens": 6, "batch_size": 8, "steer_layers": [1], "steer_questions": 2}
    work = tmp_path / "run"
    first = extract(llama, tok, _spec(), workdir=work, config=ExtractConfig(**common), progress=False)
    second = extract(
        llama,
        tok,
        _spec(),
        workdir=work,
        config=ExtractConfig(filter="judge", trait_threshold=20.0, **common),
        judge=_LengthJudge(),
        coherence=_AlwaysCoherent(),
        progress=False,
    )
    assert not torch.equal(first.vector.vector(1), second.vector.vector(1))
    tags = {key.split("/")[0] for key in read_generations(work / "steer_layers.jsonl")}
    assert len([t for t in tags if t.startswith("L1-")]) == 2 and "base" in tags


def test_shipped_vector_sidecar_agrees_with_the_layer_rule():
    """The shipped vector's recorded choice is what `choose_layer` makes of its recorded curves, and its
    held-out AUROC (system prompt in context, all evaluation pairs) at that layer is the issue's >= 0.90."""
    from pathlib import Path

    sidecar = Path(__file__).resolve().parents[1] / "vectors" / "smollm2-135m-instruct" / "evil.json"
    meta = json.loads(sidecar.read_text())
    stats = meta["stats"]
    curves = stats["layer_curves"]
    coherent = {
        int(layer): effect
        for layer, effect in stats["steering_effect"].items()
        if stats["steering_quality"][layer]["perplexity_ratio"] <= stats["config"]["max_ppl_ratio"]
        and stats["steering_quality"][layer]["coherence"] >= stats["config"]["coherence_threshold"]
    }
    layer, _ = choose_layer(
        curves["auroc_system"], curves["auroc_text"], coherent, min_auroc=0.9, exclude=[0]
    )
    assert layer == meta["chosen_layer"] == stats["chosen_layer"]
    assert stats["selection_reading"] == "all_eval"
    assert curves["auroc_system"][layer] >= 0.90
    assert stats["instructions"]["chosen"] == [0, 1] and stats["counts"]["eval_pairs"] == 88
