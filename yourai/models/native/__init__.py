"""yourai's fused CPU kernels (kernels.cpp), built on first use for the machine they run on.

Why built here and not shipped: the mlx[cpu] Linux wheels target baseline x86-64, so their
exponentials are scalar library calls; these kernels are compiled with the machine's own vector
instructions (-march=native), which a wheel cannot assume. The build needs what an MLX extension
needs: a C++ compiler, CMake, and nanobind of the same internals ABI as the installed mlx (the
extension and mlx.core then share one array type). It runs once per (source, mlx, nanobind,
Python, compiler, CPU) and is cached in ``native/`` of yourai's cache (``YOURAI_CACHE``, by default
the project's ``.cache``, beside the imported models); a missing tool or a failed build is reported by ``yourai doctor`` and
the MLX ops are used instead — never an error in a run.

``YOURAI_NATIVE=0`` turns the kernels off; they are built on Linux only (elsewhere MLX's own CPU
kernels are vectorized or the arrays run on Metal).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterator

SOURCE = Path(__file__).with_name("kernels.cpp")
MODULE = "_yourai_native"
BUILD_TIMEOUT_S = 900


@dataclass(frozen=True)
class NativeStatus:
    """Whether the kernels are in use, and if not, why (what `yourai doctor` prints)."""

    module: ModuleType | None
    reason: str
    path: Path | None = None


_status: NativeStatus | None = None
_disabled = 0


def status() -> NativeStatus:
    """The kernels' status, building them the first time it is asked for (minutes at most, once)."""
    global _status
    if _status is None:
        _status = _load()
    return _status


def module() -> ModuleType | None:
    """The compiled module, or None where the kernels are off, could not be built, or are `disabled()` now."""
    return None if _disabled else status().module


@contextmanager
def disabled() -> Iterator[None]:
    """MLX's own ops instead of the kernels for functions traced inside this block (the tests compare the
    two; the training benchmark times both). A function mx.compile traced before keeps what it traced."""
    global _disabled
    _disabled += 1
    try:
        yield
    finally:
        _disabled -= 1


def _load() -> NativeStatus:
    setting = os.environ.get("YOURAI_NATIVE", "")
    if setting == "0":
        return NativeStatus(None, "off (YOURAI_NATIVE=0)")
    if not sys.platform.startswith("linux"):
        return NativeStatus(None, f"not built on {sys.platform}: MLX's own CPU kernels are used")
    problem = _missing_tool() or _abi_mismatch()
    if problem:
        return NativeStatus(None, problem)
    target = _cache_dir() / _build_key()
    library = _find_library(target)
    if library is None:
        try:
            library = _build(target)
        except (OSError, subprocess.SubprocessError, RuntimeError) as error:
            return NativeStatus(None, f"build failed: {error}")
    try:
        return NativeStatus(_import(library), "in use", library)
    except ImportError as error:
        return NativeStatus(None, f"{library} does not load: {error}")


# ---------------------------------------------------------------- what the build needs


def _missing_tool() -> str | None:
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            return f"not built: `{tool}` is not on PATH"
    if importlib.util.find_spec("nanobind") is None:
        return "not built: nanobind is not installed (pip install nanobind)"
    return None


def _nanobind_internals() -> int | None:
    import nanobind

    header = Path(nanobind.source_dir()) / "nb_internals.h"
    found = re.search(r"define NB_INTERNALS_VERSION (\d+)", header.read_text()) if header.exists() else None
    return int(found.group(1)) if found else None


def _mlx_internals() -> int | None:
    """The nanobind internals version mlx.core was built with, read from its binary's ABI tag."""
    import mlx.core

    tag = re.search(rb"nanobind_[a-z0-9_]*?_v(\d+)\x00", Path(mlx.core.__file__).read_bytes())
    return int(tag.group(1)) if tag else None


def _abi_mismatch() -> str | None:
    ours, theirs = _nanobind_internals(), _mlx_internals()
    if ours is None or theirs is None or ours != theirs:
        import nanobind

        return (f"not built: nanobind {nanobind.__version__} has internals ABI v{ours}, mlx.core was built with "
                f"v{theirs}; install the nanobind release of that ABI")
    return None


# ---------------------------------------------------------------- where and how it is built


def _cache_dir() -> Path:
    from yourai.paths import cache_dir

    return cache_dir() / "native"


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    found = re.search(r"^(?:flags|Features)\s*:(.*)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.processor()


def _build_key() -> str:
    """One build per source, mlx, nanobind, Python, compiler and CPU: -march=native code is the CPU's own."""
    import mlx.core
    import nanobind

    compiler = subprocess.run(["c++", "--version"], capture_output=True, text=True, check=False).stdout
    parts = [SOURCE.read_bytes().decode(), mlx.core.__version__, nanobind.__version__, sys.version,
             platform.machine(), compiler, _cpu_flags()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _find_library(target: Path) -> Path | None:
    found = sorted(target.glob(f"{MODULE}*.so")) if target.is_dir() else []
    return found[0] if found else None


CMAKE_LISTS = """cmake_minimum_required(VERSION 3.20)
project(yourai_native LANGUAGES CXX)
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
find_package(Python COMPONENTS Interpreter Development.Module REQUIRED)
find_package(nanobind CONFIG REQUIRED)
find_package(MLX CONFIG REQUIRED)
nanobind_add_module({module} NB_STATIC NB_DOMAIN mlx NOMINSIZE "{source}")
target_link_libraries({module} PRIVATE mlx)
target_compile_options({module} PRIVATE -O3 -march=native -fno-math-errno -fno-trapping-math)
set_target_properties({module} PROPERTIES BUILD_WITH_INSTALL_RPATH TRUE INSTALL_RPATH "{mlx_lib}")
"""


def _build(target: Path) -> Path:
    """Configure and build into a scratch folder, then move the library into `target` (one writer at a time)."""
    import fcntl  # POSIX; only Linux builds

    import mlx
    import nanobind

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        library = _find_library(target)  # another process built it while this one waited
        if library is not None:
            return library
        print("yourai: building the native CPU kernels for this machine (once; ~20 s on a 2-core machine)...",
              file=sys.stderr, flush=True)
        mlx_root = Path(mlx.__path__[0])
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f"{target.name}.build-") as scratch:
            work = Path(scratch)
            (work / "CMakeLists.txt").write_text(CMAKE_LISTS.format(
                module=MODULE, source=SOURCE.as_posix(), mlx_lib=(mlx_root / "lib").as_posix()))
            configure = ["cmake", "-S", str(work), "-B", str(work / "build"), "-DCMAKE_BUILD_TYPE=Release",
                         f"-DPython_EXECUTABLE={sys.executable}", f"-Dnanobind_ROOT={nanobind.cmake_dir()}",
                         f"-DMLX_ROOT={mlx_root}"]
            _run(configure, work / "build.log")
            _run(["cmake", "--build", str(work / "build"), "--parallel", str(os.cpu_count() or 1)], work / "build.log")
            built = sorted((work / "build").glob(f"{MODULE}*{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"))
            if not built:
                raise RuntimeError(f"cmake built no {MODULE} library")
            staged = work / built[0].name
            shutil.copy2(built[0], staged)
            target.mkdir(exist_ok=True)
            os.replace(staged, target / built[0].name)
        return target / built[0].name


def _run(command: list[str], log: Path) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    with open(log, "a") as out:
        out.write(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-12:]
        raise RuntimeError(f"`{' '.join(command[:2])}` exited {result.returncode}: " + " | ".join(tail))


def _import(library: Path) -> ModuleType:
    import mlx.core  # noqa: F401  (the array type the module's functions take must be registered first)

    loader = importlib.machinery.ExtensionFileLoader(MODULE, str(library))
    spec = importlib.util.spec_from_file_location(MODULE, library, loader=loader)
    if spec is None:
        raise ImportError(f"no module spec for {library}")
    loaded = importlib.util.module_from_spec(spec)
    loader.exec_module(loaded)
    return loaded
