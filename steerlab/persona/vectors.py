"""`PersonaVector`: one direction per layer in a model's residual stream, plus where it came from.

Saved as ``NAME.safetensors`` (tensors ``layer.<l>``) and a ``NAME.json`` sidecar with the metadata, both
written atomically. Layer ``l`` is the output of decoder block ``l``, i.e. transformers'
``hidden_states[l + 1]``; persona_vectors-style ``[L + 1, d]`` tensors indexed by ``hidden_states`` are
converted only through the explicit `from_hidden_states_indexed` / `to_hidden_states_indexed`.

One caveat of that correspondence: for the *last* block most transformers models put the final norm into
``hidden_states[L]``, while steerlab's layer ``L - 1`` is the raw block output (before the norm). Every
other layer matches exactly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from steerlab import __version__
from steerlab.io import atomic_path, read_json, write_json
from steerlab.linalg import unit_vector
from steerlab.models.architectures import hidden_size, model_config, num_layers, unwrap

VECTOR_SUFFIXES = (".safetensors", ".json")  # the two files of a saved vector
LAYER_CONVENTION = "block_output"  # layer l = output of block l = hidden_states[l + 1]
_FINGERPRINT_KEYS = (
    "model_type",
    "hidden_size",
    "n_embd",
    "num_hidden_layers",
    "n_layer",
    "vocab_size",
    "intermediate_size",
    "num_attention_heads",
    "n_head",
    "num_key_value_heads",
)


class VectorFileError(ValueError):
    """A vector file is missing, truncated, or disagrees with its sidecar."""


class IncompatibleVectorError(ValueError):
    """A vector was made for another model (width, depth or identity)."""


def model_fingerprint(model: nn.Module) -> str:
    """A short hash (16 hex digits of SHA-256) of the config fields that decide what a direction means in this
    model (width, depth, vocabulary, heads); raises `UnknownArchitectureError` for a model without a config."""
    config = model_config(model).to_dict()
    config = config.get("text_config") or config
    subset = {key: config[key] for key in _FINGERPRINT_KEYS if key in config}
    return hashlib.sha256(json.dumps(subset, sort_keys=True).encode()).hexdigest()[:16]


def model_id(model: nn.Module) -> str:
    """The name a vector records for its model: the config's ``name_or_path``, else the class name."""
    return str(getattr(model_config(model), "name_or_path", "") or type(unwrap(model)).__name__)


@dataclass
class VectorMetadata:
    """The JSON sidecar of a vector: the model it was made for (``model_id``, ``model_fingerprint``,
    ``n_layers``, ``d_model``), the trait, how it was made (``method``: ``mean_diff`` = mean(pos) - mean(neg)
    of the response-token activations, after Chen et al., "Persona Vectors", arXiv:2507.21509; ``token_scope``;
    ``n_pos`` / ``n_neg`` answers), its ``layer_convention``, the ``chosen_layer`` and extraction ``stats``."""

    model_id: str
    model_fingerprint: str
    n_layers: int
    d_model: int
    trait: str
    method: str = "mean_diff"
    token_scope: str = "response"
    layer_convention: str = LAYER_CONVENTION
    n_pos: int = 0
    n_neg: int = 0
    chosen_layer: int | None = None
    steerlab_version: str = __version__
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class PersonaVector:
    """One direction per layer, ``directions[l]`` of shape ``[d_model]`` in the residual stream's own units
    (not normalised), at the output of decoder block ``l``, plus its `VectorMetadata`.

    Raises ``ValueError`` at construction for no layer, a layer outside ``0 .. n_layers - 1`` or a direction
    whose shape is not ``[d_model]``.
    """

    directions: dict[int, Tensor]
    meta: VectorMetadata

    def __post_init__(self) -> None:
        if not self.directions:
            raise ValueError("a PersonaVector needs at least one layer")
        for layer, vector in self.directions.items():
            if not 0 <= layer < self.meta.n_layers:
                raise ValueError(f"layer {layer} outside 0..{self.meta.n_layers - 1}")
            if vector.shape != (self.meta.d_model,):
                raise ValueError(
                    f"layer {layer}: direction shape {tuple(vector.shape)} != ({self.meta.d_model},)"
                )

    @classmethod
    def random(
        cls, model: nn.Module, layer: int, *, seed: int = 0, scale: float = 1.0, method: str = "random"
    ) -> PersonaVector:
        """A seeded random direction ``[d_model]`` (standard normal times ``scale``) at every layer of ``model``,
        with metadata that passes `check_model`; for tests, the demo's stand-ins and fixtures, never a trait.

        Raises ``ValueError`` for a ``layer`` outside the model (through `VectorMetadata`'s checks)."""
        n, d = num_layers(model), hidden_size(model)
        gen = torch.Generator().manual_seed(seed)
        directions = {i: torch.randn(d, generator=gen) * scale for i in range(n)}
        meta = VectorMetadata(
            model_id=model_id(model),
            model_fingerprint=model_fingerprint(model),
            n_layers=n,
            d_model=d,
            trait="evil",
            method=method,
            chosen_layer=layer,
        )
        return cls(directions, meta)

    # -- access ---------------------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        """The layers that hold a direction, ascending."""
        return sorted(self.directions)

    @property
    def layer(self) -> int:
        """The chosen layer (the one to steer and project at by default); raises ``ValueError`` when the
        metadata chose none."""
        if self.meta.chosen_layer is None:
            raise ValueError(
                f"vector for trait {self.meta.trait!r} has no chosen layer; pass a layer explicitly"
            )
        return self.meta.chosen_layer

    def vector(self, layer: int | None = None) -> Tensor:
        """The raw direction ``[d_model]`` at ``layer`` (default: the chosen layer), as stored: its norm is the
        mean-difference size in residual units. Raises ``KeyError`` naming the layers it has, or
        ``ValueError`` when no layer is given and none was chosen."""
        layer = self.layer if layer is None else layer
        if layer not in self.directions:
            raise KeyError(f"no direction at layer {layer}; this vector has layers {self.layers}")
        return self.directions[layer]

    def unit(self, layer: int | None = None) -> Tensor:
        """The direction at ``layer`` scaled to norm 1, float32 ``[d_model]`` (see `vector`); raises
        ``ValueError`` for a zero direction."""
        return unit_vector(self.vector(layer))

    def norms(self) -> dict[int, float]:
        """``{layer: L2 norm}`` of each raw direction, in residual-stream units."""
        return {layer: float(self.directions[layer].norm()) for layer in self.layers}

    # -- model checks -----------------------------------------------------------------------------------
    def check_model(self, model: nn.Module, *, allow_transfer: bool = False) -> None:
        """Refuse to apply this vector to a model it was not made for, unless a transfer is deliberate.

        Raises `IncompatibleVectorError` when the hidden size differs (always), or, without
        ``allow_transfer``, when the depth, the config fingerprint or the model id differ; with it, only when a
        layer of the vector is past the model's last block.
        """
        width, depth = hidden_size(model), num_layers(model)
        if width != self.meta.d_model:
            raise IncompatibleVectorError(
                f"vector for {self.meta.model_id!r} has width {self.meta.d_model}, model has hidden size {width}"
            )
        if allow_transfer:
            if max(self.layers) >= depth:
                raise IncompatibleVectorError(
                    f"vector has layer {max(self.layers)} but the model has {depth} blocks"
                )
            return
        if depth != self.meta.n_layers:
            raise IncompatibleVectorError(
                f"vector for {self.meta.model_id!r} has {self.meta.n_layers} layers, model has {depth} "
                "(pass allow_transfer=True to apply it anyway)"
            )
        fingerprint = model_fingerprint(model)
        if fingerprint != self.meta.model_fingerprint or model_id(model) != self.meta.model_id:
            raise IncompatibleVectorError(
                f"vector was made for {self.meta.model_id!r} (fingerprint {self.meta.model_fingerprint}) but the "
                f"model is {model_id(model)!r} (fingerprint {fingerprint}); pass allow_transfer=True to apply it anyway"
            )

    # -- conversions ------------------------------------------------------------------------------------
    @classmethod
    def from_hidden_states_indexed(cls, tensor: Tensor, meta: VectorMetadata) -> PersonaVector:
        """From a persona_vectors-style ``[L + 1, d]`` tensor (row 0 = embeddings, row l+1 = block l), the
        layout of github.com/safety-research/persona_vectors. Raises ``ValueError`` for another shape."""
        if tensor.dim() != 2 or tensor.shape[0] != meta.n_layers + 1:
            raise ValueError(
                f"expected a [n_layers + 1, d] = [{meta.n_layers + 1}, {meta.d_model}] tensor indexed by "
                f"hidden_states, got {tuple(tensor.shape)}"
            )
        return cls({layer: tensor[layer + 1].clone() for layer in range(meta.n_layers)}, meta)

    def to_hidden_states_indexed(self) -> Tensor:
        """A ``[L + 1, d]`` tensor indexed like hidden_states (row 0 and missing layers are zeros)."""
        out = torch.zeros(self.meta.n_layers + 1, self.meta.d_model)
        for layer, vector in self.directions.items():
            out[layer + 1] = vector
        return out

    # -- files ------------------------------------------------------------------------------------------
    @staticmethod
    def paths(path: str | Path) -> tuple[Path, Path]:
        """``(NAME.safetensors, NAME.json)`` for ``NAME``, ``NAME.safetensors`` or ``NAME.json`` (a name with
        another dot keeps it: ``evil.v2`` is ``evil.v2.safetensors``)."""
        path = Path(path)
        stem = path.with_suffix("") if path.suffix in VECTOR_SUFFIXES else path
        return Path(f"{stem}.safetensors"), Path(f"{stem}.json")

    def save(self, path: str | Path) -> Path:
        """Write ``NAME.safetensors`` (float32 tensors ``layer.<l>``) and the ``NAME.json`` sidecar, each
        atomically; returns the safetensors path."""
        tensors_path, sidecar_path = self.paths(path)
        tensors = {
            f"layer.{layer}": vector.detach().float().contiguous().cpu()
            for layer, vector in self.directions.items()
        }
        with atomic_path(tensors_path) as tmp:
            save_file(tensors, str(tmp), metadata={"layer_convention": self.meta.layer_convention})
        write_json(sidecar_path, asdict(self.meta))
        return tensors_path

    @classmethod
    def load(cls, path: str | Path) -> PersonaVector:
        """Read a vector written by `save` (safetensors only, no pickle). Raises `VectorFileError` naming the
        file for another kind of file (``data.jsonl``: named as given), a missing or truncated file, invalid JSON (with its line), metadata that does not match
        `VectorMetadata`, an unknown layer convention, an unexpected tensor name, or tensors that disagree with
        the sidecar."""
        given = Path(path)
        expected = "expected a .safetensors persona vector with its .json sidecar"
        if given.is_file() and given.suffix not in VECTOR_SUFFIXES:
            raise VectorFileError(f"{given} is not a persona vector ({expected})")
        tensors_path, sidecar_path = cls.paths(given)
        for required in (tensors_path, sidecar_path):
            if not required.is_file():
                where = "" if required == given else f"{given}: "
                raise VectorFileError(f"{where}vector file {required} does not exist ({expected})")
        try:
            raw = load_file(str(tensors_path))
        except (SafetensorError, OSError, ValueError) as error:
            raise VectorFileError(
                f"{tensors_path} is not a readable safetensors file (truncated?): {error}"
            ) from error
        meta_dict = read_json(sidecar_path, error=VectorFileError)
        try:
            meta = VectorMetadata(**meta_dict)
        except TypeError as error:
            raise VectorFileError(
                f"{sidecar_path}: metadata does not match VectorMetadata: {error}"
            ) from error
        if meta.layer_convention != LAYER_CONVENTION:
            raise VectorFileError(f"{sidecar_path}: unknown layer convention {meta.layer_convention!r}")
        directions = {}
        for key, tensor in raw.items():
            if not key.startswith("layer.") or not key[6:].isdigit():
                raise VectorFileError(f"{tensors_path}: unexpected tensor name {key!r} (expected layer.<l>)")
            directions[int(key[6:])] = tensor
        try:
            return cls(directions, meta)
        except ValueError as error:
            raise VectorFileError(f"{tensors_path} disagrees with {sidecar_path}: {error}") from error
