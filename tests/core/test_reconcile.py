"""The reconcile loop: first pass, coalescing bursts, retry with backoff, requested re-runs."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from flannel_alivpc.core.reconcile import ReconcileLoop


@pytest.fixture
def running() -> Iterator[Callable[[ReconcileLoop], ReconcileLoop]]:
    loops: list[tuple[ReconcileLoop, threading.Thread]] = []

    def start(loop: ReconcileLoop) -> ReconcileLoop:
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()
        loops.append((loop, thread))
        return loop

    yield start
    for loop, thread in loops:
        loop.stop()
        thread.join(5)
        assert not thread.is_alive()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_first_pass_runs_without_any_mark(running: Callable[[ReconcileLoop], ReconcileLoop]) -> None:
    calls: list[float] = []
    running(ReconcileLoop("t", lambda: calls.append(time.monotonic()), resync_interval=60))
    wait_for(lambda: len(calls) == 1)


def test_a_burst_of_marks_becomes_one_pass(running: Callable[[ReconcileLoop], ReconcileLoop]) -> None:
    calls: list[float] = []
    loop = running(ReconcileLoop("t", lambda: calls.append(time.monotonic()), resync_interval=60,
                                 coalesce=0.1, coalesce_max=2.0))
    wait_for(lambda: len(calls) == 1)
    for _ in range(20):
        loop.mark_dirty()
        time.sleep(0.01)
    wait_for(lambda: len(calls) == 2)
    time.sleep(0.3)
    assert len(calls) == 2


def test_failures_are_retried_with_growing_delays(running: Callable[[ReconcileLoop], ReconcileLoop]) -> None:
    calls: list[float] = []

    def flaky() -> None:
        calls.append(time.monotonic())
        if len(calls) < 4:
            raise RuntimeError("cloud says no")

    loop = running(ReconcileLoop("t", flaky, resync_interval=60, coalesce=0.0, backoff_base=0.1,
                                 backoff_max=1.0))
    wait_for(lambda: len(calls) == 4)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[2] > gaps[0]
    assert loop.stats.failures == 3 and loop.stats.consecutive_failures == 0
    assert loop.stats.last_success is not None


def test_a_pass_can_ask_to_run_again(running: Callable[[ReconcileLoop], ReconcileLoop]) -> None:
    calls: list[float] = []

    def again() -> float | None:
        calls.append(time.monotonic())
        return 0.05 if len(calls) < 3 else None

    running(ReconcileLoop("t", again, resync_interval=60, coalesce=0.0))
    wait_for(lambda: len(calls) == 3)
    time.sleep(0.2)
    assert len(calls) == 3


def test_periodic_resync_runs_with_jitter(running: Callable[[ReconcileLoop], ReconcileLoop]) -> None:
    calls: list[float] = []
    running(ReconcileLoop("t", lambda: calls.append(time.monotonic()), resync_interval=0.2, jitter=0.2,
                          coalesce=0.0))
    wait_for(lambda: len(calls) >= 4)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    # Never before the jittered lower bound, and not all at one fixed period.
    assert all(g >= 0.15 for g in gaps), gaps
    assert len({round(g, 3) for g in gaps}) > 1, gaps
