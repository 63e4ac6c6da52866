"""Kubernetes Events about Services: what the controller did, and what failed and why.

Best effort: a failure to write an Event is logged, never raised. Repeats of
the same Event (same Service, type, reason and message) within ``window``
seconds update the existing Event's count instead of creating another, and at
most once per ``bump_interval`` (a throttled cloud API must not turn into a
flood of Event writes). Only the leader writes (``guard``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flannel_alivpc.clients.kube import KubeClient
from flannel_alivpc.core.kube import KubeError, Service

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


@dataclass
class _Seen:
    name: str
    count: int
    first: float
    bumped: float
    pending: bool = False


def _timestamp(value: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


class EventRecorder:
    def __init__(self, kube: KubeClient, *, component: str = "flannel-alivpc-slb",
                 guard: Callable[[], None] = lambda: None, window: float = 600.0, bump_interval: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.component = component
        self._guard = guard
        self.window = window
        self.bump_interval = bump_interval
        self._clock = clock
        self._seen: dict[tuple[str, str, str, str], _Seen] = {}
        self._lock = threading.Lock()

    def emit(self, service: Service, event_type: str, reason: str, message: str) -> None:
        try:
            self._guard()
        except Exception:
            return  # a standby replica does not write
        now = self._clock()
        key = (service.meta.uid, event_type, reason, message)
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.first < self.window:
                seen.count += 1
                if now - seen.bumped < self.bump_interval:
                    return
                seen.bumped = now
                name, count = seen.name, seen.count
            else:
                name, count = "", 1
                if len(self._seen) > 5000:
                    self._seen = {k: v for k, v in self._seen.items() if now - v.first < self.window}
        try:
            if name:
                self.kube.bump_event(namespace=service.meta.namespace, name=name, count=count,
                                     timestamp=_timestamp(now))
            else:
                created = self.kube.create_event(namespace=service.meta.namespace, involved=service,
                                                 event_type=event_type, reason=reason, message=message,
                                                 component=self.component, timestamp=_timestamp(now))
                with self._lock:
                    self._seen[key] = _Seen(created, 1, now, now)
        except KubeError as error:
            log.warning("could not record event %s for service %s: %s", reason, service.key, error)
