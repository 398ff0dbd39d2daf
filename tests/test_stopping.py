"""The stop request: the first signal asks, a repeat inside the window is the same request, a later one aborts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from yourai.paths import PROJECT_ROOT
from yourai.stopping import (DUPLICATE_WINDOW_S, STOP_SIGNALS, DeliveryWatcher, StopAborted, StopRequest, active_request,
                             exit_code, graceful_stop)


def test_exit_codes_are_what_a_shell_reports_for_the_signal():
    assert [exit_code(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)] == [143, 130, 129]
    assert set(STOP_SIGNALS) == {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def test_first_signal_asks_a_repeat_inside_the_window_is_the_same_request_a_later_one_aborts():
    request = StopRequest()
    request.handle(signal.SIGTERM)
    request.handle(signal.SIGTERM)  # delivered twice (scheduler + forwarding): still one request
    assert request.signum == signal.SIGTERM
    time.sleep(DUPLICATE_WINDOW_S)
    with pytest.raises(StopAborted, match="second SIGINT: aborted at once") as aborted:
        request.handle(signal.SIGINT)
    assert aborted.value.exit_code == 130 and request.signum == signal.SIGTERM


def test_after_the_stop_checkpoint_is_complete_further_signals_change_nothing():
    request = StopRequest()
    request.handle(signal.SIGTERM)
    request.finish()
    time.sleep(DUPLICATE_WINDOW_S)
    request.handle(signal.SIGTERM)  # mlx.launch terminating the other ranks, say: no StopAborted
    assert request.signum == signal.SIGTERM and request.finished


def test_graceful_stop_installs_and_restores_handlers_and_nests():
    before = signal.getsignal(signal.SIGTERM)
    with graceful_stop() as outer:
        assert signal.getsignal(signal.SIGTERM) == outer.handle
        with graceful_stop() as inner:
            assert inner is outer and active_request() is outer
        signal.raise_signal(signal.SIGHUP)
        assert outer.signum == signal.SIGHUP
    assert signal.getsignal(signal.SIGTERM) == before and active_request() is None


def test_off_the_main_thread_no_handlers_are_installed():
    seen = []
    worker = threading.Thread(target=lambda: seen.append(graceful_stop().__enter__()))
    before = signal.getsignal(signal.SIGTERM)
    worker.start()
    worker.join()
    assert seen[0].signum is None and signal.getsignal(signal.SIGTERM) == before


def test_the_runner_mode_forwards_every_signal_and_never_aborts():
    seen = []
    request = StopRequest(on_signal=seen.append, repeat_aborts=False)
    request.handle(signal.SIGTERM)
    time.sleep(DUPLICATE_WINDOW_S)
    request.handle(signal.SIGTERM)
    assert seen == [signal.SIGTERM, signal.SIGTERM] and request.signum == signal.SIGTERM


# A long native MLX computation under graceful_stop(abort_now=...): Python handlers cannot run until it ends,
# so only the delivery watcher can answer a second signal. The workload is sized from a measured matmul rate
# (it lasts ~8 s on whatever BLAS this machine has), and nothing below asserts a duration.
NATIVE_STEP = """
import os, sys, time
import yourai
import mlx.core as mx
from yourai.stopping import exit_code, graceful_stop

def abort_now(signum):
    print(f"aborted by {signum}", file=sys.stderr, flush=True)
    os._exit(exit_code(signum))

a = mx.random.normal((512, 512)) * 0.03
mx.eval(a)
start = time.perf_counter()
mx.eval(a @ a @ a @ a)
per_product = (time.perf_counter() - start) / 4
b = a
for _ in range(max(8, int(8.0 / per_product))):
    b = b @ a
with graceful_stop(abort_now=abort_now) as request:
    print("computing", flush=True)
    mx.eval(b)
    print(f"finished; stop requested by {request.signum}", flush=True)
"""


def _native_step(signals: list[int]) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    child = subprocess.Popen([sys.executable, "-c", NATIVE_STEP], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=environment)
    assert child.stdout.readline().strip() == "computing"
    for signum in signals:
        time.sleep(0.3 + DUPLICATE_WINDOW_S)  # inside the native call, and far enough apart to be two requests
        child.send_signal(signum)
    out, err = child.communicate(timeout=600)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def test_one_signal_during_a_native_step_lets_it_finish():
    done = _native_step([signal.SIGTERM])
    assert done.returncode == 0, done.stderr
    assert f"finished; stop requested by {int(signal.SIGTERM)}" in done.stdout


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_during_a_native_step_aborts_at_once(second):
    done = _native_step([signal.SIGTERM, second])
    assert done.returncode == exit_code(second), (done.stdout, done.stderr)
    assert f"aborted by {int(second)}" in done.stderr and "finished" not in done.stdout


def test_the_watcher_leaves_a_wakeup_fd_it_does_not_own_alone():
    read, write = os.pipe()
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write)
    try:
        request = StopRequest()
        watcher = DeliveryWatcher(request, abort_now=lambda signum: None)
        assert not watcher.active and signal.set_wakeup_fd(write) == write  # still the owner's
        watcher.close()
    finally:
        signal.set_wakeup_fd(-1)
        os.close(read)
        os.close(write)
    with graceful_stop(abort_now=lambda signum: None):
        in_force = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(in_force)
    assert in_force != -1  # the watcher's own pipe while in force
    assert signal.set_wakeup_fd(-1) == -1  # and given back afterwards
