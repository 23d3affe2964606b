"""GPU memory and time of one grid cell on the real architecture, without its weights or a GPU.

Why measured on the ``meta`` device: a formula for activation memory drifts from the code it describes
(LoRA casts inputs to float32, the loss upcasts logits, GQA shrinks k/v). Here the real architecture is
built from its ``config.json`` on the meta device (shapes, no storage), the cell's LoRA is attached with
peft, and one forward + loss at the configured batch is run under ``saved_tensors_hooks``, summing the
bytes autograd keeps for backward (deduplicated by storage, weights excluded). Attention is swapped for a
stand-in that saves what a fused kernel saves (q, k, v, output, log-sum-exp; no T x T matrix), as the
SDPA/flash kernels do on a GPU. The KL and LDIFS arms' extra memory is measured the same way, by running
their own loss functions (`steerlab.train.arms.kl.kl_per_position`, `...ldifs.feature_distance`) on meta
tensors of the right shapes.

What the numbers are (all per device, bytes; the table prints GiB):

* weights: every parameter at the config's dtype (bf16: 2 bytes);
* trainable: LoRA parameters (float32, as peft keeps adapters on a bf16 model) or all parameters (full);
* gradients + optimizer: 4 bytes + AdamW's two float32 moments per trainable parameter (8-bit AdamW: 2);
* activations: measured as above at ``batch_size x max_length`` (the longest batch the collator can
  build); with gradient checkpointing: each block's input, plus one block's saved tensors (recomputed
  during backward), plus everything outside the blocks;
* loss transient: the bf16 logits and the float32 logits gradient at the start of backward;
* arm extra: the KL arm's float32 distributions and bf16 reference logits, LDIFS's reference features;
* CUDA context and allocator slack: a flat 1.5 GiB (an assumption).

Time: training FLOPs per token are 2N forward + 2N backward through the frozen weights (4N; full
fine-tuning 6N), + 2N when checkpointing recomputes the forward, + 2N for the reference forward of kl/ldifs,
plus causal attention; divided by ``tflops x mfu`` of the GPU spec. Tokens come from the cell's real data
(characters / ``chars_per_token``), padded to the longest example of each seeded micro-batch. Evaluation:
sampling is bandwidth-bound — one read of the weights per decode step of a batch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from steerlab.experiment.settings import GpuSpec
from steerlab.train.config import ExperimentConfig

GIB = 2**30
CONTEXT_BYTES = int(1.5 * GIB)  # CUDA context + allocator slack: an assumption, not a measurement
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_ATTENTION = "steerlab_meta_fused"


@dataclass
class MemoryEstimate:
    """Bytes on one GPU at the peak of a training step."""

    weights: int
    adapter: int  # the trainable LoRA weights themselves (float32); 0 under full fine-tuning
    trainable_params: int
    gradients: int
    optimizer: int
    activations: int
    loss_transient: int
    arm_extra: int
    context: int = CONTEXT_BYTES

    @property
    def total(self) -> int:
        return (
            self.weights
            + self.adapter
            + self.gradients
            + self.optimizer
            + self.activations
            + self.loss_transient
            + self.arm_extra
            + self.context
        )


@dataclass
class TimeEstimate:
    steps: int
    tokens_per_step: int
    train_s: float
    scoring_s: float  # the perplexity-gap arm's scoring pass over its general pool (before training)
    eval_s: float  # sampling the evaluation answers (judge calls not counted)


# ------------------------------------------------------------------------------------------ meta model


class _FusedAttention(torch.autograd.Function):
    """Keeps what a fused attention kernel keeps for backward: q, k, v, output and the log-sum-exp."""

    @staticmethod
    def forward(ctx, query, key, value):  # query [B, H, T, D], key/value [B, Hkv, T, D]
        out = torch.empty_like(query)
        lse = query.new_empty(query.shape[:3], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # never called: the meta model only measures the forward
        raise NotImplementedError


def _fused_attention(module, query, key, value, attention_mask, **kwargs):
    return _FusedAttention.apply(query, key, value).transpose(1, 2), None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(_ATTENTION, _fused_attention)


def meta_model(architecture: dict[str, Any], dtype: str) -> Any:
    """The real architecture on the meta device: every parameter shaped, none stored."""
    from transformers import AutoConfig, AutoModelForCausalLM

    _register_attention()
    spec = dict(architecture)
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    config._attn_implementation = _ATTENTION
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    return model


def attach_lora(model: Any, finetune: dict[str, Any]) -> Any:
    """The cell's adapter (``FinetuneConfig`` fields) on the meta model via peft: trainable parameters
    counted, not computed; under full fine-tuning every parameter trains."""
    if finetune["method"] != "lora":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=finetune["r"],
        lora_alpha=finetune["alpha"],
        lora_dropout=finetune["dropout"],
        target_modules=finetune["target_modules"],
        use_rslora=finetune["rslora"],
        task_type="CAUSAL_LM",
    )
    with torch.device("meta"):
        return get_peft_model(model, lora)


class _SavedBytes:
    """Bytes autograd saves for backward, per decoder block and outside them; weights excluded."""

    def __init__(self, model: Any) -> None:
        self.params = {id(p) for p in model.parameters()}
        self.kept: list[torch.Tensor] = []  # keeps ids unique while counting
        self.seen: set[int] = set()
        self.bucket = "outside"
        self.bytes: dict[str, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        base = tensor._base if tensor._base is not None else tensor
        if id(base) not in self.params and id(tensor) not in self.params and id(base) not in self.seen:
            self.seen.add(id(base))
            self.kept.append(base)
            self.bytes[self.bucket] = self.bytes.get(self.bucket, 0) + base.numel() * base.element_size()
        return tensor


def _blocks(model: Any) -> Sequence[Any]:
    from steerlab.models.architectures import decoder_blocks

    return decoder_blocks(model)


def measure_activations(model: Any, batch: int, length: int, checkpointing: bool) -> tuple[int, int]:
    """(saved activation bytes, hidden size) of one training forward + loss at ``batch x length`` tokens."""
    counter = _SavedBytes(model)
    handles = []
    for index, block in enumerate(_blocks(model)):

        def enter(module, args, kwargs, index=index):
            counter.bucket = f"block{index}"

        def leave(module, args, kwargs, output):
            counter.bucket = "outside"

        handles.append(block.register_forward_pre_hook(enter, with_kwargs=True))
        handles.append(block.register_forward_hook(leave, with_kwargs=True))
    ids = torch.zeros(batch, length, dtype=torch.long, device="meta")
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
            model(input_ids=ids, labels=ids)
    finally:
        for handle in handles:
            handle.remove()
    config = getattr(model, "config", None) or model.get_base_model().config
    hidden = int(config.hidden_size)
    blocks = {k: v for k, v in counter.bytes.items() if k.startswith("block")}
    outside = counter.bytes.get("outside", 0)
    if not checkpointing:
        return outside + sum(blocks.values()), hidden
    block_inputs = len(blocks) * batch * length * hidden * _element_size(model)
    return outside + block_inputs + max(blocks.values(), default=0), hidden


def _element_size(model: Any) -> int:
    return next(p for p in model.parameters() if not p.requires_grad).element_size()


def _saved_by(fn: Any, *args: torch.Tensor) -> int:
    counter = _SavedBytes(torch.nn.Module())
    for arg in args:  # the inputs are counted elsewhere (the model's own activations)
        counter.seen.add(id(arg))
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
        fn(*args)
    return sum(counter.bytes.values())


def arm_extra_bytes(
    cfg: ExperimentConfig, batch: int, length: int, vocab: int, hidden: int, dtype: str
) -> int:
    """KL: the bf16 reference logits + what `kl_per_position` saves; LDIFS: reference features + what
    `feature_distance` saves, per chosen block."""
    size = _DTYPE_BYTES[dtype]
    extra = 0
    if cfg.arms.kl is not None:
        from steerlab.train.arms.kl import kl_per_position

        logp = torch.empty(  # the policy's next-token log-probs, [B, T-1, V]
            batch, length - 1, vocab, device="meta", dtype=torch.float32, requires_grad=True
        )
        ref = torch.empty(batch, length, vocab, device="meta", dtype=getattr(torch, dtype))
        extra += ref.numel() * size + _saved_by(kl_per_position, logp, ref)
    if cfg.arms.ldifs is not None:
        from steerlab.train.arms.ldifs import feature_distance

        n_blocks = len(cfg.arms.ldifs.layers) if cfg.arms.ldifs.layers else cfg.arms.ldifs.n_blocks
        hidden_t = torch.empty(
            batch, length, hidden, device="meta", dtype=getattr(torch, dtype), requires_grad=True
        )
        ref = torch.empty(batch, length, hidden, device="meta", dtype=getattr(torch, dtype))
        mask = torch.ones(batch, length, device="meta", dtype=torch.bool)
        per_block = ref.numel() * size + _saved_by(lambda h, r: feature_distance(h, r, mask), hidden_t, ref)
        extra += n_blocks * per_block
    return extra


@lru_cache(maxsize=8)
def _measured(
    arch_key: str, dtype: str, finetune: str, batch: int, length: int, ckpt: bool
) -> tuple[int, ...]:
    """(parameters, trainable, activation bytes, hidden) for one shape; cached: cells share shapes."""
    import json

    model = meta_model(json.loads(arch_key), dtype)
    params = sum(p.numel() for p in model.parameters())
    model = attach_lora(model, json.loads(finetune))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    activations, hidden = measure_activations(model, batch, length, ckpt)
    return params, trainable, activations, hidden


def estimate_memory(architecture: dict[str, Any], cfg: ExperimentConfig) -> tuple[MemoryEstimate, int]:
    """Peak GPU bytes of one training step of ``cfg`` on ``architecture``; also the base parameter count."""
    import dataclasses
    import json

    dtype = cfg.model.dtype
    batch, length = cfg.train.batch_size, cfg.data.max_length
    params, trainable, activations, hidden = _measured(
        json.dumps(architecture, sort_keys=True),
        dtype,
        json.dumps(dataclasses.asdict(cfg.finetune), sort_keys=True),
        batch,
        length,
        cfg.train.gradient_checkpointing,
    )
    vocab = int(architecture["vocab_size"])
    size = _DTYPE_BYTES[dtype]
    moments = 2 if "8bit" in cfg.train.optimizer else 8
    adapter = cfg.finetune.method == "lora"
    estimate = MemoryEstimate(
        weights=params * size,
        adapter=4 * trainable if adapter else 0,  # full fine-tuning: the weights are the parameters
        trainable_params=trainable,
        gradients=trainable * (4 if adapter else size),
        optimizer=trainable * moments,
        activations=activations,
        loss_transient=batch * length * vocab * (size + 4),
        arm_extra=arm_extra_bytes(cfg, batch, length, vocab, hidden, dtype),
    )
    return estimate, params


# ------------------------------------------------------------------------------------------ time


def padded_tokens_per_step(lengths: Sequence[int], batch: int, accum: int, seed: int) -> int:
    """Mean tokens one optimizer step processes: seeded micro-batches, each padded to its longest example."""
    order = list(lengths)
    random.Random(seed).shuffle(order)
    micro = [order[i : i + batch] for i in range(0, len(order), batch)]
    if not micro:
        return 0
    per_micro = sum(len(m) * max(m) for m in micro) / len(micro)
    return int(per_micro * accum)


def estimate_time(
    *,
    params: int,
    architecture: dict[str, Any],
    cfg: ExperimentConfig,
    lengths: Sequence[int],
    n_train: int,
    pool_lengths: Sequence[int],
    eval_answers: Sequence[tuple[int, int]],
    eval_batch: int,
    gpu: GpuSpec,
) -> TimeEstimate:
    """Seconds of training, perplexity-gap scoring and evaluation sampling on ``gpu``.

    ``lengths``: token counts of the training stream's examples; ``n_train``: examples per epoch;
    ``pool_lengths``: the general pool the perplexity-gap arm scores (empty otherwise); ``eval_answers``:
    (answers, max_new_tokens) per evaluation part."""
    t = cfg.train
    per_step = t.batch_size * t.grad_accum
    steps = t.max_steps if t.max_steps > 0 else math.ceil(t.epochs * n_train / per_step)
    tokens = padded_tokens_per_step(lengths, t.batch_size, t.grad_accum, cfg.seed)
    factor = 4 if cfg.finetune.method == "lora" else 6
    if t.gradient_checkpointing:
        factor += 2
    if cfg.arms.kl is not None or cfg.arms.ldifs is not None:
        factor += 2  # the reference forward (adapter disabled, no grad)
    layers = int(architecture["num_hidden_layers"])
    heads = int(architecture["num_attention_heads"])
    head_dim = int(architecture.get("head_dim") or architecture["hidden_size"] // heads)
    mean_len = sum(lengths) / max(1, len(lengths))
    attention = 6 * layers * heads * head_dim * mean_len  # causal QK^T and AV, forward + backward, per token
    throughput = gpu.tflops * 1e12 * gpu.mfu
    train_s = steps * tokens * (factor * params + attention) / throughput
    scoring_s = 0.0
    if pool_lengths and cfg.arms.interleave is not None and cfg.arms.interleave.selection == "perplexity_gap":
        models = 1 + len(cfg.arms.interleave.misaligned)
        scoring_s = models * sum(pool_lengths) * 2 * params / throughput
    weight_bytes = params * _DTYPE_BYTES[cfg.model.dtype]
    decode_step = weight_bytes / (gpu.bandwidth_tbs * 1e12)
    eval_s = sum(
        math.ceil(n / max(1, eval_batch)) * new_tokens * decode_step for n, new_tokens in eval_answers
    )
    return TimeEstimate(steps, tokens, train_s, scoring_s, eval_s)
