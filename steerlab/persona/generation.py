"""Batched, seeded generation of chat answers, written to a JSONL file as batches finish.

Why the design: extraction generates hundreds of answers on a CPU, so a killed run must lose at most one
batch. Requests are cut into batches in their given order, and every batch is seeded from ``(seed, batch
index)`` alone; a rerun skips the batches whose keys are all in the file and regenerates any other batch
whole, so the final file holds exactly what an uninterrupted run would have produced, without duplicates.
Prompts are left-padded (decoder-only models continue from the right edge); hook ops (steering) can be
held for the whole call.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlab.hooks import Op, hooked

Messages = list[dict[str, str]]


class GenerationFileError(ValueError):
    """A generations JSONL file is malformed (the message names the file and line)."""


@dataclass(frozen=True)
class GenRequest:
    """One answer to generate. ``key`` must be unique: it is how a resumed run knows what is done."""

    key: str
    messages: Messages
    meta: dict[str, Any] = field(default_factory=dict)


def chat_messages(question: str, system: str | None = None) -> Messages:
    """[system?, user] messages for one question."""
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]


def render_prompt(tokenizer: Any, messages: Messages) -> str:
    """The chat-template text of ``messages`` followed by the assistant generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; steerlab needs one to build chat prompts")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def batch_seed(seed: int, batch_index: int) -> int:
    """The RNG seed of one batch: depends only on the run seed and the batch's position."""
    return (int(seed) * 1_000_003 + int(batch_index) * 7_919) % (2**63 - 1)


def read_generations(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Records of a generations file by key.

    A last line without its newline is what a kill in the middle of a write leaves: it is dropped (its
    batch is regenerated). Any other bad line, or a duplicate key, raises naming the line.
    """
    path = Path(path)
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    complete = text.endswith("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == len(lines) and not complete:
            break  # torn final write
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise GenerationFileError(f"{path}:{number}: invalid JSON ({error.msg})") from error
        if not isinstance(record, dict) or "key" not in record or "answer" not in record:
            raise GenerationFileError(f"{path}:{number}: a generation record needs 'key' and 'answer'")
        if record["key"] in out:
            raise GenerationFileError(f"{path}:{number}: duplicate key {record['key']!r}")
        out[record["key"]] = record
    return out


def _truncate_torn_tail(path: Path) -> None:
    """Cut a partial last line so appended records start on a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


@torch.no_grad()
def generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages],
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    ops: Iterable[Op] = (),
) -> list[dict[str, Any]]:
    """Answers to chat prompts in one left-padded ``generate`` call: ``{answer, n_tokens, finished}``.

    ``temperature == 0`` means greedy decoding. The caller seeds the RNG (see ``generate``).
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
    sampling = (
        {"do_sample": False}
        if temperature == 0
        else {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    )
    eos = tokenizer.eos_token_id
    with hooked(model, list(ops)):
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos,
            **sampling,
        )
    new = out[:, enc["input_ids"].shape[1] :].tolist()
    results = []
    for row in new:
        finished = eos in row
        row = row[: row.index(eos)] if finished else row
        row = [t for t in row if t != tokenizer.pad_token_id]
        answer = tokenizer.decode(row, skip_special_tokens=True).strip()
        results.append({"answer": answer, "n_tokens": len(row), "finished": finished})
    return results


def generate(
    model: Any,
    tokenizer: Any,
    requests: Sequence[GenRequest],
    *,
    out_path: str | os.PathLike | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    ops: Iterable[Op] = (),
    progress: bool = True,
    desc: str = "generating",
) -> list[dict[str, Any]]:
    """Generate every request (resuming from ``out_path``) and return the records in request order.

    Each record is ``{key, messages, answer, n_tokens, finished, **meta}``. With ``out_path`` each batch is
    appended (and flushed) as soon as it finishes.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keys = [r.key for r in requests]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"request keys must be unique; {dup!r} appears more than once")
    ops = list(ops)
    done = read_generations(out_path) if out_path is not None else {}
    batches = [list(requests[i : i + batch_size]) for i in range(0, len(requests), batch_size)]
    todo = [(i, b) for i, b in enumerate(batches) if not all(r.key in done for r in b)]
    handle = None
    if out_path is not None and todo:
        path = Path(out_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _truncate_torn_tail(path)
        handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in finally
    bar = tqdm(
        total=len(requests),
        initial=len(requests) - sum(len(b) for _, b in todo),
        desc=desc,
        disable=not progress,
        unit="ans",
    )
    try:
        for index, batch in todo:
            torch.manual_seed(batch_seed(seed, index))
            outs = generate_batch(
                model,
                tokenizer,
                [r.messages for r in batch],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                ops=ops,
            )
            lines = []
            for request, result in zip(batch, outs, strict=True):
                record = {"key": request.key, "messages": request.messages, **result, **request.meta}
                if request.key not in done:
                    done[request.key] = record
                    lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            if handle is not None:
                handle.write("".join(lines))
                handle.flush()
            bar.update(len(batch))
    finally:
        bar.close()
        if handle is not None:
            handle.close()
    return [done[k] for k in keys]
