"""Tests for yourai.stats: ROC AUC (Mann–Whitney, ties) and the stratified bootstrap CI."""

from __future__ import annotations

import numpy as np
import pytest

from yourai.stats import bootstrap_auc_ci, roc_auc


def test_perfect_and_inverted_separation() -> None:
    assert roc_auc([3, 4], [1, 2]) == 1.0 and roc_auc([1, 2], [3, 4]) == 0.0


def test_ties_count_half() -> None:
    assert roc_auc([1, 2, 3], [1, 2, 3]) == 0.5
    assert roc_auc([2], [2, 1]) == 0.75


def test_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(1)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (40 * 30)
    assert roc_auc(pos, neg) == pytest.approx(pairwise)


@pytest.mark.parametrize("pos, neg", [([], [1.0]), ([1.0], []), ([float("nan")], [1.0])])
def test_rejects_empty_or_non_finite(pos, neg) -> None:
    with pytest.raises(ValueError):
        roc_auc(pos, neg)


def test_bootstrap_ci_brackets_point_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 300), rng.normal(0, 1, 200)
    point, low, high = bootstrap_auc_ci(pos, neg, resamples=300, seed=3)
    assert low < point < high and high - low < 0.15
    assert bootstrap_auc_ci(pos, neg, resamples=300, seed=3) == (point, low, high)


def test_bootstrap_rejects_bad_confidence() -> None:
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_auc_ci([1.0], [0.0], confidence=1.5)
