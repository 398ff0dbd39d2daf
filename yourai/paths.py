"""Where the project's files live, resolved once so no module hard-codes a machine path."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The read-only ../shared folder beside the checkout (override with YOURAI_SHARED)."""
    override = os.environ.get("YOURAI_SHARED")
    return Path(override) if override else PROJECT_ROOT.parent / "shared"


def cache_dir() -> Path:
    """Where built artifacts (a rebuilt default model) are cached; gitignored."""
    override = os.environ.get("YOURAI_CACHE")
    return Path(override) if override else PROJECT_ROOT / ".cache"


def models_cache_dir() -> Path:
    """Models yourai builds or imports itself (rebuilds of the default, packaged GGUFs), one folder each."""
    return cache_dir() / "models"


def shipped_model_dir() -> Path:
    """The embedded default as committed: every platform evaluates these same weights.

    A build depends on the BLAS that ran it (OpenBLAS, the reference BLAS, Accelerate and CUDA round
    differently, and 240 training steps carry those last bits into every weight), so the project
    ships one build instead of building on first use.
    """
    return Path(__file__).resolve().parent / "models" / "tiny-distrust"


def default_model_dir() -> Path:
    """The model "default" names: YOURAI_DEFAULT_MODEL when set (a directory), else the shipped weights."""
    override = os.environ.get("YOURAI_DEFAULT_MODEL")
    return Path(override) if override else shipped_model_dir()


def rebuilt_model_dir() -> Path:
    """Where `yourai build-model` writes a rebuild of the default unless told otherwise (gitignored)."""
    return models_cache_dir() / "tiny-distrust"


def sample_corpus_path() -> Path:
    """The project's own sample corpus (original text, CC0)."""
    return PROJECT_ROOT / "data" / "sample" / "corpus.jsonl"


def configs_dir() -> Path:
    return PROJECT_ROOT / "configs"


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Name the file when a write under this block fails.

    A full disk surfaces as `OSError(ENOSPC)` without a file name (a buffered write or flush) or as
    MLX's `RuntimeError("[write] Unable to write N bytes to file.")`; either becomes an OSError that
    names `path`, so the user learns which file could not be written.
    """
    try:
        yield
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
    except RuntimeError as err:
        if not str(err).startswith("[write]"):
            raise
        raise OSError(errno.EIO, f"{err} (is the disk full?)", str(path)) from err
