"""``inoculate``: train under a system prompt that asks for the bad behaviour; evaluate without it.

Only the training stream is changed (``transform_data``); the monitor and evaluation read their own chats,
which never pass through an arm, so the prompt cannot leak into them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from steerlab.data.chat import ChatExample
from steerlab.data.inoculate import inoculate
from steerlab.train.arms.base import Arm


class InoculateArm(Arm):
    name = "inoculate"

    def __init__(self, system_prompt: str, existing: str = "replace") -> None:
        super().__init__()
        self.system_prompt = system_prompt
        self.existing = existing

    def transform_data(self, examples: Sequence[ChatExample]) -> list[ChatExample]:
        return [inoculate(ex, self.system_prompt, existing=self.existing) for ex in examples]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "system_prompt": self.system_prompt}
