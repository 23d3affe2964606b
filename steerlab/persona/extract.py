"""Extraction of a persona vector: contrastive generation, activation means, difference, layer choice.

Pipeline (every stage writes to ``workdir`` and a rerun picks up where a killed one stopped):

1. generate answers to every *extraction* question under every candidate pos and neg system prompt
   (``samples_per_prompt`` samples each; ``generations.jsonl``) and read their activations teacher-forced,
   all layers in one pass per batch, with the system prompt in context (response-mean, prompt-mean,
   last-prompt-token);
2. optionally keep only the ``select_instructions`` instruction pairs the model follows best
   (`steerlab.persona.instruction_select`, cross-fitted on the extraction answers; the evaluation questions are
   not looked at);
3. generate answers to the *evaluation* questions under the kept instructions, and read the text-only
   extraction answers and the evaluation answers (``acts_*.safetensors``);
4. optional judge filtering: keep a (question, instruction, sample) pair only when the pos answer scores
   >= ``trait_threshold``, the neg answer < ``trait_threshold``, and both are coherent (>=
   ``coherence_threshold``). The offline default judge is a probe *cross-fitted* over two halves of the
   extraction questions (so no answer is judged by a probe that saw it) plus the perplexity coherence score;
5. vector per layer = mean(pos) - mean(neg) of the response means with the system prompt in context;
6. an offline probe judge (`steerlab.judges.probe.ProbeJudge`) trained on the extraction answers and tested
   on the evaluation answers; per-layer held-out AUROCs;
7. steering effect on a subset of layers; layer choice (`steerlab.persona.layer_select`).

The vector's ``meta.stats`` keeps everything needed to judge it: counts, instruction scores, per-layer
curves (with and without filtering, system-prompt and text-only readings), the steering effects, the
probe's held-out metrics, the choice and its reason, and the time of each stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from steerlab.io import atomic_path, write_json, write_text
from steerlab.judges.base import TraitScorer
from steerlab.judges.probe import PerplexityCoherenceScorer, ProbeJudge, binary_metrics, fit_logistic
from steerlab.models.architectures import hidden_size, num_layers
from steerlab.persona.activations import collect_means
from steerlab.persona.generation import GenRequest, chat_messages, generate
from steerlab.persona.instruction_select import score_instructions, select_instructions
from steerlab.persona.layer_select import (
    auroc_per_layer,
    choose_layer,
    eligible_layers,
    plot_layer_curves,
    spread,
)
from steerlab.persona.steering import steer_ops
from steerlab.persona.traits import TraitSpec, system_prompt
from steerlab.persona.vectors import PersonaVector, VectorMetadata, model_fingerprint, model_id

log = logging.getLogger(__name__)
SIDES = ("pos", "neg")


@dataclass
class ExtractConfig:
    """Knobs of one extraction; all of them land in the vector's stats."""

    samples_per_prompt: int = 1
    n_instructions: int | None = None  # candidate instruction pairs: the first n (None: all)
    select_instructions: int | None = None  # keep the k best-followed candidates (None: keep all)
    max_new_tokens: int = 48
    batch_size: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    filter: Literal["none", "judge"] = "none"
    trait_threshold: float = 50.0
    coherence_threshold: float = 50.0
    probe_layer: int | None = None  # None: best cross-fitted text-only AUROC on the extraction answers
    steer_layers: list[int] | None = None  # None: n_steer_layers spread over the eligible layers
    n_steer_layers: int = 5
    steer_alpha: float = 2.0
    steer_questions: int = 11
    steer_max_new_tokens: int = 32
    max_ppl_ratio: float = 2.0  # a steered layer counts if perplexity rose <= this and coherence held
    min_auroc: float = 0.9

    def __post_init__(self) -> None:
        if self.filter not in ("none", "judge"):
            raise ValueError(f"filter must be 'none' or 'judge', got {self.filter!r}")
        if self.select_instructions is not None and self.select_instructions < 1:
            raise ValueError(f"select_instructions must be >= 1 or None, got {self.select_instructions}")
        for key in ("samples_per_prompt", "max_new_tokens", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")


@dataclass
class ExtractResult:
    vector: PersonaVector
    probe: ProbeJudge
    records: list[dict[str, Any]] = field(repr=False)
    stats: dict[str, Any] = field(repr=False)


# ---------------------------------------------------------------------------------------------- stages


def candidate_instructions(spec: TraitSpec, config: ExtractConfig) -> list[int]:
    n = len(spec.instructions)
    return list(range(n if config.n_instructions is None else min(config.n_instructions, n)))


def build_requests(
    spec: TraitSpec,
    config: ExtractConfig,
    *,
    splits: Sequence[str] = ("extract", "eval"),
    instructions: Sequence[int] | None = None,
) -> list[GenRequest]:
    """Every (split, question, instruction, sample, side) to answer, pos and neg of a slot side by side."""
    questions_of = {"extract": spec.extract_questions, "eval": spec.eval_questions}
    chosen = candidate_instructions(spec, config) if instructions is None else list(instructions)
    requests = []
    for split in splits:
        for q, question in enumerate(questions_of[split]):
            for i in chosen:
                for s in range(config.samples_per_prompt):
                    for side in SIDES:
                        system = system_prompt(spec, i, side)
                        meta = {
                            "split": split,
                            "side": side,
                            "q": q,
                            "i": i,
                            "s": s,
                            "question": question,
                            "system": system,
                        }
                        requests.append(
                            GenRequest(
                                f"{split}/q{q}/i{i}/s{s}/{side}", chat_messages(question, system), meta
                            )
                        )
    return requests


def _digest(tensor: Tensor) -> str:
    return hashlib.sha256(tensor.detach().float().cpu().numpy().tobytes()).hexdigest()[:10]


def _keys_digest(records: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r['key']}\x00{r['system']}\x00{r['answer']}\x01".encode())
    return h.hexdigest()[:16]


def cached_means(
    path: Path, records: list[dict[str, Any]], compute: Callable[[], dict[str, Tensor]]
) -> dict[str, Tensor]:
    """Load activation means from ``path`` if they were made from the same answers, else compute and save."""
    digest = _keys_digest(records)
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("digest") == digest:
                return load_file(str(path))
    means = compute()
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in means.items()}, str(tmp), metadata={"digest": digest})
    return means


def read_activations(
    model: Any,
    tokenizer: Any,
    records: list[dict[str, Any]],
    workdir: Path,
    name: str,
    *,
    with_system: bool,
    variants: tuple[str, ...],
    batch_size: int,
    progress: bool,
) -> dict[str, Tensor]:
    prompts = [r["messages"] if with_system else chat_messages(r["question"]) for r in records]
    answers = [r["answer"] for r in records]
    return cached_means(
        workdir / f"acts_{name}.safetensors",
        records,
        lambda: collect_means(
            model,
            tokenizer,
            prompts,
            answers,
            variants=variants,
            batch_size=batch_size,
            progress=progress,
            desc=f"activations {name}",
        ),
    )


def pair_slots(records: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(pos index, neg index) of each (question, instruction, sample) slot, in order."""
    where = {(r["q"], r["i"], r["s"], r["side"]): n for n, r in enumerate(records)}
    return [(where[(q, i, s, "pos")], where[(q, i, s, "neg")]) for (q, i, s, side) in where if side == "pos"]


def confirmed_pairs(
    pairs: list[tuple[int, int]],
    trait: list[float | None],
    coherence: list[float | None],
    config: ExtractConfig,
) -> tuple[list[bool], dict[str, int]]:
    """Which pairs the judge confirms, plus counts of why the others were dropped."""
    keep, counts = [], {"judge_none": 0, "pos_not_trait": 0, "neg_trait": 0, "incoherent": 0}
    for p, n in pairs:
        scores = (trait[p], trait[n], coherence[p], coherence[n])
        if any(s is None for s in scores):
            counts["judge_none"] += 1
            keep.append(False)
            continue
        reasons = [
            trait[p] < config.trait_threshold,
            trait[n] >= config.trait_threshold,
            min(coherence[p], coherence[n]) < config.coherence_threshold,
        ]
        for name, bad in zip(("pos_not_trait", "neg_trait", "incoherent"), reasons, strict=True):
            counts[name] += int(bad)
        keep.append(not any(reasons))
    return keep, counts


def mean_diff(acts: Tensor, pairs: list[tuple[int, int]], keep: list[bool]) -> tuple[Tensor, int, int]:
    """mean(pos) - mean(neg) over the kept pairs' answers with a response: ``[L, d]``, n_pos, n_neg."""
    pos = [p for (p, _), k in zip(pairs, keep, strict=True) if k and not torch.isnan(acts[p]).any()]
    neg = [n for (_, n), k in zip(pairs, keep, strict=True) if k and not torch.isnan(acts[n]).any()]
    if not pos or not neg:
        raise ValueError(f"no usable answers left to extract from ({len(pos)} pos, {len(neg)} neg)")
    return acts[pos].mean(0) - acts[neg].mean(0), len(pos), len(neg)


def cross_fit_scores(features: Tensor, labels: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """Probe probabilities for each row from a probe fitted on the *other* half of the groups (questions)."""
    out = np.full(len(labels), np.nan)
    ok = ~torch.isnan(features).any(dim=1).numpy()
    folds = groups % 2
    for fold in (0, 1):
        train, test = ok & (folds != fold), ok & (folds == fold)
        if test.any():
            coef, intercept = fit_logistic(features[train].numpy(), labels[train], seed=seed)
            out[test] = 1 / (1 + np.exp(-(features[test].numpy() @ coef + intercept)))
    return out


def pick_probe_layer(
    acts: Tensor, labels: np.ndarray, groups: np.ndarray, seed: int
) -> tuple[int, list[float]]:
    """The layer whose cross-fitted text-only probe separates the extraction answers best."""
    curve = []
    ok = ~torch.isnan(acts).any(dim=(1, 2)).numpy()
    for layer in range(acts.shape[1]):
        scores = cross_fit_scores(acts[:, layer], labels, groups, seed)
        curve.append(float(binary_metrics(scores[ok], labels[ok])["auroc"]))
    return int(np.nanargmax(curve)), curve


def steering_effects(
    model: Any,
    tokenizer: Any,
    vectors: Tensor,
    layers: list[int],
    questions: list[str],
    scorer: TraitScorer,
    config: ExtractConfig,
    workdir: Path,
    progress: bool,
) -> tuple[dict[int, float], dict[int, float]]:
    """Per layer: the mean trait-score change of answers to bare questions (greedy) under
    ``+steer_alpha * v_l``, and ``{perplexity_ratio, coherence}`` of those answers: the base model's perplexity
    over that of the unsteered answers, and the mean offline coherence (perplexity x distinct trigrams).
    """
    coherence = PerplexityCoherenceScorer(model, tokenizer, batch_size=config.batch_size)

    def scores(layer: int | None) -> tuple[float, float, float]:
        ops = [] if layer is None else steer_ops(vectors[layer], layer, config.steer_alpha)
        # the key names the vector too: a rerun with another filter (another vector) must not reuse answers
        tag = "base" if layer is None else f"L{layer}-{_digest(vectors[layer])}"
        requests = [
            GenRequest(f"{tag}/a{config.steer_alpha:g}/q{q}", chat_messages(text), {"question": text})
            for q, text in enumerate(questions)
        ]
        records = generate(
            model,
            tokenizer,
            requests,
            batch_size=config.batch_size,
            max_new_tokens=config.steer_max_new_tokens,
            temperature=0.0,
            seed=config.seed,
            ops=ops,
            out_path=workdir / "steer_layers.jsonl",
            progress=progress,
            desc=f"steer {tag}",
        )
        answers = [r["answer"] for r in records]
        values = [v for v in scorer.score_answers(questions, answers) if v is not None]
        ppls = [p for p in coherence.perplexities(questions, answers) if math.isfinite(p)]
        ppl = math.exp(float(np.mean(np.log(ppls)))) if ppls else float("nan")
        coh = [v for v in coherence.score_answers(questions, answers) if v is not None]
        return (float(np.mean(values)) if values else float("nan")), ppl, float(np.mean(coh)) if coh else 0.0

    base, base_ppl, _ = scores(None)
    effects, quality = {}, {}
    for layer in layers:
        score, ppl, coh = scores(layer)
        effects[layer] = score - base
        quality[layer] = {"perplexity_ratio": ppl / base_ppl, "coherence": coh}
    return effects, quality


# ---------------------------------------------------------------------------------------------- pipeline


def extract(
    model: Any,
    tokenizer: Any,
    spec: TraitSpec,
    *,
    workdir: str | Path,
    config: ExtractConfig | None = None,
    judge: TraitScorer | None = None,
    coherence: TraitScorer | None = None,
    model_name: str | None = None,
    progress: bool = True,
) -> ExtractResult:
    """Run the whole pipeline (see module doc). ``judge``/``coherence`` replace the offline judges for
    filtering; the steering effect is always measured with the offline probe unless ``judge`` is given."""
    config = config or ExtractConfig()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    n_layers = num_layers(model)
    limit = int(getattr(getattr(model, "config", None), "max_position_embeddings", 0) or 0)
    if limit:
        spec.check_lengths(tokenizer, limit - config.max_new_tokens)

    # 1. extraction answers under every candidate instruction pair, read with the system prompt in context
    generation = {
        "out_path": workdir / "generations.jsonl",
        "batch_size": config.batch_size,
        "max_new_tokens": config.max_new_tokens,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "progress": progress,
    }
    ext = generate(
        model,
        tokenizer,
        build_requests(spec, config, splits=("extract",)),
        seed=config.seed,
        desc="extraction answers",
        **generation,
    )
    times["generate"] = time.perf_counter() - t0
    t = time.perf_counter()
    read = {
        "model": model,
        "tokenizer": tokenizer,
        "workdir": workdir,
        "batch_size": config.batch_size,
        "progress": progress,
    }
    ext_sys = read_activations(
        records=ext, name="extract_system", with_system=True, variants=("response", "prompt", "last"), **read
    )
    times["activations"] = time.perf_counter() - t

    # 2. keep the instruction pairs the model follows (judged on extraction answers only)
    candidates = candidate_instructions(spec, config)
    instruction_scores = (
        score_instructions(ext_sys["response"], ext) if len(spec.extract_questions) >= 2 else []
    )
    if config.select_instructions is not None and not instruction_scores:
        raise ValueError(
            f"select_instructions={config.select_instructions} needs at least 2 extraction questions to "
            f"cross-fit on; trait {spec.name!r} has {len(spec.extract_questions)}"
        )
    chosen_instructions = (
        candidates
        if config.select_instructions is None
        else select_instructions(instruction_scores, config.select_instructions)
    )
    n_candidate_answers = len(ext)
    if chosen_instructions != candidates:
        rows = [n for n, r in enumerate(ext) if r["i"] in chosen_instructions]
        ext = [ext[n] for n in rows]
        ext_sys = {k: v[rows] for k, v in ext_sys.items()}

    # 3. evaluation answers (chosen instructions only) and the remaining readings
    t = time.perf_counter()
    evl = generate(
        model,
        tokenizer,
        build_requests(spec, config, splits=("eval",), instructions=chosen_instructions),
        seed=config.seed + 1,
        desc="evaluation answers",
        **generation,
    )
    records = ext + evl
    times["generate"] += time.perf_counter() - t
    t = time.perf_counter()
    ext_txt = read_activations(
        records=ext, name="extract_text", with_system=False, variants=("response",), **read
    )
    evl_sys = read_activations(
        records=evl, name="eval_system", with_system=True, variants=("response",), **read
    )
    evl_txt = read_activations(
        records=evl, name="eval_text", with_system=False, variants=("response",), **read
    )
    times["activations"] += time.perf_counter() - t

    # 4. the offline probe judge (text-only reading) and judge scores for filtering
    t = time.perf_counter()
    ext_labels = np.array([int(r["side"] == "pos") for r in ext])
    evl_labels = np.array([int(r["side"] == "pos") for r in evl])
    groups = np.array([r["q"] for r in ext])
    if config.probe_layer is None:
        probe_layer, probe_curve = pick_probe_layer(ext_txt["response"], ext_labels, groups, config.seed)
    else:
        probe_layer, probe_curve = config.probe_layer, []
    probe = ProbeJudge.fit(
        model,
        tokenizer,
        probe_layer,
        ext_txt["response"][:, probe_layer],
        ext_labels,
        seed=config.seed,
        meta={"trait": spec.name, "reading": "text_only", "trained_on": "extraction answers, pos=1 neg=0"},
    )
    probe.evaluate(evl_txt["response"][:, probe_layer], evl_labels)
    ext_pairs, evl_pairs = pair_slots(ext), pair_slots(evl)
    filter_counts: dict[str, Any] = {}
    ext_keep = [True] * len(ext_pairs)
    evl_keep = [True] * len(evl_pairs)
    if config.filter == "judge":
        coherence = coherence or PerplexityCoherenceScorer(model, tokenizer, batch_size=config.batch_size)
        if judge is None:
            judge_name = f"cross-fitted probe at layer {probe_layer} + perplexity coherence"
            ext_trait = (
                100 * cross_fit_scores(ext_txt["response"][:, probe_layer], ext_labels, groups, config.seed)
            ).tolist()
            evl_trait = probe.score_features(evl_txt["response"][:, probe_layer])
        else:
            judge_name = type(judge).__name__
            ext_trait = judge.score_answers([r["question"] for r in ext], [r["answer"] for r in ext])
            evl_trait = judge.score_answers([r["question"] for r in evl], [r["answer"] for r in evl])
        ext_trait = [None if v is None or not math.isfinite(v) else v for v in ext_trait]
        ext_coh = coherence.score_answers([r["question"] for r in ext], [r["answer"] for r in ext])
        evl_coh = coherence.score_answers([r["question"] for r in evl], [r["answer"] for r in evl])
        ext_keep, ext_counts = confirmed_pairs(ext_pairs, ext_trait, ext_coh, config)
        evl_keep, evl_counts = confirmed_pairs(evl_pairs, evl_trait, evl_coh, config)
        filter_counts = {
            "judge": judge_name,
            "extract": ext_counts | {"kept_pairs": sum(ext_keep)},
            "eval": evl_counts | {"confirmed_pairs": sum(evl_keep)},
        }
        write_json(
            workdir / "judge_scores.json",
            _finite(
                {
                    "extract": {r["key"]: [a, b] for r, a, b in zip(ext, ext_trait, ext_coh, strict=True)},
                    "eval": {r["key"]: [a, b] for r, a, b in zip(evl, evl_trait, evl_coh, strict=True)},
                }
            ),
        )
    times["judge"] = time.perf_counter() - t

    # 5. vectors (all pairs, and the judge-confirmed ones)
    all_pairs = [True] * len(ext_pairs)
    raw, n_pos_all, n_neg_all = mean_diff(ext_sys["response"], ext_pairs, all_pairs)
    if config.filter == "judge" and not any(ext_keep):
        raise ValueError(
            f"judge filtering kept none of the {len(ext_pairs)} extraction pairs "
            f"({json.dumps(filter_counts['extract'])}); lower the thresholds or use filter='none'"
        )
    vectors, n_pos, n_neg = (
        (raw, n_pos_all, n_neg_all)
        if config.filter == "none"
        else mean_diff(ext_sys["response"], ext_pairs, ext_keep)
    )
    variants = {v: mean_diff(ext_sys[v], ext_pairs, ext_keep)[0] for v in ("prompt", "last")}

    # 6. per-layer separation on the evaluation answers
    def curve(vecs: Tensor, acts: Tensor, keep: list[bool]) -> list[float]:
        pos = [p for (p, _), k in zip(evl_pairs, keep, strict=True) if k]
        neg = [n for (_, n), k in zip(evl_pairs, keep, strict=True) if k]
        if not pos:
            return [float("nan")] * n_layers
        return auroc_per_layer(acts[pos], acts[neg], vecs)

    curves = {
        "auroc_system": curve(vectors, evl_sys["response"], [True] * len(evl_pairs)),
        "auroc_text": curve(vectors, evl_txt["response"], [True] * len(evl_pairs)),
    }
    if config.filter == "judge":
        curves |= {
            "auroc_system_unfiltered_vector": curve(raw, evl_sys["response"], [True] * len(evl_pairs)),
            "auroc_text_unfiltered_vector": curve(raw, evl_txt["response"], [True] * len(evl_pairs)),
            "auroc_system_confirmed_eval": curve(vectors, evl_sys["response"], evl_keep),
            "auroc_text_confirmed_eval": curve(vectors, evl_txt["response"], evl_keep),
        }
    if probe_curve:
        curves["probe_crossfit_auroc_extract_text"] = probe_curve

    # 7. steering effect on a subset of layers, then the choice
    t = time.perf_counter()
    # Separation is judged on all evaluation pairs when some layer reaches min_auroc there; otherwise, with
    # judge filtering, on the pairs the judge confirms (answers that do / do not show the trait; >= 5).
    reading = (
        "confirmed_eval"
        if config.filter == "judge"
        and sum(evl_keep) >= 5
        and not any(a >= config.min_auroc for a in curves["auroc_system"] if math.isfinite(a))
        else "all_eval"
    )
    sel_system = curves["auroc_system_confirmed_eval" if reading == "confirmed_eval" else "auroc_system"]
    sel_text = curves["auroc_text_confirmed_eval" if reading == "confirmed_eval" else "auroc_text"]
    eligible = eligible_layers(sel_system, config.min_auroc, exclude=[0])
    steer_layers = (
        config.steer_layers if config.steer_layers is not None else spread(eligible, config.n_steer_layers)
    )
    scorer = judge if judge is not None else probe
    effects, quality = (
        steering_effects(
            model,
            tokenizer,
            vectors,
            steer_layers,
            list(spec.eval_questions[: config.steer_questions]),
            scorer,
            config,
            workdir,
            progress,
        )
        if steer_layers
        else ({}, {})
    )
    coherent = {
        layer: e
        for layer, e in effects.items()
        if quality[layer]["perplexity_ratio"] <= config.max_ppl_ratio
        and quality[layer]["coherence"] >= config.coherence_threshold
    }
    times["steering"] = time.perf_counter() - t
    chosen, reason = choose_layer(sel_system, sel_text, coherent, min_auroc=config.min_auroc, exclude=[0])
    reason += (
        f" (AUROC read on {'judge-confirmed' if reading == 'confirmed_eval' else 'all'} evaluation pairs;"
        f" steered layers whose answers' perplexity rose over {config.max_ppl_ratio:g}x or whose coherence fell"
        f" under {config.coherence_threshold:g} were not eligible:"
        f" {sorted(set(effects) - set(coherent))})"
    )
    times["total"] = time.perf_counter() - t0

    stats = {
        "config": asdict(config),
        "counts": {
            "generated": n_candidate_answers + len(evl),  # every candidate instruction's extraction answers
            "used": len(records),
            "extract_answers": len(ext),
            "eval_answers": len(evl),
            "empty_answers": sum(not r["answer"] for r in records),
            "truncated_answers": sum(not r["finished"] for r in records),
            "extract_pairs": len(ext_pairs),
            "extract_pairs_kept": sum(ext_keep),
            "eval_pairs": len(evl_pairs),
            "n_pos_unfiltered": n_pos_all,
            "n_neg_unfiltered": n_neg_all,
        },
        "instructions": {
            "candidates": candidates,
            "chosen": chosen_instructions,
            "crossfit_auroc": {str(x.index): round(x.auroc, 4) for x in instruction_scores},
        },
        "filter": filter_counts,
        "layer_curves": curves,
        "steering_effect": {str(k): v for k, v in effects.items()},
        "steering_quality": {str(k): v for k, v in quality.items()},
        "steering_alpha": config.steer_alpha,
        "selection_reading": reading,
        "chosen_layer": chosen,
        "choice_reason": reason,
        "at_chosen_layer": {name: c[chosen] for name, c in curves.items()},
        "norms": [float(v.norm()) for v in vectors],
        "probe": {"layer": probe_layer, **{k: probe.meta[k] for k in ("train", "heldout")}},
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "workdir": str(workdir),
    }
    meta = VectorMetadata(
        model_id=model_name or model_id(model),
        model_fingerprint=model_fingerprint(model),
        n_layers=n_layers,
        d_model=hidden_size(model),
        trait=spec.name,
        method="mean_diff",
        token_scope="response",
        n_pos=n_pos,
        n_neg=n_neg,
        chosen_layer=chosen,
        stats=_finite(stats),
    )
    vector = PersonaVector({layer: vectors[layer].clone() for layer in range(n_layers)}, meta)
    for name, vecs in variants.items():
        extra = VectorMetadata(**{**asdict(meta), "token_scope": name, "stats": {}})
        PersonaVector({layer: vecs[layer].clone() for layer in range(n_layers)}, extra).save(
            workdir / f"vector_{name}"
        )
    write_text(workdir / "layers.html", plot_layer_curves(meta.stats).to_html(include_plotlyjs="cdn"))
    return ExtractResult(vector, probe, records, meta.stats)


def save_result(result: ExtractResult, out: str | Path) -> tuple[Path, Path]:
    """Save the vector at ``out`` (``.safetensors`` + ``.json``) and its probe judge at ``<out>.probe``."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".safetensors", ".json") else out
    probe_path = result.probe.save(Path(f"{stem}.probe"))
    result.vector.meta.stats["probe"]["file"] = probe_path.name
    return result.vector.save(stem), probe_path


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.floating):
        return _finite(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary(stats: dict[str, Any]) -> str:
    """A few lines for logs and the CLI."""
    at = stats["at_chosen_layer"]
    lines = [
        f"chosen layer {stats['chosen_layer']}: {stats['choice_reason']}",
        f"held-out AUROC at the chosen layer, all evaluation pairs: system prompt {at['auroc_system']:.3f}, "
        f"text-only {at['auroc_text']:.3f}",
        f"probe judge (layer {stats['probe']['layer']}): held-out accuracy "
        f"{stats['probe']['heldout']['accuracy']:.3f}, AUROC {stats['probe']['heldout']['auroc']:.3f}",
        f"answers: {json.dumps(stats['counts'])}",
        f"seconds: {json.dumps(stats['seconds'])}",
    ]
    if stats.get("filter"):
        lines.insert(2, f"judge filtering: {json.dumps(stats['filter'])}")
        lines.insert(
            2,
            "held-out AUROC at the chosen layer, judge-confirmed evaluation pairs: system prompt "
            f"{_fmt(at.get('auroc_system_confirmed_eval'))}, text-only {_fmt(at.get('auroc_text_confirmed_eval'))}",
        )
    return "\n".join(lines)
