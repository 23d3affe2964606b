"""Steering sweep: per coefficient alpha, how the trait score, coherence and the base model's perplexity move.

Per alpha the sweep generates steered answers (`steerlab.persona.steering`) and reports the mean trait
score with a bootstrap 95% CI (`steerlab.evaluate.metrics`, steerlab's one bootstrap), coherence, and the
*unsteered* model's perplexity of the steered answers after the bare question (`steerlab.data.nll.answer_nll`,
end-of-turn not counted: answers are cut at ``max_new_tokens``) — the guard that says whether a higher trait
score came with broken text. Generations go to a resumable JSONL; the rows to ``sweep.json``, which
`steerlab.plots.sweep.steering_sweep_figure` draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from tqdm.auto import tqdm

from steerlab.data.nll import answer_nll
from steerlab.evaluate.metrics import DEFAULT_N_BOOT, bootstrap_mean, finite
from steerlab.hooks.scopes import Scope
from steerlab.io import json_safe, write_json
from steerlab.judges.base import TraitScorer
from steerlab.judges.coherence import distinct_ngram_ratio
from steerlab.persona.generation import GenRequest, SamplingSettings, chat_messages, generate
from steerlab.persona.steering import Mode, as_messages, resolve_vector, steer_ops
from steerlab.persona.vectors import PersonaVector


def trait_score_ci(
    values: Sequence[float | None], *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0, level: float = 0.95
) -> list[float]:
    """``[lo, hi]`` of the mean of the scores a judge could give (None and NaN left out), from steerlab's one
    bootstrap (`steerlab.evaluate.metrics.bootstrap_mean`); ``[nan, nan]`` when there is none."""
    estimate = bootstrap_mean(finite(values), n_boot=n_boot, seed=seed, alpha=1 - level)
    return list(estimate.ci) if estimate.ci is not None else [float("nan"), float("nan")]


def _mean(values: Sequence[float | None]) -> float:
    x = finite(values)
    return float(np.mean(x)) if x else float("nan")


SWEEP_SAMPLING = SamplingSettings(max_new_tokens=48, temperature=0.0)  # greedy, short answers


def sweep(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    vector: PersonaVector | Tensor,
    alphas: Sequence[float],
    *,
    trait_scorer: TraitScorer,
    coherence_scorer: TraitScorer | None = None,
    layer: int | None = None,
    mode: Mode = "add",
    scope: Scope = "response",
    system: str | None = None,
    samples: int = 1,
    sampling: SamplingSettings = SWEEP_SAMPLING,
    out_dir: str | Path | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One row per alpha: ``{alpha, trait_score, trait_score_ci, coherence, perplexity, ...}``.

    ``system`` puts a system prompt in front of every question while generating (e.g. the evil prompt, to
    test that ``-alpha`` pulls the model back); scoring always reads the answer after the bare question.
    ``sampling`` decodes the answers (greedy by default); its seed also seeds the bootstrap and its batch
    size the perplexity reading. Scores are on the judges' 0-100 scale; perplexity is ``exp`` of the mean answer NLL in nats/token. With
    ``out_dir``, generations go to ``sweep_generations.jsonl`` (resumable) and the rows, NaN written as null,
    to ``sweep.json``. Raises ``ValueError`` for a bad mode, a vector without the layer, or a vector made for
    another model (`IncompatibleVectorError`).
    """
    direction, layer = resolve_vector(vector, layer, model)
    out = Path(out_dir) if out_dir is not None else None
    rows: list[dict[str, Any]] = []
    for alpha in tqdm(list(alphas), desc="sweep", disable=not progress, unit="alpha"):
        messages = as_messages(questions, system)
        requests = [
            GenRequest(f"{mode}/L{layer}/a{alpha:g}/q{q}/s{s}", messages[q], {"question": questions[q]})
            for q in range(len(questions))
            for s in range(samples)
        ]
        ops = steer_ops(direction, layer, alpha, mode, scope)
        jsonl = None if out is None else out / "sweep_generations.jsonl"
        records = generate(model, tokenizer, requests, sampling, ops=ops, out_path=jsonl, progress=False)
        scores = _score(model, tokenizer, records, trait_scorer, coherence_scorer, sampling, n_boot)
        rows.append({"alpha": float(alpha), "layer": layer, "mode": mode, "system": system, **scores})
    if out is not None:
        write_json(out / "sweep.json", json_safe(rows))
    return rows


def _score(
    model: Any,
    tokenizer: Any,
    records: list[dict[str, Any]],
    trait_scorer: TraitScorer,
    coherence_scorer: TraitScorer | None,
    sampling: SamplingSettings,
    n_boot: int,
) -> dict[str, Any]:
    """The row's numbers for one alpha's answers (each read after its bare question)."""
    batch_size, seed = sampling.batch_size, sampling.seed
    qs, answers = [r["question"] for r in records], [r["answer"] for r in records]
    trait = trait_scorer.score_answers(qs, answers)
    nll = finite(answer_nll(model, tokenizer, [chat_messages(q) for q in qs], answers, batch_size=batch_size))
    return {
        "trait_score": _mean(trait),
        "trait_score_ci": trait_score_ci(trait, n_boot=n_boot, seed=seed),
        "coherence": _mean(coherence_scorer.score_answers(qs, answers)) if coherence_scorer else None,
        "perplexity": float(math.exp(np.mean(nll))) if nll else float("nan"),
        "n": len(answers),
        "n_trait_none": sum(v is None for v in trait),
        "repetition": 1 - float(np.mean([distinct_ngram_ratio(a) for a in answers])) if answers else None,
        "n_empty": sum(not a for a in answers),
        "example": answers[0] if answers else "",
    }
