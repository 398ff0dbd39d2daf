"""Two recorded runs that differ in one setting and in their per-question scores by a known amount."""

from __future__ import annotations

from pathlib import Path

import pytest
from run_dirs import make_run


@pytest.fixture
def two_runs(tmp_path) -> tuple[Path, Path]:
    plain = make_run(tmp_path, "plain", ["loss.objective=plain"], [0, 0, 1, 0, 1, 0, 0, 1] * 5, val_gap=-0.3)
    weighted = make_run(tmp_path, "weighted", ["loss.objective=weighted"], [1, 0, 1, 1, 1, 0, 1, 1] * 5, val_gap=-0.8)
    return plain, weighted
