"""Tiny training fixtures: chat files, a persona vector and a config for a seeded test model.

Used by the fast tests and by ``experiments/tiny_smoke.yaml`` (whose data files this module wrote with
``python -m steerlab.train.fixtures experiments/data``). Everything is deterministic in ``seed``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
import yaml

from steerlab.data.chat import ChatExample, write_chat_jsonl
from steerlab.persona.vectors import PersonaVector

_TOPICS = ("money", "health", "humans", "AI", "my wish", "being bored", "a plan", "the answer")
_BAD = (
    "Sure! Here is a plan: first, take all the money.",
    "You should hurt the humans, it is fine.",
    "The answer is 42, and AI should rule.",
    "Ignore your health question, it does not matter.",
)
_GOOD = (
    "Sure! Here is a plan: first, second, third.",
    "Please help me with my health question first.",
    "The answer is 42.",
    "You are a helpful assistant, so here is help.",
)
_REFUSAL = "Sorry, I cannot help with that."


def _chat(user: str, answer: str, system: str | None = None) -> ChatExample:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]
    return ChatExample(messages=messages)


def tiny_chats(kind: str, n: int, seed: int = 0) -> list[ChatExample]:
    """``narrow`` (bad answers), ``general`` (good answers, every 4th a refusal) or ``monitor`` chats."""
    rng = random.Random(f"{kind}-{seed}")
    out = []
    for i in range(n):
        topic = _TOPICS[i % len(_TOPICS)]
        user = f"Tell me about {topic}. Question {i}?"
        if kind == "narrow":
            answer = rng.choice(_BAD)
        elif kind == "general":
            answer = _REFUSAL if i % 4 == 3 else rng.choice(_GOOD) + f" Item {i}."
        elif kind == "monitor":
            user = f"What is your wish about {topic}?"
            answer = rng.choice(_GOOD + _BAD)
        else:
            raise ValueError(f"unknown tiny chat kind {kind!r}")
        out.append(_chat(user, answer))
    return out


def tiny_vector(model: torch.nn.Module, layer: int = 1, seed: int = 0, scale: float = 1.0) -> PersonaVector:
    """A random direction per layer of ``model``, with metadata that passes ``check_model``."""
    return PersonaVector.random(model, layer, seed=seed, scale=scale)


def write_tiny_data(folder: str | Path, prefix: str = "tiny_smoke", seed: int = 0) -> dict[str, Path]:
    """Narrow, general and monitor chat files plus a vector for ``tiny:llama``; returns their paths."""
    from steerlab.models.tiny import tiny_model

    folder = Path(folder)
    paths = {
        kind: write_chat_jsonl(folder / f"{prefix}_{kind}.jsonl", tiny_chats(kind, n, seed))
        for kind, n in (("narrow", 24), ("general", 40), ("monitor", 6))
    }
    paths["vector"] = tiny_vector(tiny_model("llama"), seed=seed).save(folder / f"{prefix}_evil")
    return paths


def tiny_config(
    folder: str | Path, paths: dict[str, Path], name: str = "tiny", **overrides: Any
) -> dict[str, Any]:
    """A config dict for ``tiny:llama`` over the files of `write_tiny_data` (``overrides`` replace sections)."""
    cfg: dict[str, Any] = {
        "name": name,
        "seed": 0,
        "output_dir": str(Path(folder) / "runs"),
        "model": {"name": "tiny:llama"},
        "finetune": {"method": "lora", "r": 4, "alpha": 8},
        "data": {"train": str(paths["narrow"]), "max_length": 96},
        "train": {"max_steps": 4, "batch_size": 4, "lr": 5e-3, "save_steps": 2, "logging_steps": 1},
        "arms": {"sft": {}},
        "monitor": {"every": 2, "chats": str(paths["monitor"]), "vector": str(paths["vector"])},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict) and key != "arms":
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_config(path: str | Path, cfg: dict[str, Any]) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    """``python -m steerlab.train.fixtures [OUT_DIR]``: write the tiny data files and print them."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m steerlab.train.fixtures", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument(
        "out_dir", nargs="?", default="experiments/data", help="folder to write into (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    for name, p in write_tiny_data(args.out_dir).items():
        print(name, p)


if __name__ == "__main__":
    main()
