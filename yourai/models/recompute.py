"""LoRA projections that recompute their input in the backward instead of keeping it.

A LoRA linear's adapter gradient needs its input x (dA = xᵀ(g Bᵀ), dB = (xA)ᵀg), so autodiff keeps
x from the forward until the backward reaches it. In a llama block those inputs are cheap functions
of arrays the backward keeps anyway: the normed hidden state is rms_norm(h) of the residual h the
norm's own backward keeps, and the down projection's input is SwiGLU(gate, up) of the two arrays
SwiGLU's backward keeps. `project` computes a group of projections of such an input as one
custom function whose backward recomputes the input (one elementwise pass) and keeps only what
made it: per SmolLM2 block at 8 x 256 tokens, 2 normed states (4.7 MB each) and the SwiGLU output
(12.6 MB) fewer. This is selective activation recomputation (Korthikanti et al., 2022) limited to
elementwise work: no matmul is repeated.

Only plain float layers take this path: mlx-lm's `LoRALinear` over `nn.Linear` with no active
dropout, or a frozen `nn.Linear`. Anything else (DoRA, quantized bases, dropout while training)
is computed as the layers themselves compute it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn


def _is_lora(layer: nn.Module) -> bool:
    from mlx_lm.tuner.lora import LoRALinear

    return (type(layer) is LoRALinear and type(layer.linear) is nn.Linear
            and (layer.dropout._p_1 == 1.0 or not layer.dropout.training))


def recomputable(layers: Sequence[nn.Module]) -> bool:
    """Whether `project` can take these layers: plain LoRA or frozen Linear layers, at least one LoRA."""
    return (any(_is_lora(layer) for layer in layers)
            and all(_is_lora(layer) or (type(layer) is nn.Linear and not layer.trainable_parameters()) for layer in layers))


def _base(layer: nn.Module) -> nn.Linear:
    return layer.linear if _is_lora(layer) else layer


def _params(layer: nn.Module) -> list[mx.array]:
    """The arrays a layer's projection reads: weight, then lora_a and lora_b for a LoRA layer."""
    base = [_base(layer).weight]
    return base + [layer.lora_a, layer.lora_b] if _is_lora(layer) else base


def _forward(layer: nn.Module, x: mx.array, params: Sequence[mx.array]) -> mx.array:
    """The layer's output from `params` (as _params orders them): mlx-lm's LoRALinear, with the adapter's
    scaled product accumulated into the base output by one addmm instead of three passes over [tokens, out]."""
    base = _base(layer)
    y = mx.addmm(base.bias, x, params[0].T) if "bias" in base else x @ params[0].T
    if len(params) == 1:
        return y
    xa = x @ params[1]
    if xa.dtype != y.dtype or params[2].dtype != y.dtype:  # mixed precision: mlx-lm's casts, as it does them
        return y + (layer.scale * (xa @ params[2])).astype(x.dtype)
    return mx.addmm(y, xa, params[2], alpha=layer.scale)


InputVjp = Callable[[list, mx.array], tuple[mx.array, Sequence[mx.array]]]


def project(make_input: Callable[..., mx.array], inputs: Sequence[mx.array], layers: Sequence[nn.Module],
            input_vjp: InputVjp | None = None) -> list[mx.array]:
    """[layer(make_input(*inputs)) for layer in layers], with make_input's output recomputed in the backward.

    `make_input` must be a function of `inputs` only (frozen arrays it closes over get no gradient); the
    layers must pass `recomputable`. Gradients flow to `inputs` and to every LoRA layer's lora_a and
    lora_b; a frozen weight's gradient is never formed (zeros, left unevaluated). The backward gets the
    recomputed input and the inputs' gradients from one `mx.vjp` of make_input, or from
    `input_vjp(inputs, d_input) -> (input, d_inputs)` where one function computes both more cheaply.
    """
    count = len(inputs)
    sizes = [len(_params(layer)) for layer in layers]

    def split(params: Sequence[mx.array]) -> list[Sequence[mx.array]]:
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return [params[start:start + size] for start, size in zip(starts, sizes)]

    def recompute_and_vjp(sources: list, d_x: mx.array) -> tuple[mx.array, Sequence[mx.array]]:
        (x,), d_inputs = mx.vjp(make_input, sources, [d_x])
        return x, d_inputs

    @mx.custom_function
    def projections(*arrays: mx.array) -> tuple[mx.array, ...]:
        x = make_input(*arrays[:count])
        return tuple(_forward(layer, x, params) for layer, params in zip(layers, split(arrays[count:])))

    @projections.vjp
    def projections_vjp(primals: list, cotangents: list, outputs: list) -> tuple[mx.array, ...]:
        sources = mx.depends(list(primals[:count]), list(cotangents))  # not merged with the forward under mx.compile
        d_rows, adapters = None, []  # d(loss)/dx as [tokens, in], each product accumulated into it by addmm
        for layer, params, d_out in zip(layers, split(primals[count:]), cotangents):
            d_out = d_out.reshape(-1, d_out.shape[-1])
            d_rows = d_out @ params[0] if d_rows is None else mx.addmm(d_rows, d_out, params[0])
            if len(params) == 3:  # the scale applied where arrays are [tokens, rank] or [rank, out], not [tokens, out]
                d_xa = (d_out @ params[2].T) * layer.scale
                d_rows = mx.addmm(d_rows, d_xa, params[1].T)
                adapters.append((d_xa, d_out, params[1], layer.scale))
            else:
                adapters.append(None)
        # d(loss)/dx needs no x: the input is recomputed only now, together with its own backward
        x, d_inputs = (input_vjp or recompute_and_vjp)(sources, d_rows.reshape(*cotangents[0].shape[:-1], -1))
        rows, grads = x.reshape(-1, x.shape[-1]), []
        for params, adapter in zip(split(primals[count:]), adapters):
            grads.append(mx.zeros_like(params[0]))
            if adapter is not None:
                d_xa, d_out, lora_a, scale = adapter
                grads += [rows.T @ d_xa, ((rows @ lora_a).T @ d_out) * scale]
        return (*d_inputs, *grads)

    return list(projections(*inputs, *[p for layer in layers for p in _params(layer)]))

