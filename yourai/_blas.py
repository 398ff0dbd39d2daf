"""Give mlx[cpu] an optimised BLAS on Linux.

The mlx[cpu] wheels for Linux bundle the reference (netlib) BLAS: on our 2-core machine
an fp32 1024² matmul runs at ~5 GFLOP/s with it and ~85–105 GFLOP/s with OpenBLAS.
libmlx resolves `cblas_*` through the global symbol scope first, so loading OpenBLAS
with RTLD_GLOBAL *before* mlx is imported makes every matmul use it. Nothing changes on
macOS (Accelerate) or CUDA. Set YOURAI_OPENBLAS=0 to opt out, or to a library path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",
)

loaded_blas: str | None = None


def _find_openblas() -> str | None:
    setting = os.environ.get("YOURAI_OPENBLAS", "")
    if setting and setting not in ("1", "auto"):
        return setting if Path(setting).exists() else None
    for candidate in CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return ctypes.util.find_library("openblas")


def preload_openblas() -> str | None:
    """Load OpenBLAS globally if this is Linux and mlx is not imported yet; return its path."""
    global loaded_blas
    if loaded_blas or not sys.platform.startswith("linux") or os.environ.get("YOURAI_OPENBLAS") == "0":
        return loaded_blas
    if "mlx.core" in sys.modules:
        return None  # too late: mlx already bound its BLAS symbols
    path = _find_openblas()
    if path:
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            loaded_blas = path
        except OSError:
            return None
    return loaded_blas


def openblas_threads() -> int | None:
    """Threads the preloaded OpenBLAS uses, or None without one.

    Recorded with a model build: OpenBLAS splits a matmul differently for another thread count, and the
    rounding that changes is carried through training (the same machine builds different weights with
    OPENBLAS_NUM_THREADS=1 and with the default).
    """
    if not loaded_blas:
        return None
    library = ctypes.CDLL(loaded_blas)
    return int(library.openblas_get_num_threads()) if hasattr(library, "openblas_get_num_threads") else None
