"""One holder at a time through a coordination.k8s.io/v1 Lease: the SLB controller's leader
election and the route daemon's per-table writer lock in kube mode.

Whoever holds the Lease renews it (``renewTime``); the others take it over once
it has not changed for ``leaseDurationSeconds`` *as they observed it* (their
own clock, as client-go does: no comparison of clocks between machines).
Writes carry the Lease's resourceVersion, so of two candidates racing for an
expired Lease one gets 409 Conflict and loses. A holder may publish a few
annotations on its Lease with every renewal (the route writer's per-table
route state).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from flannel_alivpc.clients.kube import KubeClient
from flannel_alivpc.core.kube import KubeConflict, KubeError, Lease

log = logging.getLogger(__name__)


class KubeLeaseLock:
    """Campaigns for one Lease; also a ``routed.writer.WriterLock``.

    Keep one instance per Lease for the life of the process: the takeover rule
    needs what this candidate observed before.
    """

    def __init__(self, kube: KubeClient, *, namespace: str, name: str, identity: str, duration: float,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 poll_interval: float = 0.5, takeover_after: float | None = None) -> None:
        """``takeover_after``: how long another holder's record must stay unchanged, as observed here,
        before this candidate takes over (default: the Lease's duration, as client-go)."""
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self._clock = clock
        self._wall = wall
        self._poll_interval = poll_interval
        self._takeover_after = takeover_after
        self._observed: tuple[str, float | None, str] | None = None
        self._observed_at = 0.0
        self._held = False
        self._annotations: dict[str, str] = {}
        self._lock = threading.Lock()
        self.last_seen: Lease | None = None

    def __repr__(self) -> str:
        return f"KubeLeaseLock({self.namespace}/{self.name}, identity={self.identity!r})"

    def publish(self, annotations: Mapping[str, str]) -> None:
        """Annotations written with the next renewal (only while held)."""
        with self._lock:
            self._annotations.update(annotations)

    def try_acquire_or_renew(self) -> bool:
        """One round: create, renew or take over the Lease; True when this candidate holds it now."""
        wall = self._wall()
        duration = max(1, round(self.duration))
        with self._lock:
            annotations = dict(self._annotations)
        lease = self.kube.get_lease(self.namespace, self.name)
        self.last_seen = lease
        if lease is None:
            try:
                self.last_seen = self.kube.create_lease(Lease(
                    name=self.name, namespace=self.namespace, holder=self.identity, duration_seconds=duration,
                    acquire_time=wall, renew_time=wall, annotations=annotations))
            except KubeConflict:
                return self._set_held(False)
            return self._set_held(True)
        record = (lease.holder, lease.renew_time, lease.resource_version)
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        held_by_other = lease.holder not in ("", self.identity)
        silent_enough = self._takeover_after if self._takeover_after is not None else max(lease.duration_seconds, 1)
        if held_by_other and self._clock() - self._observed_at < silent_enough:
            return self._set_held(False)
        mine = lease.holder == self.identity
        renewed = Lease(
            name=self.name, namespace=self.namespace, holder=self.identity, duration_seconds=duration,
            acquire_time=lease.acquire_time if mine and lease.acquire_time else wall, renew_time=wall,
            transitions=lease.transitions + (0 if mine else 1), resource_version=lease.resource_version,
            annotations={**lease.annotations, **annotations})
        try:
            self.last_seen = self.kube.update_lease(renewed)
        except KubeConflict:
            return self._set_held(False)
        return self._set_held(True)

    def _set_held(self, held: bool) -> bool:
        self._held = held
        return held

    def release(self) -> None:
        """Hand the Lease back (empty holder) so another candidate takes over at once."""
        self._held = False
        try:
            lease = self.kube.get_lease(self.namespace, self.name)
            if lease is not None and lease.holder == self.identity:
                self.kube.update_lease(Lease(
                    name=lease.name, namespace=lease.namespace, holder="", duration_seconds=1,
                    acquire_time=lease.acquire_time, renew_time=lease.renew_time,
                    transitions=lease.transitions, resource_version=lease.resource_version,
                    annotations=lease.annotations))
        except KubeError as error:
            log.warning("could not release the lease %s/%s: %s", self.namespace, self.name, error)

    # -- routed.writer.WriterLock ------------------------------------------------------------

    def acquire(self, timeout: float) -> bool:
        deadline = self._clock() + timeout
        while True:
            if self.try_acquire_or_renew():
                return True
            remaining = deadline - self._clock()
            if remaining <= 0:
                return False
            time.sleep(min(self._poll_interval, remaining))
            if self._clock() >= deadline:
                return False  # the caller asks again: one read per poll interval, not two

    def refresh(self) -> None:
        self.try_acquire_or_renew()

    def is_held(self) -> bool:
        return self._held
