"""Tests for yourai.notebook.loss_plots: the landscape grid, weight tables, the token batch and the panel figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are built, never shown

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from yourai.notebook import loss_plots  # noqa: E402
from yourai.loss import empirical_distrust_loss  # noqa: E402

SOURCES = ["patent", "patent", "wiki", "government"]
W_AUTH = np.array([0.05, 0.1, 0.9, 0.95])
ENTROPY_BITS = np.array([7.5, 7.0, 1.0, 0.5])


def test_valley_is_where_the_term_vanishes():
    authority = np.array([0.0, 0.5, 0.9, 0.99])
    values = empirical_distrust_loss(authority, loss_plots.valley_entropy_bits(authority), reduction="none")
    np.testing.assert_allclose(values, 0.0, atol=1e-12)


def test_landscape_grid_is_h_by_w_and_matches_the_term():
    authority, entropy, values = loss_plots.landscape(alpha=2.7, points=11, max_bits=10.0)
    assert values.shape == (11, 11)
    assert values[5, 3] == pytest.approx(empirical_distrust_loss(authority[3], entropy[5], alpha=2.7))
    assert authority[-1] == pytest.approx(0.99) and entropy[-1] == pytest.approx(10.0)


def test_weight_table_has_one_row_per_sample_and_scheme():
    table = loss_plots.weight_table(W_AUTH, ENTROPY_BITS, SOURCES, cap=30.0)
    assert len(table) == 3 * len(SOURCES)
    stats = loss_plots.weight_stats(table)
    np.testing.assert_allclose(stats["mean"], 1.0, atol=1e-4)
    assert (stats["max_over_min"] <= 30.0 + 1e-3).all()
    by_source = loss_plots.mean_weight_by_source(table)
    assert by_source.loc["patent", "monotone"] > by_source.loc["government", "monotone"]
    assert by_source.loc["wiki", "none"] == 1.0


def test_draw_panel_builds_three_axes():
    figure = loss_plots.draw_panel(W_AUTH, ENTROPY_BITS, SOURCES, alpha=2.7, lambda_weight=0.6,
                                   scheme="monotone", cap=30.0)
    try:
        titles = [ax.get_title() for ax in figure.axes]
        assert "L_emp, alpha = 2.7" in titles and "weights: monotone" in titles
        assert "faithful term, lambda = 0.6" in titles
    finally:
        plt.close(figure)


class _CharTokenizer:
    """Bytes as tokens: enough to test padding and masking without a trained tokenizer."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode())


def test_token_batch_pads_right_and_masks_padding():
    batch = loss_plots.token_batch(_CharTokenizer(), ["abcdef", "xyz"], max_tokens=4)
    assert batch["inputs"].shape == (2, 4) and batch["targets"].shape == (2, 4)
    assert batch["mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["inputs"][0].tolist() == list(b"abcd") and batch["targets"][0].tolist() == list(b"bcde")
    assert batch["targets"][1, :2].tolist() == list(b"yz")


def test_token_batch_rejects_texts_without_a_target():
    with pytest.raises(ValueError, match=r"texts \[1\] give fewer than 2 tokens"):
        loss_plots.token_batch(_CharTokenizer(), ["abc", "a"], max_tokens=4)


def test_panel_widget_redraws_when_a_slider_moves(monkeypatch):
    drawn = []
    real_draw = loss_plots.draw_panel

    def recording_draw(*args, **settings):
        drawn.append(settings)
        figure = real_draw(*args, **settings)
        plt.close(figure)
        return figure

    monkeypatch.setattr(loss_plots, "draw_panel", recording_draw)
    panel = loss_plots.panel_widget(W_AUTH, ENTROPY_BITS, SOURCES, alpha=2.7, lambda_weight=0.6,
                                    scheme="monotone", cap=30.0)
    sliders = {control.description: control for control in panel.children[0].children}
    assert set(sliders) == {"alpha", "lambda", "scheme", "cap"}
    sliders["scheme"].value = "roemmele"
    sliders["alpha"].value = 2.5
    assert drawn[-1] == {"alpha": 2.5, "lambda_weight": 0.6, "scheme": "roemmele", "cap": 30.0}
    image = panel.children[1]
    assert image.value[:8] == b"\x89PNG\r\n\x1a\n"  # the figure itself, not an Output widget capture


def test_panel_sliders_start_exactly_on_the_given_values():
    panel = loss_plots.panel_widget(W_AUTH, ENTROPY_BITS, SOURCES, alpha=2.7, lambda_weight=0.6,
                                    scheme="monotone", cap=30.0)
    values = {control.description: control.value for control in panel.children[0].children}
    assert values == {"alpha": 2.7, "lambda": 0.6, "scheme": "monotone", "cap": 30.0}


def _notebook_03_checked_text(w_auth: np.ndarray, entropy_bits: np.ndarray, sources: list[str], cap: float = 30.0) -> str:
    """What notebook 03's NBVAL_CHECK_OUTPUT cells print from the sample corpus's scores, at their roundings."""
    from yourai.loss import distrust_weights

    table = loss_plots.weight_table(w_auth, entropy_bits, sources, cap)
    weights = distrust_weights(w_auth, entropy_bits, "monotone", cap=cap)
    batch_means = weights[np.random.default_rng(0).integers(0, len(weights), size=(2000, 8))].mean(axis=1)
    low, high = np.percentile(batch_means, [5, 95])
    patent, wiki = loss_plots.ANCHOR_PRIMARY, loss_plots.ANCHOR_CONSENSUS
    anchor = [f"{empirical_distrust_loss(*point, alpha=2.7):.4f}" for point in (patent, wiki)]
    ratios = [f"{pair[0] / pair[1]:.2f}" for scheme in ("roemmele", "monotone") for pair_cap in (1000.0, 30.0)
              for pair in [distrust_weights([patent[0], wiki[0]], [patent[1], wiki[1]], scheme, cap=pair_cap)]]
    return "\n".join([loss_plots.weight_stats(table).to_string(), loss_plots.mean_weight_by_source(table).to_string(),
                      f"{batch_means.mean():.3f} {low:.2f} {high:.2f}", *anchor, *ratios])


def test_notebook_03_checked_numbers_survive_other_platforms_float64_rounding():
    """numpy's SIMD and libm log/exp differ between platforms by a few ulp (~1e-16 relative); scores moved
    by 1e-12 (10^4 times that) must print the same at the roundings notebook 03's checked cells use."""
    from yourai.formula import AUTHORITY_RANGE
    from yourai.notebook.scoring_tables import score_table
    from yourai.paths import sample_corpus_path
    from yourai.records import read_records

    scores = score_table(read_records(sample_corpus_path()), workers=1)
    w_auth, entropy = scores["authority_weight"].to_numpy(), scores["provenance_entropy"].to_numpy()
    sources = scores["group"].tolist()
    reference = _notebook_03_checked_text(w_auth, entropy, sources)
    rng = np.random.default_rng(0)
    for _ in range(3):
        jitter = lambda values: values * (1.0 + 1e-12 * rng.choice([-1.0, 1.0], size=values.shape))  # noqa: E731
        moved = _notebook_03_checked_text(np.clip(jitter(w_auth), *AUTHORITY_RANGE), jitter(entropy), sources)
        assert moved == reference


def test_gradient_sample_takes_one_per_source_type_then_spreads_by_weight():
    groups = ["wiki", "wiki", "patent", "blog", "patent"]
    assert loss_plots.gradient_sample(groups, [1, 2, 3, 4, 5], 2) == [0, 2]  # first of each type, in order
    assert loss_plots.gradient_sample(groups, [1, 2, 3, 4, 5], 3) == [0, 2, 3]
    # one source type: not a one-record batch (where weighted CE equals plain CE) but the weight range
    weights = [0.5, 3.0, 0.1, 1.0, 2.0, 0.2]
    picked = loss_plots.gradient_sample(["unknown"] * 6, weights, 4)
    assert picked[0] == 0 and len(set(picked)) == 4
    assert {min(weights), max(weights)} <= {weights[i] for i in picked}
    assert loss_plots.gradient_sample(["a", "a"], [1.0, 2.0], 8) == [0, 1]
