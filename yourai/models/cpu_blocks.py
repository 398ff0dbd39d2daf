"""mlx-lm's llama blocks with yourai's CPU math: which modules change, and the classes they change into.

`use_power_exponentials` swaps the class of exactly mlx-lm's llama MLP, Attention and TransformerBlock
where arrays run on the CPU (parameters, their names and LoRA wrapping stay): SwiGLU, attention, RoPE and
RMSNorm then go through yourai.models.cpu_math (the fused kernels where they apply), and the swapped block
hands its norms to the attention and MLP so that LoRA projections recompute the normed input in the
backward (yourai.models.recompute). On Metal and CUDA nothing changes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn

from yourai.models import cpu_math, recompute
from yourai.models.cpu_math import NormedInput, power_attention, power_swiglu, rope_heads, swiglu_vjp


def _supported_mask(mask: Any) -> bool:
    """The masks power_attention takes: none, "causal" (to the softmax), and the [L, S] and [B or 1, heads or 1, L, S] arrays `_masked` reads."""
    if mask is None or isinstance(mask, str):
        return mask in (None, "causal")
    return mask.ndim in (2, 4)


def use_power_exponentials(model: nn.Module) -> int:
    """On the CPU, give the model's llama-family blocks SwiGLU and attention through `power_exp`; how many changed.

    Only modules of exactly mlx-lm's llama `MLP`, `Attention` and `TransformerBlock` classes change (a
    block only when its parts are those and its norms RMSNorm), and only their class: parameters, their
    names and LoRA wrapping stay as they were. The swapped block hands its norms to the attention and
    MLP so that LoRA projections recompute the normed input in the backward (models/recompute.py).
    """
    if not cpu_math.on_cpu():  # read through the module: where arrays run is a setting of the moment
        return 0
    from mlx_lm.models import llama

    mlp, attention, block = _power_classes()
    changed = [module for _, module in model.named_modules() if type(module) in (llama.MLP, llama.Attention)
               or (type(module) is llama.TransformerBlock and _plain_block(module))]
    for module in changed:
        module.__class__ = {llama.MLP: mlp, llama.Attention: attention, llama.TransformerBlock: block}[type(module)]
    return len(changed)


def _plain_block(block: nn.Module) -> bool:
    """A llama block built as mlx-lm builds it: llama Attention and MLP, RMSNorm before each."""
    from mlx_lm.models import llama

    return (type(block.self_attn) is llama.Attention and type(block.mlp) is llama.MLP
            and type(block.input_layernorm) is nn.RMSNorm and type(block.post_attention_layernorm) is nn.RMSNorm)


def _projected(make_input: Callable[..., mx.array], sources: list[mx.array], layers: list[nn.Module],
               input_vjp: recompute.InputVjp | None = None) -> list[mx.array]:
    """[layer(make_input(*sources)) ...]: recomputing make_input in the backward where the layers allow it."""
    if recompute.recomputable(layers):
        return recompute.project(make_input, sources, layers, input_vjp or getattr(make_input, "vjp", None))
    x = make_input(*sources)
    return [layer(x) for layer in layers]


def _same(x: mx.array) -> mx.array:
    return x


@lru_cache(maxsize=1)
def _power_classes() -> tuple[type, type, type]:
    """Subclasses of mlx-lm's llama MLP, Attention and TransformerBlock: exponentials as powers of two, and
    LoRA inputs recomputed in the backward."""
    from mlx_lm.models import llama
    from mlx_lm.models.base import scaled_dot_product_attention

    class PowerMLP(llama.MLP):
        def __call__(self, x: mx.array) -> mx.array:
            return self.through(_same, x)

        def through(self, make_input: Callable[[mx.array], mx.array], source: mx.array) -> mx.array:
            """self(make_input(source))."""
            gate, up = _projected(make_input, [source], [self.gate_proj, self.up_proj])
            return _projected(power_swiglu, [gate, up], [self.down_proj], swiglu_vjp)[0]

    class PowerAttention(llama.Attention):
        """llama.Attention's forward (projections, RoPE at the cache's offset, the cache) with power_attention;
        quantized caches, non-float32 arrays and unusual masks keep mlx's attention."""

        def __call__(self, x: mx.array, mask: Any = None, cache: Any = None) -> mx.array:
            return self.through(_same, x, mask, cache)

        def through(self, make_input: Callable[[mx.array], mx.array], source: mx.array, mask: Any = None,
                    cache: Any = None) -> mx.array:
            """self(make_input(source), mask, cache)."""
            batch, length, _ = source.shape
            projected = _projected(make_input, [source], [self.q_proj, self.k_proj, self.v_proj])
            queries, keys, values = [p.reshape(batch, length, n, -1)
                                     for p, n in zip(projected, (self.n_heads, self.n_kv_heads, self.n_kv_heads))]
            offset = 0 if cache is None else cache.offset
            queries, keys = rope_heads(self.rope, queries, offset), rope_heads(self.rope, keys, offset)
            values = values.transpose(0, 2, 1, 3)
            if cache is not None:
                keys, values = cache.update_and_fetch(keys, values)
            if hasattr(cache, "bits") or queries.dtype != mx.float32 or not _supported_mask(mask):
                out = scaled_dot_product_attention(queries, keys, values, cache=cache, scale=self.scale, mask=mask)
            else:
                out = power_attention(queries, keys, values, self.scale, mask)
            return _projected(_same, [out.transpose(0, 2, 1, 3).reshape(batch, length, -1)], [self.o_proj])[0]

    class PowerBlock(llama.TransformerBlock):
        """llama.TransformerBlock's forward, the norms handed to the attention and MLP as functions."""

        def __call__(self, x: mx.array, mask: Any = None, cache: Any = None) -> mx.array:
            h = x + self.self_attn.through(NormedInput(self.input_layernorm), x, mask, cache)
            return h + self.mlp.through(NormedInput(self.post_attention_layernorm), h)

    return PowerMLP, PowerAttention, PowerBlock
