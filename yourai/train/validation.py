"""Validation during training: token-mean CE overall and per authority tier, the number the experiment compares."""

from __future__ import annotations

import time
from functools import partial
from typing import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from yourai.data.batches import Example, collate
from yourai.loss import per_sample_token_ce
from yourai.models.head import split_head, token_cross_entropy
from yourai.tiers import TIERS


def make_eval_fn(model: nn.Module, compile_: bool) -> Callable:
    """Per-sample validation CE and token counts (the model must be in eval mode: no dropout); chunked head."""
    split = split_head(model, differentiable=False)

    def eval_ce(inputs, targets, mask):
        return per_sample_token_ce(token_cross_entropy(model, split, inputs, targets, differentiable=False), mask)

    return partial(mx.compile, inputs=[model.state], outputs=[model.state])(eval_ce) if compile_ else eval_ce


def tier_validation(model: nn.Module, eval_ce: Callable, batches: Sequence[Sequence[Example]], step: int,
                    rank: int = 0, size: int = 1) -> dict:
    """val_loss overall and per tier, val_gap = primary − consensus; each rank scores its share, then all_sum."""
    started = time.perf_counter()
    model.eval()
    sums = np.zeros((1 + len(TIERS), 2))  # rows: overall, tiers; columns: CE sum, tokens
    for examples in batches[rank::size]:
        batch = collate(examples)
        ce, tokens = eval_ce(batch.inputs, batch.targets, batch.mask)
        ce, tokens = np.array(ce, dtype=np.float64), np.array(tokens, dtype=np.float64)
        for row, tier in enumerate(batch.tiers):
            for target in (0, 1 + TIERS.index(tier)):
                sums[target] += (ce[row] * tokens[row], tokens[row])
    model.train()
    if size > 1:
        sums = np.array(mx.distributed.all_sum(mx.array(sums.astype(np.float32)), stream=mx.cpu), dtype=np.float64)
    metrics = {"step": step, "val_loss": float(sums[0, 0] / max(sums[0, 1], 1.0)), "val_tokens": int(sums[0, 1])}
    for index, tier in enumerate(TIERS, 1):
        metrics[f"val_loss_{tier}"] = float(sums[index, 0] / sums[index, 1]) if sums[index, 1] else None
    primary, consensus = metrics["val_loss_primary"], metrics["val_loss_consensus"]
    metrics["val_gap"] = primary - consensus if primary is not None and consensus is not None else None
    metrics["val_time_s"] = round(time.perf_counter() - started, 4)
    return metrics
