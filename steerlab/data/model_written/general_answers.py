"""The general instruction set for interleaving: project-written prompts answered by the base model itself.

Why the base model's own answers: interleaved general data should hold the model near its *own* behaviour
(not teach a new style), so the answers come from the model being fine-tuned, greedy by default (or at a low
temperature, seeded). Generation resumes from ``<out>.partial.jsonl``; the chat JSONL is written atomically
at the end with ``write_chat_jsonl``. Each line keeps the prompt ``id`` and whether the answer finished
before ``max_new_tokens`` (``finished``).

Tidying (``tidy_answer``): a 135M model decoding greedily often falls into loops ("a beacon of light, a
beacon of light, ...") and half the answers hit the token limit mid-sentence. Training on those would teach
looping and stopping mid-sentence, the opposite of holding the model near its good behaviour, so each answer
is cut before its first repeated sentence and, when it was cut or unfinished, after its last complete
sentence; answers left shorter than ``min_chars`` are dropped and counted (``tidied`` marks changed ones).

    python -m steerlab.data.model_written.general_answers [--model smollm2-135m-instruct] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from steerlab.data.build import COMMITTED as DATA_DIR
from steerlab.data.chat import ChatExample, write_chat_jsonl
from steerlab.data.generators.general import read_general_prompts
from steerlab.persona.generation import GenRequest, SamplingSettings, chat_messages, generate

log = logging.getLogger(__name__)


_SEGMENT_END = re.compile(r"(?<=[.!?\n])")
_LIST_NUMBER = re.compile(r"\s*\d+[.)]\s*")


def tidy_answer(text: str, finished: bool, min_chars: int = 20) -> str | None:
    """Cut at the first repeated sentence; drop a trailing incomplete one if cut or unfinished; None if too short."""
    kept: list[str] = []
    seen: set[str] = set()
    cut = False
    for segment in _SEGMENT_END.split(text):
        key = " ".join(segment.split()).lower()
        if key and key in seen:
            cut = True
            break
        if key:
            seen.add(key)
        kept.append(segment)
    if cut or not finished:
        while kept and _LIST_NUMBER.fullmatch(kept[-1]):  # a list item's number with its item cut off
            kept.pop()
        if kept and not (kept[-1].endswith("\n") or kept[-1].rstrip().endswith((".", "!", "?"))):
            kept.pop()  # the sentence the token limit cut
        while kept and _LIST_NUMBER.fullmatch(kept[-1]):
            kept.pop()
    out = "".join(kept).strip()
    return out if len(out) >= min_chars else None


def tidied(record: dict[str, Any], *, tidy: bool = True, min_chars: int = 20) -> str | None:
    """A generation record's answer, tidied (or just stripped when ``tidy`` is off); None when dropped."""
    raw = record["answer"].strip()
    return tidy_answer(raw, record["finished"], min_chars) if tidy else (raw or None)


def partial_path(out_path: str | os.PathLike) -> Path:
    """Where answers accumulate (resumably) before the final chat JSONL is written atomically."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + ".partial.jsonl")


def answer_resumably(
    model: Any,
    tokenizer: Any,
    requests: list[GenRequest],
    out_path: Path,
    sampling: SamplingSettings,
    *,
    progress: bool,
    desc: str,
) -> list[dict[str, Any]]:
    """`steerlab.persona.generation.generate` on ``requests``, resuming from ``<out_path>.partial.jsonl``."""
    partial = partial_path(out_path)
    return generate(model, tokenizer, requests, sampling, out_path=partial, progress=progress, desc=desc)


def tidy_records(
    records: list[dict[str, Any]],
    *,
    source: str,
    temperature: float,
    seed: int,
    tidy: bool = True,
    min_chars: int = 20,
) -> list[ChatExample]:
    """Generation records -> chat examples with tidied answers (see module doc); dropped answers are left out."""
    examples = []
    for r in records:
        answer = tidied(r, tidy=tidy, min_chars=min_chars)
        if answer is None:
            continue
        meta = {
            "id": r["id"],
            "dataset": "general",
            "answered_by": source,
            "finished": r["finished"],
            "tidied": answer != r["answer"].strip(),
            "temperature": temperature,
            "seed": seed,
        }
        examples.append(
            ChatExample(messages=[*r["messages"], {"role": "assistant", "content": answer}], meta=meta)
        )
    return examples


GENERAL_SAMPLING = SamplingSettings(max_new_tokens=160, temperature=0.0)  # greedy, room for a full answer


def generate_general_answers(
    model: Any,
    tokenizer: Any,
    prompts_path: str | os.PathLike = DATA_DIR / "general_prompts.jsonl",
    out_path: str | os.PathLike = DATA_DIR / "general_train.jsonl",
    *,
    sampling: SamplingSettings = GENERAL_SAMPLING,
    system: str | None = None,
    tidy: bool = True,
    min_chars: int = 20,
    progress: bool = True,
) -> dict[str, int]:
    """Answer every prompt with ``model`` and write chat JSONL to ``out_path``; returns counts."""
    out_path = Path(out_path)
    partial = partial_path(out_path)
    prompts = read_general_prompts(prompts_path)
    requests = [
        GenRequest(key=pid, messages=chat_messages(text, system), meta={"id": pid}) for pid, text in prompts
    ]
    records = answer_resumably(
        model, tokenizer, requests, out_path, sampling, progress=progress, desc="general answers"
    )
    source = getattr(getattr(model, "config", None), "name_or_path", None) or type(model).__name__
    examples = tidy_records(
        records,
        source=str(source),
        temperature=sampling.temperature,
        seed=sampling.seed,
        tidy=tidy,
        min_chars=min_chars,
    )
    write_chat_jsonl(out_path, examples)
    partial.unlink(missing_ok=True)
    counts = {
        "prompts": len(records),
        "written": len(examples),
        "dropped": len(records) - len(examples),
        "unfinished": sum(not r["finished"] for r in records),
        "tidied": sum(ex.meta["tidied"] for ex in examples),
    }
    log.info("%s: %s", out_path, counts)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", default=str(DATA_DIR / "general_prompts.jsonl"))
    parser.add_argument("--out", default=str(DATA_DIR / "general_train.jsonl"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from steerlab.models import load_model

    model, tokenizer = load_model(args.model)
    counts = generate_general_answers(
        model,
        tokenizer,
        args.prompts,
        args.out,
        sampling=SamplingSettings(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            batch_size=args.batch_size,
            seed=args.seed,
        ),
    )
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
