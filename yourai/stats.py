"""Small statistics for judging a scorer: ROC AUC and its bootstrap confidence interval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_BOOTSTRAP_RESAMPLES = 1000  # enough for a stable 95 % percentile interval
DEFAULT_CONFIDENCE = 0.95


def _ranks_with_ties(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (as Mann–Whitney requires)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    return average_rank[inverse]


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(score of a random positive > a random negative), ties counting ½ (Mann–Whitney U / n₁n₀)."""
    pos, neg = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"roc_auc needs both classes, got {len(pos)} positive and {len(neg)} negative")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("roc_auc: scores must be finite")
    ranks = _ranks_with_ties(np.concatenate([pos, neg]))
    u_statistic = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u_statistic / (len(pos) * len(neg)))


def bootstrap_auc_ci(positive: Sequence[float], negative: Sequence[float],
                     resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES,
                     confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> tuple[float, float, float]:
    """(AUC, low, high): percentile bootstrap, resampling each class separately (stratified)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be ≥ 1, got {resamples}")
    pos, neg = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    point = roc_auc(pos, neg)
    rng = np.random.default_rng(seed)
    aucs = [roc_auc(rng.choice(pos, len(pos)), rng.choice(neg, len(neg))) for _ in range(resamples)]
    tail = (1 - confidence) / 2
    low, high = np.quantile(aucs, [tail, 1 - tail])
    return point, float(low), float(high)
