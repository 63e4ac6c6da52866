"""Desired VPC route entries from flannel leases, ownership, and the plan that reconciles them.

Ownership is what keeps this daemon from repeating the old backend's worst bug
(it deleted every custom route that pointed at its node). An entry is ours to
change only when all of these hold:

* it is a ``Custom`` entry whose next hop type is ``Instance``;
* its destination lies inside the flannel ``Network`` (so ``0.0.0.0/0``, VPN,
  NAT and secondary-CIDR routes are never touched, whatever they point at).

Among owned entries, one whose destination has a valid lease pointing at
another instance is replaced (the node was replaced); one whose lease is gone
is deleted, but only once the lease snapshot is complete and the subnet is not
held by a malformed lease (unknown state is never a reason to delete).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from flannel_alivpc.core.cloud import RouteEntry, RouteSpec
from flannel_alivpc.core.network import IPv4Network, Lease

ROUTE_NAME = "flannel-alivpc"
"""RouteEntryName given to the entries we create (for operators; ownership does not rely on it)."""


@dataclass(frozen=True)
class DesiredRoute:
    destination: IPv4Network
    instance_id: str


def served_by_vpc_table(lease: Lease, vpc_id: str) -> bool:
    """True when ``vpc_id``'s route tables carry the lease's subnet: an ali-vpc lease of an instance in it.

    Leases of other backends (stock flanneld vxlan nodes), of classic-network
    nodes and of instances in other VPCs get no entry there (VXLAN reaches them).
    """
    if not lease.attrs.instance_id:
        return False
    network_type = str(lease.attrs.backend_field("NetworkType") or "vpc")
    lease_vpc = lease.attrs.backend_field("VpcId")
    return network_type == "vpc" and not (lease_vpc and lease_vpc != vpc_id)


def desired_routes(leases: Iterable[Lease], *, vpc_id: str) -> dict[IPv4Network, DesiredRoute]:
    """One route per lease ``served_by_vpc_table``."""
    routes: dict[IPv4Network, DesiredRoute] = {}
    for lease in leases:
        instance_id = lease.attrs.instance_id
        if instance_id and served_by_vpc_table(lease, vpc_id):
            routes[lease.subnet] = DesiredRoute(lease.subnet, instance_id)
    return routes


def _destination(entry: RouteEntry) -> IPv4Network | None:
    try:
        net = ipaddress.ip_network(entry.destination)
    except ValueError:
        return None
    return net if isinstance(net, ipaddress.IPv4Network) else None


def is_owned(entry: RouteEntry, network: IPv4Network) -> bool:
    """True when ``entry`` is one flannel-alivpc may change (see the module docstring)."""
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


@dataclass(frozen=True)
class RouteStatus:
    destination: IPv4Network
    state: RouteState
    desired_instance: str | None
    actual_instance: str | None
    entry_status: str | None


@dataclass(frozen=True)
class RoutePlan:
    """What to change in one route table, in the order it must be applied.

    ``create`` goes first (new nodes get connectivity soonest), then ``delete``
    (stale entries and entries pointing at the wrong instance). A replaced
    entry's new version is created on the next pass, once the deletion has
    settled, because a table cannot hold the same destination twice.
    """

    table_id: str
    create: tuple[RouteSpec, ...] = ()
    delete: tuple[RouteEntry, ...] = ()
    kept_for_unknown: tuple[RouteEntry, ...] = ()
    """Owned entries with no lease that were kept: snapshot incomplete or lease malformed."""
    statuses: tuple[RouteStatus, ...] = field(default=(), compare=False)

    @property
    def empty(self) -> bool:
        return not self.create and not self.delete


def plan_routes(
    *,
    table_id: str,
    desired: Mapping[IPv4Network, DesiredRoute],
    actual: Iterable[RouteEntry],
    network: IPv4Network,
    in_sync: bool,
    protected: Collection[IPv4Network] = (),
) -> RoutePlan:
    """Diff desired routes against one table's entries (pure)."""
    owned: dict[IPv4Network, RouteEntry] = {}
    occupied: set[IPv4Network] = set()
    for entry in actual:
        destination = _destination(entry)
        if destination is None:
            continue
        occupied.add(destination)
        if is_owned(entry, network):
            owned[destination] = entry
    create: list[RouteSpec] = []
    delete: list[RouteEntry] = []
    kept: list[RouteEntry] = []
    statuses: list[RouteStatus] = []
    for destination, route in sorted(desired.items(), key=lambda item: int(item[0].network_address)):
        current = owned.get(destination)
        if current is None:
            # A destination held by an entry we do not own (e.g. a user's route to a
            # NAT gateway) is reported as missing but never overwritten.
            if destination not in occupied:
                create.append(RouteSpec(destination=str(destination), next_hop_id=route.instance_id,
                                        name=ROUTE_NAME))
            statuses.append(RouteStatus(destination, RouteState.MISSING, route.instance_id, None, None))
        elif current.next_hop_id != route.instance_id:
            if current.status == "Available":
                delete.append(current)
            statuses.append(RouteStatus(destination, RouteState.WRONG_NEXT_HOP, route.instance_id,
                                        current.next_hop_id, current.status))
        else:
            state = RouteState.OK if current.status == "Available" else RouteState.PENDING
            statuses.append(RouteStatus(destination, state, route.instance_id, current.next_hop_id,
                                        current.status))
    for destination, entry in sorted(owned.items(), key=lambda item: int(item[0].network_address)):
        if destination in desired:
            continue
        statuses.append(RouteStatus(destination, RouteState.STALE, None, entry.next_hop_id, entry.status))
        if not in_sync or destination in protected:
            kept.append(entry)
        elif entry.status == "Available":
            delete.append(entry)
    return RoutePlan(table_id=table_id, create=tuple(create), delete=tuple(delete),
                     kept_for_unknown=tuple(kept), statuses=tuple(statuses))
