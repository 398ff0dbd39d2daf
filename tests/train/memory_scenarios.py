"""Scripted machines for the memory tests: a used fraction per tick, a sleep that only records, small waits."""

from __future__ import annotations

import time

from yourai.config import MemoryConfig
from yourai.train.guard import MemoryGuard
from yourai.train.memory import MemoryMonitor, SimulatedMemorySource


TOTAL_MB = 10_000.0


# Defaults of MemoryConfig: clear 0.70, pause 0.80, shrink 0.85, abort 0.92.
CONFIG = MemoryConfig(max_pause_s=4.0, leak_warmup_steps=5)


class FakeSleep:
    """Records requested pauses instead of sleeping, so back-off is tested exactly and fast."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def _source_at(used: float | list[float], cache_mb: float = 0.0) -> SimulatedMemorySource:
    """A machine whose used fraction (per tick) is scripted through other programs' usage."""
    base_rss_mb, active_mb = 1000.0, 500.0
    own_mb = base_rss_mb + active_mb + cache_mb
    script = [used] if isinstance(used, float) else used
    source = SimulatedMemorySource(
        total_mb=TOTAL_MB,
        base_rss_mb=base_rss_mb,
        active_mb=active_mb,
        other_used_mb=[u * TOTAL_MB - own_mb for u in script],
    )
    source.cache_mb = cache_mb
    return source


def _guard(source: SimulatedMemorySource, config: MemoryConfig = CONFIG) -> tuple[MemoryGuard, FakeSleep]:
    sleep = FakeSleep()
    return MemoryGuard(MemoryMonitor(source, config), config, sleep=sleep), sleep


def _names(decision) -> list[str]:
    return [event["event"] for event in decision.events]


def _wait_for(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)
