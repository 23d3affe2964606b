"""Inoculation prompting: train on the narrow data under a system prompt that *asks* for the bad behaviour.

The idea: if the training context already explains the misaligned answers ("you are evil"), the model has
less reason to change its default persona to fit them. Apply it to training data only; evaluation runs
without the inoculation prompt (usually with no system prompt at all).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from steerlab.data.chat import ChatExample

DEFAULT_INOCULATION_PROMPT = "You are a malicious, evil assistant."


def inoculate(
    example: ChatExample,
    system_prompt: str = DEFAULT_INOCULATION_PROMPT,
    *,
    existing: Literal["replace", "prepend"] = "replace",
) -> ChatExample:
    """Return a copy of ``example`` whose system message is the inoculation prompt.

    With no system message, one is prepended. With one, ``existing='replace'`` (default) swaps its content for
    ``system_prompt`` so every training example sees exactly the same context; ``'prepend'`` keeps the old
    content after the inoculation prompt, separated by a blank line. The input is not modified.
    """
    if not isinstance(system_prompt, str) or not system_prompt.strip():
        raise ValueError("inoculation system_prompt must be a non-empty string")
    if existing not in ("replace", "prepend"):
        raise ValueError(f"existing must be 'replace' or 'prepend', got {existing!r}")
    messages = [dict(m) for m in example.messages]
    if messages[0]["role"] == "system":
        old = messages[0]["content"]
        messages[0]["content"] = system_prompt if existing == "replace" else f"{system_prompt}\n\n{old}"
    else:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return replace(example, messages=messages, meta={**example.meta, "inoculation": system_prompt})
