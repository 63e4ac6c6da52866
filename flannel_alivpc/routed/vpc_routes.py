"""Keeps one VPC route table in line with the flannel leases (while this node is its writer).

One pass: list the table (the one full observation), take the lease snapshot,
compute the desired entries and the plan (pure), then apply one batch at a time:

1. wait until no entry of the table is Pending or Deleting: the table takes
   one change at a time, and a write into a busy table is refused;
2. create missing entries, at most 50 per call (CreateRouteEntries);
3. adopt unmarked entries that already route a lease correctly (write our
   marker onto them with ModifyRouteEntry, one call each: a one-time
   migration from flannel's old backend, never a delete and re-create);
4. delete stale and wrong-next-hop entries, at most 50 per call;
5. after each batch, poll only the entries it touched until they settle (the
   next batch cannot start before), then plan the next batch from the latest
   leases and what the polls showed. The whole table is listed once per pass.

A crash at any point leaves the table in a state the next pass repairs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from flannel_alivpc.core.cloud import BatchResult, RouteEntry, RouteSpec
from flannel_alivpc.core.errors import CloudError, RetryableCloudError
from flannel_alivpc.core.network import IPv4Network, Lease
from flannel_alivpc.core.routes import (
    ROUTE_NAME,
    NodeRouteState,
    RoutePlan,
    RouteState,
    desired_routes,
    legacy_address,
    node_route_states,
    plan_routes,
    route_description,
)
from flannel_alivpc.routed.legacy_leases import LegacyLeaseResolver

log = logging.getLogger(__name__)

BATCH_SIZE = 50
REFUSED_RETRY = 30.0
"""Seconds before trying again when every change of a pass was refused (quota, bad next hop)."""
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

    def modify_route_entry(self, table_id: str, entry: RouteEntry, *, name: str, description: str) -> None: ...


@dataclass
class TableReport:
    """What the last pass saw and did, for /healthz, /metrics and logs."""

    plan: RoutePlan | None = None
    created: int = 0
    adopted: int = 0
    deleted: int = 0
    failures: list[str] = field(default_factory=list)
    refusals: dict[str, str] = field(default_factory=dict)
    """destination -> the cloud's refusal (code and message), for Node conditions."""
    over_quota: list[str] = field(default_factory=list)
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
        cluster_id: str,
        legacy: LegacyLeaseResolver | None = None,
        report: Callable[[str, Mapping[IPv4Network, NodeRouteState]], None] | None = None,
        poll_interval: float = 0.1,
        settle_timeout: float = 300.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.table_id = table_id
        self.vpc_id = vpc_id
        self.network = network
        self.api = api
        self._snapshot = snapshot
        self.cluster_id = cluster_id
        self._legacy = legacy
        self._report_states = report
        self.poll_interval = poll_interval
        self.settle_timeout = settle_timeout
        self._stop = stop or threading.Event()
        self.report = TableReport()
        self._settle_estimate = 0.0

    def _plan(self, actual: Iterable[RouteEntry]) -> RoutePlan:
        snap = self._snapshot()
        leases = list(snap.leases.values())
        addresses = [a for a in map(legacy_address, leases) if a is not None]
        legacy = self._legacy.resolve(addresses) if self._legacy is not None and addresses else {}
        desired = desired_routes(leases, vpc_id=self.vpc_id, legacy_instances=legacy)
        return plan_routes(table_id=self.table_id, desired=desired, actual=actual, network=self.network,
                           in_sync=snap.in_sync, cluster_id=self.cluster_id, protected=snap.malformed_subnets())

    def reconcile(self) -> float | None:
        """One pass: list the table once, then apply batches until it matches the leases.

        Each batch is planned from the latest lease snapshot and the table as
        this pass knows it (the listing, updated with what every settled batch
        returned), so leases that arrive during a long pass join the next full
        batch instead of waiting for the next pass.
        """
        report = TableReport()
        self.report = report
        actual = {e.destination: e for e in self.api.list_route_entries(self.table_id)}
        refused: set[str] = set()
        while not self._stop.is_set():
            plan = self._plan(actual.values())
            report.plan = plan
            busy = [d for d, e in actual.items() if e.status != _SETTLED]
            if busy:
                self._observe_settled(actual, busy)
                continue
            creates = [spec for spec in plan.create if spec.destination not in refused]
            adopts = [entry for entry in plan.adopt if entry.destination not in refused]
            deletes = [entry for entry in plan.delete if entry.destination not in refused]
            if creates:
                batch: Sequence[str] = self._create(creates[:BATCH_SIZE], report, refused)
            elif adopts:
                batch = self._adopt(adopts[:BATCH_SIZE], report, refused)
            elif deletes:
                wrong_hop = {str(s.destination) for s in plan.statuses if s.state is RouteState.WRONG_NEXT_HOP}
                batch = self._delete(deletes[:BATCH_SIZE], wrong_hop, report, refused)
            else:
                if plan.kept_for_unknown:
                    log.info("%s: keeping %d entries whose leases are unknown or malformed: %s", self.table_id,
                             len(plan.kept_for_unknown), ", ".join(e.destination for e in plan.kept_for_unknown))
                # Changes the API refused (e.g. the quota is reached) are tried again later.
                self._report_quota(report, actual)
                if self._report_states is not None:
                    self._report_states(self.table_id, node_route_states(plan.statuses, report.refusals))
                return REFUSED_RETRY if refused else None
            if batch:
                self._observe_settled(actual, batch)
        return None

    def _observe_settled(self, actual: dict[str, RouteEntry], destinations: Sequence[str]) -> None:
        """Wait for ``destinations`` to settle and record how they ended (present or gone)."""
        seen = self._wait_settled(destinations)
        for destination in destinations:
            actual.pop(destination, None)
        actual.update(seen)

    def _create(self, specs: Sequence[RouteSpec], report: TableReport, refused: set[str]) -> list[str]:
        """Create one batch; returns the destinations created."""
        result = self.api.create_route_entries(self.table_id, specs)
        failed = {f.destination for f in result.failures}
        refused.update(failed)
        created = [s for s in specs if s.destination not in failed]
        for spec in created:
            log.info("%s: created %s -> %s (lease present, entry missing)", self.table_id,
                     spec.destination, spec.next_hop_id)
        report.created += len(created)
        self._record_failures(result, report)
        return [s.destination for s in created]

    def _adopt(self, entries: Sequence[RouteEntry], report: TableReport, refused: set[str]) -> list[str]:
        """Write our marker onto entries that already route their lease; returns the destinations marked."""
        description = route_description(self.cluster_id)
        adopted = []
        for entry in entries:
            try:
                self.api.modify_route_entry(self.table_id, entry, name=ROUTE_NAME, description=description)
            except CloudError as error:
                if isinstance(error, RetryableCloudError):
                    raise
                refused.add(entry.destination)
                report.failures.append(f"{entry.destination}: {error}")
                log.warning("%s: cannot mark %s -> %s as this cluster's (%s); it keeps routing, and is tried "
                            "again later", self.table_id, entry.destination, entry.next_hop_id, error)
                continue
            log.info("%s: adopted %s -> %s (made before flannel-alivpc marked its entries; the lease still "
                     "maps to it)", self.table_id, entry.destination, entry.next_hop_id)
            adopted.append(entry.destination)
        report.adopted += len(adopted)
        return adopted

    def _delete(self, entries: Sequence[RouteEntry], wrong_hop: set[str], report: TableReport,
                refused: set[str]) -> list[str]:
        """Delete one batch; returns the destinations deleted."""
        result = self.api.delete_route_entries(self.table_id, entries)
        failed = {f.entry_id for f in result.failures}
        deleted = [e for e in entries if e.entry_id not in failed]
        refused.update(e.destination for e in entries if e.entry_id in failed)
        for entry in deleted:
            reason = "next hop is not the lease's instance" if entry.destination in wrong_hop \
                else "no lease for this subnet"
            log.info("%s: deleted %s -> %s (%s)", self.table_id, entry.destination, entry.next_hop_id, reason)
        report.deleted += len(deleted)
        self._record_failures(result, report)
        return [e.destination for e in deleted]

    def _record_failures(self, result: BatchResult, report: TableReport) -> None:
        for failure in result.failures:
            report.failures.append(f"{failure.destination}: {failure.code} {failure.message}")
            report.refusals[failure.destination] = f"{failure.code}: {failure.message}"
            if failure.code.startswith("QuotaExceeded"):
                report.over_quota.append(failure.destination)
            elif "DUPLICATE" in failure.code.upper():
                log.info("%s: %s already present (another writer?); re-reading the table",
                         self.table_id, failure.destination)
            else:
                log.warning("%s: change for %s refused: %s %s", self.table_id, failure.destination,
                            failure.code, failure.message)

    def _report_quota(self, report: TableReport, actual: Mapping[str, RouteEntry]) -> None:
        """One clear error per pass when the table is full, naming the table and the counts."""
        if not report.over_quota:
            return
        custom = sum(1 for e in actual.values() if e.entry_type == "Custom")
        shown = ", ".join(report.over_quota[:5]) + (", ..." if len(report.over_quota) > 5 else "")
        report.quota_error = (
            f"route table {self.table_id} is full: it holds {custom} custom entries and the quota is reached, "
            f"so {len(report.over_quota)} leases have no route ({shown}); raise the route entry quota of the "
            f"table, or use a larger SubnetLen so fewer nodes need entries")
        log.error("%s", report.quota_error)

    def _wait_settled(self, destinations: Sequence[str]) -> dict[str, RouteEntry]:
        """Poll the given destinations until none is Pending or Deleting.

        Returns what the last poll saw; a destination missing from it is gone
        (and absent from the returned mapping, so callers must drop it). The
        first poll comes just before the last observed settle time, then every
        few tens of milliseconds: the table's next change can start as soon as
        this one is done, without polling the whole time.
        """
        started = time.monotonic()
        deadline = started + self.settle_timeout
        delay = max(0.02, 0.9 * self._settle_estimate)
        seen: dict[str, RouteEntry] = {}
        wanted = list(destinations)
        while not self._stop.wait(delay):
            polled = [e for chunk in _chunks(wanted, BATCH_SIZE)
                      for e in self.api.list_route_entries(self.table_id, destinations=chunk)]
            for destination in wanted:
                seen.pop(destination, None)
            seen.update((e.destination, e) for e in polled)
            unsettled = [e for e in polled if e.status != _SETTLED]
            if not unsettled:
                self._settle_estimate = time.monotonic() - started
                break
            wanted = [e.destination for e in unsettled]
            if time.monotonic() > deadline:
                raise RetryableCloudError(
                    f"route table {self.table_id}: entries still not settled after {self.settle_timeout:.0f}s: "
                    + ", ".join(f"{e.destination} {e.status}" for e in unsettled[:5]))
            delay = min(self.poll_interval, max(0.02, delay / 4))
        return seen


T = TypeVar("T")


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
