"""Seeded percentile-bootstrap confidence intervals for rates and means.

Why a cluster bootstrap: the general evaluation draws several answers to each question, and answers to the
same question are correlated, so resampling single answers would make the interval too narrow. When
``groups`` is given, whole groups (questions) are resampled and the statistic is the pooled ratio
``sum(values in the drawn groups) / count(values in the drawn groups)``; without ``groups`` every value is
its own group, which is the ordinary bootstrap of a mean (a rate is the mean of 0/1 flags). The resampling
is ``scipy.stats.bootstrap`` (percentile method) over the paired per-group ``(sum, count)``, which is exactly
the cluster bootstrap of the pooled ratio. This is steerlab's one bootstrap: the steering sweep's trait-score
interval comes from here too.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack

import numpy as np
from scipy import stats

DEFAULT_N_BOOT = 2000
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class Estimate:
    """A point estimate, its ``[lo, hi]`` interval and the number of values behind it (``value`` None when n=0)."""

    value: float | None
    ci: tuple[float, float] | None
    n: int

    def as_dict(self, key: str) -> dict[str, object]:
        """``{key: value, key_ci: [lo, hi], key_n: n}`` for eval.json."""
        return {key: self.value, f"{key}_ci": list(self.ci) if self.ci else None, f"{key}_n": self.n}


def _check_options(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _pooled_ratio(sums: np.ndarray, counts: np.ndarray, axis: int = -1) -> np.ndarray:
    return sums.sum(axis=axis) / counts.sum(axis=axis)


def bootstrap_mean(
    values: Sequence[float],
    *,
    groups: Sequence[Hashable] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> Estimate:
    """Mean of ``values`` with a ``1 - alpha`` percentile-bootstrap interval (cluster bootstrap over ``groups``).

    ``values``: ``[N]`` finite numbers; ``groups``: ``N`` hashable labels (e.g. question ids) or None.
    ``n_boot`` resamples (``>= 1``), interval level ``1 - alpha``. Same values, groups and seed give the same
    interval. An empty input gives ``Estimate(None, None, 0)``. Raises ``ValueError`` for a non-finite value
    (naming its index), groups that do not pair up with the values, ``n_boot < 1`` or ``alpha`` outside (0, 1).
    Source: Efron & Tibshirani, *An Introduction to the Bootstrap* (1993), percentile interval; the cluster
    resampling follows Field & Welsh, "Bootstrapping clustered data", JRSS-B 69 (2007).
    """
    _check_options(n_boot, alpha)
    x = np.asarray(list(values), dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise ValueError(f"values[{bad}] is {x[bad]}: bootstrap needs finite numbers")
    if x.size == 0:
        return Estimate(None, None, 0)
    if groups is None:
        sums, counts = x, np.ones_like(x)
    else:
        groups = list(groups)
        if len(groups) != x.size:
            raise ValueError(f"{x.size} values but {len(groups)} group labels; they must pair up")
        index: dict[Hashable, int] = {}
        codes = np.array([index.setdefault(g, len(index)) for g in groups])
        sums = np.bincount(codes, weights=x, minlength=len(index))
        counts = np.bincount(codes, minlength=len(index)).astype(np.float64)
    return _ratio_estimate(sums, counts, float(x.mean()), int(x.size), n_boot, alpha, seed)


def _ratio_estimate(
    tops: np.ndarray, bottoms: np.ndarray, point: float, n: int, n_boot: int, alpha: float, seed: int
) -> Estimate:
    """``point`` with the percentile interval of ``sum(tops) / sum(bottoms)`` over paired resamples."""
    if tops.size == 1:  # one pair: every resample is the same; scipy needs two
        lo = hi = float(tops[0] / bottoms[0])
    else:
        result = stats.bootstrap(
            (tops, bottoms),
            _pooled_ratio,
            paired=True,
            vectorized=True,
            n_resamples=n_boot,
            confidence_level=1 - alpha,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        lo, hi = float(result.confidence_interval.low), float(result.confidence_interval.high)
    # The quantiles of a ratio can miss the point estimate by rounding only; keep lo <= point <= hi.
    return Estimate(point, (float(min(lo, point)), float(max(hi, point))), n)


def bootstrap_ratio_of_means(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> Estimate:
    """``mean(numerators) / mean(denominators)`` over paired items (e.g. questions), with a ``1 - alpha``
    percentile-bootstrap interval that resamples the pairs together.

    ``numerators``, ``denominators``: ``[N]`` finite numbers, item ``i`` of each from the same item. Empty
    input gives ``Estimate(None, None, 0)``. Raises ``ValueError`` when the lengths differ, a value is not
    finite, ``mean(denominators)`` is 0, ``n_boot < 1`` or ``alpha`` is outside (0, 1). The interval is only meaningful while resampled denominators stay
    away from 0 (a ratio's bootstrap distribution has no finite spread otherwise): use it where the
    denominator's own interval excludes 0. Source: Efron & Tibshirani (1993), ch. 10 and 13 (ratio
    estimates, percentile interval).
    """
    _check_options(n_boot, alpha)
    top = np.asarray(list(numerators), dtype=np.float64)
    bottom = np.asarray(list(denominators), dtype=np.float64)
    if top.shape != bottom.shape or top.ndim != 1:
        raise ValueError(f"{top.shape} numerators and {bottom.shape} denominators: they must pair up")
    for name, x in (("numerators", top), ("denominators", bottom)):
        if not np.all(np.isfinite(x)):
            bad = int(np.flatnonzero(~np.isfinite(x))[0])
            raise ValueError(f"{name}[{bad}] is {x[bad]}: bootstrap needs finite numbers")
    if top.size == 0:
        return Estimate(None, None, 0)
    if bottom.sum() == 0:
        raise ValueError("mean of the denominators is 0: the ratio is undefined")
    return _ratio_estimate(top, bottom, float(top.sum() / bottom.sum()), int(top.size), n_boot, alpha, seed)


class BootstrapOptions(TypedDict, total=False):
    """The keyword options of `bootstrap_mean` (defaults there), typed once for its wrappers and callers."""

    groups: Sequence[Hashable] | None
    n_boot: int
    alpha: float
    seed: int


def bootstrap_rate(flags: Sequence[bool], **options: Unpack[BootstrapOptions]) -> Estimate:
    """Fraction of true ``flags`` with a bootstrap interval: `bootstrap_mean` of the 0/1 flags (same options,
    same errors)."""
    return bootstrap_mean([1.0 if f else 0.0 for f in flags], **options)


def finite(values: Sequence[float | None]) -> list[float]:
    """The values that are real numbers (judges return None for "could not score")."""
    return [float(v) for v in values if v is not None and math.isfinite(v)]
