"""An offline trait judge that runs on the base model itself: a linear probe on its activations.

``ProbeJudge``: logistic regression on the base model's mean residual activation over the answer's tokens at
one layer. It reads each answer *text-only* — after the bare question, with no system prompt — because a
judge must score what was said, not which system prompt was in context (with the prompt in context a probe
can simply read the instruction back). It is trained on extraction answers (pos-prompted = 1, neg-prompted
= 0) and reports accuracy and AUROC on the held-out evaluation-question answers. Its score is the
probability of the pos class times 100, so it drops into any place a ``TraitScorer`` goes. Saved without
pickle: ``coef``/``intercept`` in safetensors, everything else in a JSON sidecar.

The perplexity coherence score lives in `steerlab.judges.coherence`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from steerlab.io import atomic_path, write_json
from steerlab.persona.activations import collect_means
from steerlab.persona.generation import chat_messages
from steerlab.persona.vectors import model_fingerprint, model_id

PROBE_FORMAT = "steerlab.probe.v1"


def fit_logistic(x: np.ndarray, y: np.ndarray, *, c: float = 0.01, seed: int = 0) -> tuple[np.ndarray, float]:
    """Standardise, fit an L2 logistic regression, and fold the scaling back into one (coef, intercept).

    The default C = 0.01 is strong regularisation: persona data has fewer answers than dimensions, and on the
    embedded model it gave the best held-out AUROC of 0.001..1 (a weak C fits the training answers perfectly).
    ``x`` is ``[N, d]``, ``y`` ``[N]`` in {0, 1}; returns coef ``[d]`` and the intercept on the raw features.
    Raises ValueError when ``y`` does not hold both classes.
    """
    if len(set(y.tolist())) != 2:
        raise ValueError(
            f"a probe needs both classes in its training data; got labels {sorted(set(y.tolist()))}"
        )
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(scaler.transform(x), y)
    scale = np.where(scaler.scale_ == 0, 1.0, scaler.scale_)
    coef = clf.coef_[0] / scale
    intercept = float(clf.intercept_[0] - np.sum(coef * scaler.mean_))
    return coef, intercept


def binary_metrics(scores: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy at ``threshold`` and AUROC (NaN when only one class is present)."""
    auroc = float(roc_auc_score(y, scores)) if len(set(y.tolist())) == 2 else float("nan")
    return {"accuracy": float(np.mean((scores >= threshold) == (y == 1))), "auroc": auroc, "n": int(len(y))}


class ProbeJudge:
    """A ``TraitScorer`` from a linear probe on the base model's activations (see module doc)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        layer: int,
        coef: Tensor,
        intercept: float,
        meta: dict[str, Any] | None = None,
        *,
        batch_size: int = 16,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.layer = int(layer)
        self.coef = torch.as_tensor(coef, dtype=torch.float32).flatten()
        self.intercept = float(intercept)
        self.meta = dict(meta or {})
        self.batch_size = batch_size

    # -- training --------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        model: Any,
        tokenizer: Any,
        layer: int,
        features: Tensor,
        labels: Any,
        *,
        c: float = 0.01,
        seed: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> ProbeJudge:
        """Fit on ``features [N, d]`` (text-only response means at ``layer``) with labels 1 = trait."""
        x, y = _clean(features, labels)
        coef, intercept = fit_logistic(x, y, c=c, seed=seed)
        judge = cls(model, tokenizer, layer, torch.from_numpy(coef), intercept, meta)
        judge.meta.update(
            {
                "n_train": int(len(y)),
                "c": c,
                "seed": seed,
                "train": binary_metrics(judge.probabilities(torch.from_numpy(x)), y),
            }
        )
        return judge

    def evaluate(self, features: Tensor, labels: Any) -> dict[str, float]:
        """Held-out accuracy and AUROC on ``features`` (stored in ``meta['heldout']``)."""
        x, y = _clean(features, labels)
        metrics = binary_metrics(self.probabilities(torch.from_numpy(x)), y)
        self.meta["heldout"] = metrics
        return metrics

    # -- scoring ---------------------------------------------------------------------------------------
    def probabilities(self, features: Tensor) -> np.ndarray:
        """P(trait) ``[N]`` for features ``[N, d]``: sigmoid(features @ coef + intercept)."""
        logits = torch.as_tensor(features, dtype=torch.float32) @ self.coef + self.intercept
        return torch.sigmoid(logits).numpy()

    def score_features(self, features: Tensor) -> list[float | None]:
        """0-100 scores for precomputed features ``[N, d]`` (None for NaN rows, i.e. empty answers)."""
        features = torch.as_tensor(features, dtype=torch.float32)
        probs = self.probabilities(torch.nan_to_num(features))
        bad = torch.isnan(features).any(dim=1).tolist()
        return [None if b else float(100 * p) for b, p in zip(bad, probs, strict=True)]

    def features(self, questions: list[str], answers: list[str]) -> Tensor:
        """Text-only response means at the probe layer, ``[N, d]`` (NaN rows for empty answers)."""
        prompts = [chat_messages(q) for q in questions]
        means = collect_means(
            self.model,
            self.tokenizer,
            prompts,
            answers,
            variants=("response",),
            layers=[self.layer],
            batch_size=self.batch_size,
        )
        return means["response"][:, 0]

    def score_answers(self, questions: list[str], answers: list[str]) -> list[float | None]:
        """100 x P(trait) per pair, None for an empty answer; ValueError when the lists differ in length."""
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers; they must pair up")
        if not answers:
            return []
        return self.score_features(self.features(questions, answers))

    # -- files -----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` (coef, intercept) and its JSON sidecar atomically; returns the tensors
        file."""
        tensors_path, sidecar = _paths(path)
        with atomic_path(tensors_path) as tmp:
            save_file({"coef": self.coef.contiguous(), "intercept": torch.tensor([self.intercept])}, str(tmp))
        write_json(
            sidecar,
            {
                "format": PROBE_FORMAT,
                "layer": self.layer,
                "reading": "text_only",
                "model_id": model_id(self.model),
                "model_fingerprint": model_fingerprint(self.model),
                **{k: v for k, v in self.meta.items() if k not in ("layer", "format")},
            },
        )
        return tensors_path

    @classmethod
    def load(
        cls, path: str | Path, model: Any, tokenizer: Any, *, allow_transfer: bool = False
    ) -> ProbeJudge:
        """A saved probe on ``model``. Raises FileNotFoundError for a missing file, ValueError for another
        format, other tensors, or (without ``allow_transfer``) a probe trained on another model."""
        tensors_path, sidecar = _paths(path)
        for required in (tensors_path, sidecar):
            if not required.is_file():
                raise FileNotFoundError(f"probe file {required} does not exist")
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if meta.get("format") != PROBE_FORMAT:
            raise ValueError(f"{sidecar}: format {meta.get('format')!r} is not {PROBE_FORMAT!r}")
        tensors = load_file(str(tensors_path))
        if set(tensors) != {"coef", "intercept"}:
            raise ValueError(f"{tensors_path}: expected tensors coef and intercept, got {sorted(tensors)}")
        if not allow_transfer and meta.get("model_fingerprint") != model_fingerprint(model):
            raise ValueError(
                f"{sidecar}: probe was trained on {meta.get('model_id')!r}, not on {model_id(model)!r}"
            )
        return cls(model, tokenizer, meta["layer"], tensors["coef"], float(tensors["intercept"][0]), meta)

    def __repr__(self) -> str:
        return f"ProbeJudge(layer={self.layer}, heldout={self.meta.get('heldout')})"


def _clean(features: Tensor, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    x = torch.as_tensor(features, dtype=torch.float32).numpy()
    y = np.asarray(labels).astype(int)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features must be [N, d] with N = {len(y)} labels, got {tuple(x.shape)}")
    keep = ~np.isnan(x).any(axis=1)
    return x[keep], y[keep]


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return Path(f"{stem}.safetensors"), Path(f"{stem}.json")
