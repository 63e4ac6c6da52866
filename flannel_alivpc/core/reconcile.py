"""The one loop shape every reconciler runs in.

Inputs (watch events, informer callbacks) only call ``mark_dirty()``. The loop
wakes when dirty or when the jittered resync period has passed, waits until
the marks stop arriving for a moment (so a burst becomes one pass), then calls the
reconcile function, which computes desired state, observes actual state,
plans and applies. A failed pass is retried with capped exponential backoff;
a pass may also ask to run again after a delay (e.g. while cloud changes
settle).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flannel_alivpc.core.retry import RetryPolicy, backoff_delay

log = logging.getLogger(__name__)


@dataclass
class LoopStats:
    passes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_success: float | None = None
    last_error: str = ""
    last_duration: float = 0.0
    total_duration: float = 0.0
    """Seconds spent in passes, all of them: with ``passes``, the latency summary."""


class ReconcileLoop:
    """Runs ``reconcile`` level-triggered: on dirty marks, after failures, and periodically.

    ``reconcile`` returns None when done, or a number of seconds after which it
    wants another pass (the loop then runs again even if nothing is marked dirty).
    """

    def __init__(
        self,
        name: str,
        reconcile: Callable[[], float | None],
        *,
        resync_interval: float = 60.0,
        jitter: float = 0.2,
        coalesce: float = 0.1,
        coalesce_max: float = 1.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self._reconcile = reconcile
        self.resync_interval = resync_interval
        self.jitter = jitter
        self.coalesce = coalesce
        self.coalesce_max = coalesce_max
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._wake = threading.Condition()
        self._dirty = True  # the first pass always runs
        self._stopped = False
        self.stats = LoopStats()

    def restarted(self) -> ReconcileLoop:
        """A fresh, unstopped loop with the same function and timing (keeps the stats)."""
        loop = ReconcileLoop(self.name, self._reconcile, resync_interval=self.resync_interval, jitter=self.jitter,
                             coalesce=self.coalesce, coalesce_max=self.coalesce_max,
                             backoff_base=self.backoff_base, backoff_max=self.backoff_max,
                             rng=self._rng)
        loop.stats = self.stats
        return loop

    def mark_dirty(self) -> None:
        with self._wake:
            self._dirty = True
            self._wake.notify_all()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _next_resync(self) -> float:
        spread = self.resync_interval * self.jitter
        return time.monotonic() + self.resync_interval + spread * (2 * self._rng.random() - 1)

    def _backoff(self) -> float:
        # Equal jitter: never less than half the delay, so retries do not stampede.
        policy = RetryPolicy(base_delay=self.backoff_base, max_delay=self.backoff_max, jitter="equal")
        return backoff_delay(self.stats.consecutive_failures, policy, self._rng)

    def run(self) -> None:
        """Loop until ``stop()``; exceptions in a pass are logged and retried."""
        deadline = time.monotonic()
        while True:
            with self._wake:
                while not self._stopped and not self._dirty and time.monotonic() < deadline:
                    self._wake.wait(timeout=max(0.0, deadline - time.monotonic()))
                if self._stopped:
                    return
            self._settle_burst()
            deadline = self.run_once()

    def _settle_burst(self) -> None:
        """Wait until marks stop arriving for ``coalesce`` seconds (at most ``coalesce_max``).

        A burst of events (a hundred leases written at once) becomes one pass
        that sees all of it, instead of a pass on the first event and another
        for the rest.
        """
        limit = time.monotonic() + self.coalesce_max
        with self._wake:
            while not self._stopped:
                self._dirty = False
                quiet_until = min(limit, time.monotonic() + self.coalesce)
                while not self._dirty and not self._stopped and time.monotonic() < quiet_until:
                    self._wake.wait(timeout=max(0.0, quiet_until - time.monotonic()))
                if not self._dirty or time.monotonic() >= limit:
                    self._dirty = False
                    return

    def run_once(self) -> float:
        """One pass; returns the monotonic time at which the next pass is due."""
        started = time.monotonic()
        self.stats.passes += 1
        try:
            again = self._reconcile()
        except Exception as error:
            self.stats.failures += 1
            self.stats.consecutive_failures += 1
            self.stats.last_error = str(error)
            delay = self._backoff()
            log.warning("%s: pass failed (%s); retrying in %.1fs", self.name, error, delay)
            return time.monotonic() + delay
        finally:
            self.stats.last_duration = time.monotonic() - started
            self.stats.total_duration += self.stats.last_duration
        self.stats.consecutive_failures = 0
        self.stats.last_error = ""
        self.stats.last_success = time.time()
        if again is not None:
            return time.monotonic() + max(0.0, again)
        return self._next_resync()
