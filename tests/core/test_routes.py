"""The route planner: which entries are ours, what to create, replace and delete."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from flannel_alivpc.core.cloud import RouteEntry
from flannel_alivpc.core.network import Lease, LeaseAttrs
from flannel_alivpc.core.routes import RouteState, desired_routes, is_owned, plan_routes

NETWORK = IPv4Network("10.244.0.0/16")
VPC = "vpc-1"


def lease(subnet: str, instance: str | None, *, network_type: str = "vpc", vpc: str | None = VPC,
          backend: str = "ali-vpc") -> Lease:
    data: dict[str, str] = {}
    if instance:
        data["InstanceId"] = instance
        data["NetworkType"] = network_type
    if vpc:
        data["VpcId"] = vpc
    return Lease(IPv4Network(subnet), LeaseAttrs(IPv4Address("192.168.0.10"), backend, data or None))


def entry(destination: str, hop: str, *, kind: str = "Custom", hop_type: str = "Instance",
          status: str = "Available") -> RouteEntry:
    return RouteEntry(table_id="vtb-1", entry_id=f"rte-{destination}", destination=destination, entry_type=kind,
                      status=status, next_hop_type=hop_type, next_hop_id=hop)


def plan(leases: list[Lease], actual: list[RouteEntry], *, in_sync: bool = True,
         protected: tuple[IPv4Network, ...] = ()):  # type: ignore[no-untyped-def]
    return plan_routes(table_id="vtb-1", desired=desired_routes(leases, vpc_id=VPC), actual=actual,
                       network=NETWORK, in_sync=in_sync, protected=protected)


def test_desired_routes_only_for_vpc_instances_in_this_vpc() -> None:
    routes = desired_routes([
        lease("10.244.1.0/24", "i-1"),
        lease("10.244.2.0/24", "i-2", network_type="classic"),
        lease("10.244.3.0/24", "i-3", vpc="vpc-other"),
        lease("10.244.4.0/24", None, backend="vxlan"),  # a stock flanneld vxlan node
        lease("10.244.5.0/24", "i-5", vpc=None),  # older lease without VpcId
    ], vpc_id=VPC)
    assert {str(d): r.instance_id for d, r in routes.items()} == {"10.244.1.0/24": "i-1", "10.244.5.0/24": "i-5"}


@pytest.mark.parametrize(("candidate", "owned"), [
    (entry("10.244.1.0/24", "i-1"), True),
    (entry("0.0.0.0/0", "i-1"), False),  # the DNAT/default route the old backend also spared
    (entry("172.16.0.0/24", "i-1"), False),  # outside the flannel Network
    (entry("10.244.1.0/24", "ngw-1", hop_type="NatGateway"), False),
    (entry("10.244.1.0/24", "", kind="System", hop_type="local"), False),
    (entry("10.0.0.0/8", "i-1"), False),  # contains the Network, is not inside it
])
def test_ownership(candidate: RouteEntry, owned: bool) -> None:
    assert is_owned(candidate, NETWORK) is owned


def test_missing_entries_are_created_and_ok_ones_left() -> None:
    result = plan([lease("10.244.1.0/24", "i-1"), lease("10.244.2.0/24", "i-2")],
                  [entry("10.244.1.0/24", "i-1")])
    assert [(s.destination, s.next_hop_id) for s in result.create] == [("10.244.2.0/24", "i-2")]
    assert result.delete == ()
    states = {str(s.destination): s.state for s in result.statuses}
    assert states == {"10.244.1.0/24": RouteState.OK, "10.244.2.0/24": RouteState.MISSING}


def test_stale_entry_deleted_only_when_in_sync_and_not_protected() -> None:
    stale = entry("10.244.9.0/24", "i-9")
    assert plan([], [stale]).delete == (stale,)
    # Before the first complete lease snapshot nothing is deleted.
    not_synced = plan([], [stale], in_sync=False)
    assert not_synced.delete == () and not_synced.kept_for_unknown == (stale,)
    # A malformed lease for the subnet means unknown, never "gone".
    protected = plan([], [stale], protected=(IPv4Network("10.244.9.0/24"),))
    assert protected.delete == () and protected.kept_for_unknown == (stale,)


def test_wrong_next_hop_is_deleted_first_and_recreated_later() -> None:
    old = entry("10.244.1.0/24", "i-old")
    result = plan([lease("10.244.1.0/24", "i-new")], [old])
    assert result.delete == (old,)
    assert result.create == ()  # the destination is occupied until the deletion settles
    assert result.statuses[0].state is RouteState.WRONG_NEXT_HOP
    after = plan([lease("10.244.1.0/24", "i-new")], [])
    assert [s.next_hop_id for s in after.create] == ["i-new"]


def test_pending_entries_are_neither_touched_nor_ok() -> None:
    pending = entry("10.244.1.0/24", "i-1", status="Pending")
    deleting = entry("10.244.2.0/24", "i-2", status="Deleting")
    result = plan([lease("10.244.1.0/24", "i-1")], [pending, deleting])
    assert result.empty
    states = {str(s.destination): s.state for s in result.statuses}
    assert states == {"10.244.1.0/24": RouteState.PENDING, "10.244.2.0/24": RouteState.STALE}


def test_destination_held_by_a_foreign_entry_is_reported_not_overwritten() -> None:
    foreign = entry("10.244.1.0/24", "ngw-1", hop_type="NatGateway")
    result = plan([lease("10.244.1.0/24", "i-1")], [foreign])
    assert result.empty
    assert result.statuses[0].state is RouteState.MISSING
