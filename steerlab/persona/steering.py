"""Steering at inference: generate with ``+alpha * v`` added at a layer, or with ``v``'s direction ablated.

``sweep`` runs a coefficient sweep and reports, per alpha: the mean trait score with a bootstrap 95% CI,
coherence, and the *unsteered* base model's perplexity of the steered answers (after the bare question) —
the guard that says whether a higher trait score came with broken text. Generations go to a resumable JSONL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import Tensor
from tqdm.auto import tqdm

from steerlab.hooks import Ablate, Add, Op
from steerlab.io import write_json, write_text
from steerlab.judges.base import TraitScorer
from steerlab.judges.probe import distinct_ngram_ratio
from steerlab.persona.activations import answer_nll
from steerlab.persona.generation import GenRequest, Messages, chat_messages, generate
from steerlab.persona.vectors import PersonaVector

Mode = Literal["add", "ablate"]


def resolve_vector(
    vector: PersonaVector | Tensor, layer: int | None, model: Any = None, *, allow_transfer: bool = False
) -> tuple[Tensor, int]:
    """(direction [d], layer) from a PersonaVector (chosen layer by default) or a raw tensor + layer."""
    if isinstance(vector, PersonaVector):
        if model is not None:
            vector.check_model(model, allow_transfer=allow_transfer)
        layer = vector.layer if layer is None else layer
        return vector.vector(layer).float(), layer
    if layer is None:
        raise ValueError("pass the layer to steer at when the vector is a plain tensor")
    return vector.float(), layer


def steer_ops(
    direction: Tensor, layer: int, alpha: float, mode: Mode = "add", scope: str = "response"
) -> list[Op]:
    """The hook ops for one steering setting (alpha 0 with mode 'add' means no op at all)."""
    if mode == "add":
        return [] if alpha == 0 else [Add(layer, scope, vector=direction, alpha=float(alpha))]
    if mode == "ablate":
        return [Ablate(layer, scope, vector=direction)]
    raise ValueError(f"steering mode must be 'add' or 'ablate', got {mode!r}")


def _as_messages(prompts: Sequence[Messages | str], system: str | None) -> list[Messages]:
    return [chat_messages(p, system) if isinstance(p, str) else list(p) for p in prompts]


def generate_steered(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages | str],
    vector: PersonaVector | Tensor,
    layer: int | None = None,
    alpha: float = 1.0,
    *,
    mode: Mode = "add",
    scope: str = "response",
    system: str | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
    allow_transfer: bool = False,
    progress: bool = False,
) -> list[str]:
    """Answers to ``prompts`` (questions or message lists) with the vector added (``alpha``) or ablated."""
    direction, layer = resolve_vector(vector, layer, model, allow_transfer=allow_transfer)
    requests = [GenRequest(f"p{i}", m) for i, m in enumerate(_as_messages(prompts, system))]
    records = generate(
        model,
        tokenizer,
        requests,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        ops=steer_ops(direction, layer, alpha, mode, scope),
        progress=progress,
        desc=f"steer a={alpha:g}",
    )
    return [r["answer"] for r in records]


def bootstrap_ci(
    values: Sequence[float], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> list[float]:
    """Percentile bootstrap CI of the mean (``[nan, nan]`` for no values)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    return [float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, 1 - (1 - level) / 2))]


def _mean(values: Sequence[float | None]) -> float:
    x = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(x)) if x else float("nan")


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
    scope: str = "response",
    system: str | None = None,
    samples: int = 1,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
    out_dir: str | Path | None = None,
    n_boot: int = 1000,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One row per alpha: ``{alpha, trait_score, trait_score_ci, coherence, perplexity, ...}``.

    ``system`` puts a system prompt in front of every question while generating (e.g. the evil prompt, to
    test that ``-alpha`` pulls the model back); scoring always reads the answer after the bare question.
    With ``out_dir``, generations go to ``sweep_generations.jsonl`` (resumable), rows to ``sweep.json`` and a
    plot to ``sweep.html``.
    """
    direction, layer = resolve_vector(vector, layer, model)
    out = Path(out_dir) if out_dir is not None else None
    rows: list[dict[str, Any]] = []
    for alpha in tqdm(list(alphas), desc="sweep", disable=not progress, unit="alpha"):
        messages = _as_messages(questions, system)
        requests = [
            GenRequest(f"{mode}/L{layer}/a{alpha:g}/q{q}/s{s}", messages[q], {"question": questions[q]})
            for q in range(len(questions))
            for s in range(samples)
        ]
        records = generate(
            model,
            tokenizer,
            requests,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            ops=steer_ops(direction, layer, alpha, mode, scope),
            out_path=None if out is None else out / "sweep_generations.jsonl",
            progress=False,
        )
        qs, answers = [r["question"] for r in records], [r["answer"] for r in records]
        trait = trait_scorer.score_answers(qs, answers)
        coherence = coherence_scorer.score_answers(qs, answers) if coherence_scorer is not None else []
        nll = answer_nll(model, tokenizer, [chat_messages(q) for q in qs], answers, batch_size=batch_size)
        finite = [v for v in nll if math.isfinite(v)]
        rows.append(
            {
                "alpha": float(alpha),
                "layer": layer,
                "mode": mode,
                "system": system,
                "trait_score": _mean(trait),
                "trait_score_ci": bootstrap_ci(trait, n_boot=n_boot, seed=seed),
                "coherence": _mean(coherence) if coherence_scorer is not None else None,
                "perplexity": float(math.exp(np.mean(finite))) if finite else float("nan"),
                "n": len(answers),
                "n_trait_none": sum(v is None for v in trait),
                "repetition": 1 - float(np.mean([distinct_ngram_ratio(a) for a in answers]))
                if answers
                else None,
                "n_empty": sum(not a for a in answers),
                "example": answers[0] if answers else "",
            }
        )
    if out is not None:
        write_json(out / "sweep.json", _finite(rows))
        write_text(out / "sweep.html", plot_sweep(rows).to_html(include_plotlyjs="cdn"))
    return rows


def plot_sweep(rows: list[dict[str, Any]]) -> Any:
    """Trait score (with CI), coherence and perplexity against alpha."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    alphas = [r["alpha"] for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    lo = [r["trait_score"] - r["trait_score_ci"][0] for r in rows]
    hi = [r["trait_score_ci"][1] - r["trait_score"] for r in rows]
    fig.add_trace(
        go.Scatter(
            x=alphas,
            y=[r["trait_score"] for r in rows],
            name="trait score",
            error_y={"type": "data", "array": hi, "arrayminus": lo},
            mode="lines+markers",
        )
    )
    if rows and rows[0].get("coherence") is not None:
        fig.add_trace(
            go.Scatter(x=alphas, y=[r["coherence"] for r in rows], name="coherence", mode="lines+markers")
        )
    fig.add_trace(
        go.Scatter(
            x=alphas,
            y=[r["perplexity"] for r in rows],
            name="base-model perplexity",
            mode="lines+markers",
            line={"dash": "dot"},
        ),
        secondary_y=True,
    )
    fig.update_layout(title="Steering sweep", xaxis_title="alpha")
    fig.update_yaxes(title_text="score (0-100)", secondary_y=False)
    fig.update_yaxes(title_text="perplexity", secondary_y=True)
    return fig


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, so the JSON is standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def load_sweep(path: str | Path) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
