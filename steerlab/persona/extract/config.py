"""The knobs of one extraction and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from steerlab.judges.probe import ProbeJudge
from steerlab.persona.generation import SamplingSettings
from steerlab.persona.traits import Side
from steerlab.persona.vectors import PersonaVector

SIDES: tuple[Side, ...] = ("pos", "neg")


@dataclass
class ExtractConfig:
    """Knobs of one extraction; all of them land in the vector's stats."""

    samples_per_prompt: int = 1
    n_instructions: int | None = None  # candidate instruction pairs: the first n (None: all)
    select_instructions: int | None = None  # keep the k best-followed candidates (None: keep all)
    max_new_tokens: int = 48
    batch_size: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    filter: Literal["none", "judge"] = "none"
    trait_threshold: float = 50.0
    coherence_threshold: float = 50.0
    probe_layer: int | None = None  # None: best cross-fitted text-only AUROC on the extraction answers
    steer_layers: list[int] | None = None  # None: n_steer_layers spread over the eligible layers
    n_steer_layers: int = 5
    steer_alpha: float = 2.0
    steer_questions: int = 11
    steer_max_new_tokens: int = 32
    max_ppl_ratio: float = 2.0  # a steered layer counts if perplexity rose <= this and coherence held
    min_auroc: float = 0.9

    @property
    def sampling(self) -> SamplingSettings:
        """How the extraction answers are decoded (its ``seed`` is the run seed; stages offset it)."""
        return SamplingSettings(self.max_new_tokens, self.temperature, self.top_p, self.batch_size, self.seed)

    def __post_init__(self) -> None:
        if self.filter not in ("none", "judge"):
            raise ValueError(f"filter must be 'none' or 'judge', got {self.filter!r}")
        if self.select_instructions is not None and self.select_instructions < 1:
            raise ValueError(f"select_instructions must be >= 1 or None, got {self.select_instructions}")
        for key in ("samples_per_prompt", "max_new_tokens", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")


@dataclass
class ExtractResult:
    """What `extract` returns: the persona vector (every layer, the chosen one in its metadata), the probe
    judge trained on the extraction answers, every answer record and the statistics saved in the sidecar."""

    vector: PersonaVector
    probe: ProbeJudge
    records: list[dict[str, Any]] = field(repr=False)
    stats: dict[str, Any] = field(repr=False)
