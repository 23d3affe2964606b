"""Builds the offline probe judge's two scorers (evil trait, coherence) on the base model."""

from __future__ import annotations

from typing import Any

from steerlab.judges.base import TraitScorer


def probe_scorers(base_model: Any, base_tokenizer: Any, *, seed: int = 0) -> tuple[TraitScorer, TraitScorer]:
    try:
        from steerlab.judges import probe  # noqa: F401
    except ImportError as error:
        raise RuntimeError("the offline probe judge (steerlab.judges.probe) is not available; use --judge openai")\
            from error
    raise NotImplementedError
