"""Keeps one VPC route table in line with the flannel leases (while this node is its writer).

One pass: take the lease snapshot, compute the desired entries (pure), list
the table (the one observation), plan (pure), then apply one batch at a time:

1. wait until no entry of the table is Pending or Deleting: the table takes
   one change at a time, and a write into a busy table is refused;
2. create missing entries, at most 50 per call (CreateRouteEntries);
3. delete stale and wrong-next-hop entries, at most 50 per call;
4. after each batch, poll only the entries it touched until they settle, then
   observe again: the next batch is planned from fresh state.

A crash at any point leaves the table in a state the next pass repairs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from flannel_alivpc.core.cloud import BatchResult, RouteEntry, RouteSpec
from flannel_alivpc.core.errors import RetryableCloudError
from flannel_alivpc.core.network import IPv4Network, Lease
from flannel_alivpc.core.routes import RoutePlan, desired_routes, plan_routes

log = logging.getLogger(__name__)

BATCH_SIZE = 50
_SETTLED = "Available"


class LeaseView(Protocol):
    """What the writer needs from a lease snapshot."""

    @property
    def leases(self) -> Mapping[IPv4Network, Lease]: ...

    @property
    def in_sync(self) -> bool: ...

    def malformed_subnets(self) -> Collection[IPv4Network]: ...


class RouteTableApi(Protocol):
    def list_route_entries(self, table_id: str, *, entry_type: str | None = None,
                           destinations: Sequence[str] | None = None) -> list[RouteEntry]: ...

    def create_route_entries(self, table_id: str, specs: Sequence[RouteSpec]) -> BatchResult: ...

    def delete_route_entries(self, table_id: str, entries: Sequence[RouteEntry]) -> BatchResult: ...


@dataclass
class TableReport:
    """What the last pass saw and did, for /healthz, /metrics and logs."""

    plan: RoutePlan | None = None
    created: int = 0
    deleted: int = 0
    failures: list[str] = field(default_factory=list)
    quota_error: str = ""


class TableWriter:
    """Reconciles one route table; ``reconcile`` is the ReconcileLoop pass."""

    def __init__(
        self,
        *,
        table_id: str,
        vpc_id: str,
        network: IPv4Network,
        api: RouteTableApi,
        snapshot: Callable[[], LeaseView],
        poll_interval: float = 0.25,
        settle_timeout: float = 300.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.table_id = table_id
        self.vpc_id = vpc_id
        self.network = network
        self.api = api
        self._snapshot = snapshot
        self.poll_interval = poll_interval
        self.settle_timeout = settle_timeout
        self._stop = stop or threading.Event()
        self.report = TableReport()

    def plan(self) -> tuple[RoutePlan, list[RouteEntry]]:
        """Observe the table and plan against the current lease snapshot (no writes)."""
        snap = self._snapshot()
        desired = desired_routes(snap.leases.values(), vpc_id=self.vpc_id)
        actual = self.api.list_route_entries(self.table_id)
        plan = plan_routes(table_id=self.table_id, desired=desired, actual=actual, network=self.network,
                           in_sync=snap.in_sync, protected=snap.malformed_subnets())
        return plan, actual

    def reconcile(self) -> float | None:
        report = TableReport()
        self.report = report
        while not self._stop.is_set():
            plan, actual = self.plan()
            report.plan = plan
            busy = [e for e in actual if e.status != _SETTLED]
            if busy:
                self._wait_settled([e.destination for e in busy])
                continue
            if plan.create:
                if not self._create(plan.create[:BATCH_SIZE], report):
                    # Only failures left (e.g. quota): apply deletes still, then retry later.
                    if plan.delete:
                        self._delete(plan.delete[:BATCH_SIZE], report)
                    return 30.0
                continue
            if plan.delete:
                self._delete(plan.delete[:BATCH_SIZE], report)
                continue
            if plan.kept_for_unknown:
                log.info("%s: keeping %d entries whose leases are unknown or malformed: %s", self.table_id,
                         len(plan.kept_for_unknown), ", ".join(e.destination for e in plan.kept_for_unknown))
            return None
        return None

    def _create(self, specs: Sequence[RouteSpec], report: TableReport) -> bool:
        """Create one batch; True when at least one entry was created."""
        result = self.api.create_route_entries(self.table_id, specs)
        created = {s.destination for s in specs} - {f.destination for f in result.failures}
        for spec in specs:
            if spec.destination in created:
                log.info("%s: created %s -> %s (lease present, entry missing)", self.table_id,
                         spec.destination, spec.next_hop_id)
        report.created += len(created)
        self._record_failures(result, report)
        if created:
            self._wait_settled(sorted(created))
        return bool(created)

    def _delete(self, entries: Sequence[RouteEntry], report: TableReport) -> None:
        result = self.api.delete_route_entries(self.table_id, entries)
        failed = {f.entry_id for f in result.failures}
        deleted = [e for e in entries if e.entry_id not in failed]
        for entry in deleted:
            log.info("%s: deleted %s -> %s (%s)", self.table_id, entry.destination, entry.next_hop_id,
                     "next hop is not the lease's instance" if any(
                         s.destination == entry.destination for s in (report.plan.statuses if report.plan else ())
                         if s.desired_instance) else "no lease for this subnet")
        report.deleted += len(deleted)
        self._record_failures(result, report)
        if deleted:
            self._wait_settled([e.destination for e in deleted])

    def _record_failures(self, result: BatchResult, report: TableReport) -> None:
        for failure in result.failures:
            text = f"{failure.destination}: {failure.code} {failure.message}"
            report.failures.append(text)
            if failure.code.startswith("QuotaExceeded"):
                report.quota_error = (
                    f"route table {self.table_id} is full: its custom-entry quota is reached, so "
                    f"{failure.destination} cannot be added; raise the quota in the VPC console or "
                    f"use a larger SubnetLen so fewer nodes need entries")
                log.error("%s", report.quota_error)
            elif "DUPLICATE" in failure.code.upper():
                log.info("%s: %s already present (another writer?); re-reading the table",
                         self.table_id, failure.destination)
            else:
                log.warning("%s: change for %s refused: %s %s", self.table_id, failure.destination,
                            failure.code, failure.message)

    def _wait_settled(self, destinations: Sequence[str]) -> None:
        """Poll the given destinations until none is Pending or Deleting."""
        deadline = time.monotonic() + self.settle_timeout
        delay = min(0.05, self.poll_interval)
        wanted = list(destinations)
        while not self._stop.is_set():
            if self._stop.wait(delay):
                return
            unsettled = [
                e for chunk in _chunks(wanted, BATCH_SIZE)
                for e in self.api.list_route_entries(self.table_id, destinations=chunk)
                if e.status != _SETTLED
            ]
            if not unsettled:
                return
            wanted = [e.destination for e in unsettled]
            if time.monotonic() > deadline:
                raise RetryableCloudError(
                    f"route table {self.table_id}: entries still not settled after {self.settle_timeout:.0f}s: "
                    + ", ".join(f"{e.destination} {e.status}" for e in unsettled[:5]))
            delay = min(self.poll_interval, delay * 2)


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]
