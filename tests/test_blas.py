"""yourai._blas: the OpenBLAS preload and the thread count a model build records."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from yourai import _blas
from yourai.paths import PROJECT_ROOT

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
