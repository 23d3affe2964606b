"""Export a persona vector as a llama.cpp control vector (GGUF), so it steers the model outside Python.

The format, as llama.cpp reads it (``common_control_vector_load_one`` in ``common/common.cpp`` and
``llama_adapter_cvec::apply`` in ``src/llama-adapter.cpp``), and as its ``cvector-generator`` writes it:

* metadata ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (string, informative)
  and ``controlvector.layer_count`` (int32: the number of direction tensors);
* one 1-D F32 tensor of width ``n_embd`` per layer, named ``direction.<il>``, where ``il`` is llama.cpp's
  0-based block index and the vector is added to the *output* of block ``il`` (``l_out``) at every token.
  That is steerlab's layer ``l`` (output of block ``l``) with no offset. ``direction.0`` is rejected by the
  loader, so block 0 cannot be steered from a file; several tensors for one layer add up.

llama.cpp multiplies the file by ``--control-vector-scaled FILE SCALE`` and applies every layer in the file
(``--control-vector-layer-range`` narrows it). steerlab steers one layer at a time, so the default export
holds just the chosen layer: ``llama-cli -m model.gguf --control-vector-scaled evil.gguf 4.0`` then does
what ``steerlab steer --alpha 4`` does, except that llama.cpp also adds it on prompt tokens (steerlab's
``--scope all``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from steerlab.io import atomic_path
from steerlab.persona.vectors import PersonaVector

ARCH = "controlvector"


class GGUFExportError(ValueError):
    """An export the vector or llama.cpp cannot take: a layer the vector lacks, layer 0, no layer, or a scale
    that is not a finite number. Raised before anything is written."""


def select_layers(vector: PersonaVector, layers: Literal["chosen", "all"] | Sequence[int]) -> list[int]:
    """The layers to export: the chosen one, all but layer 0, or the given ones (sorted, deduplicated).
    Raises `GGUFExportError` for a layer the vector does not hold."""
    if layers == "chosen":
        return [vector.layer]
    if layers == "all":
        return [layer for layer in vector.layers if layer != 0]
    chosen = sorted({int(layer) for layer in layers})
    for layer in chosen:
        if layer not in vector.directions:
            raise GGUFExportError(
                f"layer {layer} is not in the vector (it has layers {', '.join(map(str, vector.layers))})"
            )
    return chosen


def export_gguf(
    vector: PersonaVector,
    path: str | Path,
    *,
    layers: Literal["chosen", "all"] | Sequence[int] = "chosen",
    scale: float = 1.0,
    normalize: bool = False,
    model_hint: str | None = None,
) -> Path:
    """Write ``vector`` (``scale`` times each direction, unit-normalised first if ``normalize``) as a llama.cpp
    control-vector GGUF, atomically; returns ``path``. One F32 ``[d_model]`` tensor per layer (format: module
    doc). Raises `GGUFExportError` (a ValueError) for layer 0 (llama.cpp's loader rejects it), no layer, a
    layer the vector does not hold, or a non-finite ``scale``; nothing is written then."""
    import gguf

    if not math.isfinite(scale):
        raise GGUFExportError(f"scale must be a finite number, got {scale}")
    chosen = select_layers(vector, layers)
    if 0 in chosen:
        raise GGUFExportError(
            "llama.cpp cannot steer layer 0 from a control-vector file (its loader rejects "
            "direction.0); pick layers >= 1"
        )
    if not chosen:
        raise GGUFExportError("no layers to export")
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_string(f"{ARCH}.model_hint", model_hint or vector.meta.model_id)
        writer.add_int32(f"{ARCH}.layer_count", len(chosen))
        for layer in chosen:
            direction = vector.unit(layer) if normalize else vector.vector(layer)
            data = (float(scale) * direction.detach().float().cpu().numpy()).astype(np.float32)
            writer.add_tensor(f"direction.{layer}", data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def read_gguf(path: str | Path) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """(directions by steerlab layer, each ``[n_embd]`` float32 summed over repeats, metadata) of a
    control-vector GGUF, checked as llama.cpp checks it. Raises ``ValueError`` naming the file for another
    architecture, a tensor not named ``direction.<l>`` with ``l >= 1``, a tensor that is not 1-D F32, or
    tensors of different widths."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    meta: dict[str, Any] = {}
    for name, fld in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        if not fld.data:
            continue
        value = fld.parts[fld.data[0]]
        if fld.types and fld.types[0] == gguf.GGUFValueType.STRING:
            meta[name] = bytes(value).decode("utf-8")
        elif len(value) == 1:
            meta[name] = value.tolist()[0]
    if meta.get("general.architecture") != ARCH:
        raise ValueError(
            f"{path}: general.architecture is {meta.get('general.architecture')!r}, not {ARCH!r}"
        )
    directions: dict[int, np.ndarray] = {}
    width = None
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction" or not index.isdigit() or int(index) == 0:
            raise ValueError(
                f"{path}: bad control-vector tensor name {tensor.name!r} (expected direction.<l>, l >= 1)"
            )
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32 or len(tensor.shape) != 1:
            raise ValueError(f"{path}: {tensor.name} must be a 1-D F32 tensor")
        data = np.array(tensor.data, dtype=np.float32).reshape(-1)
        if width is not None and data.shape[0] != width:
            raise ValueError(f"{path}: {tensor.name} has width {data.shape[0]}, earlier tensors {width}")
        width = data.shape[0]
        directions[int(index)] = directions.get(int(index), 0) + data
    return directions, meta
