"""Stage inputs: the generation requests of every (question, instruction, sample, side) slot, and activation
means read once per answer set and cached in the work folder under a digest of the answers they came from."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from steerlab.io import atomic_path
from steerlab.persona.activations import collect_means
from steerlab.persona.extract.config import SIDES, ExtractConfig
from steerlab.persona.generation import GenRequest, chat_messages
from steerlab.persona.traits import TraitSpec, system_prompt


def candidate_instructions(spec: TraitSpec, config: ExtractConfig) -> list[int]:
    """Indices of the instruction pairs to try: the first ``config.n_instructions`` (all when None)."""
    n = len(spec.instructions)
    return list(range(n if config.n_instructions is None else min(config.n_instructions, n)))


def build_requests(
    spec: TraitSpec,
    config: ExtractConfig,
    *,
    splits: Sequence[str] = ("extract", "eval"),
    instructions: Sequence[int] | None = None,
) -> list[GenRequest]:
    """Every (split, question, instruction, sample, side) to answer, pos and neg of a slot side by side."""
    questions_of = {"extract": spec.extract_questions, "eval": spec.eval_questions}
    chosen = candidate_instructions(spec, config) if instructions is None else list(instructions)
    requests = []
    for split in splits:
        for q, question in enumerate(questions_of[split]):
            for i in chosen:
                for s in range(config.samples_per_prompt):
                    for side in SIDES:
                        system = system_prompt(spec, i, side)
                        meta = {
                            "split": split,
                            "side": side,
                            "q": q,
                            "i": i,
                            "s": s,
                            "question": question,
                            "system": system,
                        }
                        requests.append(
                            GenRequest(
                                f"{split}/q{q}/i{i}/s{s}/{side}", chat_messages(question, system), meta
                            )
                        )
    return requests


def _keys_digest(records: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r['key']}\x00{r['system']}\x00{r['answer']}\x01".encode())
    return h.hexdigest()[:16]


def cached_means(
    path: Path, records: list[dict[str, Any]], compute: Callable[[], dict[str, Tensor]]
) -> dict[str, Tensor]:
    """Load activation means from ``path`` if they were made from the same answers, else compute and save."""
    digest = _keys_digest(records)
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("digest") == digest:
                return load_file(str(path))
    means = compute()
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in means.items()}, str(tmp), metadata={"digest": digest})
    return means


def read_activations(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    records: list[dict[str, Any]],
    workdir: Path,
    name: str,
    *,
    with_system: bool,
    variants: tuple[str, ...],
    batch_size: int,
    progress: bool,
) -> dict[str, Tensor]:
    """Mean activations ``{variant: [N, n_layers, d]}`` of the answers in ``records``, read with their system
    prompt (``with_system``) or after the bare question, cached in ``workdir/acts_<name>.safetensors`` and
    reused only when the records, reading and model agree (see `cached_means`)."""
    prompts = [r["messages"] if with_system else chat_messages(r["question"]) for r in records]
    answers = [r["answer"] for r in records]
    return cached_means(
        workdir / f"acts_{name}.safetensors",
        records,
        lambda: collect_means(
            model,
            tokenizer,
            prompts,
            answers,
            variants=variants,
            batch_size=batch_size,
            progress=progress,
            desc=f"activations {name}",
        ),
    )
