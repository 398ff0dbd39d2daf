"""Give mlx[cpu] an optimised BLAS on Linux: the system's OpenBLAS, else one from pip (no root needed).

The mlx[cpu] wheels for Linux bundle the reference (netlib) BLAS: an fp32 1024² matmul runs at
~3–5 GFLOP/s with it on our 2-core machines, ~80–140 with OpenBLAS. libmlx resolves `cblas_*`
and LAPACK through the global symbol scope first, so loading an OpenBLAS with RTLD_GLOBAL
*before* mlx is imported makes every matmul use it. Nothing changes on macOS (Accelerate).

Where it comes from, in order:
1. the system OpenBLAS (`apt install libopenblas0-pthread`, needs root);
2. the pip wheel `ngsolve-openblas` (13 MB, x86_64, a dependency of yourai there): unprefixed
   `cblas_*` symbols mlx can bind (scipy-openblas prefixes its symbols; cmeel-openblas is an
   AVX-512-only build). It needs `libgfortran.so.5`, which a bare Debian lacks; mlx[cpu] bundles
   one under a renamed soname, so a directory of symlinks (the "shim") next to which the library
   is opened makes its `$ORIGIN` RPATH find it.

`YOURAI_OPENBLAS=0` turns this off, `=pip` skips the system library, `=<path>` loads that file.

OpenBLAS's idle threads spin (calling sched_yield) for 2^28 cycles, ~0.1 s, after each product before
they sleep. Between two products a training step runs yourai's multi-threaded kernels and MLX's
single-threaded ops, and the spinning thread takes a core from them: `OPENBLAS_THREAD_TIMEOUT` is set to
THREAD_TIMEOUT (2^16 cycles, ~20 us) unless the user set it. It changes when a thread sleeps, never how a
product is split (that follows the thread count), so it does not change what a product computes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

SYSTEM_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",
)
PIP_PACKAGE = "ngsolve-openblas"
PIP_LIBRARY = r"libopenblas.*\.so.*"
GFORTRAN_SONAME = "libgfortran.so.5"
MLX_CPU_PACKAGE = "mlx-cpu"  # ships libgfortran-<hash>.so.5.* and libquadmath-<hash>.so.* in mlx_cpu.libs/


@dataclass(frozen=True)
class BlasLibrary:
    """The OpenBLAS we loaded, where it came from, and how it found its runtime."""

    path: str
    source: str  # "system" | "pip" | "YOURAI_OPENBLAS"
    note: str = ""


# OpenBLAS's idle-spin length as a power of two of cycles (its default is 28). SmolLM2 LoRA step at 8 x 256 on
# a 2-core AVX-512 Xeon, interleaved: 273.8 / 296.0 tokens/s with 4 against 249.3 / 259.1 with the default;
# the body's forward and backward 5.4-5.7 s with 4, 16 or 20 against 6.5-6.8 s.
THREAD_TIMEOUT = "16"

loaded: BlasLibrary | None = None
loaded_blas: str | None = None  # loaded.path, for callers that only need the file


def _dist_files(distribution: str, pattern: str) -> list[Path]:
    """Existing files of an installed distribution whose name matches `pattern`."""
    from importlib import metadata

    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        return []
    found = {Path(file.locate()).resolve() for file in files if re.fullmatch(pattern, Path(str(file)).name)}
    return sorted(path for path in found if path.is_file())


def pip_openblas() -> Path | None:
    """The library file of the pip OpenBLAS wheel, if it is installed."""
    libraries = _dist_files(PIP_PACKAGE, PIP_LIBRARY)
    return libraries[0] if libraries else None


def _shim_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "yourai" / "blas-shim"


def gfortran_shim(library: Path) -> Path | None:
    """A symlink to `library` beside `libgfortran.so.5` -> mlx[cpu]'s bundled copy (and its libquadmath).

    Opened through the symlink, the library's `$ORIGIN` RPATH is the shim directory, so its
    `libgfortran.so.5` resolves there on machines without the system package. None when mlx[cpu]
    bundles no libgfortran.
    """
    bundled = _dist_files(MLX_CPU_PACKAGE, r"libgfortran.*\.so\.5.*")
    if not bundled:
        return None
    links = {library.name: library, GFORTRAN_SONAME: bundled[0]}
    links.update({path.name: path for path in bundled[0].parent.glob("libquadmath*")})
    key = hashlib.sha256("\n".join(f"{name}={target}" for name, target in sorted(links.items())).encode()).hexdigest()
    shim = _shim_root() / key[:12]
    shim.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        link = shim / name
        if not (link.is_symlink() and Path(os.readlink(link)) == target):
            staging = shim / f".{name}.{os.getpid()}"
            staging.unlink(missing_ok=True)
            staging.symlink_to(target)
            staging.replace(link)  # atomic: concurrent processes may build the same shim
    return shim / library.name


def _load(path: Path, source: str) -> BlasLibrary | None:
    """dlopen globally; when only libgfortran is missing, retry through the shim."""
    try:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        return BlasLibrary(str(path), source)
    except OSError as error:
        if "libgfortran" not in str(error):
            return None
    shim = gfortran_shim(path)
    if shim is None:
        return None
    try:
        ctypes.CDLL(str(shim), mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return None
    return BlasLibrary(str(path), source, f"libgfortran from {MLX_CPU_PACKAGE} via {shim.parent}")


def _system_openblas() -> Path | None:
    for candidate in SYSTEM_CANDIDATES:
        if Path(candidate).exists():
            return Path(candidate)
    found = ctypes.util.find_library("openblas")  # a soname such as libopenblas.so.0: dlopen searches for it
    return Path(found) if found else None


def _choose() -> BlasLibrary | None:
    setting = os.environ.get("YOURAI_OPENBLAS", "")
    if setting not in ("", "1", "auto", "pip"):
        return _load(Path(setting), "YOURAI_OPENBLAS") if Path(setting).exists() else None
    system = None if setting == "pip" else _system_openblas()
    if system is not None:
        chosen = _load(system, "system")
        if chosen is not None:
            return chosen
    wheel = pip_openblas()
    return _load(wheel, "pip") if wheel is not None else None


def preload_openblas() -> str | None:
    """Load an OpenBLAS globally if this is Linux and mlx is not imported yet; return its path."""
    global loaded, loaded_blas
    if loaded or not sys.platform.startswith("linux") or os.environ.get("YOURAI_OPENBLAS") == "0":
        return loaded_blas
    if "mlx.core" in sys.modules:
        return None  # too late: mlx already bound its BLAS symbols
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT)  # read once, when OpenBLAS loads
    loaded = _choose()
    loaded_blas = loaded.path if loaded else None
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
