"""One writer per route table, elected through an etcd lock.

Every daemon in the VPC campaigns for the lock of every table it manages;
the holder runs the table's reconcile loop, the others wait on the lock and
make no cloud calls at all, so the API load does not grow with the number of
nodes. The lock lives on an etcd lease of ``ttl`` seconds refreshed every
``ttl/3``: when the writer dies (even by SIGKILL) the lease expires and another
daemon takes over within ``ttl``. A writer that cannot refresh its lock for
about a third of a ttl stops writing before anyone else can start.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from flannel_alivpc.core.errors import FlannelAliVpcError
from flannel_alivpc.core.reconcile import ReconcileLoop

log = logging.getLogger(__name__)

STEP_DOWN_AFTER = 0.35
"""A writer that could not refresh its lock for this fraction of the ttl stops writing (retrying every
ttl/6 meanwhile, so it has stopped within ~0.52 ttl of its last refresh)."""


class WriterLock(Protocol):
    def acquire(self, timeout: float) -> bool: ...

    def refresh(self) -> None: ...

    def release(self) -> None: ...

    def is_held(self) -> bool: ...


class TableLeadership:
    """Campaigns for one table's writer lock and runs its loop while holding it."""

    def __init__(
        self,
        *,
        table_id: str,
        make_lock: Callable[[], WriterLock],
        loop: ReconcileLoop,
        ttl: float,
        stop: threading.Event,
    ) -> None:
        self.table_id = table_id
        self._make_lock = make_lock
        self.loop = loop
        self.ttl = ttl
        self._stop = stop
        self.is_writer = False
        self.thread = threading.Thread(target=self._run, name=f"writer-{table_id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def writing(self) -> bool:
        """True while this node holds the lock (False as soon as its term ends, before the loop stops)."""
        return self.is_writer

    def mark_dirty(self) -> None:
        if self.is_writer:
            self.loop.mark_dirty()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                lock = self._make_lock()
                if not lock.acquire(timeout=self.ttl / 3):
                    continue
            except FlannelAliVpcError as error:
                log.warning("%s: cannot campaign for the writer lock (%s); retrying", self.table_id, error)
                self._stop.wait(1.0)
                continue
            self._lead(lock)

    def _lead(self, lock: WriterLock) -> None:
        log.info("%s: this node is now the route table's writer", self.table_id)
        self.is_writer = True
        self.loop.mark_dirty()
        worker = threading.Thread(target=self.loop.run, name=f"reconcile-{self.table_id}", daemon=True)
        worker.start()
        last_refresh = time.monotonic()
        interval = self.ttl / 3
        try:
            while not self._stop.wait(interval):
                try:
                    lock.refresh()
                    if not lock.is_held():
                        log.warning("%s: writer lock lost; stopping writes", self.table_id)
                        return
                    last_refresh = time.monotonic()
                    interval = self.ttl / 3
                except FlannelAliVpcError as error:
                    # Step down well before anyone else may start (an etcd lock expires after a
                    # ttl; a kube Lease is taken over 0.6 ttl after the last renewal was seen).
                    if time.monotonic() - last_refresh > self.ttl * STEP_DOWN_AFTER:
                        log.warning("%s: cannot refresh the writer lock (%s); stepping down", self.table_id, error)
                        return
                    interval = min(self.ttl / 6, 1.0)
        finally:
            self.is_writer = False
            self.loop.stop()
            worker.join(timeout=self.ttl)
            # The loop object is single-use once stopped: make a fresh one for the next term.
            self.loop = self.loop.restarted()
            with contextlib.suppress(FlannelAliVpcError):
                lock.release()
