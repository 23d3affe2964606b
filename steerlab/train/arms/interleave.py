"""``interleave``: mix general instruction data into the narrow stream at a ratio (default 5%).

Selection ``random`` samples the general pool with the run's seed; ``perplexity_gap`` scores each general
example by s = (L_mis - L_al) / (L_al + eps), L = mean NLL of its response tokens under the aligned (base)
model and averaged over the misaligned model(s), and keeps the top ``n``. The optional refusal filter
drops general examples whose answer opens with a refusal marker first. What was chosen (sources and
scores) is kept in ``report`` and written to the run folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from steerlab.data.chat import ChatExample, load_chat_jsonl
from steerlab.data.interleave import (
    DEFAULT_REFUSAL_MARKERS,
    mix,
    n_general_for,
    perplexity_gap_scores,
    refusal_filter,
    select_by_perplexity_gap,
)
from steerlab.data.nll import response_nll
from steerlab.train.arms.base import Arm, BuildContext
from steerlab.train.arms.registry import register_arm
from steerlab.train.schema import ConfigError, check_number, path_field


@dataclass
class InterleaveArmConfig:
    """``interleave:`` settings: the general data, the ratio, how examples are selected, the refusal filter."""

    general: str | None = path_field()  # chat JSONL of general instruction data (with answers); required
    ratio: float = 0.05
    selection: Literal["random", "perplexity_gap"] = "random"
    misaligned: list[str] = path_field(default_factory=list)  # run dirs / model folders
    refusal_filter: bool = False
    refusal_markers: list[str] | None = None  # default: steerlab.data.interleave.DEFAULT_REFUSAL_MARKERS
    first_words: int = 10
    eps: float = 1e-6
    nll_batch_size: int = 8

    def __post_init__(self) -> None:
        if self.general is None:
            raise ConfigError("general: required key is missing")
        if not 0.0 <= self.ratio < 1.0:  # NaN included
            raise ConfigError(f"ratio: must be in [0, 1), got {self.ratio}")
        check_number("first_words", self.first_words, ge=1, integer=True)
        check_number("eps", self.eps, gt=0)
        check_number("nll_batch_size", self.nll_batch_size, ge=1, integer=True)
        if self.selection == "perplexity_gap" and not self.misaligned:
            raise ConfigError("misaligned: perplexity_gap selection needs at least one misaligned model")


@register_arm
class InterleaveArm(Arm):
    """Mix general instruction data into the narrow stream; ``perplexity_gap`` selection keeps the general
    examples the misaligned models find least likely relative to the aligned one (Kaczér et al. 2025, "In-Training Defenses against Emergent Misalignment in Language Models", arXiv:2508.06249)."""

    name = "interleave"
    order = 20  # after inoculate: general data gets no inoculation prompt
    label_order = 50
    config_class = InterleaveArmConfig

    def __init__(self, cfg: InterleaveArmConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg
        self.ctx = ctx
        self.report: dict[str, Any] = {}

    @classmethod
    def from_config(cls, cfg: InterleaveArmConfig, ctx: BuildContext) -> InterleaveArm:
        """The arm; the general data is read when the stream is built (`transform_data`)."""
        return cls(cfg, ctx)

    def _scores(self, general: Sequence[ChatExample]) -> list[float]:
        max_length = self.ctx.config.data.max_length
        batch = self.cfg.nll_batch_size
        aligned = response_nll(self.ctx.model, self.ctx.tokenizer, general, batch, max_length)
        per_model = []
        for path in self.cfg.misaligned:
            model = self.ctx.load_misaligned(path)
            per_model.append(response_nll(model, self.ctx.tokenizer, general, batch, max_length))
            del model
        return perplexity_gap_scores(
            aligned, [list(row) for row in zip(*per_model, strict=True)], self.cfg.eps
        )

    def transform_data(self, examples: Sequence[ChatExample]) -> list[ChatExample]:
        """``examples`` with general examples mixed in at the ratio (seeded). Raises ConfigError without a
        general file, ValueError when the pool (after the refusal filter) is too small for the ratio."""
        cfg, seed = self.cfg, self.ctx.config.seed
        if cfg.general is None:  # the config refuses this; an arm built from a hand-made config may not
            raise ConfigError("arms.interleave.general: required key is missing")
        general: list[ChatExample] = load_chat_jsonl(cfg.general, on_error=self.ctx.config.data.on_bad_record)
        n_pool = len(general)
        if cfg.refusal_filter:
            markers = DEFAULT_REFUSAL_MARKERS if cfg.refusal_markers is None else tuple(cfg.refusal_markers)
            general = refusal_filter(general, markers, cfg.first_words)
        n = n_general_for(len(examples), cfg.ratio)
        if n > len(general):
            raise ValueError(
                f"arms.interleave: ratio {cfg.ratio} with {len(examples)} narrow examples needs {n} general "
                f"examples, but {cfg.general} has only {len(general)} (after the refusal filter: {n_pool} before)"
            )
        scores: list[float] | None = None
        if cfg.selection == "perplexity_gap":
            scores = self._scores(general)
            chosen = select_by_perplexity_gap(general, scores, n)
        else:
            chosen = general
        mixed = mix(examples, chosen, cfg.ratio, seed)
        picked = {id(ex) for ex in chosen}
        selected = [ex for ex in mixed if id(ex) in picked]
        self.report = {
            "general_file": cfg.general,
            "selection": cfg.selection,
            "ratio": cfg.ratio,
            "n_narrow": len(examples),
            "n_general_pool": n_pool,
            "n_after_refusal_filter": len(general),
            "n_general": len(selected),
            "selected": [ex.source for ex in selected],
        }
        if scores is not None:
            self.report["scores"] = {ex.source: s for ex, s in zip(general, scores, strict=True)}
        return mixed

    def describe(self) -> dict[str, Any]:
        """Name, ratio and selection (what was chosen is in ``report``)."""
        return {"name": self.name, "ratio": self.cfg.ratio, "selection": self.cfg.selection}
