"""Tests for yourai.stats: ROC AUC (Mann–Whitney, ties) and the stratified bootstrap CI."""

from __future__ import annotations

import numpy as np
import pytest

from yourai.stats import (bootstrap_auc_ci, bootstrap_mean_ci, kendall_s_variance, paired_comparison, roc_auc,
                          sign_flip_p_value, theil_sen)


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


def test_theil_sen_recovers_known_slope_under_noise():
    rng = np.random.default_rng(1)
    steps = np.arange(200, dtype=float)
    rss = 500.0 + 0.75 * steps + rng.normal(0.0, 4.0, steps.size)
    slope, low, high, intercept = theil_sen(steps, rss)
    assert slope == pytest.approx(0.75, abs=0.03)
    assert low < 0.75 < high
    assert high - low < 0.1
    assert intercept == pytest.approx(500.0, abs=3.0)


def test_theil_sen_ignores_spikes_that_pull_least_squares():
    rng = np.random.default_rng(2)
    steps = np.arange(150, dtype=float)
    rss = 800.0 + 0.2 * steps + rng.normal(0.0, 1.0, steps.size)
    rss[-15:] += 400.0  # a late burst (e.g. an eval pass) is not a per-step leak
    least_squares = np.polyfit(steps, rss, 1)[0]
    slope, low, high, _ = theil_sen(steps, rss)
    assert abs(least_squares - 0.2) > 0.5
    assert slope == pytest.approx(0.2, abs=0.05)


def test_theil_sen_interval_covers_true_slope_about_95_percent_of_the_time():
    true_slope, hits, trials = -0.3, 0, 300
    steps = np.arange(40, dtype=float)
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        _, low, high, _ = theil_sen(steps, true_slope * steps + rng.normal(0.0, 2.0, steps.size))
        hits += low <= true_slope <= high
    assert 0.91 <= hits / trials <= 0.99


def test_theil_sen_flat_page_quantised_trace_has_zero_slope():
    rng = np.random.default_rng(3)
    page_mb = 4096 / 2**20  # one 4 KiB page in MiB
    rss = 900.0 + page_mb * rng.integers(0, 3, 100)  # RSS moves by whole pages, ties everywhere
    slope, low, high, _ = theil_sen(np.arange(100), rss)
    assert slope == 0.0
    assert low <= 0.0 <= high


def test_kendall_variance_without_ties_is_the_textbook_formula():
    n = 30
    x, y = np.arange(n, dtype=float), np.random.default_rng(4).permutation(n).astype(float)
    assert kendall_s_variance(x, y) == pytest.approx(n * (n - 1) * (2 * n + 5) / 18)


def test_kendall_variance_shrinks_with_ties():
    x = np.arange(20, dtype=float)
    tied = np.repeat(np.arange(5, dtype=float), 4)
    assert kendall_s_variance(x, tied) < kendall_s_variance(x, x)


@pytest.mark.parametrize(
    "x, y, match",
    [([1, 2, 3], [1, 2], "equal length"), ([2, 2, 2], [1, 2, 3], "distinct x")],
)
def test_theil_sen_rejects_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        theil_sen(x, y)


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_questions():
    rng = np.random.default_rng(3)
    small, large = rng.binomial(1, 0.3, 50), rng.binomial(1, 0.3, 800)
    low_s, high_s = bootstrap_mean_ci(small, n_resamples=2000)
    low_l, high_l = bootstrap_mean_ci(large, n_resamples=2000)
    assert low_s <= small.mean() <= high_s and low_l <= large.mean() <= high_l
    assert high_l - low_l < high_s - low_s
    assert bootstrap_mean_ci(small, n_resamples=2000) == (low_s, high_s)  # seeded: reproducible


def test_sign_flip_test_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(4)
    assert sign_flip_p_value(rng.normal(0.5, 1.0, 200), n_permutations=2000) < 0.01
    assert sign_flip_p_value(rng.normal(0.0, 1.0, 200), n_permutations=2000) > 0.01
    assert sign_flip_p_value(np.zeros(10)) == 1.0
    assert sign_flip_p_value([1.0, -1.0], n_permutations=500) == 1.0  # every flip is as extreme


def test_paired_comparison_reports_adapter_minus_base():
    base, adapter = [0.0, 0.0, 1.0, 0.0] * 25, [1.0, 0.0, 1.0, 1.0] * 25
    result = paired_comparison(base, adapter)
    assert result["delta"] == pytest.approx(0.5) and result["ci"][0] > 0 and result["p_value"] < 0.01
    with pytest.raises(ValueError):
        paired_comparison([1.0], [1.0, 0.0])


# ---------------------------------------------------------------- paired bootstrap over seeds × questions

from yourai.stats import brier_score, expected_calibration_error, paired_bootstrap_ci  # noqa: E402


def _synthetic_sweep(effect: float, n_seeds: int = 3, n_questions: int = 200, seed: int = 0):
    """Baseline and arm scores sharing each question's difficulty and each seed's offset; the arm adds `effect`."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.0, n_questions)  # large, shared: pairing removes it
    seed_offset = rng.normal(0.0, 0.05, (n_seeds, 1))
    baseline = difficulty + seed_offset + rng.normal(0.0, 0.1, (n_seeds, n_questions))
    arm = difficulty + seed_offset + effect + rng.normal(0.0, 0.1, (n_seeds, n_questions))
    return baseline, arm


def test_paired_bootstrap_recovers_a_known_effect_and_excludes_zero():
    baseline, arm = _synthetic_sweep(effect=0.05)
    result = paired_bootstrap_ci(arm - baseline, n_resamples=2000, seed=1)
    low, high = result["ci"]
    assert result["delta"] == pytest.approx(float((arm - baseline).mean()))
    assert low < 0.05 < high and low > 0.0
    assert (result["n_seeds"], result["n_questions"]) == (3, 200)


def test_paired_bootstrap_covers_zero_when_there_is_no_effect():
    baseline, arm = _synthetic_sweep(effect=0.0, seed=4)
    low, high = paired_bootstrap_ci(arm - baseline, n_resamples=2000, seed=1)["ci"]
    assert low < 0.0 < high


def test_pairing_is_what_makes_the_interval_narrow():
    """Resampling the arms separately keeps the shared question difficulty in the noise: a far wider interval."""
    baseline, arm = _synthetic_sweep(effect=0.05)
    paired = paired_bootstrap_ci(arm - baseline, n_resamples=2000, seed=1)["ci"]
    unpaired_low, unpaired_high = (np.array(bootstrap_mean_ci(arm.mean(axis=0), n_resamples=2000, seed=1))
                                   - baseline.mean())
    assert (paired[1] - paired[0]) * 5 < unpaired_high - unpaired_low


def test_paired_bootstrap_over_seeds_alone_for_per_run_metrics():
    result = paired_bootstrap_ci([[1.0], [2.0], [3.0]], n_resamples=500, seed=0)
    assert result["delta"] == 2.0 and result["n_questions"] == 1
    assert 1.0 <= result["ci"][0] <= result["ci"][1] <= 3.0
    assert paired_bootstrap_ci([[1.0], [2.0], [3.0]], n_resamples=500, seed=0) == result  # seeded


@pytest.mark.parametrize("bad", [[], [1.0, 2.0], [[1.0, float("nan")]]])
def test_paired_bootstrap_rejects_bad_shapes_and_values(bad):
    with pytest.raises(ValueError):
        paired_bootstrap_ci(bad)


# ---------------------------------------------------------------- calibration, by hand


def test_ece_on_a_hand_computed_case():
    # 4 answers, 2 bins: (0, 0.5] holds 0.2 (wrong) and 0.4 (right): conf 0.3, acc 0.5, gap 0.2;
    # (0.5, 1] holds 0.6 (right) and 1.0 (right): conf 0.8, acc 1.0, gap 0.2. ECE = ½·0.2 + ½·0.2 = 0.2.
    ece, bins = expected_calibration_error([0.2, 0.4, 0.6, 1.0], [0, 1, 1, 1], n_bins=2)
    assert ece == pytest.approx(0.2)
    assert [(b["n"], b["confidence"], b["accuracy"]) for b in bins] == [(2, pytest.approx(0.3), 0.5),
                                                                       (2, pytest.approx(0.8), 1.0)]


def test_ece_bin_edges_are_right_closed_and_empty_bins_count_nothing():
    # 0.5 belongs to the first of two bins; 0 to the first; the second bin is empty.
    ece, bins = expected_calibration_error([0.0, 0.5], [0, 1], n_bins=2)
    assert [b["n"] for b in bins] == [2, 0] and bins[1]["accuracy"] is None
    assert ece == pytest.approx(abs(0.5 - 0.25))
    assert expected_calibration_error([0.7, 0.7], [1, 1], n_bins=10)[0] == pytest.approx(0.3)


def test_brier_on_hand_computed_cases():
    # (0.7-1)² + 0.2² + 0.1² = 0.14 ; (0.5-0)² + (0.5-1)² = 0.5 ; mean 0.32
    assert brier_score([[0.7, 0.2, 0.1], [0.5, 0.5]], [0, 1]) == pytest.approx(0.32)
    assert brier_score([[1.0, 0.0]], [0]) == 0.0 and brier_score([[0.0, 1.0]], [0]) == 2.0
    assert brier_score([[0.25] * 4], [2]) == pytest.approx(1 - 1 / 4)


def test_calibration_inputs_are_checked():
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        expected_calibration_error([1.2], [1])
    with pytest.raises(ValueError, match="outside its 2 choices"):
        brier_score([[0.5, 0.5]], [2])
