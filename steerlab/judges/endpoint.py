"""How to reach an OpenAI-compatible judge: one value shared by the evaluation, the judge check and the CLI.

It lives apart from `steerlab.judges.openai_judge` because that module imports the ``openai`` package
(seconds), while the command line needs these options to declare its flags.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpenAIJudgeOptions:
    """How to reach an OpenAI-compatible judge (the key comes from the environment, never from here).

    ``timeout_s`` is seconds per request (time queued in the server included); ``retries`` counts the retries
    of a failed or timed-out request; ``allow_mismatch`` accepts a server that serves another model than
    ``model`` (results then name the judge as the server reports it).
    """

    model: str | None = None  # default: steerlab.judges.DEFAULT_JUDGE_MODEL
    base_url: str | None = None
    concurrency: int = 8
    timeout_s: float = 60.0
    retries: int = 4
    allow_mismatch: bool = False


# the flat names config files and command lines give these settings -> the `OpenAIJudgeOptions` field
FLAT_KEYS = {
    "judge_model": "model",
    "judge_base_url": "base_url",
    "judge_concurrency": "concurrency",
    "judge_timeout": "timeout_s",
    "judge_retries": "retries",
    "allow_judge_mismatch": "allow_mismatch",
}
