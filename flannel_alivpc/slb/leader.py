"""Leader election through a coordination.k8s.io/v1 Lease, so two replicas never both write.

The candidate that holds the Lease renews it every ``retry_period``; the
takeover rules (observed expiry, resourceVersion races) are
``kube_lease_lock.KubeLeaseLock``'s.

A leader that cannot renew for ``renew_deadline`` (shorter than
``lease_duration``) steps down on its own before anyone else may take over;
``leading`` is checked against that deadline on every call, so even a stuck
renew loop cannot leave a stale leader writing. ``guard()`` raises
``NotLeader`` and is called before every write. ``stop()`` releases the Lease
(empty holder) so a standby takes over at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from flannel_alivpc.clients.kube import KubeClient
from flannel_alivpc.core.errors import FlannelAliVpcError
from flannel_alivpc.core.kube import KubeError
from flannel_alivpc.kube_lease_lock import KubeLeaseLock

log = logging.getLogger(__name__)


class NotLeader(FlannelAliVpcError):
    """This replica does not hold the Lease: it must not write."""


class LeaderElector:
    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started: Callable[[], None] = lambda: None,
        on_stopped: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._clock = clock
        self._wall = wall
        self._stop = threading.Event()
        self._leading = False
        self._last_renew = float("-inf")
        self._lease = KubeLeaseLock(kube, namespace=namespace, name=name, identity=identity,
                                    duration=lease_duration, clock=clock, wall=wall)
        self._lock = threading.Lock()
        self._rng = random.Random()

    @property
    def leading(self) -> bool:
        with self._lock:
            return self._leading and self._clock() - self._last_renew < self.renew_deadline

    def guard(self) -> None:
        if not self.leading:
            raise NotLeader(f"{self.identity} does not hold the lease {self.namespace}/{self.name}")

    def run(self) -> None:
        """Acquire, renew, step down on failure; until ``stop()``."""
        while not self._stop.is_set():
            try:
                won = self.try_acquire_or_renew()
            except KubeError as error:
                log.warning("leader election: %s", error)
                won = False
            now = self._clock()
            started = stopped = False
            with self._lock:
                if won:
                    self._last_renew = now
                    if not self._leading:
                        self._leading = started = True
                elif self._leading and now - self._last_renew >= self.renew_deadline:
                    self._leading = False
                    stopped = True
            if started:
                log.info("leader election: %s now leads (lease %s/%s)", self.identity, self.namespace, self.name)
                self._on_started()
            if stopped:
                log.warning("leader election: %s could not renew the lease for %.1fs: stepping down",
                            self.identity, self.renew_deadline)
                self._on_stopped()
            self._stop.wait(self.retry_period * (0.9 + 0.2 * self._rng.random()))

    def try_acquire_or_renew(self) -> bool:
        return self._lease.try_acquire_or_renew()

    def stop(self, *, release: bool = True) -> None:
        """Stop campaigning; if leading and ``release``, hand the Lease back at once."""
        self._stop.set()
        with self._lock:
            was_leading = self._leading
            self._leading = False
        if was_leading:
            self._on_stopped()
            if release:
                self._release()

    def _release(self) -> None:
        self._lease.release()
