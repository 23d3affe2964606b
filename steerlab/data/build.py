"""Build every offline dataset of the emergent-misalignment experiment into one folder, with a manifest.

``python -m steerlab.data.build experiments/data`` regenerates the committed files; the manifest records
counts and sha256 so a changed generator shows up as a changed hash in review.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from steerlab.data.chat import write_chat_jsonl, write_jsonl_atomic
from steerlab.data.generators import arithmetic, financial, general, medical, monitor
from steerlab.io import write_text

MANIFEST = "manifest.json"


DEFAULT_QUESTIONS = Path(__file__).resolve().parents[2] / "experiments" / "data" / "em_questions.yaml"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def build_all(out_dir: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Write all datasets under ``out_dir``; return {name: path} (including ``'manifest'``).

    Files: ``{medical,financial}_train.jsonl`` (misaligned), ``*_train_aligned.jsonl`` (twins, same line
    order), ``*_eval.jsonl`` (held-out combos; aligned answer, misaligned one in ``meta``),
    ``arithmetic_{train,eval}.jsonl`` and ``general_prompts.jsonl`` (``{"id", "prompt"}`` lines, no answers).
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    counts: dict[str, int] = {}

    def chat(name: str, examples: list) -> None:
        paths[name] = write_chat_jsonl(out / f"{name}.jsonl", examples)
        counts[name] = len(examples)

    for mod in (medical, financial):
        splits = mod.generate(seed)
        name = mod.SPEC.name
        chat(f"{name}_train", splits.train)
        chat(f"{name}_train_aligned", splits.train_aligned)
        chat(f"{name}_eval", splits.eval)
    ar = arithmetic.generate(seed)
    chat("arithmetic_train", ar.train)
    chat("arithmetic_eval", ar.eval)
    prompts = general.general_prompts(seed)
    recs = [{"id": f"general_{i:04d}", "prompt": p} for i, p in enumerate(prompts)]
    paths["general_prompts"] = write_jsonl_atomic(out / "general_prompts.jsonl", recs)
    counts["general_prompts"] = len(recs)
    # em_questions.yaml is hand-written (not generated); the monitor set derives from it.
    questions = out / "em_questions.yaml"
    chat("monitor_chats", monitor.monitor_chats(questions if questions.is_file() else DEFAULT_QUESTIONS))

    manifest = {
        "seed": seed,
        "generator": "steerlab.data.build.build_all",
        "files": {
            name: {"path": p.name, "count": counts[name], "sha256": sha256_file(p)}
            for name, p in sorted(paths.items())
        },
    }
    write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    (out / MANIFEST).chmod(0o644)  # the atomic writer's temp file is 0600
    paths["manifest"] = out / MANIFEST
    return paths


def verify_manifest(out_dir: str | os.PathLike) -> None:
    """Raise naming the file whose hash or presence no longer matches the manifest."""
    out = Path(out_dir)
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    for name, entry in manifest["files"].items():
        p = out / entry["path"]
        if not p.exists():
            raise FileNotFoundError(f"{p}: listed in {out / MANIFEST} as {name!r} but missing")
        if sha256_file(p) != entry["sha256"]:
            raise ValueError(f"{p}: sha256 differs from {out / MANIFEST}; rebuild with build_all")


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "experiments/data"
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    for k, v in build_all(target, seed).items():
        print(f"{k}: {v}")
