"""Every statistic the workbench reports, defined once: numpy only, pure functions.

- scorer separation: ROC AUC (Mann–Whitney) and its stratified bootstrap interval;
- per-question benchmark scores: percentile bootstrap of a mean, paired comparisons with a
  sign-flip permutation test (questions are the sampling unit);
- few seeds: mean with a Student-t 95 % interval;
- memory growth: Theil–Sen slope with Sen's rank interval (robust to spikes and page-size ties).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

DEFAULT_BOOTSTRAP_RESAMPLES = 1000  # AUC intervals: enough for a stable 95 % percentile interval
DEFAULT_CONFIDENCE = 0.95
N_RESAMPLES = 10_000  # benchmark bootstraps and sign-flip permutations; Monte-Carlo error of p ≈ 0.002
RESAMPLE_CHUNK = 1000  # resamples drawn at a time, so memory stays O(chunk x questions)


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


def _tie_groups(values: np.ndarray) -> np.ndarray:
    """Sizes of the groups of equal values (RSS is page-quantised, so flat traces tie a lot)."""
    _, counts = np.unique(values, return_counts=True)
    return counts[counts > 1].astype(float)


def kendall_s_variance(x: np.ndarray, y: np.ndarray) -> float:
    """Null variance of Kendall's S with ties in x and y (Kendall 1970, eq. 4.3)."""
    n = float(x.size)
    tx, ty = _tie_groups(x), _tie_groups(y)
    base = n * (n - 1) * (2 * n + 5)
    base -= np.sum(tx * (tx - 1) * (2 * tx + 5)) + np.sum(ty * (ty - 1) * (2 * ty + 5))
    variance = base / 18.0
    if n > 2:
        variance += np.sum(tx * (tx - 1) * (tx - 2)) * np.sum(ty * (ty - 1) * (ty - 2)) / (9 * n * (n - 1) * (n - 2))
    variance += np.sum(tx * (tx - 1)) * np.sum(ty * (ty - 1)) / (2 * n * (n - 1))
    return float(max(variance, 0.0))


def theil_sen(x: Sequence[float], y: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float, float, float]:
    """Median of pairwise slopes with Sen's (1968) rank-based interval; robust to spikes.

    Returns (slope, low, high, intercept). The interval takes the ordered pairwise slopes at
    ranks (N -/+ z * sqrt(Var S)) / 2, where N is the number of slopes and S Kendall's statistic.
    """
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x_arr.ndim != 1 or x_arr.shape != y_arr.shape:
        raise ValueError(f"theil_sen: x and y must be 1-D of equal length, got {x_arr.shape} and {y_arr.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"theil_sen: confidence must be in (0, 1), got {confidence}")
    first, second = np.triu_indices(x_arr.size, k=1)
    dx = x_arr[second] - x_arr[first]
    distinct = dx != 0
    if not distinct.any():
        raise ValueError("theil_sen: need at least two distinct x values")
    slopes = np.sort((y_arr[second] - y_arr[first])[distinct] / dx[distinct])
    slope = float(np.median(slopes))
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    half_width_ranks = z * math.sqrt(kendall_s_variance(x_arr, y_arr))
    count = slopes.size
    lower_rank = int(round((count - half_width_ranks) / 2.0))  # 1-based rank of the lower limit
    upper_rank = int(round((count + half_width_ranks) / 2.0)) + 1  # 1-based rank of the upper limit
    low = float(slopes[min(max(lower_rank, 1), count) - 1])
    high = float(slopes[min(max(upper_rank, 1), count) - 1])
    intercept = float(np.median(y_arr - slope * x_arr))
    return slope, low, high, intercept


def bootstrap_mean_ci(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE, n_resamples: int = N_RESAMPLES,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over questions (questions are the sampling unit)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("bootstrap needs at least one value")
    rng, means = np.random.default_rng(seed), []
    for start in range(0, n_resamples, RESAMPLE_CHUNK):
        draws = rng.integers(0, data.size, size=(min(RESAMPLE_CHUNK, n_resamples - start), data.size))
        means.append(data[draws].mean(axis=1))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.concatenate(means), [tail, 1.0 - tail])
    return float(low), float(high)


def sign_flip_p_value(differences: Sequence[float], n_permutations: int = N_RESAMPLES, seed: int = 0) -> float:
    """Two-sided paired permutation test: under H0 each per-question difference is equally likely ±."""
    diffs = np.asarray(differences, dtype=np.float64)
    observed = abs(diffs.mean())
    if observed == 0.0:
        return 1.0
    rng, extreme = np.random.default_rng(seed), 0
    tolerance = 1e-12 * max(1.0, observed)  # flips that reproduce |mean| exactly must count as extreme
    for start in range(0, n_permutations, RESAMPLE_CHUNK):
        signs = rng.choice((-1.0, 1.0), size=(min(RESAMPLE_CHUNK, n_permutations - start), diffs.size))
        extreme += int(np.sum(np.abs((signs * diffs).mean(axis=1)) >= observed - tolerance))
    return (extreme + 1) / (n_permutations + 1)


def paired_comparison(base: Sequence[float], other: Sequence[float], confidence: float = DEFAULT_CONFIDENCE,
                      seed: int = 0) -> dict[str, Any]:
    """Mean of per-question (other − base), its paired-bootstrap CI and a sign-flip p-value."""
    if len(base) != len(other):
        raise ValueError(f"paired comparison needs equal lengths, got {len(base)} and {len(other)}")
    diffs = np.asarray(other, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    low, high = bootstrap_mean_ci(diffs, confidence, seed=seed)
    return {"delta": float(diffs.mean()), "ci": [low, high], "confidence": confidence,
            "p_value": sign_flip_p_value(diffs, seed=seed), "test": "paired sign-flip permutation",
            "n": int(diffs.size)}


# Two-sided 95 % Student-t quantiles t(0.975, df) for df = 1..10 (standard tables); 1.96 beyond.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t interval (nan for a single value): seeds are few."""
    values = np.asarray(list(values), dtype=float)
    if values.size < 2:
        return float(values.mean()), float("nan")
    df = values.size - 1
    quantile = T_975[df - 1] if df <= len(T_975) else 1.96
    return float(values.mean()), float(quantile * values.std(ddof=1) / math.sqrt(values.size))


def paired_bootstrap_ci(differences: Sequence[Sequence[float]], confidence: float = DEFAULT_CONFIDENCE,
                        n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Mean paired difference over matched seeds × questions, with a two-way percentile bootstrap interval.

    `differences[s][q] = score(arm, seed s, question q) − score(baseline, seed s, question q)`: every arm
    cell is paired with the baseline cell trained with the same seed and scored on the same questions, so
    what the seed and the question contribute to both cancels. Seeds and questions are both sampled
    units (a new experiment would draw new ones), so each resample draws S seed rows and Q question
    columns with replacement, independently, and takes the mean of the crossed sub-matrix
    (c_seeds · D · c_questionsᵀ) / (S·Q), with c the draw counts. A metric measured once per run (a
    validation loss) is a Q = 1 column: the interval is then over seeds alone. Returns the mean, the
    interval, and the counts it rests on.
    """
    matrix = np.asarray(differences, dtype=np.float64)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"paired_bootstrap_ci needs a non-empty seeds × questions matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("paired_bootstrap_ci: differences must be finite")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n_seeds, n_questions = matrix.shape
    rng, means = np.random.default_rng(seed), []
    for start in range(0, n_resamples, RESAMPLE_CHUNK):
        size = min(RESAMPLE_CHUNK, n_resamples - start)
        seed_counts = _draw_counts(rng, size, n_seeds)
        question_counts = _draw_counts(rng, size, n_questions)
        means.append(((seed_counts @ matrix) * question_counts).sum(axis=1) / (n_seeds * n_questions))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.concatenate(means), [tail, 1.0 - tail])
    return {"delta": float(matrix.mean()), "ci": [float(low), float(high)], "confidence": confidence,
            "n_seeds": int(n_seeds), "n_questions": int(n_questions),
            "method": "two-way paired bootstrap (seeds and questions resampled)"}


def _draw_counts(rng: np.random.Generator, resamples: int, units: int) -> np.ndarray:
    """How often each of `units` is drawn when `units` draws are made with replacement (multinomial counts)."""
    return rng.multinomial(units, np.full(units, 1.0 / units), size=resamples).astype(np.float64)


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[float],
                               n_bins: int = 10) -> tuple[float, list[dict[str, Any]]]:
    """Expected calibration error over equal-width confidence bins, and the bins (Naeini et al. 2015; Guo et al. 2017).

    With M bins, bin b (b = 1..M) holds the answers whose confidence p satisfies (b−1)/M < p ≤ b/M
    (p = 0 goes to bin 1). For bin b with n_b answers, conf_b is their mean confidence and acc_b the
    fraction of them that are correct; of N answers in all,

        ECE = Σ_b (n_b / N) · |acc_b − conf_b|        (empty bins contribute nothing)

    Returns (ECE, bins), one dict per bin with its edges, n, confidence and accuracy (None when empty),
    which is what a reliability diagram draws.
    """
    conf, hits = np.asarray(confidences, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    if conf.shape != hits.shape or conf.ndim != 1 or conf.size == 0:
        raise ValueError(f"expected_calibration_error: need equal non-empty 1-D inputs, got {conf.shape}, {hits.shape}")
    if ((conf < 0) | (conf > 1)).any() or not np.isin(hits, (0.0, 1.0)).all():
        raise ValueError("expected_calibration_error: confidences must lie in [0, 1] and correct be 0 or 1")
    if n_bins < 1:
        raise ValueError(f"n_bins must be ≥ 1, got {n_bins}")
    index = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        mean_conf = float(conf[members].mean()) if count else None
        accuracy = float(hits[members].mean()) if count else None
        if count:
            ece += count / conf.size * abs(accuracy - mean_conf)
        bins.append({"low": b / n_bins, "high": (b + 1) / n_bins, "n": count, "confidence": mean_conf,
                     "accuracy": accuracy})
    return float(ece), bins


def brier_score(probabilities: Sequence[Sequence[float]], true_index: Sequence[int]) -> float:
    """Brier's (1950) multi-class score: the mean over questions of Σ_k (p_k − y_k)², y the one-hot true choice.

    0 is perfect, 2 the worst possible (all mass on one wrong choice); a uniform guess over K choices
    scores 1 − 1/K. Questions may have different numbers of choices.
    """
    if len(probabilities) != len(true_index) or not probabilities:
        raise ValueError(f"brier_score: need one true index per question, got {len(probabilities)} and {len(true_index)}")
    total = 0.0
    for row, (probs, truth) in enumerate(zip(probabilities, true_index)):
        p = np.asarray(probs, dtype=np.float64)
        if not 0 <= truth < p.size:
            raise ValueError(f"brier_score: question {row}: true index {truth} outside its {p.size} choices")
        target = np.zeros_like(p)
        target[truth] = 1.0
        total += float(np.sum((p - target) ** 2))
    return total / len(probabilities)
