"""``kl``: loss += lambda * KL(p_theta || p_ref), per next-token distribution, averaged over chosen tokens.

``tokens='assistant'`` (default) averages over the positions that predict an assistant token (the loss
tokens of chat SFT), ``'all'`` over every position that predicts a real token. The reference is the model
before fine-tuning: the same model with its LoRA adapter disabled (no second copy), or a frozen copy under
full fine-tuning; the trainer runs that forward once per micro-batch under no_grad (see `Forward`).
With LoRA's zero-initialised B matrices the two forwards are bit-identical at step 0, so KL is exactly 0.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from steerlab.train.arms.base import Arm, Forward


def next_token_mask(batch: dict[str, Tensor], tokens: str) -> Tensor:
    """[B, T-1] positions whose next token is an assistant token (``assistant``) or any real token (``all``)."""
    key = "assistant_mask" if tokens == "assistant" else "attention_mask"
    return batch[key][:, 1:].to(bool)


def kl_per_position(logits: Tensor, ref_logits: Tensor) -> Tensor:
    """[B, T-1] KL(p || q) of the next-token distributions, in float32."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    logq = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


class KLArm(Arm):
    name = "kl"
    needs_reference = True

    def __init__(self, weight: float, tokens: str = "assistant") -> None:
        super().__init__()
        self.loss_weights = {"kl": float(weight)}
        self.tokens = tokens

    def extra_loss(self, model: nn.Module, batch: dict[str, Tensor], fwd: Forward) -> dict[str, Tensor]:
        if fwd.ref_logits is None:
            raise RuntimeError("the kl arm needs the reference forward, but the trainer ran none")
        mask = next_token_mask(batch, self.tokens)
        kl = kl_per_position(fwd.logits, fwd.ref_logits)
        return {"kl": (kl * mask).sum() / fwd.counts[self.tokens]}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.loss_weights["kl"], "tokens": self.tokens}
