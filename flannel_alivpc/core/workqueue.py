"""A keyed work queue: many keys in parallel, one key never twice at once.

The per-object counterpart of ``core.reconcile.ReconcileLoop``, for controllers
that reconcile many independent objects (one SLB per Service) with a bounded
pool of workers:

* ``add(key, delay)`` marks a key dirty, due after ``delay``; adding a key that
  is already waiting keeps the earlier due time, so a burst of events for one
  key becomes one pass;
* ``get()`` hands out the key due first and marks it in flight; a key in flight
  is never handed out again until ``done(key)``. If it was added meanwhile it is
  queued again on ``done``, so the change that arrived during the pass is seen
  by the next one;
* ``failures(key)``/``forget(key)`` count consecutive failures for backoff.

Thread-safe; ``shutdown()`` wakes every waiting ``get()`` with ``None``.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}
        self._in_flight: set[K] = set()
        self._again: dict[K, float] = {}
        self._failures: dict[K, int] = {}
        self._seq = itertools.count()
        self._shutdown = False

    def add(self, key: K, delay: float = 0.0) -> None:
        with self._cond:
            due = self._clock() + max(0.0, delay)
            if key in self._in_flight:
                self._again[key] = min(due, self._again.get(key, due))
                return
            current = self._due.get(key)
            if current is not None and current <= due:
                return
            self._due[key] = due
            heapq.heappush(self._heap, (due, next(self._seq), key))
            self._cond.notify()

    def get(self, timeout: float | None = None) -> K | None:
        """The next due key (marked in flight), or ``None`` on timeout or shutdown."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._shutdown:
                now = self._clock()
                while self._heap:
                    due, _, key = self._heap[0]
                    if self._due.get(key) != due:
                        heapq.heappop(self._heap)  # superseded by an earlier add
                        continue
                    break
                wait = None if deadline is None else deadline - now
                if self._heap and self._heap[0][0] <= now:
                    _, _, key = heapq.heappop(self._heap)
                    del self._due[key]
                    self._in_flight.add(key)
                    return key
                if self._heap:
                    until_due = self._heap[0][0] - now
                    wait = until_due if wait is None else min(wait, until_due)
                if wait is not None and wait <= 0:
                    return None
                self._cond.wait(timeout=wait)
            return None

    def done(self, key: K) -> None:
        with self._cond:
            self._in_flight.discard(key)
            again = self._again.pop(key, None)
        if again is not None:
            self.add(key, max(0.0, again - self._clock()))

    def failed(self, key: K) -> int:
        """Count one more consecutive failure of ``key``; returns the count."""
        with self._cond:
            self._failures[key] = self._failures.get(key, 0) + 1
            return self._failures[key]

    def forget(self, key: K) -> None:
        """Reset the failure count of ``key``."""
        with self._cond:
            self._failures.pop(key, None)

    def discard(self, key: K) -> None:
        """Drop a waiting key (not one in flight) and its failure count."""
        with self._cond:
            self._due.pop(key, None)
            self._failures.pop(key, None)

    def __len__(self) -> int:
        with self._cond:
            return len(self._due) + len(self._in_flight)

    def pending(self) -> int:
        """Keys waiting or in flight whose due time has passed (for "are we idle" checks)."""
        with self._cond:
            now = self._clock()
            return len(self._in_flight) + sum(1 for due in self._due.values() if due <= now)

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
