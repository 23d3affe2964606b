"""The TransformerLens 4 backend: the same ops on the ``blocks.{l}.hook_resid_post`` hook points of a bridge.

``TransformerBridge`` wraps a transformers model by *replacing its submodules* with bridge components and
switching it to eager attention. So `bridge_for` builds the bridge around a deep copy by default: the
caller's model keeps its own modules (and the transformers backend keeps measuring plain transformers),
at the price of a snapshot — the bridge does not see later weight updates. Build it once per model.

We use ``build_bridge_from_module`` (what ``boot_transformers(hf_model=...)`` does after loading) with the
architecture read from ``model.config``: tiny config-built models have no hub name, and ``boot``'s
tokenizer set-up reloads any tokenizer without ``add_bos_token`` from the hub by its name. The bridge
therefore gets no tokenizer; this backend takes token ids, never text.

``hook_resid_post`` is the hook on the original block's output tensor (``BlockBridge.hook_out``), i.e.
exactly the residual after block ``l`` — transformers' ``hidden_states[l + 1]`` for every block but the
last, whose ``hidden_states`` entry has the final norm applied.
"""

from __future__ import annotations

import copy as copy_module
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from steerlab.hooks.ops import Captures, Op
from steerlab.hooks.program import HookProgram
from steerlab.hooks.scopes import CallInfo
from steerlab.models.architectures import unwrap


def hook_name(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def bridge_for(model: nn.Module, tokenizer: object | None = None, *, copy: bool = True):
    """A `TransformerBridge` over ``model`` (a deep copy unless ``copy=False``); build it once per model.

    ``tokenizer`` is accepted for symmetry with the other backends and kept as ``bridge.hf_tokenizer``; it
    is not handed to TransformerLens (whose set-up would reload it from the hub).
    """
    from transformer_lens.model_bridge.sources import build_bridge_from_module
    from transformer_lens.model_bridge.sources._hf_format import determine_architecture_from_hf_config

    base = unwrap(model)
    if base is not model:
        raise ValueError(
            "bridge_for: pass the plain transformers model, not a PEFT wrapper (TransformerBridge cannot "
            "wrap adapters); merge the adapter first or use the 'hf' backend"
        )
    try:
        architecture = determine_architecture_from_hf_config(base.config)
    except ValueError as error:
        raise ValueError(
            f"bridge_for: TransformerLens has no adapter for model_type {base.config.model_type!r} "
            f"({type(base).__name__}): {error}"
        ) from error
    target = copy_module.deepcopy(base) if copy else base
    name = getattr(base.config, "name_or_path", None) or type(base).__name__
    bridge = build_bridge_from_module(
        target, architecture, hf_config=copy_module.deepcopy(target.config), model_name=str(name)
    )
    bridge.hf_tokenizer = tokenizer
    return bridge


class BridgeHookSession:
    """A live set of hook functions on one bridge; read ``captures`` after the forward passes.

    The bridge's hook functions see only the activation, so the attention mask of the inputs is given to
    the session (``attention_mask``, ``[B, past + T]``; ``None`` = no padding). A mask wider than the call
    means the first positions are in the KV cache.
    """

    def __init__(self, program: HookProgram, attention_mask: Tensor | None):
        self.program = program
        self._info_key: tuple[int, int] | None = None
        self._info: CallInfo | None = None
        self.attention_mask = attention_mask

    @property
    def captures(self) -> Captures:
        return self.program.captures

    @property
    def attention_mask(self) -> Tensor | None:
        return self._attention_mask

    @attention_mask.setter
    def attention_mask(self, mask: Tensor | None) -> None:
        """Set the mask of the next forward call (e.g. one column longer per cached decoding step)."""
        self._attention_mask = mask
        self._info_key, self._info = None, None

    def new_sequence(self, attention_mask: Tensor | None = None, response_mask: Tensor | None = None) -> None:
        """Start a new input (new padding, new prompt) within the same hooks."""
        self.program.new_sequence(response_mask)
        self.attention_mask = attention_mask

    def _call_info(self, hidden: Tensor) -> CallInfo:
        batch, seq_len = int(hidden.shape[0]), int(hidden.shape[1])
        if self._info_key == (batch, seq_len) and self._info is not None:
            return self._info  # every hooked block of one forward call shares it
        mask = self.attention_mask
        past_len = 0
        if mask is not None:
            if mask.dim() != 2 or mask.shape[0] != batch or mask.shape[1] < seq_len:
                raise ValueError(
                    f"hooked_bridge: attention_mask has shape {tuple(mask.shape)} but the forward call has "
                    f"batch {batch} and {seq_len} positions; pass the mask of the inputs you run "
                    "(session.new_sequence(attention_mask=...) for new inputs)"
                )
            past_len = int(mask.shape[1]) - seq_len
        self._info = self.program.call_info(batch, seq_len, past_len, mask)
        self._info_key = (batch, seq_len)
        return self._info

    def hook_fn(self, layer: int):
        def hook(activation: Tensor, hook: object) -> Tensor:
            return self.program.run_layer(layer, activation, self._call_info(activation))

        return hook


@contextmanager
def hooked_bridge(
    bridge,
    ops: Iterable[Op],
    *,
    attention_mask: Tensor | None = None,
    response_mask: Tensor | None = None,
) -> Iterator[BridgeHookSession]:
    """Run ``ops`` on ``bridge`` for the duration of the ``with`` block; hooks are removed however it exits.

    >>> with hooked_bridge(bridge, [Add(3, vector=v, alpha=4.0)], attention_mask=mask) as session:
    ...     logits = bridge(input_ids, attention_mask=mask)
    """
    program = HookProgram(
        ops, n_layers=int(bridge.cfg.n_layers), d_model=int(bridge.cfg.d_model), response_mask=response_mask
    )
    session = BridgeHookSession(program, attention_mask)
    fwd_hooks = [(hook_name(layer), session.hook_fn(layer)) for layer in program.layers]
    with bridge.hooks(fwd_hooks=fwd_hooks, reset_hooks_end=True):
        yield session


def _check_cache_filled(cache: object, expected: int) -> None:
    """TransformerLens 4.3's attention bridge reads ``past_key_values`` from the block's kwargs, which
    transformers 5.2x renamed to ``cache``: the cache then stays empty and every cached step would attend to
    itself alone. Refuse rather than decode garbage."""
    filled = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else -1
    if filled != expected:
        raise RuntimeError(
            f"TransformerBridge's KV cache holds {filled} positions after a {expected}-token prompt: this "
            "transformer-lens / transformers pair does not fill the cache (the attention bridge looks for "
            "'past_key_values', transformers now passes 'cache'); generate with use_cache=False"
        )


def greedy_generate(
    bridge,
    ops: Iterable[Op],
    input_ids: Tensor,
    *,
    attention_mask: Tensor | None = None,
    max_new_tokens: int = 16,
    use_cache: bool = True,
) -> tuple[Tensor, Captures]:
    """Greedy decoding through the bridge's forward, with or without its KV cache; (sequences, captures).

    With ``use_cache=True`` the cache is checked after the prompt and a cache the bridge failed to fill
    raises (see `_check_cache_filled`).

    Positions follow the attention mask (left padding), as in transformers' ``generate``; no early stop
    on EOS, so every row gets ``max_new_tokens`` new tokens.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    sequences, cache = input_ids, None
    with hooked_bridge(bridge, ops, attention_mask=mask) as session:
        for _ in range(max_new_tokens):
            session.attention_mask = mask
            positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
            if use_cache and cache is not None:
                logits, cache = bridge(
                    sequences[:, -1:],
                    attention_mask=mask,
                    position_ids=positions[:, -1:],
                    past_key_values=cache,
                    return_type="logits_and_cache",
                )
            elif use_cache:
                logits, cache = bridge(
                    sequences,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    return_type="logits_and_cache",
                )
                _check_cache_filled(cache, sequences.shape[1])
            else:
                logits = bridge(sequences, attention_mask=mask, position_ids=positions)
            next_token = logits[:, -1].argmax(-1, keepdim=True)
            sequences = torch.cat([sequences, next_token], dim=1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return sequences, session.captures
