"""Shared fixtures: the ../shared material (skipped with a reason when absent) and small models."""

from __future__ import annotations

from pathlib import Path

import pytest

from yourai.paths import shared_dir as _shared_dir


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout; CI has it, a bare clone may not."""
    path = _shared_dir()
    if not path.is_dir():
        pytest.skip(f"../shared not present at {path} (CI provides it; set YOURAI_SHARED to point elsewhere)")
    return path


@pytest.fixture(scope="session")
def stories260k_dir(shared_dir: Path) -> Path:
    path = shared_dir / "models" / "stories260K"
    if not (path / "stories260K.bin").is_file():
        pytest.skip(f"stories260K checkpoint not found under {path}")
    return path
