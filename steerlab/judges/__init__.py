"""Judges: turn (question, answer) pairs into 0-100 trait scores. See ``base`` for the interface.

The OpenAI judge is imported lazily: the ``openai`` package takes seconds to import, and offline judges and
code that only consumes ``TraitScorer`` should not pay for it.
"""

from typing import Any

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
from steerlab.judges.identity import JudgeIdentity, JudgeIdentityError
from steerlab.judges.numbers import NumberReadError

_LAZY = {"OpenAIJudge", "JudgeConfigError", "JudgeNumberError", "DEFAULT_JUDGE_MODEL"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from steerlab.judges import openai_judge

        return getattr(openai_judge, name)
    raise AttributeError(f"module 'steerlab.judges' has no attribute {name!r}")


__all__ = [
    "COHERENCE_PROMPT",
    "DEFAULT_JUDGE_MODEL",
    "MIN_NUMBER_MASS",
    "Judge",
    "JudgeConfigError",
    "JudgeIdentity",
    "JudgeIdentityError",
    "JudgeNumberError",
    "JudgeSummary",
    "NumberReadError",
    "OpenAIJudge",
    "PromptJudgeScorer",
    "ScoreCache",
    "TraitScorer",
    "aggregate_number_logprobs",
    "cache_key",
    "default_cache_path",
    "number_token",
]
