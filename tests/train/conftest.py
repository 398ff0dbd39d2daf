"""Fixtures shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from yourai.config import load_config


@pytest.fixture(scope="session")
def curated_sample(tmp_path_factory) -> Path:
    """The sample corpus curated once (under a second)."""
    from yourai.data.curate import curate

    out = tmp_path_factory.mktemp("curated_sample")
    curate(None, out, load_config().curate)
    return out
