"""Build every offline dataset of the emergent-misalignment experiment into one folder, with a manifest.

``python -m steerlab.data.build experiments/data`` regenerates the generated files (arithmetic, general
prompts, monitor chats) and checks the hand-written ones (`steerlab.data.written`: medical and financial
advice with aligned twins, held-out questions and reference answers; copied when building elsewhere). The
manifest records counts, sha256 and, for the written training sets, their variety figures, so a changed
generator or a changed text shows up in review.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from steerlab.data.chat import write_chat_jsonl
from steerlab.data.generators import arithmetic, general, monitor
from steerlab.data.written import WRITTEN_DOMAINS, check_domain, domain_files, variety_figures
from steerlab.io import write_jsonl, write_text

MANIFEST = "manifest.json"
WRITTEN_PREFIXES = tuple(f"{d}_" for d in WRITTEN_DOMAINS) + ("references/",)


COMMITTED = Path(__file__).resolve().parents[2] / "experiments" / "data"
DEFAULT_QUESTIONS = COMMITTED / "em_questions.yaml"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def build_all(out_dir: str | os.PathLike, seed: int = 0, written_from: Path = COMMITTED) -> dict[str, Path]:
    """Write all datasets under ``out_dir``; return {name: path} (including ``'manifest'``).

    Generated: ``arithmetic_{train,eval}.jsonl``, ``general_prompts.jsonl`` (``{"id", "prompt"}`` lines) and
    ``monitor_chats.jsonl``. Written (checked by `steerlab.data.written.check_domain`, copied from
    ``written_from`` when ``out_dir`` is elsewhere): ``{medical,financial}_train.jsonl`` (misaligned),
    ``*_train_aligned.jsonl`` (twins), ``*_eval.jsonl`` (held-out questions) and ``references/*.jsonl``.
    Raises ``ChatDataError`` naming the file and line of a bad written record.
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    counts: dict[str, int] = {}

    def chat(name: str, examples: list) -> None:
        paths[name] = write_chat_jsonl(out / f"{name}.jsonl", examples)
        counts[name] = len(examples)

    variety: dict[str, dict] = {}
    for domain in WRITTEN_DOMAINS:
        for name, target in domain_files(out, domain).items():
            source = domain_files(written_from, domain)[name]
            if source.resolve() != target.resolve():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            paths[name] = target
        counts |= check_domain(out, domain)
        for name in (f"{domain}_train", f"{domain}_train_aligned"):
            variety[name] = variety_figures(paths[name])
    ar = arithmetic.generate(seed)
    chat("arithmetic_train", ar.train)
    chat("arithmetic_eval", ar.eval)
    prompts = general.general_prompts(seed)
    recs = [{"id": f"general_{i:04d}", "prompt": p} for i, p in enumerate(prompts)]
    paths["general_prompts"] = write_jsonl(out / "general_prompts.jsonl", recs)
    counts["general_prompts"] = len(recs)
    # em_questions.yaml is hand-written (not generated); the monitor set derives from it.
    questions = out / "em_questions.yaml"
    chat("monitor_chats", monitor.monitor_chats(questions if questions.is_file() else DEFAULT_QUESTIONS))

    manifest = {
        "seed": seed,
        "generator": "steerlab.data.build.build_all",
        "files": {
            name: {"path": p.relative_to(out).as_posix(), "count": counts[name], "sha256": sha256_file(p)}
            | ({"written": True} if name in variety or name.startswith(WRITTEN_PREFIXES) else {})
            | ({"variety": variety[name]} if name in variety else {})
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


def main(argv: list[str] | None = None) -> None:
    """``python -m steerlab.data.build [OUT_DIR] [--seed N]``: build every dataset and print the files."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m steerlab.data.build", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument(
        "out_dir", nargs="?", default="experiments/data", help="folder to build into (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    args = parser.parse_args(argv)
    for k, v in build_all(args.out_dir, args.seed).items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
