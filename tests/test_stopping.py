"""The stop request: the first signal asks, a repeat inside the window is the same request, a later one aborts."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from yourai.stopping import (DUPLICATE_WINDOW_S, STOP_SIGNALS, StopAborted, StopRequest, active_request, exit_code,
                             graceful_stop)


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
