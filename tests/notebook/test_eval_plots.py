"""The reliability diagram and the forest plot draw what they are given: one line per model, one point per delta."""

from __future__ import annotations

import matplotlib

matplotlib.use("agg")

import pytest  # noqa: E402

from yourai.notebook.eval_plots import forest_plot, reliability_diagram  # noqa: E402
from yourai.stats import expected_calibration_error  # noqa: E402


def test_reliability_diagram_plots_filled_bins_and_counts():
    ece, bins = expected_calibration_error([0.2, 0.4, 0.6, 1.0], [0, 1, 1, 1], n_bins=2)
    figure = reliability_diagram({"base": {"bins": bins, "ece": ece, "brier": 0.3}})
    top, bottom = figure.axes
    diagonal, base = top.lines
    assert list(base.get_xdata()) == pytest.approx([0.3, 0.8]) and list(base.get_ydata()) == [0.5, 1.0]
    assert [patch.get_height() for patch in bottom.patches] == [2, 2]
    assert "ECE 0.200" in top.get_legend().get_texts()[1].get_text()


def test_forest_plot_has_a_panel_per_eval_set_and_marks_intervals_that_exclude_zero():
    rows = [{"arm": "w", "vs": "p", "eval": "truthfulqa", "metric": "mc2", "delta": -0.1, "ci": [-0.2, -0.01]},
            {"arm": "w", "vs": "p", "eval": "truthfulqa", "metric": "mc1", "delta": 0.0, "ci": [-0.1, 0.1]},
            {"arm": "w", "vs": "p", "eval": "train", "metric": "val_gap", "delta": -0.2, "ci": [-0.3, -0.1]}]
    figure = forest_plot(rows)
    truthfulqa, train = figure.axes
    assert [label.get_text() for label in truthfulqa.get_yticklabels()] == ["mc2 · w", "mc1 · w"]  # in the given order, top down
    assert len(train.get_yticklabels()) == 1
    colours = [line.get_color() for line in truthfulqa.lines if line.get_marker() == "o"]
    assert colours == ["tab:red", "tab:blue"]  # mc2 excludes 0, mc1 does not
    with pytest.raises(ValueError, match="no comparisons"):
        forest_plot([])
