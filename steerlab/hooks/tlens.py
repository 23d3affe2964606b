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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, Unpack

from torch import Tensor, nn

from steerlab.hooks.decoding import GreedyOptions, greedy_loop, greedy_settings
from steerlab.hooks.ops import Captures, Op
from steerlab.hooks.program import HookProgram
from steerlab.hooks.scopes import CallInfo
from steerlab.models.architectures import model_config, unwrap

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def hook_name(layer: int) -> str:
    """The TransformerLens hook point on the output of block ``layer`` (the residual after it)."""
    return f"blocks.{layer}.hook_resid_post"


def bridge_for(model: nn.Module, tokenizer: object | None = None, *, copy: bool = True) -> TransformerBridge:
    """A `TransformerBridge` over ``model`` (a deep copy unless ``copy=False``); build it once per model.

    ``tokenizer`` is accepted for symmetry with the other backends and kept as ``bridge.hf_tokenizer``; it
    is not handed to TransformerLens (whose set-up would reload it from the hub). Raises ValueError for a
    PEFT-wrapped model or an architecture TransformerLens has no adapter for.
    """
    from transformer_lens.model_bridge.sources import build_bridge_from_module
    from transformer_lens.model_bridge.sources._hf_format import determine_architecture_from_hf_config

    base = unwrap(model)
    if base is not model:
        raise ValueError(
            "bridge_for: pass the plain transformers model, not a PEFT wrapper (TransformerBridge cannot "
            "wrap adapters); merge the adapter first or use the 'hf' backend"
        )
    config = model_config(base)
    try:
        architecture = determine_architecture_from_hf_config(config)
    except ValueError as error:
        raise ValueError(
            f"bridge_for: TransformerLens has no adapter for model_type {config.model_type!r} "
            f"({type(base).__name__}): {error}"
        ) from error
    target = copy_module.deepcopy(base) if copy else base
    name = getattr(config, "name_or_path", None) or type(base).__name__
    bridge = build_bridge_from_module(
        target, architecture, hf_config=copy_module.deepcopy(model_config(target)), model_name=str(name)
    )
    bridge.hf_tokenizer = tokenizer
    return bridge


class BridgeHookSession:
    """A live set of hook functions on one bridge; read ``captures`` after the forward passes.

    A forward pre-hook on the bridge reads each call's tokens, ``attention_mask`` and ``past_key_values``,
    and the program places the call in its sequence as under the other backends (`HookProgram.call_info`).
    ``attention_mask`` given to the session is used for calls that pass none (``[B, past + T]``; a mask
    wider than the call means the first positions are in the KV cache). ``TransformerBridge.generate``
    runs its own decoding loop whose cache the session cannot follow, so inside a session it raises: use
    `greedy_generate` (or the transformers / nnsight backends for sampling and beam search).
    """

    def __init__(self, program: HookProgram, attention_mask: Tensor | None):
        self.program = program
        self._info: CallInfo | None = None
        self.attention_mask = attention_mask

    @property
    def captures(self) -> Captures:
        """What the session's Capture ops recorded so far."""
        return self.program.captures

    def new_sequence(
        self,
        attention_mask: Tensor | None = None,
        response_mask: Tensor | None = None,
        *,
        prompt_len: int | None = None,
    ) -> None:
        """Start a new sequence (new padding, new prompt) within the same hooks; `HookProgram.new_sequence`."""
        self.program.new_sequence(response_mask, prompt_len=prompt_len)
        self.attention_mask = attention_mask

    def before_bridge(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Forward pre-hook on the bridge: place the call in its sequence; ValueError for a mask that does not
        fit the call's batch and positions."""
        tokens = kwargs.get("input", args[0] if args else None)
        if not isinstance(tokens, Tensor) or tokens.dim() != 2:
            self._info = None  # text input: the bridge tokenizes; the block hooks refuse below
            return
        batch, seq_len = int(tokens.shape[0]), int(tokens.shape[1])
        mask = kwargs.get("attention_mask")
        mask = mask if isinstance(mask, Tensor) else self.attention_mask
        cache = kwargs.get("past_key_values")
        if cache is not None and hasattr(cache, "get_seq_length"):
            past_len = int(cache.get_seq_length())
        elif mask is not None:
            past_len = int(mask.shape[1]) - seq_len
        else:
            past_len = 0
        if mask is not None and (
            mask.dim() != 2 or mask.shape[0] != batch or mask.shape[1] != past_len + seq_len
        ):
            raise ValueError(
                f"hooked_bridge: attention_mask has shape {tuple(mask.shape)} but the forward call has "
                f"batch {batch}, {seq_len} new positions and {past_len} cached; pass the mask of the inputs "
                "you run (session.new_sequence(attention_mask=...) for new inputs)"
            )
        self._info = self.program.call_info(batch, seq_len, past_len, mask, cache=cache, inputs=tokens)

    def hook_fn(self, layer: int) -> Callable[[Tensor, object], Tensor]:
        """The hook function for block ``layer``: the program's ops on ``[B, T, d]``; RuntimeError when the
        block runs without a bridge call on token ids."""

        def hook(activation: Tensor, hook: object) -> Tensor:
            info = self._info
            if info is None or info.seq_len != activation.shape[1] or info.batch != activation.shape[0]:
                raise RuntimeError(
                    f"hooked_bridge: block {layer} ran without a bridge call on a [batch, seq] token tensor "
                    "(text input, or a submodule called alone): pass token ids to the bridge itself"
                )
            return self.program.run_layer(layer, activation, info)

        return hook

    @staticmethod
    def refuse_generate(*args: Any, **kwargs: Any) -> NoReturn:
        """Stands in for ``bridge.generate`` inside a session: always NotImplementedError (see the class)."""
        raise NotImplementedError(
            "TransformerBridge.generate inside a steerlab hook session: its decoding loop keeps a KV cache "
            "the session cannot follow, so it cannot know where each prompt ends. Use "
            "steerlab.hooks.tlens.greedy_generate, or the 'hf' / 'nnsight' backend for sampling, beam search "
            "and prefix caches"
        )


@contextmanager
def hooked_bridge(
    bridge: TransformerBridge,
    ops: Iterable[Op],
    *,
    attention_mask: Tensor | None = None,
    response_mask: Tensor | None = None,
    prompt_len: int | None = None,
) -> Iterator[BridgeHookSession]:
    """Run ``ops`` on ``bridge`` for the duration of the ``with`` block; hooks are removed however it exits.

    >>> with hooked_bridge(bridge, [Add(3, vector=v, alpha=4.0)]) as session:
    ...     logits = bridge(input_ids, attention_mask=mask)
    """
    program = HookProgram(
        ops,
        n_layers=int(bridge.cfg.n_layers),
        d_model=int(bridge.cfg.d_model),
        response_mask=response_mask,
        prompt_len=prompt_len,
    )
    session = BridgeHookSession(program, attention_mask)
    fwd_hooks = [(hook_name(layer), session.hook_fn(layer)) for layer in program.layers]
    handle = bridge.register_forward_pre_hook(session.before_bridge, with_kwargs=True)
    previous = bridge.__dict__.get("generate", _MISSING)
    bridge.__dict__["generate"] = session.refuse_generate  # an instance attribute, as nn.Module would set it
    try:
        with bridge.hooks(fwd_hooks=fwd_hooks, reset_hooks_end=True):
            yield session
    finally:
        handle.remove()
        if previous is _MISSING:
            bridge.__dict__.pop("generate", None)
        else:
            bridge.__dict__["generate"] = previous


_MISSING = object()


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
    bridge: TransformerBridge,
    ops: Iterable[Op],
    input_ids: Tensor,
    **options: Unpack[GreedyOptions],
) -> tuple[Tensor, Captures]:
    """Greedy decoding through the bridge's forward, with or without its KV cache; (sequences, captures).

    With ``use_cache=True`` the cache is checked after the prompt and a cache the bridge failed to fill
    raises (see `_check_cache_filled`).

    Positions follow the attention mask (left padding), as in transformers' ``generate``; no early stop
    on EOS, so every row gets ``max_new_tokens`` new tokens. The prompt is declared to the session (all
    of ``input_ids``), so uncached steps, which re-run the grown sequence, are read against it. Options:
    `GreedyOptions`.
    """
    use_cache = greedy_settings(input_ids, options)[2]

    def step(tokens: Tensor, mask: Tensor, positions: Tensor, cache: object) -> tuple[Tensor, object]:
        if not use_cache:
            return bridge(tokens, attention_mask=mask, position_ids=positions), None
        if cache is not None:
            return bridge(
                tokens,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                return_type="logits_and_cache",
            )
        logits, cache = bridge(
            tokens,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            return_type="logits_and_cache",
        )
        _check_cache_filled(cache, tokens.shape[1])
        return logits, cache

    with hooked_bridge(bridge, ops, prompt_len=int(input_ids.shape[1])) as session:
        sequences = greedy_loop(step, input_ids, options)
    return sequences, session.captures
