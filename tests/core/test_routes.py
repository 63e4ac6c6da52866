"""The route planner: which entries are ours, what to create, replace and delete."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from flannel_alivpc.core.cloud import RouteEntry
from flannel_alivpc.core.network import Lease, LeaseAttrs
from flannel_alivpc.core.routes import (
    ROUTE_NAME,
    RouteState,
    desired_routes,
    entry_cluster,
    is_node_route,
    plan_routes,
    route_description,
)

NETWORK = IPv4Network("10.244.0.0/16")
VPC = "vpc-1"
CLUSTER = "c0ffee"
OURS = route_description(CLUSTER)


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
          status: str = "Available", description: str = OURS) -> RouteEntry:
    return RouteEntry(table_id="vtb-1", entry_id=f"rte-{destination}", destination=destination, entry_type=kind,
                      status=status, next_hop_type=hop_type, next_hop_id=hop, description=description)


def bare_lease(subnet: str, public_ip: str) -> Lease:
    """What flannel's ali-vpc backend (v0.8-v0.19) wrote: {"PublicIP": ..., "PublicIPv6": null}."""
    return Lease(IPv4Network(subnet), LeaseAttrs(IPv4Address(public_ip)))


def plan(leases: list[Lease], actual: list[RouteEntry], *, in_sync: bool = True,
         protected: tuple[IPv4Network, ...] = (),
         legacy: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    resolved = {IPv4Address(ip): inst for ip, inst in (legacy or {}).items()}
    return plan_routes(table_id="vtb-1", desired=desired_routes(leases, vpc_id=VPC, legacy_instances=resolved),
                       actual=actual, network=NETWORK, in_sync=in_sync, cluster_id=CLUSTER, protected=protected)


def states(result) -> dict[str, RouteState]:  # type: ignore[no-untyped-def]
    return {str(s.destination): s.state for s in result.statuses}


def test_desired_routes_only_for_vpc_instances_in_this_vpc() -> None:
    routes = desired_routes([
        lease("10.244.1.0/24", "i-1"),
        lease("10.244.2.0/24", "i-2", network_type="classic"),
        lease("10.244.3.0/24", "i-3", vpc="vpc-other"),
        lease("10.244.4.0/24", None, backend="vxlan"),  # a stock flanneld vxlan node
        lease("10.244.5.0/24", "i-5", vpc=None),  # older lease without VpcId
    ], vpc_id=VPC).routes
    assert {str(d): r.instance_id for d, r in routes.items()} == {"10.244.1.0/24": "i-1", "10.244.5.0/24": "i-5"}


@pytest.mark.parametrize(("candidate", "owned"), [
    (entry("10.244.1.0/24", "i-1"), True),
    (entry("0.0.0.0/0", "i-1"), False),  # the DNAT/default route the old backend also spared
    (entry("172.16.0.0/24", "i-1"), False),  # outside the flannel Network
    (entry("10.244.1.0/24", "ngw-1", hop_type="NatGateway"), False),
    (entry("10.244.1.0/24", "", kind="System", hop_type="local"), False),
    (entry("10.0.0.0/8", "i-1"), False),  # contains the Network, is not inside it
])
def test_node_route_kind(candidate: RouteEntry, owned: bool) -> None:
    assert is_node_route(candidate, NETWORK) is owned


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
    assert result.statuses[0].state is RouteState.CONFLICT
    assert "NatGateway" in result.statuses[0].reason


def test_created_entries_carry_the_cluster_marker() -> None:
    result = plan([lease("10.244.1.0/24", "i-1")], [])
    spec = result.create[0]
    assert spec.name == ROUTE_NAME and spec.description == OURS
    made = entry("10.244.1.0/24", "i-1", description=spec.description)
    assert entry_cluster(made) == CLUSTER


def test_bare_old_backend_lease_is_routed_once_its_instance_is_known() -> None:
    old = bare_lease("10.244.7.0/24", "192.168.0.7")
    unresolved = plan([old], [])
    assert unresolved.create == () and states(unresolved) == {"10.244.7.0/24": RouteState.UNRESOLVED}
    resolved = plan([old], [], legacy={"192.168.0.7": "i-7"})
    assert [(s.destination, s.next_hop_id) for s in resolved.create] == [("10.244.7.0/24", "i-7")]


def test_old_backend_entry_is_adopted_in_place_never_deleted() -> None:
    old_entry = entry("10.244.7.0/24", "i-7", description="")  # what the old backend made: no name, no marker
    result = plan([bare_lease("10.244.7.0/24", "192.168.0.7")], [old_entry], legacy={"192.168.0.7": "i-7"})
    assert result.adopt == (old_entry,) and result.delete == () and result.create == ()
    assert states(result) == {"10.244.7.0/24": RouteState.ADOPTING}
    # The same once the node is upgraded: its lease now names the instance.
    upgraded = plan([lease("10.244.7.0/24", "i-7")], [old_entry])
    assert upgraded.adopt == (old_entry,) and upgraded.delete == ()


def test_unresolved_old_lease_keeps_our_entry_for_its_subnet() -> None:
    ours = entry("10.244.7.0/24", "i-7")
    result = plan([bare_lease("10.244.7.0/24", "192.168.0.7")], [ours])
    assert result.delete == () and result.kept_for_unknown == (ours,)
    assert states(result) == {"10.244.7.0/24": RouteState.UNRESOLVED}


def test_unmarked_entry_without_lease_is_reported_never_deleted() -> None:
    hand_made = entry("10.244.9.0/24", "i-9", description="")
    result = plan([], [hand_made])
    assert result.empty
    assert states(result) == {"10.244.9.0/24": RouteState.UNMANAGED}


def test_another_clusters_entries_are_never_touched() -> None:
    """Two clusters in one VPC, both on the default 10.244.0.0/16."""
    theirs_same_subnet = entry("10.244.1.0/24", "i-b1", description=route_description("other"))
    theirs_other_subnet = entry("10.244.2.0/24", "i-b2", description=route_description("other"))
    result = plan([lease("10.244.1.0/24", "i-a1")], [theirs_same_subnet, theirs_other_subnet])
    assert result.empty  # neither replaced (wrong next hop) nor deleted (stale)
    assert states(result) == {"10.244.1.0/24": RouteState.CONFLICT, "10.244.2.0/24": RouteState.UNMANAGED}
    assert "cluster other" in result.statuses[0].reason


def test_unmarked_entry_to_another_instance_is_a_conflict_not_replaced() -> None:
    leftover = entry("10.244.1.0/24", "i-gone", description="")
    result = plan([lease("10.244.1.0/24", "i-new")], [leftover])
    assert result.empty
    assert states(result) == {"10.244.1.0/24": RouteState.CONFLICT}


def test_no_cluster_id_yet_means_nothing_is_ours() -> None:
    marked = entry("10.244.1.0/24", "i-1")
    result = plan_routes(table_id="vtb-1", desired=desired_routes([], vpc_id=VPC), actual=[marked],
                         network=NETWORK, in_sync=True, cluster_id=None)
    assert result.empty and result.statuses[0].state is RouteState.UNMANAGED
