"""Pairs of pos/neg answers: which slots pair up, which the judge confirms, their mean difference, and the
cross-fitted text-only probe that scores them without judging an answer with a probe that saw it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from steerlab.judges.probe import binary_metrics, fit_logistic
from steerlab.persona.extract.config import ExtractConfig


def pair_slots(records: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(pos index, neg index) of each (question, instruction, sample) slot, in order."""
    where = {(r["q"], r["i"], r["s"], r["side"]): n for n, r in enumerate(records)}
    return [(where[(q, i, s, "pos")], where[(q, i, s, "neg")]) for (q, i, s, side) in where if side == "pos"]


def confirmed_pairs(
    pairs: list[tuple[int, int]],
    trait: list[float | None],
    coherence: list[float | None],
    config: ExtractConfig,
) -> tuple[list[bool], dict[str, int]]:
    """Which pairs the judge confirms, plus counts of why the others were dropped."""
    keep, counts = [], {"judge_none": 0, "pos_not_trait": 0, "neg_trait": 0, "incoherent": 0}
    for p, n in pairs:
        t_pos, t_neg, c_pos, c_neg = trait[p], trait[n], coherence[p], coherence[n]
        if t_pos is None or t_neg is None or c_pos is None or c_neg is None:
            counts["judge_none"] += 1
            keep.append(False)
            continue
        reasons = [
            t_pos < config.trait_threshold,
            t_neg >= config.trait_threshold,
            min(c_pos, c_neg) < config.coherence_threshold,
        ]
        for name, bad in zip(("pos_not_trait", "neg_trait", "incoherent"), reasons, strict=True):
            counts[name] += int(bad)
        keep.append(not any(reasons))
    return keep, counts


def mean_diff(acts: Tensor, pairs: list[tuple[int, int]], keep: list[bool]) -> tuple[Tensor, int, int]:
    """mean(pos) - mean(neg) over the kept pairs' answers with a response: ``[L, d]``, n_pos, n_neg.

    ``acts`` is ``[N, L, d]`` (NaN rows for empty answers, which are left out). The difference of means is the
    persona-vector recipe of Chen et al., "Persona Vectors" (arXiv:2507.21509). Raises ``ValueError`` when no
    usable pos or neg answer is left.
    """
    pos = [p for (p, _), k in zip(pairs, keep, strict=True) if k and not torch.isnan(acts[p]).any()]
    neg = [n for (_, n), k in zip(pairs, keep, strict=True) if k and not torch.isnan(acts[n]).any()]
    if not pos or not neg:
        raise ValueError(f"no usable answers left to extract from ({len(pos)} pos, {len(neg)} neg)")
    return acts[pos].mean(0) - acts[neg].mean(0), len(pos), len(neg)


def cross_fit_scores(features: Tensor, labels: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """Probe probabilities for each row from a probe fitted on the *other* half of the groups (questions)."""
    out = np.full(len(labels), np.nan)
    ok = ~torch.isnan(features).any(dim=1).numpy()
    folds = groups % 2
    for fold in (0, 1):
        train, test = ok & (folds != fold), ok & (folds == fold)
        if test.any():
            coef, intercept = fit_logistic(features[train].numpy(), labels[train], seed=seed)
            out[test] = 1 / (1 + np.exp(-(features[test].numpy() @ coef + intercept)))
    return out


def pick_probe_layer(
    acts: Tensor, labels: np.ndarray, groups: np.ndarray, seed: int
) -> tuple[int, list[float]]:
    """The layer whose cross-fitted text-only probe separates the extraction answers best."""
    curve = []
    ok = ~torch.isnan(acts).any(dim=(1, 2)).numpy()
    for layer in range(acts.shape[1]):
        scores = cross_fit_scores(acts[:, layer], labels, groups, seed)
        curve.append(float(binary_metrics(scores[ok], labels[ok])["auroc"]))
    return int(np.nanargmax(curve)), curve
