"""Cached reference outputs: one pass of the reference model over the training set, before training.

The reference model never changes during a fine-tune and every example is the same every epoch, so what
the ``kl`` and ``ldifs`` arms need from it can be computed once (arms opt in with ``cache: true``; each
arm decides what it keeps, see ``Arm.cache_record``). Layout, in the run folder::

    reference_cache/
      shard-00000000.safetensors   tensors "<example>/<arm>/<key>" for examples [start, stop)
      shard-00000256.safetensors   ...
      manifest.json                written last: what the cache was built from, and its shards

Safety: every shard and the manifest are written atomically (temporary file + rename), and the manifest
only after every shard, so a kill leaves either a complete cache or no manifest — never a half-written
cache that is read. A rerun after a kill during the build keeps the complete shards it finds (their
metadata must match) and computes the rest.

Checked against the data, never reused silently: the manifest records a digest of every tokenized example
(ids and masks), of the tokenizer (vocabulary, special tokens, chat template), of the reference model
(config and a sample of every weight), of the hook ops of the reference forward (e.g. the steer arm's
vector) and of each cached arm's settings. Opening a cache whose record differs raises
`ReferenceCacheError` naming what changed (the first example that differs, by index and source).
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from steerlab.hooks import Op, hooked
from steerlab.io import atomic_path, write_json
from steerlab.train.arms.base import Arm, CachedReference
from steerlab.train.dataset import INDEX_KEY, SOURCE_KEY, IndexedCollator
from steerlab.train.reference import Reference

log = logging.getLogger(__name__)
VERSION = 1
MANIFEST = "manifest.json"
SHARD_BYTES = 256 * 2**20  # a shard is written once it holds this much (bounds the memory of the build)


class ReferenceCacheError(RuntimeError):
    """A reference cache does not match the run (changed data, tokenizer, model or settings)."""


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _tensor_bytes(t: Tensor) -> bytes:
    return t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()


def example_digest(feature: dict[str, Any]) -> str:
    """Digest of one tokenized example: its ids and its attention and assistant masks."""
    keys = ("input_ids", "attention_mask", "assistant_mask")
    return _sha(*(json.dumps(feature[k]) for k in keys))


def tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """Digest of what decides the tokens: class, vocabulary, special tokens and chat template."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = sorted(map(str, getattr(tokenizer, "all_special_tokens", [])))
    template = str(getattr(tokenizer, "chat_template", None))
    return _sha(type(tokenizer).__name__, json.dumps(vocab), json.dumps(special), template)


def model_digest(model: nn.Module) -> str:
    """Digest of a model's config and of the first and last 256 values of every (non-LoRA) weight."""
    config = getattr(model, "config", None)
    parts: list[bytes | str] = [json.dumps(config.to_dict(), sort_keys=True, default=str) if config else ""]
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        flat = p.detach().reshape(-1)
        parts += [f"{name}:{tuple(p.shape)}:{p.dtype}", _tensor_bytes(flat[:256]), _tensor_bytes(flat[-256:])]
    return _sha(*parts)


def ops_digest(ops: Sequence[Op]) -> str:
    """Digest of the hook ops that shape the reference forward (types, layers, scopes, vectors, alphas)."""
    parts: list[bytes | str] = []
    for op in ops:
        parts.append(type(op).__name__)
        for f in dataclasses.fields(op):
            value = getattr(op, f.name)
            parts.append(
                f"{f.name}=" + (_sha(_tensor_bytes(value)) if isinstance(value, Tensor) else repr(value))
            )
    return _sha(*parts)


def cached_arms(arms: Sequence[Arm]) -> list[Arm]:
    """The arms that read their reference outputs from the cache."""
    return [arm for arm in arms if arm.needs_reference and arm.cache]


@dataclasses.dataclass
class CacheRecord:
    """What a cache was built from (the manifest minus its shard list)."""

    tokenizer: str
    reference: str
    ops: str
    arms: dict[str, dict[str, Any]]
    examples: list[str]

    @classmethod
    def of(
        cls,
        arms: Sequence[Arm],
        policy: nn.Module,
        ops: Sequence[Op],
        tokenizer: PreTrainedTokenizerBase,
        features: Sequence[dict[str, Any]],
    ) -> CacheRecord:
        return cls(
            tokenizer=tokenizer_digest(tokenizer),
            reference=model_digest(policy),
            ops=ops_digest(ops),
            arms={arm.name: arm.cache_settings() for arm in cached_arms(arms)},
            examples=[example_digest(f) for f in features],
        )

    @property
    def key(self) -> str:
        return _sha(json.dumps(dataclasses.asdict(self), sort_keys=True))

    def mismatch(self, saved: dict[str, Any], sources: Sequence[str]) -> str | None:
        """Why a saved record does not fit this run (None when it does)."""
        if saved.get("tokenizer") != self.tokenizer:
            return "the tokenizer changed"
        if saved.get("reference") != self.reference:
            return "the reference model changed (config or weights)"
        if saved.get("ops") != self.ops:
            return "the hook ops of the reference forward changed (e.g. the steer arm's vector or alpha)"
        if saved.get("arms") != self.arms:
            return f"the cached arms' settings changed ({saved.get('arms')} -> {self.arms})"
        old = saved.get("examples", [])
        if len(old) != len(self.examples):
            return f"the training data changed: {len(old)} tokenized examples then, {len(self.examples)} now"
        for i, (a, b) in enumerate(zip(old, self.examples, strict=True)):
            if a != b:
                return f"the training data changed: example {i} ({sources[i]}) tokenizes differently"
        return None


class ReferenceCache:
    """An opened, checked cache: `fetch` returns an arm's stored outputs for the examples of a batch."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.manifest = manifest
        self.starts = [s["start"] for s in manifest["shards"]]
        self._handles = [safe_open(str(folder / s["file"]), framework="pt") for s in manifest["shards"]]
        self._keys: dict[int, dict[str, list[str]]] = {}
        for handle in self._handles:
            for key in handle.keys():  # noqa: SIM118 - a safe_open handle is not iterable
                example, arm, name = key.split("/", 2)
                self._keys.setdefault(int(example), {}).setdefault(arm, []).append(name)

    @property
    def n_examples(self) -> int:
        return len(self.manifest["record"]["examples"])

    def fetch(self, indices: Tensor | Sequence[int], arms: Sequence[str]) -> CachedReference:
        """``{arm: [per example of the batch, {key: tensor}]}``; KeyError naming a missing example or arm."""
        out: CachedReference = {arm: [] for arm in arms}
        for i in [int(i) for i in indices]:
            handle = self._handles[bisect.bisect_right(self.starts, i) - 1]
            for arm in arms:
                names = self._keys.get(i, {}).get(arm)
                if names is None:
                    raise KeyError(f"{self.folder}: no cached {arm} outputs for example {i}")
                out[arm].append({name: handle.get_tensor(f"{i}/{arm}/{name}") for name in names})
        return out


def _shard_meta(path: Path) -> dict[str, str] | None:
    """A shard's metadata, or None (logged) for a file that does not read as safetensors."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata()
    except Exception as error:  # noqa: BLE001 - an unreadable leftover is recomputed, never read
        log.warning("reference cache: %s does not read (%s); computing it again", path, error)
        return None


@torch.no_grad()
def _reference_batch(
    policy: nn.Module, reference: Reference, ops: Sequence[Op], batch: dict[str, Tensor], arms: Sequence[Arm]
) -> list[list[dict[str, Tensor]]]:
    """One reference forward (same ops as training) and each cached arm's records of it."""
    with reference.active(policy) as ref_model, hooked(ref_model, list(ops)) as session:
        logits = ref_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits
    return [arm.cache_record(batch, logits, session.captures) for arm in arms]


class CacheBuilder:
    """Builds (or resumes building) the cache of one run; `open_or_build` is the entry point."""

    def __init__(
        self,
        folder: Path,
        arms: Sequence[Arm],
        policy: nn.Module,
        reference: Reference | None,
        tokenizer: PreTrainedTokenizerBase,
        features: Sequence[dict[str, Any]],
        batch_size: int,
    ) -> None:
        self.folder, self.arms, self.policy, self.reference = folder, cached_arms(arms), policy, reference
        self.features, self.batch_size = list(features), batch_size
        self.sources = [str(f.get(SOURCE_KEY, f"#{i}")) for i, f in enumerate(self.features)]
        self.collate = IndexedCollator(tokenizer)
        self.ops = [op for arm in arms for op in arm.hooks(policy)]
        self.record = CacheRecord.of(arms, policy, self.ops, tokenizer, self.features)

    def _write_shard(self, start: int, stop: int, tensors: dict[str, Tensor]) -> dict[str, Any]:
        path = self.folder / f"shard-{start:08d}.safetensors"
        meta = {"record": self.record.key, "start": str(start), "stop": str(stop)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return {"file": path.name, "start": start, "stop": stop}

    def _existing_shard(self, start: int) -> dict[str, Any] | None:
        path = self.folder / f"shard-{start:08d}.safetensors"
        meta = _shard_meta(path) if path.is_file() else None
        if meta is None or meta.get("record") != self.record.key or meta.get("start") != str(start):
            return None
        return {"file": path.name, "start": start, "stop": int(meta["stop"])}

    def _compute_shard(self, start: int, device: torch.device) -> dict[str, Any]:
        assert self.reference is not None  # build() refuses to start without one
        tensors: dict[str, Tensor] = {}
        size, stop = 0, start
        while stop < len(self.features) and size < SHARD_BYTES:
            chunk = self.features[stop : stop + self.batch_size]
            batch = {k: v.to(device) for k, v in self.collate(chunk).items()}
            for arm, records in zip(
                self.arms,
                _reference_batch(self.policy, self.reference, self.ops, batch, self.arms),
                strict=True,
            ):
                for index, record in zip(batch[INDEX_KEY].tolist(), records, strict=True):
                    for key, t in record.items():
                        tensors[f"{index}/{arm.name}/{key}"] = t.contiguous()
                        size += t.numel() * t.element_size()
            stop += len(chunk)
        return self._write_shard(start, stop, tensors)

    def build(self) -> dict[str, Any]:
        """Compute every shard not already complete, then write the manifest; returns it.

        Raises `ReferenceCacheError` when there is no reference model to compute it from.
        """
        if self.reference is None:
            raise ReferenceCacheError(
                f"{self.folder}: the reference cache is incomplete and this resumed run keeps no reference "
                "model to rebuild it (full fine-tuning with every reference arm cached); start a new run"
            )
        began, device = time.perf_counter(), next(self.policy.parameters()).device
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.folder.glob(".*.tmp"):  # a write cut short by a kill (never renamed)
            leftover.unlink()
        shards, start, reused = [], 0, 0
        while start < len(self.features):
            shard = self._existing_shard(start)
            reused += shard is not None
            shard = shard or self._compute_shard(start, device)
            shards.append(shard)
            start = shard["stop"]
        for stale in set(self.folder.glob("shard-*.safetensors")) - {self.folder / s["file"] for s in shards}:
            stale.unlink()
        manifest = {
            "version": VERSION,
            "record": dataclasses.asdict(self.record),
            "shards": shards,
            "bytes": sum((self.folder / s["file"]).stat().st_size for s in shards),
            "build_seconds": time.perf_counter() - began,
            "shards_reused": reused,
        }
        write_json(self.folder / MANIFEST, manifest)
        return manifest


def open_or_build(builder: CacheBuilder, *, build: bool = True) -> ReferenceCache:
    """Open the run's cache, checking it against ``builder``'s record, or build it when there is none.

    Raises `ReferenceCacheError` naming what changed when a complete cache was built from other data,
    tokenizer, reference model, hook ops or arm settings (delete the folder to rebuild it). ``build=False``
    (non-main processes) waits for nothing and raises when the cache is missing.
    """
    folder = builder.folder
    path = folder / MANIFEST
    if path.is_file():
        manifest = json.loads(path.read_text(encoding="utf-8"))
        problem = (
            f"built by cache version {manifest.get('version')}, this is {VERSION}"
            if manifest.get("version") != VERSION
            else builder.record.mismatch(manifest.get("record", {}), builder.sources)
        )
        if problem:
            raise ReferenceCacheError(
                f"{folder}: {problem} since the reference cache was built; it is not reused. "
                f"Delete {folder} to rebuild it (or start a new run)."
            )
        log.info("reference cache: reusing %s (%d examples)", folder, len(builder.features))
        return ReferenceCache(folder, manifest)
    if not build:
        raise ReferenceCacheError(f"{folder}: no complete reference cache (the main process builds it)")
    log.info("reference cache: building %s (%d examples)", folder, len(builder.features))
    manifest = builder.build()
    log.info("reference cache: %.1f s, %.1f MiB", manifest["build_seconds"], manifest["bytes"] / 2**20)
    return ReferenceCache(folder, manifest)
