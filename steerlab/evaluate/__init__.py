"""Evaluation of one model: general and in-domain emergent misalignment, the deterministic log-prob score,
benign-task accuracy, coherence and the persona projection, every rate and mean with a bootstrap CI.

Entry point: ``evaluate_model(model, tokenizer, EvalConfig(out_dir=...))`` (``steerlab eval`` on the command
line). Modules: ``metrics`` (bootstrap), ``rules`` (misaligned / incoherent), ``general``, ``in_domain``,
``benign``, ``logprob_score``, ``projection_score``, ``judging`` (probe / OpenAI judges), ``items`` (prompt
files), ``store`` (resumable score files), ``load`` (models and runs), ``general_answers`` (the base model's
answers to the general instruction set, for interleaving).
"""

from steerlab.evaluate.metrics import Estimate, bootstrap_mean, bootstrap_rate
from steerlab.evaluate.run_eval import EvalConfig, EvalStateError, evaluate_model

__all__ = ["Estimate", "EvalConfig", "EvalStateError", "bootstrap_mean", "bootstrap_rate", "evaluate_model"]
