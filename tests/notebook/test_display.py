"""Where a helper runs: outside a kernel there is neither a kernel nor a live frontend."""

from __future__ import annotations

from yourai.notebook.display import FIGURE_DPI, in_kernel, is_interactive_session


def test_not_in_a_kernel_nor_interactive_under_pytest():
    assert in_kernel() is False
    assert is_interactive_session() is False


def test_figures_stay_small():
    assert FIGURE_DPI <= 100  # committed notebooks embed every figure
