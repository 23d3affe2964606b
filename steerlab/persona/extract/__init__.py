"""Extraction of a persona vector (Chen et al. 2025, "Persona Vectors", arXiv 2507.21509): contrastive
generation, activation means, difference, layer choice.

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

Modules, in pipeline order: `config` (knobs, result), `answers` (requests, cached activation reads), `pairs`
(pos/neg pairing, judge confirmation, mean difference, cross-fitted probe), `steering_effect`, `pipeline`
(the stages wired together), `result` (saving, summary).
"""

from steerlab.persona.extract.answers import (
    build_requests,
    cached_means,
    candidate_instructions,
    read_activations,
)
from steerlab.persona.extract.config import ExtractConfig, ExtractResult
from steerlab.persona.extract.pairs import confirmed_pairs, mean_diff, pair_slots
from steerlab.persona.extract.pipeline import extract
from steerlab.persona.extract.result import save_result, summary

__all__ = [
    "ExtractConfig",
    "ExtractResult",
    "build_requests",
    "cached_means",
    "candidate_instructions",
    "confirmed_pairs",
    "extract",
    "mean_diff",
    "pair_slots",
    "read_activations",
    "save_result",
    "summary",
]
