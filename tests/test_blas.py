"""Which OpenBLAS `import yourai` gives mlx (system first, the pip wheel without root, none when told) and the
thread count a model build records. Subprocesses: the choice is made once per process, before mlx is imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from yourai import _blas
from yourai.paths import PROJECT_ROOT

PIP_LIBRARY = _blas.pip_openblas()
needs_pip_wheel = pytest.mark.skipif(PIP_LIBRARY is None, reason=f"{_blas.PIP_PACKAGE} is not installed (x86_64 Linux only)")
needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mlx[cpu] BLAS loading is Linux-only")

PROBE = """
import json, numpy as np, yourai, yourai._blas as blas
import mlx.core as mx
from yourai.hardware import blas_provider
a = np.random.default_rng(0).standard_normal((192, 192)).astype(np.float32)
error = float(np.abs(np.array(mx.array(a) @ mx.array(a)) - a.astype(np.float64) @ a).max())
maps = [line.split()[-1] for line in open('/proc/self/maps') if 'gfortran' in line]
print(json.dumps({"loaded": blas.loaded and blas.loaded.__dict__, "provider": blas_provider(), "error": error,
                  "gfortran": sorted(set(maps))}))
"""


def _probe(env: dict[str, str], prefix: list[str] = ()) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env}
    done = subprocess.run([*prefix, sys.executable, "-c", PROBE], capture_output=True, text=True, env=environment,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_linux
def test_opting_out_leaves_mlx_on_its_bundled_blas():
    result = _probe({"YOURAI_OPENBLAS": "0"})
    assert result["loaded"] is None and result["provider"] is None and result["error"] < 1e-3


@needs_linux
@pytest.mark.skipif(not any(Path(p).exists() for p in _blas.SYSTEM_CANDIDATES), reason="no system OpenBLAS here")
def test_the_system_openblas_comes_first():
    result = _probe({"YOURAI_OPENBLAS": ""})
    assert result["loaded"]["source"] == "system"
    assert result["provider"] == os.path.realpath(result["loaded"]["path"]) and result["error"] < 1e-3


@needs_pip_wheel
def test_the_pip_wheel_serves_mlx_when_asked(tmp_path):
    result = _probe({"YOURAI_OPENBLAS": "pip", "XDG_CACHE_HOME": str(tmp_path)})
    assert result["loaded"]["source"] == "pip" and result["loaded"]["path"] == str(PIP_LIBRARY)
    assert result["provider"] == str(PIP_LIBRARY) and result["error"] < 1e-3


@needs_pip_wheel
def test_the_shim_gives_the_pip_library_mlx_cpus_own_libgfortran(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    shim = _blas.gfortran_shim(PIP_LIBRARY)
    assert shim.parent.parent == tmp_path / "yourai" / "blas-shim"
    assert (shim.parent / _blas.GFORTRAN_SONAME).resolve().parent.name == "mlx_cpu.libs"
    assert _blas.gfortran_shim(PIP_LIBRARY) == shim  # idempotent: a second process reuses it
    # Opened through the shim, the library's $ORIGIN RPATH is searched before the system's directories.
    result = _probe({"YOURAI_OPENBLAS": str(shim), "XDG_CACHE_HOME": str(tmp_path)})
    assert result["provider"] == str(PIP_LIBRARY) and result["error"] < 1e-3
    assert any("mlx_cpu.libs/libgfortran" in path for path in result["gfortran"]), result["gfortran"]


def _can_hide_files() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    return done.returncode == 0


@needs_pip_wheel
@pytest.mark.skipif(not _can_hide_files(), reason="needs `unshare -m` (root) to hide the system libgfortran")
def test_without_a_system_libgfortran_the_pip_wheel_still_loads(tmp_path):
    """A bare machine: libgfortran.so.5 replaced by an empty file in a private mount namespace."""
    system = [Path(p) for p in ("/usr/lib/x86_64-linux-gnu/libgfortran.so.5.0.0",) if Path(p).exists()]
    hide = " && ".join(f"mount --bind /dev/null {path}" for path in system) or "true"
    prefix = ["unshare", "-m", "sh", "-c", f'{hide} && exec "$@"', "_"]
    result = _probe({"YOURAI_OPENBLAS": "pip", "XDG_CACHE_HOME": str(tmp_path)}, prefix)
    assert result["loaded"]["source"] == "pip" and "via" in result["loaded"]["note"]
    assert result["provider"] == str(PIP_LIBRARY) and result["error"] < 1e-3


@needs_linux
def test_doctor_names_the_blas_and_what_to_do(monkeypatch):
    monkeypatch.delenv("YOURAI_OPENBLAS", raising=False)
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "YOURAI_OPENBLAS": "0"}
    done = subprocess.run([sys.executable, "-m", "yourai", "doctor", "--json"], capture_output=True, text=True,
                          env=environment, timeout=120, check=True)
    blas = json.loads(done.stdout)["blas"]
    assert blas["source"] == "bundled" and blas["gflops_fp32_1024"] > 0
    assert "YOURAI_OPENBLAS=0" in blas["advice"]
    from yourai.hardware import blas_advice

    assert _blas.PIP_PACKAGE in blas_advice(None, 3.0) and "apt install" in blas_advice(None, 3.0)
    assert blas_advice("/usr/lib/libopenblas.so.0", 100.0) == ""


PRINT_THREADS = "import yourai, yourai._blas as b; print(b.loaded_blas, b.openblas_threads())"


def _run(**env: str) -> str:
    settings = os.environ | {"PYTHONPATH": str(PROJECT_ROOT)} | env
    return subprocess.run([sys.executable, "-c", PRINT_THREADS], env=settings, capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.mark.skipif(not _blas.loaded_blas, reason="OpenBLAS is not installed here (or YOURAI_OPENBLAS=0)")
def test_openblas_threads_reports_the_thread_count_openblas_uses():
    assert _run(OPENBLAS_NUM_THREADS="1")[1] == "1"
    assert _run(OPENBLAS_NUM_THREADS="2")[1] == "2"


def test_no_thread_count_without_openblas():
    assert _run(YOURAI_OPENBLAS="0") == ["None", "None"]


IDLE_SPIN = """
import os, time
import yourai
import mlx.core as mx
def cpu_s(tid):
    fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
a = mx.random.normal((512, 512))
mx.eval(a @ a, a @ a)
tasks = os.listdir("/proc/self/task")
before = {t: cpu_s(t) for t in tasks}
time.sleep(0.5)  # nothing to do: an idle OpenBLAS thread should sleep, not spin
print(os.environ["OPENBLAS_THREAD_TIMEOUT"], max(cpu_s(t) - before[t] for t in tasks))
"""


def _idle_spin(**env: str) -> tuple[str, float]:
    settings = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"} | {"PYTHONPATH": str(PROJECT_ROOT)} | env
    done = subprocess.run([sys.executable, "-c", IDLE_SPIN], env=settings, capture_output=True, text=True, check=True)
    setting, busiest = done.stdout.split()
    return setting, float(busiest)


@pytest.mark.skipif(not _blas.loaded_blas, reason="OpenBLAS is not installed here (or YOURAI_OPENBLAS=0)")
def test_idle_openblas_threads_sleep_soon_unless_the_user_says_otherwise():
    """yourai sets OPENBLAS_THREAD_TIMEOUT (2^16 cycles of spinning); OpenBLAS's own 2^28 spins ~0.1 s after each product."""
    ours, theirs = _idle_spin(), _idle_spin(OPENBLAS_THREAD_TIMEOUT="28")
    assert ours[0] == _blas.THREAD_TIMEOUT and theirs[0] == "28"
    assert ours[1] <= 0.03 < 0.05 <= theirs[1], (ours, theirs)
