"""The compiled pieces of one optimizer update, and how a step's logged parts add up over micro-batches and ranks."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map

from yourai.formula import combine_objective
from yourai.loss import objective_from_token_ce
from yourai.models.head import split_head, token_cross_entropy


CLIP_EPSILON = 1e-6  # as mlx.optimizers.clip_grad_norm, so clipping matches mlx-lm's users' expectations
PART_NAMES = ("ce", "weighted_ce", "distrust_term", "mean_weight")  # the order of a step's parts vector


def warmup_cosine(peak_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float):
    """Linear warm-up to peak (first update already at peak/warmup), then cosine to min_lr_ratio * peak."""
    floor = peak_lr * min_lr_ratio
    decay_steps = max(total_steps - warmup_steps, 1)

    def schedule(step: mx.array) -> mx.array:
        step = mx.array(step).astype(mx.float32)
        warm = peak_lr * (step + 1.0) / max(warmup_steps, 1)
        progress = mx.clip((step - warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = floor + (peak_lr - floor) * 0.5 * (1.0 + mx.cos(math.pi * progress))
        return mx.where(step < warmup_steps, warm, cosine)

    return schedule


class StepFunctions:
    """The compiled graph of an update, so a step costs one host sync (reading the metrics afterwards).

    ``fused`` is the whole update of a single micro-batch in one compiled call: loss and gradients,
    the gradient norm, the finiteness check and the clipped AdamW step, applied through ``mx.where``
    so a non-finite step leaves adapters, optimizer state and its step counter as they were.
    The loss takes token cross-entropies from the chunked head (yourai.models.head), so a step
    never holds a batch's whole logits. Accumulation and data parallelism use ``grad_step`` per micro-batch, then ``apply`` (the same
    guarded update) on the summed gradients.
    """

    def __init__(self, model: nn.Module, optimizer: optim.Optimizer, mode: str, lambda_weight: float,
                 alpha: float, grad_clip: float, compile_: bool) -> None:
        split = split_head(model)

        def loss_fn(model_, inputs, targets, mask, weights, authority_weight, provenance_entropy, scale):
            token_ce = token_cross_entropy(model_, split, inputs, targets)
            total, parts = objective_from_token_ce(token_ce, mask, weights, authority_weight, provenance_entropy,
                                                   mode=mode, lambda_weight=lambda_weight, alpha=alpha)
            return total * scale, mx.stack([parts[name] for name in PART_NAMES])

        value_and_grad = nn.value_and_grad(model, loss_fn)

        def grad_step(*arrays):
            (loss, parts), grads = value_and_grad(model, *arrays)
            return loss, parts, grads

        def apply(grads, loss):
            norm = mx.sqrt(sum(mx.sum(mx.square(g.astype(mx.float32))) for _, g in tree_flatten(grads)))
            finite = mx.logical_and(mx.isfinite(loss), mx.isfinite(norm))
            if grad_clip > 0:
                factor = mx.minimum(grad_clip / (norm + CLIP_EPSILON), 1.0)
                grads = tree_map(lambda g: g * factor, grads)
            guarded_update(model, optimizer, grads, finite)
            return norm, finite

        def fused(*arrays):
            loss, parts, grads = grad_step(*arrays)
            norm, finite = apply(grads, loss)
            return mx.concatenate([parts, mx.stack([norm, finite.astype(mx.float32)])])

        if compile_:
            every = [model.state, optimizer.state, mx.random.state]
            grad_state, update_state = [model.state, mx.random.state], [model.state, optimizer.state]
            fused = partial(mx.compile, inputs=every, outputs=every)(fused)
            grad_step = partial(mx.compile, inputs=grad_state, outputs=grad_state)(grad_step)
            apply = partial(mx.compile, inputs=update_state, outputs=update_state)(apply)
        self.fused, self.grad_step, self.apply = fused, grad_step, apply
        self.chunked_head = split is not None


def guarded_update(model: nn.Module, optimizer: optim.Optimizer, grads: Any, finite: mx.array) -> None:
    """optimizer.update, kept only where `finite`: otherwise every parameter and state entry keeps its old value."""
    keep = lambda new, old: mx.where(finite, new, old)  # noqa: E731
    old_params = model.trainable_parameters()
    old_state = tree_map(lambda v: v, optimizer.state)  # the update mutates the dict, not the arrays
    optimizer.update(model, grads)
    model.update(tree_map(keep, model.trainable_parameters(), old_params))
    optimizer.state.update(tree_map(keep, optimizer.state, old_state))  # in place: compiled calls hold this dict


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def part_contributions(pieces: Sequence[tuple[np.ndarray, float, float, int]], norms: tuple[float, float, int]) -> np.ndarray:
    """Each micro-batch's share of the global ce, weighted_ce, distrust_term, mean_weight (summable over ranks).

    A piece is (parts in PART_NAMES order, its counted tokens, its weight sum, its sample count).
    """
    tokens_all, weights_all, samples_all = norms
    total = np.zeros(len(PART_NAMES))
    for values, tokens, weight_sum, samples in pieces:
        shares = (tokens / tokens_all, weight_sum / weights_all if weights_all else 0.0, samples / samples_all, samples / samples_all)
        total += np.array([float(v) * share for v, share in zip(values, shares)])
    return total


def finish_parts(contributions: np.ndarray, mode: str, lambda_weight: float) -> dict:
    """The logged loss parts; `loss` is the objective itself, combined by the rule in yourai.formula."""
    ce, weighted, term, mean_weight = (float(v) for v in contributions)
    total = combine_objective(ce, weighted, term, objective=mode, lambda_weight=lambda_weight)
    return {"loss": total, "ce": ce, "weighted_ce": weighted, "distrust_term": term,
            "lambda_term": lambda_weight * term, "mean_weight": mean_weight}
