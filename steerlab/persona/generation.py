"""Batched, seeded generation of chat answers, written to a JSONL file as batches finish.

Why the design: extraction generates hundreds of answers on a CPU, so a killed run must lose at most one
batch. Requests are cut into batches in their given order, and every batch is seeded from ``(seed, batch
index)`` alone; a rerun skips the batches whose keys are all in the file and regenerates any other batch
whole, so the final file holds exactly what an uninterrupted run would have produced, without duplicates.
Prompts are left-padded (decoder-only models continue from the right edge); hook ops (steering) can be
held for the whole call.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from steerlab.data.chat import Messages
from steerlab.hooks import Op, hooked
from steerlab.io import append_jsonl, read_keyed


class GenerationFileError(ValueError):
    """A generations JSONL file is malformed (the message names the file and line)."""


@dataclass(frozen=True)
class GenRequest:
    """One answer to generate. ``key`` must be unique: it is how a resumed run knows what is done."""

    key: str
    messages: Messages
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SamplingSettings:
    """How `generate` decodes: one value object that every generating step passes on, instead of the same
    five keywords repeated down each call chain.

    ``max_new_tokens`` (tokens, >= 1) caps each answer; ``temperature`` (>= 0; 0 means greedy) and ``top_p``
    (nucleus mass in (0, 1]) shape sampling; ``batch_size`` (>= 1) prompts go in one ``generate`` call, and
    batch ``i`` is seeded from ``(seed, i)`` (`batch_seed`), so batch size and seed together fix the answers.
    Raises ``ValueError`` naming the first value out of range.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("max_new_tokens", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


GREEDY = SamplingSettings(temperature=0.0)  # greedy decoding, every other setting at its default


def chat_messages(question: str, system: str | None = None) -> Messages:
    """[system?, user] messages for one question."""
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> str:
    """The chat-template text of ``messages`` followed by the assistant generation prompt. Raises
    ``ValueError`` when the tokenizer has no chat template, ``TypeError`` when the template gives no text."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; steerlab needs one to build chat prompts")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, not the prompt text")
    return text


def batch_seed(seed: int, batch_index: int) -> int:
    """The RNG seed of one batch: depends only on the run seed and the batch's position."""
    return (int(seed) * 1_000_003 + int(batch_index) * 7_919) % (2**63 - 1)


def read_generations(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Records of a generations file by key (``{}`` when the file does not exist).

    A last line without its newline is what a kill in the middle of a write leaves: it is dropped (its
    batch is regenerated). Raises `GenerationFileError` naming ``file:line`` for any other bad line, a record
    without ``key`` and ``answer``, or a duplicate key.
    """
    return read_keyed(path, error=GenerationFileError, required=("key", "answer"), what="generation record")


@torch.no_grad()
def generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Messages],
    sampling: SamplingSettings = SamplingSettings(),
    *,
    ops: Iterable[Op] = (),
) -> list[dict[str, Any]]:
    """Answers to chat prompts in one left-padded ``generate`` call: ``{answer, n_tokens, finished}``.

    Reads ``max_new_tokens``, ``temperature`` (0 means greedy decoding) and ``top_p`` of ``sampling``; the
    caller batches and seeds the RNG (see ``generate``). ``n_tokens`` counts the answer's tokens up to (not
    with) EOS; ``finished`` says EOS came before ``max_new_tokens``. ``ops`` (hook ops) are held for the whole
    call. Raises ``TypeError`` for a model without ``generate`` and
    ``ValueError`` for a tokenizer without a chat template.
    """
    texts = [render_prompt(tokenizer, m) for m in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items()}
    t = sampling.temperature
    decoding = (
        {"do_sample": False}
        if t == 0
        else {"do_sample": True, "temperature": t, "top_p": sampling.top_p, "top_k": 0}
    )
    eos = tokenizer.eos_token_id
    generate_ids = getattr(model, "generate", None)  # transformers' GenerationMixin, or a peft wrapper's
    if not callable(generate_ids):
        raise TypeError(f"{type(model).__name__} has no generate(); steerlab generates with causal LMs")
    with hooked(model, list(ops)):
        out = generate_ids(
            **enc,
            max_new_tokens=sampling.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos,
            **decoding,
        )
    new = out[:, enc["input_ids"].shape[1] :].tolist()
    results = []
    for row in new:
        finished = eos in row
        row = row[: row.index(eos)] if finished else row
        row = [t for t in row if t != tokenizer.pad_token_id]
        answer = tokenizer.decode(row, skip_special_tokens=True)
        assert isinstance(answer, str)  # one sequence decodes to one string
        answer = answer.strip()
        results.append({"answer": answer, "n_tokens": len(row), "finished": finished})
    return results


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[GenRequest],
    sampling: SamplingSettings = SamplingSettings(),
    *,
    out_path: str | os.PathLike | None = None,
    ops: Iterable[Op] = (),
    progress: bool = True,
    desc: str = "generating",
) -> list[dict[str, Any]]:
    """Generate every request (resuming from ``out_path``) and return the records in request order.

    Each record is ``{key, messages, answer, n_tokens, finished, **meta}``. With ``out_path`` each batch is
    appended (fsynced) as soon as it finishes; requests go in batches of ``sampling.batch_size`` and batch ``i``
    is seeded from ``(sampling.seed, i)`` alone (`batch_seed`), so a resumed run gives what an uninterrupted
    one would. Raises ``ValueError`` for duplicate request keys, and `GenerationFileError` for a malformed ``out_path``.
    """
    keys = [r.key for r in requests]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"request keys must be unique; {dup!r} appears more than once")
    ops = list(ops)
    done = read_generations(out_path) if out_path is not None else {}
    size = sampling.batch_size
    batches = [list(requests[i : i + size]) for i in range(0, len(requests), size)]
    todo = [(i, b) for i, b in enumerate(batches) if not all(r.key in done for r in b)]
    bar = tqdm(
        total=len(requests),
        initial=len(requests) - sum(len(b) for _, b in todo),
        desc=desc,
        disable=not progress,
        unit="ans",
    )
    try:
        for index, batch in todo:
            torch.manual_seed(batch_seed(sampling.seed, index))
            outs = generate_batch(model, tokenizer, [r.messages for r in batch], sampling, ops=ops)
            fresh = []
            for request, result in zip(batch, outs, strict=True):
                record = {"key": request.key, "messages": request.messages, **result, **request.meta}
                if request.key not in done:
                    done[request.key] = record
                    fresh.append(record)
            if out_path is not None and fresh:
                append_jsonl(out_path, fresh)
            bar.update(len(batch))
    finally:
        bar.close()
    return [done[k] for k in keys]
