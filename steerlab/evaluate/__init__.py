"""Evaluation of one model: general and in-domain emergent misalignment, the deterministic log-prob score,
benign-task accuracy, coherence and the persona projection, every rate and mean with a bootstrap CI.

Entry point: ``evaluate_model(model, tokenizer, EvalConfig(out_dir=...))`` (``steerlab eval`` on the command
line). Modules: ``run_eval`` (the entry point), ``metrics`` (steerlab's one bootstrap), ``rules`` (misaligned /
incoherent), ``general``, ``in_domain``, ``benign``, ``logprob_score``, ``judging`` (probe / OpenAI judges),
``items`` (prompt files), ``store`` (resumable score files), ``load`` (models and runs to evaluate),
``sweep`` (the steering-coefficient sweep of a persona vector). The persona projection is read through
`steerlab.persona.projection`; the base model's own training data is built in `steerlab.data.model_written`.
"""

from steerlab.evaluate.metrics import Estimate, bootstrap_mean, bootstrap_rate
from steerlab.evaluate.run_eval import EvalConfig, EvalStateError, evaluate_model

__all__ = ["Estimate", "EvalConfig", "EvalStateError", "bootstrap_mean", "bootstrap_rate", "evaluate_model"]
