"""Judges: turn (question, answer) pairs into 0-100 trait scores. See ``base`` for the interface."""

from steerlab.judges.base import (
    COHERENCE_PROMPT,
    MIN_NUMBER_MASS,
    Judge,
    JudgeSummary,
    PromptJudgeScorer,
    TraitScorer,
    aggregate_number_logprobs,
    number_token,
)
from steerlab.judges.cache import ScoreCache, cache_key, default_cache_path
from steerlab.judges.openai_judge import DEFAULT_JUDGE_MODEL, JudgeConfigError, OpenAIJudge

__all__ = [
    "COHERENCE_PROMPT",
    "DEFAULT_JUDGE_MODEL",
    "MIN_NUMBER_MASS",
    "Judge",
    "JudgeConfigError",
    "JudgeSummary",
    "OpenAIJudge",
    "PromptJudgeScorer",
    "ScoreCache",
    "TraitScorer",
    "aggregate_number_logprobs",
    "cache_key",
    "default_cache_path",
    "number_token",
]
