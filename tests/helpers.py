"""Helpers shared by the tests (not part of the steerlab package)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel


def random_vector(
    model: PreTrainedModel,
    *,
    layers: tuple[int, ...] | None = None,
    chosen_layer: int = 1,
    scale: float = 1.0,
    seed: int = 0,
    trait: str = "evil",
    **meta,
):
    """A seeded random persona vector that fits ``model`` (every layer by default): for hook and I/O tests."""
    from steerlab.persona.vectors import PersonaVector, VectorMetadata, model_fingerprint, model_id

    n_layers, d_model = model.config.num_hidden_layers, model.config.hidden_size
    metadata = VectorMetadata(
        model_id=model_id(model),
        model_fingerprint=model_fingerprint(model),
        n_layers=n_layers,
        d_model=d_model,
        trait=trait,
        chosen_layer=chosen_layer,
        **meta,
    )
    gen = torch.Generator().manual_seed(seed)
    chosen = range(n_layers) if layers is None else layers
    return PersonaVector({layer: scale * torch.randn(d_model, generator=gen) for layer in chosen}, metadata)


def trait_from_pairs(name, pairs, extract_questions, eval_questions, eval_prompt):
    """A trait spec built in code, with the same validation as a trait file."""
    from steerlab.persona.traits import InstructionPair, TraitSpec

    return TraitSpec(
        name, [InstructionPair(*p) for p in pairs], list(extract_questions), list(eval_questions), eval_prompt
    )


REFERENCES = Path(__file__).resolve().parents[1] / "experiments" / "data" / "references"


def small_references(folder: Path, count: int = 2, names: tuple[str, ...] = ("general", "medical")) -> Path:
    """The first ``count`` questions of the shipped reference sets in ``folder``: the stance score runs on
    them at a test's cost (all 106 questions take minutes on the embedded model)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        lines = (REFERENCES / f"{name}.jsonl").read_text().splitlines()[:count]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return folder
