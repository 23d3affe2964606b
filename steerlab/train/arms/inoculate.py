"""``inoculate``: train under a system prompt that asks for the bad behaviour; evaluate without it.

Only the training stream is changed (``transform_data``); the monitor and evaluation read their own chats,
which never pass through an arm, so the prompt cannot leak into them. It comes first in the data stream:
it marks the narrow data only, before general data is mixed in (general answers are good behaviour; they
get no inoculation prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from steerlab.data.chat import ChatExample
from steerlab.data.inoculate import DEFAULT_INOCULATION_PROMPT, inoculate
from steerlab.train.arms.base import Arm, BuildContext
from steerlab.train.arms.registry import register_arm


@dataclass
class InoculateArmConfig:
    """``inoculate:`` settings: the system prompt, and what to do with a system prompt already there."""

    system_prompt: str = DEFAULT_INOCULATION_PROMPT
    existing: Literal["replace", "prepend"] = "replace"  # what to do with a system prompt already there


@register_arm
class InoculateArm(Arm):
    """Inoculation prompting (Tan et al. 2025 and Wichers et al. 2025, "Inoculation Prompting"; compared with
    the other defenses in Kaczér et al. 2025, "In-Training Defenses against Emergent Misalignment in Language Models", arXiv:2508.06249): train under a system prompt that asks for the bad behaviour."""

    name = "inoculate"
    order = 10
    label_order = 60
    config_class = InoculateArmConfig

    def __init__(self, system_prompt: str, existing: Literal["replace", "prepend"] = "replace") -> None:
        super().__init__()
        self.system_prompt = system_prompt
        self.existing = existing

    @classmethod
    def from_config(cls, cfg: InoculateArmConfig, ctx: BuildContext) -> InoculateArm:
        """The arm with the config's prompt."""
        return cls(cfg.system_prompt, cfg.existing)

    def transform_data(self, examples: Sequence[ChatExample]) -> list[ChatExample]:
        """Every narrow example under the inoculation system prompt."""
        return [inoculate(ex, self.system_prompt, existing=self.existing) for ex in examples]

    def describe(self) -> dict[str, Any]:
        """Name and the system prompt."""
        return {"name": self.name, "system_prompt": self.system_prompt}
