"""Desired VPC route entries from flannel leases, ownership, and the plan that reconciles them.

Which leases get an entry
    Every lease of an ali-vpc node in this VPC: ours carry the ECS instance in
    their BackendData (``InstanceId``); flannel's own ali-vpc backend (v0.8 to
    v0.19) wrote bare leases, ``{"PublicIP": ..., "PublicIPv6": null}``, whose
    instance is found by its address (``legacy_address``; the route writer
    resolves those with one batched ECS lookup). A bare lease whose instance is
    not known yet gets no entry made, and no entry for its subnet is deleted.

Which entries are ours
    Only a ``Custom`` entry with an ``Instance`` next hop and a destination
    inside the flannel ``Network`` is ever considered (so ``0.0.0.0/0``, VPN,
    NAT and secondary-CIDR routes are never touched, whatever they point at).
    Among those, an entry is *ours* only when its Description carries this
    cluster's marker (``route_description``), which we write on every entry we
    create. That proof comes from the cloud side, so two clusters in one VPC
    with the same default Network, or a hand-made entry inside it, are told
    apart: their entries are reported (``conflict``, ``unmanaged``) and never
    changed.

    An unmarked entry that already routes a live lease's subnet to that lease's
    instance (what flannel's old backend or flannel-alivpc 0.1 made) is
    *adopted*: the marker is written onto it in place (ModifyRouteEntry), never
    deleted and re-created, so a rolling upgrade never drops a packet.

What changes
    Among our entries, one whose destination has a valid lease pointing at
    another instance is replaced (the node was replaced); one with no lease of
    any format is deleted, but only once the lease snapshot is complete and no
    malformed or unresolved lease holds the subnet (unknown state is never a
    reason to delete).

When the table is full (overflow)
    A table holds a limited number of custom entries (its quota). When the
    leases do not all fit, ``split_routes`` decides who keeps an entry:
    every lease that already holds one keeps it (so nothing flaps as nodes
    join), then the free slots go to the waiting leases in queue order: leases
    with no other path first (no VtepMAC: flannel's old backend), then the
    published overflow queue as it stood (longest waiting first), then
    newcomers by address. The rest are *overflow*: the table writer publishes
    them (``TableOverflow``) and every node reaches them over VXLAN.

    When the quota read from the cloud is below what the table already holds
    (it shrank: a temporary quota raise expired), the table is brought back
    within it: our entries with another path are *trimmed*, highest address
    first (a stable rule; leases with no other path are never trimmed). A
    trimmed lease joins the overflow at once, but its entry is deleted only
    when every node that would lose its path has confirmed that its VXLAN
    path is programmed (``ProgrammedOverflow``, ``overflow_ackers``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from flannel_alivpc.core.cloud import RouteEntry, RouteSpec
from flannel_alivpc.core.network import BACKEND_TYPE, IPv4Network, Lease

ROUTE_NAME = "flannel-alivpc"
"""RouteEntryName given to the entries we create or adopt (for operators; ownership uses the Description)."""

_MARKER = "flannel-alivpc cluster "
_MARKER_PATTERN = re.compile(r"^flannel-alivpc cluster ([A-Za-z0-9][A-Za-z0-9._-]{0,63})(?![A-Za-z0-9._-])")
_CLUSTER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def valid_cluster_id(cluster_id: str) -> bool:
    """Letters, digits, ``.``, ``_``, ``-``; at most 64 characters (it must fit a route Description)."""
    return bool(_CLUSTER_ID.match(cluster_id))


def route_description(cluster_id: str) -> str:
    """The Description that proves an entry is this cluster's (it starts with a letter, as the API demands)."""
    if not valid_cluster_id(cluster_id):
        raise ValueError(f"cluster id {cluster_id!r} is not usable in a route entry description")
    return f"{_MARKER}{cluster_id}; managed by flannel-alivpc, do not edit"


def entry_cluster(entry: RouteEntry) -> str | None:
    """The cluster whose marker ``entry`` carries, or None for an unmarked entry."""
    match = _MARKER_PATTERN.match(entry.description or "")
    return match.group(1) if match else None


def legacy_address(lease: Lease) -> ipaddress.IPv4Address | None:
    """The PublicIP of a lease that names no instance but belongs to an ali-vpc node.

    flannel's ali-vpc backend wrote no BackendType and no BackendData; such a
    lease is resolved to its instance by address. Leases of other backends
    (vxlan, host-gw, udp) are not ali-vpc nodes and return None.
    """
    if lease.attrs.instance_id or lease.attrs.backend_type not in ("", BACKEND_TYPE):
        return None
    return lease.attrs.public_ip


def served_by_vpc_table(lease: Lease, vpc_id: str) -> bool:
    """True when ``vpc_id``'s route tables carry the lease's subnet.

    That is an ali-vpc lease of an instance in this VPC, or a bare lease of
    flannel's old ali-vpc backend (which only ever ran in a VPC, and whose
    nodes have no VXLAN device). Leases of other backends (stock flanneld vxlan
    nodes), of classic-network nodes and of instances in other VPCs get no entry
    there (VXLAN reaches them).
    """
    if legacy_address(lease) is not None:
        return True
    if not lease.attrs.instance_id:
        return False
    network_type = str(lease.attrs.backend_field("NetworkType") or "vpc")
    lease_vpc = lease.attrs.backend_field("VpcId")
    return network_type == "vpc" and not (lease_vpc and lease_vpc != vpc_id)


@dataclass(frozen=True)
class DesiredRoute:
    destination: IPv4Network
    instance_id: str


@dataclass(frozen=True)
class DesiredRoutes:
    """What the leases ask of a table: one route per resolvable lease, and the subnets not yet resolvable."""

    routes: Mapping[IPv4Network, DesiredRoute]
    unresolved: frozenset[IPv4Network] = frozenset()
    """Subnets of bare (old-backend) leases whose instance is not known: never deleted, never created."""


def desired_routes(leases: Iterable[Lease], *, vpc_id: str,
                   legacy_instances: Mapping[ipaddress.IPv4Address, str] | None = None) -> DesiredRoutes:
    """One route per lease ``served_by_vpc_table``; ``legacy_instances`` maps bare leases' PublicIPs to instances."""
    routes: dict[IPv4Network, DesiredRoute] = {}
    unresolved: set[IPv4Network] = set()
    for lease in leases:
        if not served_by_vpc_table(lease, vpc_id):
            continue
        address = legacy_address(lease)
        instance_id = lease.attrs.instance_id if address is None else (legacy_instances or {}).get(address)
        if instance_id:
            routes[lease.subnet] = DesiredRoute(lease.subnet, instance_id)
        else:
            unresolved.add(lease.subnet)
    return DesiredRoutes(routes, frozenset(unresolved))


def _destination(entry: RouteEntry) -> IPv4Network | None:
    try:
        net = ipaddress.ip_network(entry.destination)
    except ValueError:
        return None
    return net if isinstance(net, ipaddress.IPv4Network) else None


def is_node_route(entry: RouteEntry, network: IPv4Network) -> bool:
    """True for the kind of entry flannel-alivpc could have made: Custom, to an instance, inside the Network."""
    if entry.entry_type != "Custom" or entry.next_hop_type != "Instance":
        return False
    destination = _destination(entry)
    return destination is not None and destination.prefixlen > 0 and destination.subnet_of(network)


class RouteState(str, Enum):
    OK = "ok"
    PENDING = "pending"
    MISSING = "missing"
    STALE = "stale"
    WRONG_NEXT_HOP = "wrong-next-hop"
    ADOPTING = "adopting"
    """Routes the lease correctly but lacks our marker (old backend, flannel-alivpc 0.1); it is being marked."""
    CONFLICT = "conflict"
    """The lease's destination is held by an entry that is not ours; reported, never overwritten."""
    UNMANAGED = "unmanaged"
    """An entry inside the Network that is not ours and no lease maps to; left alone."""
    UNRESOLVED = "unresolved"
    """A bare lease of flannel's old backend whose instance is not known yet; its subnet is left alone."""
    OVERFLOW = "overflow"
    """The table has no room for the lease (its quota is reached): every node reaches it over VXLAN."""


_UNRESOLVED = "the lease names no instance (flannel's old ali-vpc backend) and none is known at its PublicIP yet"

OVERFLOW_REASON = "no room in the route table (its custom entry quota is reached): reached over VXLAN"
MOVING_REASON = ("the route table holds more than its quota: reached over VXLAN, its entry is deleted once every "
                 "node has confirmed its VXLAN path")

HEALTHY_STATES = frozenset({RouteState.OK, RouteState.UNMANAGED, RouteState.OVERFLOW})
"""States that need no action (``routes --check`` is clean when every route is in one).

Overflow counts: the node has a path (VXLAN), and the quota is the operator's to raise."""


@dataclass(frozen=True)
class RouteStatus:
    destination: IPv4Network
    state: RouteState
    desired_instance: str | None
    actual_instance: str | None
    entry_status: str | None
    reason: str = ""
    """Why, for states an operator has to act on (conflict, unmanaged, unresolved)."""


@dataclass(frozen=True)
class NodeRouteState:
    """How one lease's route stands in one table, as its writer last saw it (for Node conditions)."""

    ok: bool
    """Its entry is Available with the right next hop, or it is reached over VXLAN (overflow)."""
    reason: str = ""
    """Why not, when the cloud refused it or something else holds the destination (empty while pending);
    for a usable lease, how it is reached when that is not its entry (overflow)."""


def node_route_states(statuses: Iterable[RouteStatus],
                      refusals: Mapping[str, str]) -> dict[IPv4Network, NodeRouteState]:
    """Per leased subnet: routed, refused (``refusals``: destination -> the cloud's words), or pending."""
    states: dict[IPv4Network, NodeRouteState] = {}
    for status in statuses:
        if status.desired_instance is None:
            continue
        # An overflow lease has its path (VXLAN), so its node is usable, as a routed one is.
        routed = ((status.state in (RouteState.OK, RouteState.ADOPTING) and status.entry_status == "Available")
                  or status.state is RouteState.OVERFLOW)
        if status.state is RouteState.OVERFLOW:
            reason = status.reason  # usable, and the condition should say how
        elif routed:
            reason = ""
        else:
            reason = refusals.get(str(status.destination)) or (
                status.reason if status.state is RouteState.CONFLICT else "")
        states[status.destination] = NodeRouteState(routed, reason)
    return states


@dataclass(frozen=True)
class RoutePlan:
    """What to change in one route table, in the order it must be applied.

    ``create`` goes first (new nodes get connectivity soonest), then ``adopt``
    (marking entries that already route correctly; no traffic effect), then
    ``delete`` (stale entries and entries pointing at the wrong instance). A
    replaced entry's new version is created on the next pass, once the deletion
    has settled, because a table cannot hold the same destination twice.
    """

    table_id: str
    create: tuple[RouteSpec, ...] = ()
    adopt: tuple[RouteEntry, ...] = ()
    delete: tuple[RouteEntry, ...] = ()
    kept_for_unknown: tuple[RouteEntry, ...] = ()
    """Our entries with no lease that were kept: snapshot incomplete, lease malformed or unresolved."""
    statuses: tuple[RouteStatus, ...] = field(default=(), compare=False)

    @property
    def empty(self) -> bool:
        return not self.create and not self.adopt and not self.delete


def _holder(entry: RouteEntry) -> str:
    """Who holds a destination we may not touch, for the conflict message."""
    if entry.next_hop_type != "Instance" or entry.entry_type != "Custom":
        return f"a {entry.entry_type} entry to {entry.next_hop_type or 'local'} {entry.next_hop_id or ''}".rstrip()
    other = entry_cluster(entry)
    if other is not None:
        return f"cluster {other}'s entry to {entry.next_hop_id} (another cluster in this VPC uses this Network)"
    return (f"an entry to {entry.next_hop_id} that flannel-alivpc did not make (hand-made or an old flannel "
            f"node's for an earlier lease); delete it if nothing uses it")


def plan_routes(
    *,
    table_id: str,
    desired: DesiredRoutes,
    actual: Iterable[RouteEntry],
    network: IPv4Network,
    in_sync: bool,
    cluster_id: str | None,
    protected: Collection[IPv4Network] = (),
    overflow: Collection[IPv4Network] = (),
    release: Collection[IPv4Network] = (),
) -> RoutePlan:
    """Diff desired routes against one table's entries (pure).

    ``cluster_id`` None (no writer has ever run) means no entry is ours yet.
    ``overflow`` leases (``split_routes``) get no entry created: they are
    reported ``overflow``. One that holds our entry (trimmed from a table over
    its quota) keeps it until it is in ``release`` (every node has its VXLAN
    path): then the entry is deleted.
    """
    overflow_set = frozenset(overflow)
    release_set = frozenset(release)
    ours: dict[IPv4Network, RouteEntry] = {}
    others: dict[IPv4Network, RouteEntry] = {}
    for entry in actual:
        destination = _destination(entry)
        if destination is None:
            continue
        if cluster_id is not None and is_node_route(entry, network) and entry_cluster(entry) == cluster_id:
            ours[destination] = entry
        else:
            others[destination] = entry
    description = route_description(cluster_id) if cluster_id is not None else ""
    create: list[RouteSpec] = []
    adopt: list[RouteEntry] = []
    delete: list[RouteEntry] = []
    kept: list[RouteEntry] = []
    statuses: list[RouteStatus] = []
    for destination, route in sorted(desired.routes.items(), key=lambda item: int(item[0].network_address)):
        current = ours.get(destination)
        foreign = others.get(destination)
        if current is None and foreign is not None:
            if (is_node_route(foreign, network) and entry_cluster(foreign) is None
                    and foreign.next_hop_id == route.instance_id):
                # Already routes this lease correctly: mark it as ours where it is.
                if foreign.status == "Available":
                    adopt.append(foreign)
                statuses.append(RouteStatus(destination, RouteState.ADOPTING, route.instance_id,
                                            foreign.next_hop_id, foreign.status))
            else:
                statuses.append(RouteStatus(destination, RouteState.CONFLICT, route.instance_id,
                                            foreign.next_hop_id, foreign.status,
                                            reason=f"held by {_holder(foreign)}"))
        elif current is None and destination in overflow_set:
            statuses.append(RouteStatus(destination, RouteState.OVERFLOW, route.instance_id, None, None,
                                        reason=OVERFLOW_REASON))
        elif current is None:
            create.append(RouteSpec(destination=str(destination), next_hop_id=route.instance_id,
                                    name=ROUTE_NAME, description=description))
            statuses.append(RouteStatus(destination, RouteState.MISSING, route.instance_id, None, None))
        elif current.next_hop_id != route.instance_id:
            if current.status == "Available":
                delete.append(current)
            statuses.append(RouteStatus(destination, RouteState.WRONG_NEXT_HOP, route.instance_id,
                                        current.next_hop_id, current.status))
        elif destination in overflow_set:
            if destination in release_set and current.status == "Available":
                delete.append(current)
            statuses.append(RouteStatus(destination, RouteState.OVERFLOW, route.instance_id, current.next_hop_id,
                                        current.status, reason=MOVING_REASON))
        else:
            state = RouteState.OK if current.status == "Available" else RouteState.PENDING
            statuses.append(RouteStatus(destination, state, route.instance_id, current.next_hop_id,
                                        current.status))
    keep = set(protected) | desired.unresolved
    for destination, entry in sorted(ours.items(), key=lambda item: int(item[0].network_address)):
        if destination in desired.routes:
            continue
        if destination in desired.unresolved:
            statuses.append(RouteStatus(destination, RouteState.UNRESOLVED, None, entry.next_hop_id, entry.status,
                                        reason=_UNRESOLVED))
        else:
            statuses.append(RouteStatus(destination, RouteState.STALE, None, entry.next_hop_id, entry.status))
        if not in_sync or destination in keep:
            kept.append(entry)
        elif entry.status == "Available":
            delete.append(entry)
    for destination, entry in sorted(others.items(), key=lambda item: int(item[0].network_address)):
        if destination in desired.routes or not is_node_route(entry, network):
            continue
        if destination in desired.unresolved:
            statuses.append(RouteStatus(destination, RouteState.UNRESOLVED, None, entry.next_hop_id, entry.status,
                                        reason=_UNRESOLVED))
            continue
        other = entry_cluster(entry)
        reason = f"cluster {other}'s entry" if other else "not made by flannel-alivpc; no lease maps to it"
        statuses.append(RouteStatus(destination, RouteState.UNMANAGED, None, entry.next_hop_id, entry.status,
                                    reason=reason))
    reported = {s.destination for s in statuses}
    for destination in sorted(desired.unresolved - reported, key=lambda d: int(d.network_address)):
        statuses.append(RouteStatus(destination, RouteState.UNRESOLVED, None, None, None, reason=_UNRESOLVED))
    return RoutePlan(table_id=table_id, create=tuple(create), adopt=tuple(adopt), delete=tuple(delete),
                     kept_for_unknown=tuple(kept), statuses=tuple(statuses))


# -- route table quota overflow -------------------------------------------------------------


@dataclass(frozen=True)
class TableOverflow:
    """What a table's writer publishes for every node: the leases the table cannot hold, and its quota.

    ``subnets`` is the overflow queue, longest waiting first (the first to get
    an entry when room appears). ``quota`` is the table's custom entry quota as
    the writer learned it from the cloud (None: never refused). ``moving`` are
    the overflow leases that still hold an entry (trimmed from a table over its
    quota): each node confirms its VXLAN path to them (``ProgrammedOverflow``)
    before the writer deletes their entries.
    """

    subnets: tuple[IPv4Network, ...] = ()
    quota: int | None = None
    moving: tuple[IPv4Network, ...] = ()

    def to_json(self) -> str:
        data: dict[str, object] = {"Quota": self.quota, "Overflow": [str(s) for s in self.subnets]}
        if self.moving:
            data["Moving"] = [str(s) for s in self.moving]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> TableOverflow:
        """Parse a published value; ``ValueError`` saying what is wrong."""
        data = _json_object(raw)
        quota = data.get("Quota")
        if quota is not None and (isinstance(quota, bool) or not isinstance(quota, int) or quota < 0):
            raise ValueError(f"Quota {quota!r} is not a whole number")
        subnets = _subnet_list(data, "Overflow")
        moving = _subnet_list(data, "Moving", optional=True)
        if not set(moving) <= set(subnets):
            raise ValueError("Moving lists subnets that are not in Overflow")
        return cls(subnets, quota, moving)


def _json_object(raw: bytes | str) -> dict[str, object]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _subnet_list(data: Mapping[str, object], key: str, *, optional: bool = False) -> tuple[IPv4Network, ...]:
    listed = data.get(key)
    if listed is None and optional:
        return ()
    if not isinstance(listed, list):
        raise ValueError(f"{key} is not a list of subnets")
    subnets: list[IPv4Network] = []
    for item in listed:
        try:
            subnets.append(ipaddress.IPv4Network(item))
        except (TypeError, ValueError):
            raise ValueError(f"{key} entry {item!r} is not an IPv4 subnet") from None
    return tuple(subnets)


@dataclass(frozen=True)
class ProgrammedOverflow:
    """What one node confirms: the moving overflow leases its VXLAN path reaches (kernel entries in place).

    ``public_ip`` is the node's, so a confirmation left by an earlier holder of
    the same subnet is not taken for this one's (etcd mode; a Node's own
    annotation cannot outlive it).
    """

    subnets: frozenset[IPv4Network]
    public_ip: ipaddress.IPv4Address | None = None

    def to_json(self) -> str:
        return json.dumps({"PublicIP": str(self.public_ip) if self.public_ip else None,
                           "Programmed": sorted(map(str, self.subnets))}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> ProgrammedOverflow:
        """Parse a published value; ``ValueError`` saying what is wrong."""
        data = _json_object(raw)
        address = data.get("PublicIP")
        try:
            public_ip = ipaddress.IPv4Address(address) if address is not None else None
        except (TypeError, ValueError):
            raise ValueError(f"PublicIP {address!r} is not an IPv4 address") from None
        return cls(frozenset(_subnet_list(data, "Programmed")), public_ip)


@dataclass(frozen=True)
class Ackers:
    """Who must confirm a VXLAN path to a trimmed lease before its entry goes (``overflow_ackers``)."""

    required: frozenset[IPv4Network]
    """flannel-alivpc VPC nodes: they reach it through this table until their VXLAN path is in place (a
    trimmed lease's own node among them: it need not confirm its own path)."""
    blockers: tuple[str, ...] = ()
    """Nodes that reach it only through the table (no VXLAN path to it at all), described for the log."""


def overflow_ackers(leases: Iterable[Lease], *, vpc_id: str) -> Ackers:
    """The nodes whose path to a trimmed lease depends on its entry (pure; the same for every trimmed lease).

    Our daemons on VPC nodes of this VPC must confirm. Our other nodes
    (classic network, other VPCs) already reach every peer over VXLAN. A node
    of flannel's old backend (no VtepMAC) or a stock flanneld vxlan node (it
    ignores ali-vpc leases) reaches ali-vpc nodes only through the VPC table:
    while one is in the cluster the entry stays.
    """
    required: set[IPv4Network] = set()
    blockers: list[str] = []
    for lease in leases:
        if lease.attrs.backend_type not in ("", BACKEND_TYPE):
            blockers.append(f"{lease.subnet} ({lease.attrs.backend_type} backend: reaches ali-vpc nodes only "
                            "through the route table)")
        elif lease.attrs.backend_field("VtepMAC") is None:
            blockers.append(f"{lease.subnet} (flannel's old ali-vpc backend: no VXLAN device)")
        elif served_by_vpc_table(lease, vpc_id):
            required.add(lease.subnet)
    return Ackers(frozenset(required), tuple(blockers))


@dataclass(frozen=True)
class RouteSplit:
    """Which leases a table gives an entry (``routed``) and which it cannot hold (``overflow``, in queue order)."""

    routed: frozenset[IPv4Network]
    overflow: tuple[IPv4Network, ...] = ()
    waiting: tuple[IPv4Network, ...] = ()
    """Leases without an entry yet, in the order they get one: creates go in this order."""
    free: int | None = None
    """Slots left for leases after this split (None: no quota known)."""
    trimmed: tuple[IPv4Network, ...] = ()
    """Leases holding an entry that must move to VXLAN (the table is over its quota); part of ``overflow``."""


def _occupies_slot(entry: RouteEntry) -> bool:
    return entry.entry_type == "Custom" and entry.status != "Deleting"


def split_routes(desired: DesiredRoutes, actual: Iterable[RouteEntry], *, quota: int | None,
                 queue: Sequence[IPv4Network] = (),
                 no_other_path: Collection[IPv4Network] = (), trim: bool = False,
                 cluster_id: str | None = None) -> RouteSplit:
    """Decide who gets an entry in a table of ``quota`` custom entries (pure; see the module docstring).

    Every Custom entry counts against the quota (the cloud counts them all:
    other clusters', hand-made, NAT, and our stale ones until deleted); a lease
    that already holds its destination keeps it. ``queue`` is the overflow
    queue as last published; ``no_other_path`` are the leases that cannot be
    reached over VXLAN, which go first. With ``quota`` None every lease is routed.

    ``trim`` (the quota was read from the cloud, so a table holding more is
    known to be over it): the excess is trimmed from the leases holding this
    cluster's entries (``cluster_id``), highest address first, never one in
    ``no_other_path``; trimmed leases head the overflow queue.
    """
    held: set[IPv4Network] = set()
    ours: set[IPv4Network] = set()
    others = 0
    for entry in actual:
        if not _occupies_slot(entry):
            continue
        destination = _destination(entry)
        if destination is not None and destination in desired.routes:
            held.add(destination)
            if cluster_id is not None and entry_cluster(entry) == cluster_id:
                ours.add(destination)
        else:
            others += 1
    trimmed: list[IPv4Network] = []
    if trim and quota is not None and others + len(held) > quota:
        candidates = sorted((d for d in ours if d not in no_other_path), key=lambda d: int(d.network_address),
                            reverse=True)
        trimmed = candidates[:others + len(held) - quota]
        held -= set(trimmed)
    waiting = [d for d in desired.routes if d not in held and d not in trimmed]
    queued = {subnet: position for position, subnet in enumerate(queue)}
    forced = frozenset(no_other_path)
    waiting.sort(key=lambda d: (d not in forced, queued.get(d, len(queued)), int(d.network_address)))
    if quota is None:
        return RouteSplit(routed=frozenset(desired.routes), waiting=tuple(waiting))
    # Trimmed leases still hold their slots until deleted: none is free for a waiting lease.
    free = max(0, quota - others - len(held) - len(trimmed))
    admitted = waiting[:free]
    return RouteSplit(routed=frozenset(held) | frozenset(admitted),
                      overflow=tuple(trimmed) + tuple(waiting[free:]),
                      waiting=tuple(waiting), free=free - len(admitted), trimmed=tuple(trimmed))
