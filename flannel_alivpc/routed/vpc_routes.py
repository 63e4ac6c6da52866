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

A full table (quota): when the cloud refuses an entry with ``QuotaExceeded``
the writer learns the quota (the custom entries the table held then), splits
the leases (``core.routes.split_routes``: entries are kept where they are, the
free slots go to the waiting leases in queue order) and publishes the rest as
the table's overflow through the lease source, where every daemon reads it and
reaches those nodes over VXLAN. A lease moves from the overflow to the table
only in this order: its entry is created, then polled until Available, and
only then is it dropped from the published overflow (so every node keeps its
VXLAN path until the route works). Room is noticed in three ways: a slot
freed in the table (a node left) is used in the same pass; once per
``probe_interval`` the writer reads the quota from the Quota Center
(``read_quota``) and tries the head of the queue (a quota raised for this
table alone shows only so).

A quota that shrank below what the table holds (a temporary raise expired) is
seen only by the read; the writer then trims the table back within it, in
this order: the trimmed leases are published in the overflow (``Moving``:
they still hold an entry), every node programs its VXLAN path to them and
confirms it (``overflow_programmed``), and only when every node that reaches
them through this table has confirmed is the entry deleted. A node that has
no VXLAN path to give (flannel's old backend, stock flanneld) keeps the entry
in place, reported. A table that takes more entries than the quota read says
has a quota of its own: the read is then not used to trim it.
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
    DesiredRoutes,
    NodeRouteState,
    ProgrammedOverflow,
    RoutePlan,
    RouteSplit,
    RouteState,
    TableOverflow,
    desired_routes,
    legacy_address,
    node_route_states,
    overflow_ackers,
    plan_routes,
    route_description,
    split_routes,
)
from flannel_alivpc.routed.legacy_leases import LegacyLeaseResolver

log = logging.getLogger(__name__)

BATCH_SIZE = 50
REFUSED_RETRY = 30.0
"""Seconds before trying again when every change of a pass was refused (quota, bad next hop)."""
CONFIRM_WAIT = 3.0
"""Seconds a pass waits for the nodes' VXLAN confirmations of trimmed leases before ending (the next comes soon)."""
CONFIRM_RETRY = 1.0
_SETTLED = "Available"


class LeaseView(Protocol):
    """What the writer needs from a lease snapshot."""

    @property
    def leases(self) -> Mapping[IPv4Network, Lease]: ...

    @property
    def in_sync(self) -> bool: ...

    def malformed_subnets(self) -> Collection[IPv4Network]: ...


class OverflowStore(Protocol):
    """Where a table's overflow is published for every daemon (the lease source)."""

    def read_route_overflow(self, table_id: str) -> TableOverflow | None: ...

    def publish_route_overflow(self, table_id: str, overflow: TableOverflow) -> None: ...

    def overflow_programmed(self) -> Mapping[IPv4Network, ProgrammedOverflow]:
        """Each node's confirmation of its VXLAN path to moving overflow leases, keyed by the node's subnet."""
        ...


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
    overflow: TableOverflow = field(default_factory=TableOverflow)
    """What this pass published: the leases the table cannot hold, reached over VXLAN."""
    unconfirmed: dict[str, list[str]] = field(default_factory=dict)
    """trimmed destination -> the nodes that have not confirmed their VXLAN path to it yet (or cannot)."""


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
        overflow_store: OverflowStore | None = None,
        read_quota: Callable[[], int] | None = None,
        probe_interval: float = 60.0,
        poll_interval: float = 0.1,
        settle_timeout: float = 300.0,
        confirm_wait: float = CONFIRM_WAIT,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
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
        self.confirm_wait = confirm_wait
        self._stop = stop or threading.Event()
        self.still_writer: Callable[[], bool] = lambda: True
        """Whether this node still holds the table's writer lock; a pass ends at its next step once it does not
        (set by the table's leadership: a deposed writer must not finish a long pass beside the new one)."""
        self.report = TableReport()
        self._settle_estimate = 0.0
        self._store = overflow_store
        self.probe_interval = probe_interval
        self._clock = clock
        self._quota: int | None = None
        """The table's custom entry quota as last learned from a refusal (None: not known to be reached)."""
        self._read_quota_api = read_quota
        self._read: int | None = None
        """The quota as last read from the Quota Center (None: not read, or the read failed)."""
        self._read_at: float | None = None
        self._read_error = ""
        self._read_exceeded = False
        """The table took more entries than the read quota: it has a quota of its own, the read does not trim it."""
        self._blocked: tuple[str, ...] = ()
        self._queue: tuple[IPv4Network, ...] = ()
        """The overflow as last published: the queue order for free slots."""
        self._stored: TableOverflow | None = None
        self._last_probe: float | None = None
        self._warned: TableOverflow | None = None

    def _plan(self, actual: Iterable[RouteEntry]) -> tuple[RoutePlan, RouteSplit, DesiredRoutes]:
        snap = self._snapshot()
        leases = list(snap.leases.values())
        addresses = [a for a in map(legacy_address, leases) if a is not None]
        legacy = self._legacy.resolve(addresses) if self._legacy is not None and addresses else {}
        desired = desired_routes(leases, vpc_id=self.vpc_id, legacy_instances=legacy)
        # A lease that publishes no VtepMAC (flannel's old backend) has no VXLAN path: it goes first.
        no_vxlan = {lease.subnet for lease in leases if lease.attrs.backend_field("VtepMAC") is None}
        entries = list(actual)
        trim = self._read is not None and not self._read_exceeded and snap.in_sync
        split = split_routes(desired, entries, quota=self._effective_quota(), queue=self._queue,
                             no_other_path=no_vxlan, trim=trim, cluster_id=self.cluster_id)
        release = self._confirmed(split, leases) if split.trimmed else frozenset()
        plan = plan_routes(table_id=self.table_id, desired=desired, actual=entries, network=self.network,
                           in_sync=snap.in_sync, cluster_id=self.cluster_id, protected=snap.malformed_subnets(),
                           overflow=split.overflow, release=release)
        return plan, split, desired

    def _effective_quota(self) -> int | None:
        """The read quota, or what a refusal taught when lower (or when there is no usable read)."""
        read = None if self._read_exceeded else self._read
        if read is None or self._quota is None:
            return self._quota if read is None else read
        return min(read, self._quota)

    def _confirmed(self, split: RouteSplit, leases: Sequence[Lease]) -> frozenset[IPv4Network]:
        """The trimmed leases whose entry may go: every node that reaches them through the table has its VXLAN
        path to them programmed (a confirmation from an earlier holder of a subnet does not count)."""
        confirmations = self._store.overflow_programmed() if self._store is not None else {}
        by_subnet = {lease.subnet: lease for lease in leases}
        ackers = overflow_ackers(leases, vpc_id=self.vpc_id)
        required = sorted(ackers.required, key=lambda node: int(node.network_address))
        blockers = tuple(sorted(ackers.blockers))
        released: set[IPv4Network] = set()
        unconfirmed: dict[str, list[str]] = {}
        for subnet in split.trimmed:
            missing = [str(node) for node in required
                       if node != subnet and not _confirms(confirmations.get(node), subnet, by_subnet[node])]
            if blockers:
                unconfirmed[str(subnet)] = list(blockers)
            elif missing:
                unconfirmed[str(subnet)] = missing
            else:
                released.add(subnet)
        self.report.unconfirmed = unconfirmed
        if blockers and blockers != self._blocked:
            log.warning("%s: over its quota, but %d nodes reach ali-vpc nodes only through the route table "
                        "(%s): the entries of %d leases that should move to VXLAN stay until those nodes run "
                        "flannel-alivpc or leave", self.table_id, len(blockers), "; ".join(blockers[:3]),
                        len(split.trimmed))
        self._blocked = blockers
        return frozenset(released)

    def _load_published(self) -> None:
        """Start from what was published (by this writer or the one before it): the quota and the queue."""
        if self._store is None:
            return
        stored = self._store.read_route_overflow(self.table_id)
        if stored is not None:
            self._stored = stored
            self._quota, self._queue = stored.quota, stored.subnets

    def _publish(self, split: RouteSplit, desired: DesiredRoutes, actual: Mapping[str, RouteEntry],
                 refused: Collection[str]) -> None:
        """Publish the overflow: the split's, plus leases leaving it whose entry is not Available yet.

        A lease leaving the overflow whose entry the cloud refused for another
        reason than the quota is not overflow any more: it is reported as any
        refused entry is.
        """
        entry_ready = {d for d, e in actual.items() if e.status == _SETTLED}
        still_moving = [subnet for subnet in self._queue
                        if subnet in desired.routes and subnet not in split.overflow
                        and str(subnet) not in entry_ready and str(subnet) not in refused]
        moving = tuple(subnet for subnet in split.trimmed if str(subnet) in actual)
        overflow = TableOverflow(tuple(still_moving) + split.overflow, self._effective_quota(), moving)
        self.report.overflow = overflow
        if overflow == self._stored:
            return
        if self._store is not None:
            self._store.publish_route_overflow(self.table_id, overflow)
        moved_in = [str(s) for s in overflow.subnets if s not in self._queue]
        moved_out = [str(s) for s in self._queue if s not in overflow.subnets]
        if moved_in or moved_out:
            log.info("%s: %d nodes in the overflow (reached over VXLAN)%s%s", self.table_id, len(overflow.subnets),
                     f"; added {', '.join(moved_in)}" if moved_in else "",
                     f"; left it (route entry Available, or lease gone) {', '.join(moved_out)}" if moved_out else "")
        self._stored = overflow
        self._queue = overflow.subnets

    def reconcile(self) -> float | None:
        """One pass: list the table once, then apply batches until it matches the leases.

        Each batch is planned from the latest lease snapshot and the table as
        this pass knows it (the listing, updated with what every settled batch
        returned), so leases that arrive during a long pass join the next full
        batch instead of waiting for the next pass.
        """
        report = TableReport()
        self.report = report
        self._load_published()
        self._refresh_read_quota()
        actual = {e.destination: e for e in self.api.list_route_entries(self.table_id)}
        refused: set[str] = set()
        probed = False
        while not self._stop.is_set() and self.still_writer():
            plan, split, desired = self._plan(actual.values())
            report.plan = plan
            self._publish(split, desired, actual, refused)
            busy = [d for d, e in actual.items() if e.status != _SETTLED]
            if busy:
                self._observe_settled(actual, busy)
                continue
            rank = {str(subnet): position for position, subnet in enumerate(split.waiting)}
            creates = sorted((spec for spec in plan.create if spec.destination not in refused),
                             key=lambda spec: rank.get(spec.destination, len(rank)))
            adopts = [entry for entry in plan.adopt if entry.destination not in refused]
            deletes = [entry for entry in plan.delete if entry.destination not in refused]
            if creates:
                batch: Sequence[str] = self._create(creates[:BATCH_SIZE], actual, report, refused)
            elif adopts:
                batch = self._adopt(adopts[:BATCH_SIZE], report, refused)
            elif deletes:
                reasons = {str(s.destination): s.state for s in plan.statuses
                           if s.state in (RouteState.WRONG_NEXT_HOP, RouteState.OVERFLOW)}
                batch = self._delete(deletes[:BATCH_SIZE], reasons, report, refused)
            elif split.overflow and not probed and self._probe_due():
                probed = True
                batch = self._probe(split, desired, actual, report, refused)
            elif self._wait_confirmations(split, report):
                continue
            else:
                if plan.kept_for_unknown:
                    log.info("%s: keeping %d entries whose leases are unknown or malformed: %s", self.table_id,
                             len(plan.kept_for_unknown), ", ".join(e.destination for e in plan.kept_for_unknown))
                self._report_quota(report, actual)
                if self._report_states is not None:
                    self._report_states(self.table_id, node_route_states(plan.statuses, report.refusals))
                return self._next_pass(refused, bool(split.overflow), awaiting=bool(report.unconfirmed)
                                       and not self._blocked)
            if batch:
                self._observe_settled(actual, batch)
        return None

    def _refresh_read_quota(self) -> None:
        """Read the quota from the Quota Center at the first pass and then once per ``probe_interval``."""
        now = self._clock()
        if self._read_quota_api is None or (self._read_at is not None and now - self._read_at < self.probe_interval):
            return
        self._read_at = now
        try:
            quota = self._read_quota_api()
        except CloudError as error:
            if not isinstance(error, RetryableCloudError):
                self._read = None
            if str(error) != self._read_error:
                log.warning("%s: cannot read the route entry quota from the Quota Center (%s); a full table is "
                            "still learned from the cloud's refusals, but a quota lowered below what the table "
                            "holds is not noticed (grant quotas:GetProductQuota to the nodes' RAM role)",
                            self.table_id, error)
            self._read_error = str(error)
            return
        self._read_error = ""
        if quota != self._read:
            if self._read is not None:
                log.info("%s: the route entry quota is now %d (was %d)", self.table_id, quota, self._read)
            # A new value makes what a refusal taught and what the table took beyond the old one stale.
            self._quota = None
            self._read_exceeded = False
        self._read = quota

    def _wait_confirmations(self, split: RouteSplit, report: TableReport) -> bool:
        """Wait a little for the nodes to confirm trimmed leases; True when one may now go (plan again)."""
        if not report.unconfirmed or self._blocked:
            return False
        deadline = time.monotonic() + self.confirm_wait
        while not self._stop.wait(self.poll_interval) and self.still_writer() and time.monotonic() < deadline:
            if self._confirmed(split, list(self._snapshot().leases.values())):
                return True
        return False

    def _probe_due(self) -> bool:
        now = self._clock()
        return self._last_probe is None or now - self._last_probe >= self.probe_interval

    def _probe(self, split: RouteSplit, desired: DesiredRoutes, actual: Mapping[str, RouteEntry],
               report: TableReport, refused: set[str]) -> list[str]:
        """Try the head of the overflow queue: the only way to see a raised quota without a quota API."""
        self._last_probe = self._clock()
        description = route_description(self.cluster_id)
        specs = [RouteSpec(destination=str(subnet), next_hop_id=desired.routes[subnet].instance_id,
                           name=ROUTE_NAME, description=description)
                 for subnet in [s for s in split.overflow if s not in split.trimmed][:BATCH_SIZE]]
        log.debug("%s: probing the quota with %d overflow leases", self.table_id, len(specs))
        if not specs:
            return []
        return self._create(specs, actual, report, refused)

    def _next_pass(self, refused: set[str], overflowing: bool, *, awaiting: bool = False) -> float | None:
        """When to pass again without an event: refused changes retried, the quota probed, confirmations."""
        delays = [CONFIRM_RETRY] if awaiting else []
        if refused:
            # Changes the API refused (bad next hop, permissions) are tried again later.
            delays.append(REFUSED_RETRY)
        if overflowing and self._last_probe is not None:
            delays.append(max(0.0, self._last_probe + self.probe_interval - self._clock()))
        return min(delays) if delays else None

    def _observe_settled(self, actual: dict[str, RouteEntry], destinations: Sequence[str]) -> None:
        """Wait for ``destinations`` to settle and record how they ended (present or gone)."""
        seen = self._wait_settled(destinations)
        for destination in destinations:
            actual.pop(destination, None)
        actual.update(seen)

    def _create(self, specs: Sequence[RouteSpec], actual: Mapping[str, RouteEntry], report: TableReport,
                refused: set[str]) -> list[str]:
        """Create one batch; returns the destinations created. A quota refusal teaches the quota."""
        held = sum(1 for e in actual.values() if e.entry_type == "Custom" and e.status != "Deleting")
        result = self.api.create_route_entries(self.table_id, specs)
        failed = {f.destination for f in result.failures}
        # Quota refusals are not retried as such: the split decides who waits for room.
        refused.update(f.destination for f in result.failures if not _is_quota(f.code))
        created = [s for s in specs if s.destination not in failed]
        if any(_is_quota(f.code) for f in result.failures):
            # The cloud applies a batch in order: the table is full with what it held plus what went in.
            self._quota = held + len(created)
            self._last_probe = self._clock()
        elif created and self._quota is not None and held + len(created) > self._quota:
            # More went in than the quota we knew: it was raised, to a size unknown until the next refusal.
            log.info("%s: the route table took %d entries beyond the quota of %d it had; the quota was raised",
                     self.table_id, held + len(created) - self._quota, self._quota)
            self._quota = None
        if created and self._read is not None and not self._read_exceeded and held + len(created) > self._read:
            log.info("%s: the route table took %d custom entries, more than the quota of %d the Quota Center "
                     "gives; it has a quota of its own, learned from refusals (the read no longer trims it)",
                     self.table_id, held + len(created), self._read)
            self._read_exceeded = True
        for spec in created:
            log.info("%s: created %s -> %s (lease present, entry missing)", self.table_id,
                     spec.destination, spec.next_hop_id, extra=self._fields(spec.destination, spec.next_hop_id))
        report.created += len(created)
        self._record_failures(result, report)
        return [s.destination for s in created]

    def _fields(self, destination: str, instance: str) -> dict[str, str]:
        """The structured fields of a route change line (``--log-format json`` keys)."""
        return {"table_id": self.table_id, "destination": destination, "instance": instance}

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
                     "maps to it)", self.table_id, entry.destination, entry.next_hop_id,
                     extra=self._fields(entry.destination, entry.next_hop_id))
            adopted.append(entry.destination)
        report.adopted += len(adopted)
        return adopted

    def _delete(self, entries: Sequence[RouteEntry], reasons: Mapping[str, RouteState], report: TableReport,
                refused: set[str]) -> list[str]:
        """Delete one batch; returns the destinations deleted (``reasons``: why, for those not stale)."""
        result = self.api.delete_route_entries(self.table_id, entries)
        failed = {f.entry_id for f in result.failures}
        deleted = [e for e in entries if e.entry_id not in failed]
        refused.update(e.destination for e in entries if e.entry_id in failed)
        for entry in deleted:
            reason = _DELETE_REASONS[reasons.get(entry.destination, RouteState.STALE)]
            log.info("%s: deleted %s -> %s (%s)", self.table_id, entry.destination, entry.next_hop_id, reason,
                     extra=self._fields(entry.destination, entry.next_hop_id))
        report.deleted += len(deleted)
        self._record_failures(result, report)
        return [e.destination for e in deleted]

    def _record_failures(self, result: BatchResult, report: TableReport) -> None:
        for failure in result.failures:
            report.failures.append(f"{failure.destination}: {failure.code} {failure.message}")
            report.refusals[failure.destination] = f"{failure.code}: {failure.message}"
            if _is_quota(failure.code):
                report.over_quota.append(failure.destination)
            elif "DUPLICATE" in failure.code.upper():
                log.info("%s: %s already present (another writer?); re-reading the table",
                         self.table_id, failure.destination)
            else:
                log.warning("%s: change for %s refused: %s %s", self.table_id, failure.destination,
                            failure.code, failure.message,
                            extra=self._fields(failure.destination, failure.next_hop_id))

    def _report_quota(self, report: TableReport, actual: Mapping[str, RouteEntry]) -> None:
        """A Warning when the table is full, naming the quota and how to raise it: once per change, not per pass."""
        overflow = report.overflow
        if not overflow.subnets or overflow.quota is None:
            # No quota known to be reached: at most leases on their way back to the table.
            if self._warned is not None and self._warned.subnets:
                log.info("%s: every lease has its route entry again; no node is reached over VXLAN for lack of "
                         "room", self.table_id)
            self._warned = overflow
            return
        custom = sum(1 for e in actual.values() if e.entry_type == "Custom" and e.status != "Deleting")
        shown = ", ".join(map(str, overflow.subnets[:5])) + (", ..." if len(overflow.subnets) > 5 else "")
        quota = f"its quota of {overflow.quota} custom entries" if overflow.quota is not None else "its quota"
        report.quota_error = (
            f"route table {self.table_id} is full: it holds {custom} custom entries, {quota}, so "
            f"{len(overflow.subnets)} nodes are reached over VXLAN instead ({shown}); raise the route entry "
            f"quota (vpc_quota_route_entrys_num, in the Quota Center or the VPC console's quota page), or use a "
            f"larger SubnetLen so fewer nodes need entries; they move back to route entries once there is room")
        if overflow != self._warned:
            log.warning("%s", report.quota_error)
        self._warned = overflow

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
        while not self._stop.wait(delay) and self.still_writer():
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


_DELETE_REASONS = {
    RouteState.WRONG_NEXT_HOP: "next hop is not the lease's instance",
    RouteState.OVERFLOW: "the table is over its quota: moved to VXLAN, every node confirmed its path",
    RouteState.STALE: "no lease for this subnet",
}


def _confirms(confirmation: ProgrammedOverflow | None, subnet: IPv4Network, node: Lease) -> bool:
    if confirmation is None or subnet not in confirmation.subnets:
        return False
    return confirmation.public_ip is None or confirmation.public_ip == node.attrs.public_ip


def _is_quota(code: str) -> bool:
    return code.startswith("QuotaExceeded")


T = TypeVar("T")


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
