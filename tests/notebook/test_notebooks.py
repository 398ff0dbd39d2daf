"""The notebooks as a product (six stages and the sweep analysis): one parameters cell first, thin, small, OpenBLAS-safe."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from yourai.paths import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_NOTEBOOK_BYTES = 1_500_000  # committed outputs stay small: no megabyte images in git


def _code_cells(path: Path) -> list:
    return [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def test_there_are_six_stage_notebooks_and_the_sweep_analysis():
    assert [path.name[:2] for path in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_first_code_cell_is_the_only_parameters_cell(path):
    cells = _code_cells(path)
    tagged = [index for index, cell in enumerate(cells) if "parameters" in cell.metadata.get("tags", [])]
    assert tagged == [0], f"{path.name}: parameters cells at code-cell positions {tagged}"
    assert "run_dir" in cells[0].source, f"{path.name}: the parameters cell must declare run_dir"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_yourai_is_imported_before_mlx(path):
    """mlx[cpu] binds its BLAS at import: yourai must load OpenBLAS first (yourai/_blas.py)."""
    source = "\n".join(cell.source for cell in _code_cells(path))
    first_mlx = re.search(r"^\s*(import mlx|from mlx)", source, re.M)
    first_yourai = re.search(r"^\s*(import yourai|from yourai)", source, re.M)
    assert first_yourai, f"{path.name} never imports yourai"
    assert not first_mlx or first_yourai.start() < first_mlx.start(), f"{path.name} imports mlx before yourai"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_committed_notebook_is_small_and_error_free(path):
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES
    errors = [output for cell in _code_cells(path) for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors, f"{path.name} was committed with an error output: {errors[0].get('ename')}"
