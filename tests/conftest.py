"""Shared fixtures: the ../shared material (skipped with a reason when absent, failing when incomplete)."""

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
    """Only an absent ../shared skips; one that is there but lacks the checkpoint is broken, and fails."""
    path = shared_dir / "models" / "stories260K"
    missing = [name for name in ("stories260K.bin", "tok512.bin") if not (path / name).is_file()]
    if missing:
        pytest.fail(f"../shared is present at {shared_dir} but {path} lacks {missing}: restore it")
    return path
