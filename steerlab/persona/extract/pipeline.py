"""The extraction pipeline as named stages (see the package docstring); each stage reads and writes the
work folder, so a killed run resumes where it stopped."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from steerlab.io import json_safe, write_json
from steerlab.judges.base import TraitScorer
from steerlab.judges.coherence import PerplexityCoherenceScorer
from steerlab.judges.probe import ProbeJudge
from steerlab.models.architectures import hidden_size, num_layers
from steerlab.persona.extract.answers import build_requests, candidate_instructions, read_activations
from steerlab.persona.extract.config import ExtractConfig, ExtractResult
from steerlab.persona.extract.pairs import (
    confirmed_pairs,
    cross_fit_scores,
    mean_diff,
    pair_slots,
    pick_probe_layer,
)
from steerlab.persona.extract.steering_effect import steering_effects
from steerlab.persona.generation import generate
from steerlab.persona.instruction_select import score_instructions, select_instructions
from steerlab.persona.layer_select import (
    auroc_per_layer,
    choose_layer,
    eligible_layers,
    spread,
)
from steerlab.persona.traits import TraitSpec
from steerlab.persona.vectors import PersonaVector, VectorMetadata, model_fingerprint, model_id

Records = list[dict[str, Any]]
Means = dict[str, Tensor]


@dataclass
class _Run:
    """What every stage needs: the model, the trait, the knobs, the work folder and the stage clock."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: TraitSpec
    config: ExtractConfig
    workdir: Path
    progress: bool
    times: dict[str, float] = field(default_factory=lambda: {"generate": 0.0, "activations": 0.0})

    def generate(self, requests: list, seed: int, desc: str) -> Records:
        t = time.perf_counter()
        out = generate(
            self.model,
            self.tokenizer,
            requests,
            replace(self.config.sampling, seed=seed),
            desc=desc,
            out_path=self.workdir / "generations.jsonl",
            progress=self.progress,
        )
        self.times["generate"] += time.perf_counter() - t
        return out

    def read(self, records: Records, name: str, *, with_system: bool, variants: tuple[str, ...]) -> Means:
        t = time.perf_counter()
        out = read_activations(
            self.model,
            self.tokenizer,
            records,
            self.workdir,
            name,
            with_system=with_system,
            variants=variants,
            batch_size=self.config.batch_size,
            progress=self.progress,
        )
        self.times["activations"] += time.perf_counter() - t
        return out


@dataclass
class _Answers:
    """Stages 1-3: the answers kept for extraction (``ext``) and evaluation (``evl``) and their readings."""

    ext: Records
    evl: Records
    ext_sys: Means  # system prompt in context; response, prompt and last-token means
    ext_txt: Means  # text only (bare question); response means
    evl_sys: Means
    evl_txt: Means
    candidates: list[int]
    chosen: list[int]
    instruction_scores: list
    n_candidate_answers: int


def _answers(run: _Run) -> _Answers:
    """1. extraction answers under every candidate pair; 2. keep the pairs the model follows (judged on
    extraction answers only); 3. evaluation answers under the kept pairs, and the remaining readings."""
    spec, config = run.spec, run.config
    ext = run.generate(build_requests(spec, config, splits=("extract",)), config.seed, "extraction answers")
    ext_sys = run.read(ext, "extract_system", with_system=True, variants=("response", "prompt", "last"))
    candidates = candidate_instructions(spec, config)
    scores = score_instructions(ext_sys["response"], ext) if len(spec.extract_questions) >= 2 else []
    if config.select_instructions is not None and not scores:
        raise ValueError(
            f"select_instructions={config.select_instructions} needs at least 2 extraction questions to "
            f"cross-fit on; trait {spec.name!r} has {len(spec.extract_questions)}"
        )
    chosen = (
        candidates
        if config.select_instructions is None
        else select_instructions(scores, config.select_instructions)
    )
    n_candidate_answers = len(ext)
    if chosen != candidates:
        rows = [n for n, r in enumerate(ext) if r["i"] in chosen]
        ext = [ext[n] for n in rows]
        ext_sys = {k: v[rows] for k, v in ext_sys.items()}
    evl = run.generate(
        build_requests(spec, config, splits=("eval",), instructions=chosen),
        config.seed + 1,
        "evaluation answers",
    )
    return _Answers(
        ext=ext,
        evl=evl,
        ext_sys=ext_sys,
        ext_txt=run.read(ext, "extract_text", with_system=False, variants=("response",)),
        evl_sys=run.read(evl, "eval_system", with_system=True, variants=("response",)),
        evl_txt=run.read(evl, "eval_text", with_system=False, variants=("response",)),
        candidates=candidates,
        chosen=chosen,
        instruction_scores=scores,
        n_candidate_answers=n_candidate_answers,
    )


def _labels(records: Records) -> np.ndarray:
    return np.array([int(r["side"] == "pos") for r in records])


def _probe(run: _Run, a: _Answers) -> tuple[ProbeJudge, list[float]]:
    """4a. the offline probe judge on the text-only reading: trained on extraction answers, tested on the
    evaluation answers; its layer is the best cross-fitted one unless the config pins it."""
    config = run.config
    labels, groups = _labels(a.ext), np.array([r["q"] for r in a.ext])
    if config.probe_layer is None:
        layer, curve = pick_probe_layer(a.ext_txt["response"], labels, groups, config.seed)
    else:
        layer, curve = config.probe_layer, []
    probe = ProbeJudge.fit(
        run.model,
        run.tokenizer,
        layer,
        a.ext_txt["response"][:, layer],
        labels,
        seed=config.seed,
        meta={
            "trait": run.spec.name,
            "reading": "text_only",
            "trained_on": "extraction answers, pos=1 neg=0",
        },
    )
    probe.evaluate(a.evl_txt["response"][:, layer], _labels(a.evl))
    return probe, curve


@dataclass
class _Filter:
    """4b. which pairs the judge confirms (all of them without filtering) and why the others were dropped."""

    ext_pairs: list[tuple[int, int]]
    evl_pairs: list[tuple[int, int]]
    ext_keep: list[bool]
    evl_keep: list[bool]
    counts: dict[str, Any]


def _judge_filter(
    run: _Run, a: _Answers, probe: ProbeJudge, judge: TraitScorer | None, coherence: TraitScorer | None
) -> _Filter:
    ext_pairs, evl_pairs = pair_slots(a.ext), pair_slots(a.evl)
    result = _Filter(ext_pairs, evl_pairs, [True] * len(ext_pairs), [True] * len(evl_pairs), {})
    config = run.config
    if config.filter != "judge":
        return result
    coherence = coherence or PerplexityCoherenceScorer(run.model, run.tokenizer, batch_size=config.batch_size)
    questions = {name: [r["question"] for r in recs] for name, recs in (("ext", a.ext), ("evl", a.evl))}
    answers = {name: [r["answer"] for r in recs] for name, recs in (("ext", a.ext), ("evl", a.evl))}
    if judge is None:
        judge_name = f"cross-fitted probe at layer {probe.layer} + perplexity coherence"
        groups = np.array([r["q"] for r in a.ext])
        reading = a.ext_txt["response"][:, probe.layer]
        ext_trait = (100 * cross_fit_scores(reading, _labels(a.ext), groups, config.seed)).tolist()
        evl_trait = probe.score_features(a.evl_txt["response"][:, probe.layer])
    else:
        judge_name = type(judge).__name__
        ext_trait = judge.score_answers(questions["ext"], answers["ext"])
        evl_trait = judge.score_answers(questions["evl"], answers["evl"])
    ext_trait = [None if v is None or not math.isfinite(v) else v for v in ext_trait]
    ext_coh = coherence.score_answers(questions["ext"], answers["ext"])
    evl_coh = coherence.score_answers(questions["evl"], answers["evl"])
    result.ext_keep, ext_counts = confirmed_pairs(ext_pairs, ext_trait, ext_coh, config)
    result.evl_keep, evl_counts = confirmed_pairs(evl_pairs, evl_trait, evl_coh, config)
    result.counts = {
        "judge": judge_name,
        "extract": ext_counts | {"kept_pairs": sum(result.ext_keep)},
        "eval": evl_counts | {"confirmed_pairs": sum(result.evl_keep)},
    }
    scores = {
        "extract": {r["key"]: [t, c] for r, t, c in zip(a.ext, ext_trait, ext_coh, strict=True)},
        "eval": {r["key"]: [t, c] for r, t, c in zip(a.evl, evl_trait, evl_coh, strict=True)},
    }
    write_json(run.workdir / "judge_scores.json", json_safe(scores))
    return result


@dataclass
class _Vectors:
    """5. the vector per layer (mean pos − mean neg of response means, system prompt in context) ``[L, d]``,
    the unfiltered one, and the prompt-mean / last-token variants."""

    vectors: Tensor
    raw: Tensor
    variants: dict[str, Tensor]
    n_pos: int
    n_neg: int
    n_pos_all: int
    n_neg_all: int


def _vectors(run: _Run, a: _Answers, f: _Filter) -> _Vectors:
    raw, n_pos_all, n_neg_all = mean_diff(a.ext_sys["response"], f.ext_pairs, [True] * len(f.ext_pairs))
    if run.config.filter == "none":
        vectors, n_pos, n_neg = raw, n_pos_all, n_neg_all
    else:
        if not any(f.ext_keep):
            raise ValueError(
                f"judge filtering kept none of the {len(f.ext_pairs)} extraction pairs "
                f"({json.dumps(f.counts['extract'])}); lower the thresholds or use filter='none'"
            )
        vectors, n_pos, n_neg = mean_diff(a.ext_sys["response"], f.ext_pairs, f.ext_keep)
    variants = {v: mean_diff(a.ext_sys[v], f.ext_pairs, f.ext_keep)[0] for v in ("prompt", "last")}
    return _Vectors(vectors, raw, variants, n_pos, n_neg, n_pos_all, n_neg_all)


def _layer_curves(run: _Run, a: _Answers, f: _Filter, v: _Vectors, probe_curve: list[float]) -> dict:
    """6. per-layer held-out AUROC of the projection on the evaluation answers, in every reading."""
    n_layers = num_layers(run.model)
    everything = [True] * len(f.evl_pairs)

    def curve(vecs: Tensor, acts: Tensor, keep: list[bool]) -> list[float]:
        pos = [p for (p, _), k in zip(f.evl_pairs, keep, strict=True) if k]
        neg = [n for (_, n), k in zip(f.evl_pairs, keep, strict=True) if k]
        return auroc_per_layer(acts[pos], acts[neg], vecs) if pos else [float("nan")] * n_layers

    curves = {
        "auroc_system": curve(v.vectors, a.evl_sys["response"], everything),
        "auroc_text": curve(v.vectors, a.evl_txt["response"], everything),
    }
    if run.config.filter == "judge":
        curves |= {
            "auroc_system_unfiltered_vector": curve(v.raw, a.evl_sys["response"], everything),
            "auroc_text_unfiltered_vector": curve(v.raw, a.evl_txt["response"], everything),
            "auroc_system_confirmed_eval": curve(v.vectors, a.evl_sys["response"], f.evl_keep),
            "auroc_text_confirmed_eval": curve(v.vectors, a.evl_txt["response"], f.evl_keep),
        }
    if probe_curve:
        curves["probe_crossfit_auroc_extract_text"] = probe_curve
    return curves


@dataclass
class _Choice:
    """7. the steering effect of a few eligible layers and the chosen layer, with the reason."""

    layer: int
    reason: str
    reading: str
    effects: dict[int, float]
    quality: dict[int, dict[str, float]]


def _choose(run: _Run, f: _Filter, v: _Vectors, curves: dict, scorer: TraitScorer) -> _Choice:
    config = run.config
    # Separation is judged on all evaluation pairs when some layer reaches min_auroc there; otherwise, with
    # judge filtering, on the pairs the judge confirms (answers that do / do not show the trait; >= 5).
    reaches = any(x >= config.min_auroc for x in curves["auroc_system"] if math.isfinite(x))
    confirmed = config.filter == "judge" and sum(f.evl_keep) >= 5 and not reaches
    reading = "confirmed_eval" if confirmed else "all_eval"
    sel_system = curves["auroc_system_confirmed_eval" if confirmed else "auroc_system"]
    sel_text = curves["auroc_text_confirmed_eval" if confirmed else "auroc_text"]
    layers = config.steer_layers
    if layers is None:
        layers = spread(eligible_layers(sel_system, config.min_auroc, exclude=[0]), config.n_steer_layers)
    questions = list(run.spec.eval_questions[: config.steer_questions])
    effects, quality = (
        steering_effects(
            run.model, run.tokenizer, v.vectors, layers, questions, scorer, config, run.workdir, run.progress
        )
        if layers
        else ({}, {})
    )
    coherent = {
        layer: e
        for layer, e in effects.items()
        if quality[layer]["perplexity_ratio"] <= config.max_ppl_ratio
        and quality[layer]["coherence"] >= config.coherence_threshold
    }
    chosen, reason = choose_layer(sel_system, sel_text, coherent, min_auroc=config.min_auroc, exclude=[0])
    reason += (
        f" (AUROC read on {'judge-confirmed' if confirmed else 'all'} evaluation pairs;"
        f" steered layers whose answers' perplexity rose over {config.max_ppl_ratio:g}x or whose coherence fell"
        f" under {config.coherence_threshold:g} were not eligible:"
        f" {sorted(set(effects) - set(coherent))})"
    )
    return _Choice(chosen, reason, reading, effects, quality)


def _stats(
    run: _Run, a: _Answers, f: _Filter, v: _Vectors, curves: dict, c: _Choice, probe: ProbeJudge
) -> dict:
    """Everything needed to judge the vector later: counts, instruction scores, curves, choice, times."""
    records = a.ext + a.evl
    counts = {
        "generated": a.n_candidate_answers + len(a.evl),  # every candidate instruction's extraction answers
        "used": len(records),
        "extract_answers": len(a.ext),
        "eval_answers": len(a.evl),
        "empty_answers": sum(not r["answer"] for r in records),
        "truncated_answers": sum(not r["finished"] for r in records),
        "extract_pairs": len(f.ext_pairs),
        "extract_pairs_kept": sum(f.ext_keep),
        "eval_pairs": len(f.evl_pairs),
        "n_pos_unfiltered": v.n_pos_all,
        "n_neg_unfiltered": v.n_neg_all,
    }
    return {
        "config": asdict(run.config),
        "counts": counts,
        "instructions": {
            "candidates": a.candidates,
            "chosen": a.chosen,
            "crossfit_auroc": {str(x.index): round(x.auroc, 4) for x in a.instruction_scores},
        },
        "filter": f.counts,
        "layer_curves": curves,
        "steering_effect": {str(k): e for k, e in c.effects.items()},
        "steering_quality": {str(k): q for k, q in c.quality.items()},
        "steering_alpha": run.config.steer_alpha,
        "selection_reading": c.reading,
        "chosen_layer": c.layer,
        "choice_reason": c.reason,
        "at_chosen_layer": {name: curve[c.layer] for name, curve in curves.items()},
        "norms": [float(x.norm()) for x in v.vectors],
        "probe": {"layer": probe.layer, **{k: probe.meta[k] for k in ("train", "heldout")}},
        "seconds": {k: round(t, 1) for k, t in run.times.items()},
        "workdir": str(run.workdir),
    }


def extract(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    spec: TraitSpec,
    *,
    workdir: str | Path,
    config: ExtractConfig | None = None,
    judge: TraitScorer | None = None,
    coherence: TraitScorer | None = None,
    model_name: str | None = None,
    progress: bool = True,
) -> ExtractResult:
    """Extract ``spec``'s persona vector from ``model`` (see the package docstring for the stages).

    ``judge``/``coherence`` replace the offline judges for filtering; the steering effect is measured with the
    offline probe unless ``judge`` is given. The result's vector holds ``[d_model]`` at every layer (layer
    ``l`` = output of decoder block ``l``). Raises ``ValueError`` when a prompt does not fit the model's
    context, when instruction selection has fewer than 2 extraction questions, or when judge filtering keeps
    no pair. Method: Chen et al. 2025, "Persona Vectors" (arXiv 2507.21509).
    """
    config = config or ExtractConfig()
    run = _Run(model, tokenizer, spec, config, Path(workdir), progress)
    run.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_layers = num_layers(model)
    limit = int(getattr(getattr(model, "config", None), "max_position_embeddings", 0) or 0)
    if limit:
        spec.check_lengths(tokenizer, limit - config.max_new_tokens)
    answers = _answers(run)
    t = time.perf_counter()
    probe, probe_curve = _probe(run, answers)
    filtering = _judge_filter(run, answers, probe, judge, coherence)
    run.times["judge"] = time.perf_counter() - t
    vecs = _vectors(run, answers, filtering)
    curves = _layer_curves(run, answers, filtering, vecs, probe_curve)
    t = time.perf_counter()
    choice = _choose(run, filtering, vecs, curves, judge if judge is not None else probe)
    run.times["steering"] = time.perf_counter() - t
    run.times["total"] = time.perf_counter() - t0
    stats = _stats(run, answers, filtering, vecs, curves, choice, probe)
    meta = VectorMetadata(
        model_id=model_name or model_id(model),
        model_fingerprint=model_fingerprint(model),
        n_layers=n_layers,
        d_model=hidden_size(model),
        trait=spec.name,
        method="mean_diff",
        token_scope="response",
        n_pos=vecs.n_pos,
        n_neg=vecs.n_neg,
        chosen_layer=choice.layer,
        stats=json_safe(stats),
    )
    vector = PersonaVector({layer: vecs.vectors[layer].clone() for layer in range(n_layers)}, meta)
    for name, variant in vecs.variants.items():
        extra = VectorMetadata(**{**asdict(meta), "token_scope": name, "stats": {}})
        PersonaVector({layer: variant[layer].clone() for layer in range(n_layers)}, extra).save(
            run.workdir / f"vector_{name}"
        )
    return ExtractResult(vector, probe, answers.ext + answers.evl, meta.stats)
