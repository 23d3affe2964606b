"""The steering effect of a candidate layer: how much ``+alpha v_l`` moves a judge's trait score on bare
questions, and at what cost in the base model's perplexity and the offline coherence score."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from steerlab.judges.base import TraitScorer
from steerlab.judges.coherence import PerplexityCoherenceScorer
from steerlab.persona.extract.config import ExtractConfig
from steerlab.persona.generation import GenRequest, chat_messages, generate
from steerlab.persona.steering import steer_ops


def _digest(tensor: Tensor) -> str:
    return hashlib.sha256(tensor.detach().float().cpu().numpy().tobytes()).hexdigest()[:10]


def steering_effects(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    vectors: Tensor,
    layers: list[int],
    questions: list[str],
    scorer: TraitScorer,
    config: ExtractConfig,
    workdir: Path,
    progress: bool,
) -> tuple[dict[int, float], dict[int, dict[str, float]]]:
    """Per layer: the mean trait-score change of answers to bare questions (greedy) under
    ``+steer_alpha * v_l``, and ``{perplexity_ratio, coherence}`` of those answers: the base model's perplexity
    over that of the unsteered answers, and the mean offline coherence (perplexity x distinct trigrams).
    """
    coherence = PerplexityCoherenceScorer(model, tokenizer, batch_size=config.batch_size)
    sampling = replace(config.sampling, max_new_tokens=config.steer_max_new_tokens, temperature=0.0)

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
            sampling,
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
    effects: dict[int, float] = {}
    quality: dict[int, dict[str, float]] = {}
    for layer in layers:
        score, ppl, coh = scores(layer)
        effects[layer] = score - base
        quality[layer] = {"perplexity_ratio": ppl / base_ppl, "coherence": coh}
    return effects, quality
