"""What a CPU step can afford: on MLX's CPU backend `exp` and elementwise passes are a large share of a step.

Measured on this project's machine (mlx 0.32 cpu wheel, AMD EPYC with AVX2, one thread): `mx.exp`
costs ~14-23 ns per float32 element (the wheels' polynomial calls libm for fma and floor), `mx.power(2, x)`
~6 ns, an add under 1 ns, and each elementwise op is one pass on one core. A SmolLM2 step at 8 x 256 has
100 M logits, ~110 M attention scores and ~94 M MLP activations, each wanting an exponential. So where
arrays run on the CPU:

* SwiGLU and its gradients, RMSNorm and its input gradient, RoPE on the heads (`rope_heads`), whole-head
  attention and its backward (causal
  masks read from the row index) and the loss's log-sum-exp and gradient run through yourai's fused
  kernels (models/native: vectorized, one pass per row or tile, every core) where they are built and the
  arrays are float32 (`kernels`);
* otherwise `exp(x)` is 2^(x · log2 e): the rounding of the product adds |x| · 2^-24 relative error,
  ~1e-6 for the |x| < 20 that matter in a softmax — float32 noise next to the sum it feeds;
* `cpu_blocks.use_power_exponentials` gives the llama family's blocks this SwiGLU and attention (`power_attention`):
  mlx's fused attention has no CPU kernel, and its composed fallback spends most of its time in exp. Both
  have written-out backwards that recompute their exponentials, so a step holds less for its backward
  than with mlx's functions, not more; each recomputation depends on its cotangent (`recomputed`), or
  mx.compile would merge it into the forward;
* causal attention over a whole sequence goes in query blocks that skip the all-masked score tiles;
* the swapped llama block hands its norms to the attention and MLP, whose LoRA projections then
  recompute the normed state and the SwiGLU output in the backward (models/recompute.py).

On Metal and CUDA every function here is the plain one.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn

from yourai.models import native

LOG2E = 1.0 / math.log(2.0)
SWIGLU_EXP_CAP = 80.0  # e^80 = 5.5e34: finite in float32, and its square's reciprocal underflows to 0


def on_cpu() -> bool:
    """Whether arrays run on the CPU now (a Mac can choose it with mx.set_default_device)."""
    return mx.default_device() == mx.cpu


def kernels(*arrays: mx.array) -> Any:
    """yourai's fused CPU kernels (models/native) when they apply: arrays on the CPU, all float32, built."""
    if not on_cpu() or any(a.dtype != mx.float32 for a in arrays):
        return None
    return native.module()


def power_exp(x: mx.array) -> mx.array:
    """e^x as 2^(x log2 e): ~4x faster than mx.exp on the CPU backend, equal to float32 rounding."""
    return mx.power(2.0, x * LOG2E)


def exp(x: mx.array) -> mx.array:
    """e^x by the cheaper route for the device arrays run on now."""
    return power_exp(x) if on_cpu() else mx.exp(x)


@partial(mx.compile, shapeless=True)
def _power_sigmoid(gate: mx.array) -> mx.array:
    """1 / (1 + e^-gate), e^-gate capped at e^80 (finite in float32: no inf / inf in a gradient)."""
    return 1 / (1 + power_exp(mx.minimum(-gate, SWIGLU_EXP_CAP)))


@mx.custom_function
def power_swiglu(gate: mx.array, x: mx.array) -> mx.array:
    """silu(gate) * x = gate * sigmoid(gate) * x with the exponential as a power of two.

    Past the cap the output is gate * 1.8e-35 * x instead of ~0. The gradient is written out and
    recomputes the sigmoid from `gate`, so the backward keeps nothing but the two inputs: autodiff of
    these ops kept two more [tokens, intermediate] arrays per block (six SmolLM2-size blocks at 8 x 256:
    +160 MB of mx peak memory over mlx's SwiGLU; with the written-out backward, -144 MB).
    """
    fused = kernels(gate, x)
    return fused.swiglu(gate, x) if fused else gate * _power_sigmoid(gate) * x


@power_swiglu.vjp
def _power_swiglu_vjp(primals: list, cotangent: mx.array, output: mx.array) -> tuple[mx.array, mx.array]:
    gate, x = recomputed(primals, [cotangent])
    fused = kernels(gate, x, cotangent)
    return tuple(fused.swiglu_grads(gate, x, cotangent, False)) if fused else _swiglu_grads(gate, x, cotangent)


@partial(mx.compile, shapeless=True)
def _swiglu_value_and_grads(gate: mx.array, x: mx.array, d_out: mx.array) -> tuple[mx.array, mx.array, mx.array]:
    """power_swiglu(gate, x) and its two gradients from one sigmoid (a backward that recomputes the output)."""
    silu, d_gate, d_x = _silu_and_grads(gate, x, d_out)
    return silu * x, d_gate, d_x


def swiglu_vjp(primals: list, d_out: mx.array) -> tuple[mx.array, list[mx.array]]:
    """(power_swiglu(*primals), its gradients for d_out): recompute.project's input_vjp for a SwiGLU input."""
    fused = kernels(*primals, d_out)
    value, d_gate, d_x = fused.swiglu_grads(*primals, d_out, True) if fused else _swiglu_value_and_grads(*primals, d_out)
    return value, [d_gate, d_x]


def recomputed(primals: list[mx.array], cotangents: list[mx.array]) -> list[mx.array]:
    """The primals a backward recomputes from, made to depend on the cotangents.

    Without the dependency mx.compile's graph simplification sees the backward's recomputation as the
    forward's own ops on the same arrays and merges the two, so the forward's results are kept until
    the backward after all (a SmolLM2 step at 8 x 256: ~1 GB of peak memory); mx.checkpoint does the same.
    """
    return mx.depends(list(primals), list(cotangents))


def _silu_and_grads(gate: mx.array, x: mx.array, d_out: mx.array) -> tuple[mx.array, mx.array, mx.array]:
    """silu(gate), d/dgate = d_out x (s + gate s (1 - s)) and d/dx = d_out gate s, with s = sigmoid(gate)."""
    sig = _power_sigmoid(gate)
    silu = gate * sig
    return silu, d_out * x * (sig + silu * (1 - sig)), d_out * silu


@partial(mx.compile, shapeless=True)
def _swiglu_grads(gate: mx.array, x: mx.array, d_out: mx.array) -> tuple[mx.array, mx.array]:
    """power_swiglu's two gradients."""
    return _silu_and_grads(gate, x, d_out)[1:]


def _masked(scores: mx.array, mask: Any, queries: int, keys: int) -> mx.array:
    """Scores [B, kv heads, group, L, S] under an mlx-lm attention mask array, or None ("causal" goes to the softmax)."""
    if mask is None:
        return scores
    if mask.ndim == 4:  # [B or 1, heads or 1, L, S] -> split the heads as the scores are
        mask = mask.reshape(mask.shape[0], -1, scores.shape[2], queries, keys) if mask.shape[1] > 1 else mask[:, :, None]
    if mask.dtype == mx.bool_:
        return mx.where(mask, scores, mx.finfo(scores.dtype).min)
    return scores + mask


CAUSAL_BLOCK = 64  # query rows per block where a causal mask lets a block skip the keys after it


def power_attention(queries: mx.array, keys: mx.array, values: mx.array, scale: float, mask: Any) -> mx.array:
    """softmax(q k^T * scale + mask) v, as mx.fast.scaled_dot_product_attention, with the softmax's
    exponential a power of two.

    Grouped heads (n_q = group * n_kv) share their key/value head by reshaping the queries, never by
    copying keys. The gradient is written out (FlashAttention's backward): the forward keeps only its
    output and each row's log-sum-exp, and the backward recomputes the weights from them, so no
    [batch, heads, L, S] array outlives the forward (six SmolLM2-size blocks at 8 x 256: 814 MB of mx
    peak memory against 895 MB with mlx's attention). Where the kernels apply (float32, no mask or a causal
    one) one fused op computes the whole head tile by tile (`_fused_attention`). Otherwise, under a causal
    mask over L = S positions the queries go in blocks of CAUSAL_BLOCK rows, each against only the keys up
    to its last row: at L = 256, 10 of the 16 score tiles are computed (the other 6 are all masked).
    """
    batch, n_q, length, dim = queries.shape
    fused = kernels(queries, keys, values)
    if fused and (mask is None or isinstance(mask, str)):
        tokens = _fused_attention(fused, queries, keys, values, scale, mask == "causal")
    elif isinstance(mask, str) and mask == "causal" and keys.shape[2] == length and length >= 2 * CAUSAL_BLOCK:
        ends = [min(start + CAUSAL_BLOCK, length) for start in range(0, length, CAUSAL_BLOCK)]
        blocks = [_attention_tokens(queries[:, :, start:end], keys[:, :, :end], values[:, :, :end], scale, "causal")
                  for start, end in zip(range(0, length, CAUSAL_BLOCK), ends)]
        tokens = mx.concatenate(blocks, axis=1)
    else:
        tokens = _attention_tokens(queries, keys, values, scale, mask)
    # The output is made in token order [B, L, n_q * D] and returned as a transposed view: the projection
    # after attention reads that buffer as it is, so the forward keeps one copy of it for both backwards.
    return tokens.reshape(batch, length, n_q, dim).transpose(0, 2, 1, 3)


def _fused_attention(fused: Any, queries: mx.array, keys: mx.array, values: mx.array, scale: float,
                     causal: bool) -> mx.array:
    """power_attention's output as [B, L, n_q * D] from the kernels' whole-head attention: each tile of query
    rows has its scores, softmax and product with the values computed while in cache, and the backward
    recomputes the weights from the rows' log-sum-exp (models/native/kernels.cpp)."""

    @mx.custom_function
    def attend(q: mx.array, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        out, log_total = fused.attention(q, k, v, scale, causal)
        return out, log_total

    @attend.vjp
    def attend_vjp(primals: list, cotangents: list, outputs: list) -> tuple[mx.array, mx.array, mx.array]:
        d_q, d_k, d_v = fused.attention_grads(*primals, outputs[0], outputs[1], cotangents[0], scale, causal)
        return d_q, d_k, d_v

    return attend(queries, keys, values)[0]


def _attention_tokens(queries: mx.array, keys: mx.array, values: mx.array, scale: float, mask: Any) -> mx.array:
    """power_attention's output as [B, L, n_q * D]; the queries are the last L of the S key positions."""
    batch, n_q, length, dim = queries.shape
    n_kv, span = keys.shape[1], keys.shape[2]
    rows = n_q // n_kv * length  # query rows per key/value head

    # A causal mask goes to the softmax (which then skips the masked keys) instead of into the scores.
    causal_queries = length if isinstance(mask, str) and mask == "causal" else 0

    def scores(q: mx.array, k: mx.array) -> mx.array:
        grouped = (q * scale).reshape(batch, n_kv, rows, dim) @ k.swapaxes(-1, -2)
        if causal_queries:
            return grouped
        masked = _masked(grouped.reshape(batch, n_kv, n_q // n_kv, length, span), mask, length, span)
        return masked.reshape(batch, n_kv, rows, span)

    def grouped(tokens: mx.array) -> mx.array:
        """[B, L, n_q * D] -> [B, n_kv, rows, D], the layout the scores are computed in."""
        return tokens.reshape(batch, length, n_kv, n_q // n_kv, dim).transpose(0, 2, 3, 1, 4).reshape(batch, n_kv, rows, dim)

    @mx.custom_function
    def attend(q: mx.array, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        logits = scores(q, k)
        probabilities, log_total = softmax_rows(logits, causal_queries)
        out = (probabilities @ v).reshape(batch, n_kv, n_q // n_kv, length, dim).transpose(0, 3, 1, 2, 4)
        return out.reshape(batch, length, n_q * dim), log_total

    @attend.vjp
    def attend_vjp(primals: list, cotangents: list, outputs: list) -> tuple[mx.array, mx.array, mx.array]:
        q, k, v = recomputed(primals, cotangents[:1])
        out, log_total = grouped(outputs[0]), outputs[1]
        d_out = grouped(cotangents[0])
        weights, d_scores = softmax_rows_vjp(scores(q, k), log_total, d_out @ v.swapaxes(-1, -2),
                                             (d_out * out).sum(axis=-1, keepdims=True), causal_queries)
        d_q = (d_scores @ k * scale).reshape(batch, n_q, length, dim)
        d_k = d_scores.swapaxes(-1, -2) @ (q * scale).reshape(batch, n_kv, rows, dim)
        return d_q, d_k, weights.swapaxes(-1, -2) @ d_out

    return attend(queries, keys, values)[0]


def _causal_rows(scores: mx.array, queries: int) -> mx.array:
    """scores [..., rows, keys] with each row's later keys at float32's lowest: row r is query r % queries of the
    last `queries` keys (rows repeat the queries for each head of a group)."""
    rows, keys = scores.shape[-2:]
    position = mx.arange(rows) % queries + (keys - queries)
    return mx.where(mx.arange(keys)[None, :] <= position[:, None], scores, mx.finfo(scores.dtype).min)


def softmax_rows(scores: mx.array, causal_queries: int = 0) -> tuple[mx.array, mx.array]:
    """(softmax over the last axis, its log-sum-exp [..., 1]): one fused pass per row where the kernels apply.

    causal_queries > 0 masks as `_causal_rows`; the kernel then takes no exponential of a masked key.
    """
    fused = kernels(scores)
    if fused:
        probabilities, log_total = fused.softmax_rows(scores, causal_queries)
        return probabilities, log_total
    if causal_queries:
        scores = _causal_rows(scores, causal_queries)
    peak = scores.max(axis=-1, keepdims=True)
    weights = power_exp(scores - peak)
    total = weights.sum(axis=-1, keepdims=True)
    return weights / total, peak + mx.log(total)


def log_softmax(logits: mx.array) -> mx.array:
    """logits - logsumexp(logits) over the last axis; the kernels' log-sum-exp where they apply (~1e-5 from
    float64 over 49,152 float32 logits, where mx.logsumexp is ~1e-4 off)."""
    fused = kernels(logits)
    if fused:
        return logits - fused.softmax_rows(logits, 0)[1]
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def softmax_rows_vjp(scores: mx.array, log_total: mx.array, d_weights: mx.array, delta: mx.array,
                     causal_queries: int = 0) -> tuple[mx.array, mx.array]:
    """(weights e^(scores - log_total), their scores' gradient weights * (d_weights - delta)) from recomputed
    scores, masked as `softmax_rows`; delta [..., 1] is each row's sum(d_out * out)."""
    fused = kernels(scores, log_total, d_weights, delta)
    if fused:
        weights, d_scores = fused.softmax_grad_rows(scores, log_total, d_weights, delta, causal_queries)
        return weights, d_scores
    if causal_queries:
        scores = _causal_rows(scores, causal_queries)
    weights = power_exp(scores - log_total)
    return weights, weights * (d_weights - delta)


def rms_norm(x: mx.array, weight: mx.array, eps: float) -> mx.array:
    """mx.fast.rms_norm(x, weight, eps); one fused pass per row on every core where the kernels apply (MLX's CPU
    runs it as single-threaded passes: square, mean, rsqrt, two products), differentiable either way."""
    if kernels(x, weight):
        return _fused_rms_norm(float(eps))(x, weight)
    return mx.fast.rms_norm(x, weight, eps)


@lru_cache(maxsize=8)
def _fused_rms_norm(eps: float) -> Callable[[mx.array, mx.array], mx.array]:
    """The kernels' RMSNorm as a differentiable function (one per epsilon, as mx.custom_function takes arrays only)."""

    @mx.custom_function
    def norm(x: mx.array, weight: mx.array) -> mx.array:
        return native.module().rms_norm(x, weight, eps)

    @norm.vjp
    def norm_vjp(primals: list, cotangent: mx.array, output: mx.array) -> tuple[mx.array, mx.array]:
        x, weight = recomputed(primals, [cotangent])
        (d_x,) = native.module().rms_norm_grads(x, weight, cotangent, eps, False)
        # the weight's gradient in MLX ops: lazy, so never computed where the norm is frozen (LoRA)
        normed = x * mx.rsqrt(mx.mean(mx.square(x), axis=-1, keepdims=True) + eps)
        return d_x, (cotangent * normed).reshape(-1, x.shape[-1]).sum(axis=0)

    return norm


class NormedInput:
    """A frozen RMSNorm as a function of its input alone, with the `input_vjp` recompute.project takes: the
    backward recomputes the normed state and its input gradient in one pass (the kernels) or one mx.vjp."""

    def __init__(self, norm: nn.RMSNorm) -> None:
        self.weight, self.eps = norm.weight, norm.eps

    def __call__(self, h: mx.array) -> mx.array:
        return rms_norm(h, self.weight, self.eps)

    def vjp(self, primals: list, d_out: mx.array) -> tuple[mx.array, list[mx.array]]:
        """(the normed state, [its input's gradient for d_out])."""
        fused = kernels(primals[0], self.weight, d_out)
        if fused:
            value, d_h = fused.rms_norm_grads(primals[0], self.weight, d_out, self.eps, True)
            return value, [d_h]
        (value,), d_inputs = mx.vjp(self, list(primals), [d_out])
        return value, list(d_inputs)


def rope_heads(rope: Any, tokens: mx.array, offset: Any = 0) -> mx.array:
    """rope(tokens.transpose(0, 2, 1, 3), offset) for tokens [B, L, H, D]: mlx-lm's RoPE on the heads of a
    projection. Where the kernels apply (float32, exactly nn.RoPE, an int offset) one pass rotates and lays the
    heads out, and the backward rotates back into the projection's layout."""
    fused = kernels(tokens)
    if not (fused and type(rope) is nn.RoPE and isinstance(offset, int)):
        return rope(tokens.transpose(0, 2, 1, 3), offset=offset)
    setting = (rope.dims, rope.traditional, float(rope.base), float(rope.scale), offset)

    @mx.custom_function
    def rotate(x: mx.array) -> mx.array:
        return fused.rope(x, *setting, False)

    @rotate.vjp
    def rotate_vjp(primals: list, cotangent: mx.array, output: mx.array) -> mx.array:
        return fused.rope(cotangent, *setting, True)

    return rotate(tokens)
