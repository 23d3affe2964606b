"""``kl``: loss += lambda * KL(p_theta || p_ref), per next-token distribution, averaged over chosen tokens.

``tokens='assistant'`` (default) averages over the positions that predict an assistant token (the loss
tokens of chat SFT), ``'all'`` over every position that predicts a real token. The reference is the model
before fine-tuning: the same model with its LoRA adapter disabled (no second copy), or a frozen copy under
full fine-tuning; the trainer runs that forward once per micro-batch under no_grad (see `Forward`).
With LoRA's zero-initialised B matrices the two forwards are bit-identical at step 0, so KL is exactly 0.

**Cached reference** (``cache: true``): one pass before training stores, per chosen position, the
reference's ``top_k`` log-probabilities, their token ids and the log of the remaining mass
``log q_rest = logsumexp(log q over the other tokens)`` (computed exactly from the full distribution, not
as ``1 - sum``). The loss is then the KL between the two distributions coarse-grained to k + 1 outcomes —
the k cached tokens and one "rest" bucket holding all other tokens:

    KL_k = sum_{v in top-k} p(v) (log p(v) - log q(v)) + p_rest (log p_rest - log q_rest)

with ``p_rest = 1 - sum_k p(v)`` the policy's mass outside the k tokens (it keeps its gradient). This is offline (cached-teacher) top-k logit distillation with the leftover probability kept
as one extra outcome instead of being dropped and the top-k renormalised: Anshumann et al. 2025 ("Sparse
Logit Sampling: Accelerating Knowledge Distillation in LLMs", ACL 2025) prove that plain cached top-k
gives a biased estimate of the teacher distribution, and Dasgupta, Cohn & Baldwin 2026 ("Don't Ignore the
Tail", arXiv:2602.20816) treat the teacher's top-K and its tail as separate parts of the divergence. The
grouping works for either KL direction (here the policy's KL to the reference). Properties: KL_k = KL
exactly when k covers the vocabulary (the rest bucket is empty), and 0 <= KL_k <= KL otherwise (grouping
outcomes never increases a KL divergence: the log-sum inequality). ``top_k: null`` keeps the
whole vocabulary. The default k was chosen by measuring the gradient's cosine to the live one
(``benchmarks/bench_arms.py``, README "Benchmarks").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steerlab.hooks import Captures
from steerlab.train.arms.base import Arm, BuildContext, Forward, ReferenceArmConfig
from steerlab.train.arms.registry import register_arm
from steerlab.train.schema import ConfigError

DEFAULT_TOP_K = 1024  # measured: gradient cosine to live >= 0.99 (README, Benchmarks)


@dataclass
class KLArmConfig(ReferenceArmConfig):
    """``kl:`` settings: ``weight`` (lambda), the positions it covers, and the cached top-k size."""

    weight: float = 0.1  # lambda
    tokens: Literal["assistant", "all"] = "assistant"
    top_k: int | None = DEFAULT_TOP_K  # cached log-probs per position; null: the whole vocabulary

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k: must be >= 1 (or null for the whole vocabulary), got {self.top_k}")


def next_token_mask(batch: dict[str, Tensor], tokens: str) -> Tensor:
    """[B, T-1] positions whose next token is an assistant token (``assistant``) or any real token (``all``)."""
    key = "assistant_mask" if tokens == "assistant" else "attention_mask"
    return batch[key][:, 1:].bool()


def kl_per_position(logp: Tensor, ref_logits: Tensor) -> Tensor:
    """[B, T-1] KL(p || q) of the next-token distributions, float32.

    ``logp`` is the policy's [B, T-1, V] next-token log-softmax (`Forward.next_token_logprobs`),
    ``ref_logits`` the reference's [B, T, V] logits.
    """
    logq = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def top_k_record(logq: Tensor, k: int) -> dict[str, Tensor]:
    """The cached form of reference log-probs ``logq`` [N, V]: top-k values and ids, and the rest's log-mass."""
    values, ids = logq.topk(min(k, logq.shape[-1]), dim=-1)
    if ids.shape[-1] < logq.shape[-1]:
        rest = logq.scatter(-1, ids, float("-inf")).logsumexp(-1)
    else:
        rest = torch.full(logq.shape[:-1], float("-inf"), dtype=logq.dtype, device=logq.device)
    id_dtype = torch.uint16 if logq.shape[-1] <= 2**16 else torch.int32  # 2 bytes a token id where they fit
    return {"logprobs": values.float().contiguous(), "ids": ids.to(id_dtype), "log_rest": rest.float()}


def top_k_kl(logp_k: Tensor, logq: Tensor, log_rest: Tensor) -> Tensor:
    """[N] KL over the k cached tokens + the rest bucket (module docstring).

    ``logp_k``: the policy's log-probs at the cached ids [N, k]; ``logq`` the reference's there [N, k];
    ``log_rest`` the reference's log-mass elsewhere [N] (-inf when the k tokens are the whole vocabulary:
    no bucket). The policy's rest mass is 1 - sum of its k probabilities (summed in float64, floored at
    1e-30): [N, k] work only, no second pass over the vocabulary; its rounding error (~1e-7) only matters
    where the bucket's own contribution is that small.
    """
    p_k = logp_k.exp()
    kl = (p_k * (logp_k - logq)).sum(-1)
    has_rest = torch.isfinite(log_rest)
    if not bool(has_rest.any()):
        return kl
    p_rest = (1.0 - p_k.double().sum(-1)).clamp_min(1e-30).to(kl.dtype)
    q_rest = torch.where(has_rest, log_rest, torch.zeros_like(log_rest))  # no inf, so no 0 * inf gradient
    return kl + has_rest.to(kl.dtype) * p_rest * (p_rest.log() - q_rest)


@register_arm
class KLArm(Arm):
    """``+ lambda KL(p_theta || p_ref)`` of the next-token distributions at the chosen positions, toward the
    model before training (Kaczér et al. 2025, "In-Training Defenses against Emergent Misalignment in Language Models", arXiv:2508.06249)."""

    name = "kl"
    order = 40
    label_order = 20
    config_class = KLArmConfig
    loss_keys = ("kl",)
    needs_reference = True
    cacheable = True

    def __init__(self, weight: float, tokens: str = "assistant", top_k: int | None = DEFAULT_TOP_K) -> None:
        super().__init__()
        self.loss_weights = {"kl": float(weight)}
        self.tokens = tokens
        self.top_k = top_k

    @classmethod
    def from_config(cls, cfg: KLArmConfig, ctx: BuildContext) -> KLArm:
        """The arm with the config's weight, positions and top-k."""
        return cls(cfg.weight, cfg.tokens, cfg.top_k)

    def extra_loss(self, model: nn.Module, batch: dict[str, Tensor], fwd: Forward) -> dict[str, Tensor]:
        """``{"kl": sum over chosen positions of KL / global count}``; RuntimeError without a reference."""
        mask = next_token_mask(batch, self.tokens)
        if self.cache:
            if fwd.ref_cached is None or self.name not in fwd.ref_cached:
                raise RuntimeError("the kl arm reads the reference cache, but the trainer passed none")
            records = fwd.ref_cached[self.name]
            device = fwd.logits.device
            logq, ids, rest = (
                torch.cat([r[key] for r in records]).to(device) for key in ("logprobs", "ids", "log_rest")
            )
            rows, cols = mask.nonzero(as_tuple=True)
            if rows.shape[0] != logq.shape[0]:
                raise RuntimeError(
                    f"kl cache: the batch has {rows.shape[0]} positions, the cache {logq.shape[0]}"
                )
            # gathered straight from [B, T-1, V]: no [N, V] copy of the chosen positions
            logp_k = fwd.next_token_logprobs()[rows[:, None], cols[:, None], ids.long()]
            total = top_k_kl(logp_k, logq, rest).sum()
        else:
            if fwd.ref_logits is None:
                raise RuntimeError("the kl arm needs the reference forward, but the trainer ran none")
            total = (kl_per_position(fwd.next_token_logprobs(), fwd.ref_logits) * mask).sum()
        return {"kl": total / fwd.counts[self.tokens]}

    def cache_record(
        self, batch: dict[str, Tensor], ref_logits: Tensor, ref_captures: Captures
    ) -> list[dict[str, Tensor]]:
        """Per example: top-k reference log-probs [n, k] (float32), their ids [n, k] and the rest's log-mass [n].

        Stored size per chosen position: 6 k + 4 bytes (token ids as uint16 when the vocabulary allows).
        """
        mask = next_token_mask(batch, self.tokens)
        logq = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)
        k = self.top_k or logq.shape[-1]
        return [
            {key: t.cpu() for key, t in top_k_record(logq[b][mask[b]], k).items()} for b in range(len(mask))
        ]

    def cache_settings(self) -> dict[str, Any]:
        """The positions and top-k the cache was built with."""
        return {"tokens": self.tokens, "top_k": self.top_k}

    def describe(self) -> dict[str, Any]:
        """Name, weight, positions (and cache settings when cached)."""
        out = {"name": self.name, "weight": self.loss_weights["kl"], "tokens": self.tokens}
        return out | ({"cache": True, "top_k": self.top_k} if self.cache else {})
