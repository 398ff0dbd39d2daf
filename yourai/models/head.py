"""The output head applied chunk by chunk, so `[batch, seq, vocab]` logits never exist at once.

Why: on SmolLM2-135M (49,152 tokens) one batch of 8 x 256 has 400 MB of float32 logits, and a
training step holds several arrays that size (logits, softmax, its gradient). Training and
evaluation only ever need each position's cross-entropy, so we follow the published fused
linear-cross-entropy idea (Apple's "Cut Your Losses", Liger's fused linear CE):

* a model whose logits are ``head(body(x))`` — mlx-lm's Llama family: ``model.model`` (embeddings,
  blocks, final norm) then ``lm_head`` or the tied embedding's ``as_linear`` — is split once, and
  the split is *checked* on a probe input, so any model that does more (logit soft-capping,
  scaling) falls back to whole logits;
* the head runs over chunks of at most ``CE_CHUNK_BYTES`` of float32 logits, each chunk's
  cross-entropy and, for training, its gradient with respect to the hidden states
  (``(softmax - onehot) W``, an `[N, D]` array) are computed together, and a custom vjp scales
  that gradient by each token's cotangent: the backward needs no logits and recomputes nothing;
* chunks are chained with ``mx.depends``: MLX's scheduler would otherwise run many independent
  chunks side by side and hold them all.

The head's own weights get no gradient through the custom vjp, so training splits a model only
when they are frozen (LoRA never trains the head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from yourai.models import cpu_math

# Float32 logits per chunk at most. SmolLM2 LoRA step at 8 x 256 on a 2-core AVX-512 Xeon, interleaved runs:
# 64 MiB (320 positions) 258.8 / 262.7 tokens/s and 2,330 MB peak RSS against 249.6 / 261.8 and 2,554 MB with
# 32 MiB (128 positions); alone, OpenBLAS ran [128, 576] x [576, 49152] at ~220 GFLOP/s and [256, ...] at ~250.
CE_CHUNK_BYTES = 64 * 2**20
# Chunks of a multiple of this many positions: OpenBLAS runs the head's [rows, D] x [D, vocab] product at
# ~90 GFLOP/s with SmolLM2's former 85 rows and ~120 with 64 or 128 (a 2-core AMD EPYC, fp32, 2 threads).
CE_CHUNK_ALIGN = 64
PROBE_TOKENS = (0, 1, 2, 3)  # any ids below the vocabulary size: the split is checked on them
PROBE_TOLERANCE = 1e-5  # head(body(x)) runs the same ops as model(x); more than rounding is another model


@dataclass(frozen=True)
class HeadSplit:
    """A model's body (tokens -> final hidden states) and head (hidden -> logits)."""

    body: Callable[..., mx.array]
    head: Callable[[mx.array], mx.array]
    vocab_size: int

    @property
    def chunk_tokens(self) -> int:
        """Positions per chunk: as many as keep one chunk's float32 logits within CE_CHUNK_BYTES, rounded down to
        a multiple of CE_CHUNK_ALIGN where there are that many (SmolLM2: 320)."""
        fits = max(1, CE_CHUNK_BYTES // (4 * self.vocab_size))
        return fits - fits % CE_CHUNK_ALIGN if fits >= CE_CHUNK_ALIGN else fits

    def hidden(self, inputs: mx.array, cache: Any = None) -> mx.array:
        """Final hidden states [B, T, D] (after the model's last norm)."""
        return self.body(inputs) if cache is None else self.body(inputs, cache=cache)


def _candidate(model: nn.Module) -> tuple[nn.Module, Callable, nn.Module] | None:
    """(body, head function, the module owning the head weights) by mlx-lm's naming, if present."""
    body = getattr(model, "model", None)
    if not isinstance(body, nn.Module):
        return None
    lm_head = getattr(model, "lm_head", None)
    if isinstance(lm_head, nn.Module):
        return body, lm_head, lm_head
    embed = getattr(body, "embed_tokens", None)
    if embed is not None and hasattr(embed, "as_linear"):
        return body, embed.as_linear, embed
    return None


def split_head(model: nn.Module, *, differentiable: bool = True) -> HeadSplit | None:
    """The model's body/head split when ``model(x) == head(body(x))``, else None.

    For training (`differentiable`) the head must also be frozen: the custom vjp gives it no gradient,
    so a trainable head keeps whole logits. Evaluation takes no gradient and splits any head. The probe runs in eval mode (no dropout, no random numbers drawn), so calling this never changes
    a training run's random stream.
    """
    found = _candidate(model)
    if found is None:
        return None
    body, head, head_owner = found
    if differentiable and tree_flatten(head_owner.trainable_parameters()):
        return None
    was_training = model.training
    model.eval()
    try:
        probe = mx.array([PROBE_TOKENS])
        whole, split = model(probe), head(body(probe))
        same = whole.shape == split.shape and mx.allclose(whole, split, rtol=PROBE_TOLERANCE,
                                                          atol=PROBE_TOLERANCE).item()
    except (TypeError, ValueError):
        return None
    finally:
        model.train(was_training)
    return HeadSplit(body, head, int(whole.shape[-1])) if same else None


# ---------------------------------------------------------------- chunked cross-entropy


def _chunk_ce(head: Callable, hidden: mx.array, targets: mx.array) -> mx.array:
    """Float32 token cross-entropy of one chunk: log sum e^(z - max) - (z_target - max).

    Where yourai's CPU kernels apply, one fused pass per row (~1e-5 from float64 over SmolLM2's 49,152 logits,
    where mlx's cross_entropy is ~1e-4 off); otherwise mlx's ops, whose gradient reuses the forward's
    exponentials (the max is a constant to it), each a power of two on the CPU (yourai.models.cpu_math).
    """
    logits = head(hidden).astype(mx.float32)
    fused = cpu_math.kernels(logits)
    if fused:
        return fused.cross_entropy_rows(logits, targets, False)[0]
    shifted = logits - mx.stop_gradient(logits.max(axis=-1, keepdims=True))
    return mx.log(cpu_math.exp(shifted).sum(axis=-1)) - mx.take_along_axis(shifted, targets[:, None], axis=-1)[:, 0]


def _chunk_ce_and_grad(head: Callable, hidden: mx.array, targets: mx.array) -> tuple[mx.array, mx.array]:
    """(_chunk_ce, its gradient for hidden at a cotangent of one per token).

    Where the fused kernels apply, one pass per row gives the CE and softmax - onehot, and the head's own
    vjp carries that to hidden (its forward output is never used there, so never computed twice).
    """
    fused = cpu_math.kernels()
    if not fused:
        (ce,), (grad,) = mx.vjp(lambda h: _chunk_ce(head, h, targets), [hidden], [mx.ones(targets.shape, mx.float32)])
        return ce, grad
    logits = head(hidden)
    ce, d_logits = fused.cross_entropy_rows(logits.astype(mx.float32), targets, True)
    _, (grad,) = mx.vjp(head, [hidden], [d_logits.astype(logits.dtype)])
    return ce, grad


def _chained_chunks(split: HeadSplit, hidden: mx.array, targets: mx.array, with_grad: bool) -> mx.array:
    """Per chunk [CE] or [d CE / d h, CE], one chunk after the other, concatenated to [N, 1] or [N, D + 1]."""
    size, pieces = split.chunk_tokens, []
    for start in range(0, hidden.shape[0], size):
        rows, goals = hidden[start : start + size], targets[start : start + size]
        if pieces:
            rows = mx.depends(rows, pieces[-1])  # evaluate after the previous chunk: one chunk alive at a time
        if with_grad:
            ce, grad = _chunk_ce_and_grad(split.head, rows, goals)
            pieces.append(mx.concatenate([grad.astype(mx.float32), ce[:, None]], axis=1))
        else:
            pieces.append(_chunk_ce(split.head, rows, goals)[:, None])
    return mx.concatenate(pieces) if len(pieces) > 1 else pieces[0]


def _differentiable_ce(split: HeadSplit) -> Callable:
    """token CE [N] of hidden [N, D], whose vjp reuses the per-token gradient computed alongside."""

    @mx.custom_function
    def ce_and_grad(hidden: mx.array, targets: mx.array) -> tuple[mx.array, mx.array]:
        both = _chained_chunks(split, hidden, targets, with_grad=True)
        return both[:, -1], both[:, :-1]

    @ce_and_grad.vjp
    def _vjp(primals, cotangents, outputs):
        hidden, targets = primals
        grad_hidden = outputs[1] * cotangents[0][:, None]  # each token's CE depends on its own row only
        return grad_hidden.astype(hidden.dtype), mx.zeros_like(targets)

    return ce_and_grad


def chunked_cross_entropy(split: HeadSplit, hidden: mx.array, targets: mx.array, *,
                          differentiable: bool = True) -> mx.array:
    """Float32 cross-entropy of every position, ``hidden`` [..., D] and ``targets`` [...] -> [...].

    Equal to ``cross_entropy(head(hidden), targets)`` to float rounding; `differentiable=False`
    skips the per-token gradient (evaluation).
    """
    shape = targets.shape
    flat_hidden, flat_targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    if differentiable:
        ce = _differentiable_ce(split)(flat_hidden, flat_targets)[0]
    else:
        ce = _chained_chunks(split, flat_hidden, flat_targets, with_grad=False)[:, 0]
    return ce.reshape(shape)


def token_cross_entropy(model: nn.Module, split: HeadSplit | None, inputs: mx.array, targets: mx.array, *,
                        differentiable: bool = True) -> mx.array:
    """Float32 token cross-entropy [B, T] of a batch: chunked when the model splits, else whole logits."""
    if split is None:
        return nn.losses.cross_entropy(model(inputs).astype(mx.float32), targets)
    return chunked_cross_entropy(split, split.hidden(inputs), targets, differentiable=differentiable)
