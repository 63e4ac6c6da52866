"""The route-table quota split: who keeps an entry when a table is full, and what is published."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from flannel_alivpc.core.cloud import RouteEntry
from flannel_alivpc.core.network import Lease, LeaseAttrs
from flannel_alivpc.core.routes import (
    HEALTHY_STATES,
    ProgrammedOverflow,
    RouteState,
    TableOverflow,
    desired_routes,
    node_route_states,
    overflow_ackers,
    plan_routes,
    route_description,
    split_routes,
)

NETWORK = IPv4Network("10.244.0.0/16")
VPC = "vpc-1"
CLUSTER = "c0ffee"


def lease(n: int) -> Lease:
    return Lease(IPv4Network(f"10.244.{n}.0/24"),
                 LeaseAttrs(IPv4Address(f"192.168.0.{n}"), "ali-vpc",
                            {"InstanceId": f"i-{n}", "NetworkType": "vpc", "VpcId": VPC, "VNI": 1,
                             "VtepMAC": f"02:00:00:00:00:{n:02x}"}))


def entry(n: int, *, status: str = "Available", hop: str | None = None, description: str | None = None,
          destination: str | None = None, hop_type: str = "Instance") -> RouteEntry:
    return RouteEntry(table_id="vtb-1", entry_id=f"rte-{n}", destination=destination or f"10.244.{n}.0/24",
                      entry_type="Custom", status=status, next_hop_type=hop_type, next_hop_id=hop or f"i-{n}",
                      description=route_description(CLUSTER) if description is None else description)


def net(n: int) -> IPv4Network:
    return IPv4Network(f"10.244.{n}.0/24")


def desired(*numbers: int):  # type: ignore[no-untyped-def]
    return desired_routes([lease(n) for n in numbers], vpc_id=VPC)


def test_no_quota_known_routes_everyone_in_queue_order() -> None:
    split = split_routes(desired(3, 1, 2), [], quota=None, queue=[net(2)])
    assert split.routed == {net(1), net(2), net(3)}
    assert split.overflow == ()
    # Creates go queued first, then by address: the cloud fills a table in batch order.
    assert split.waiting == (net(2), net(1), net(3))


def test_twelve_leases_on_a_quota_of_eight_with_a_foreign_entry() -> None:
    foreign = entry(99, destination="0.0.0.0/0", hop="ngw-1", hop_type="NatGateway", description="")
    held = [entry(n) for n in range(1, 8)]  # seven of ours already in, plus the NAT route: 8 of 8
    split = split_routes(desired(*range(1, 13)), [foreign, *held], quota=8)
    assert split.routed == {net(n) for n in range(1, 8)}
    assert split.overflow == tuple(net(n) for n in range(8, 13))
    assert split.free == 0


def test_held_entries_keep_their_slot_whatever_joins() -> None:
    held = [entry(n) for n in (5, 6, 7)]
    # A lower-addressed newcomer does not displace anyone: nothing flaps as nodes join.
    split = split_routes(desired(1, 5, 6, 7), held, quota=3)
    assert split.routed == {net(5), net(6), net(7)}
    assert split.overflow == (net(1),)


def test_room_goes_to_the_longest_waiting_first() -> None:
    held = [entry(n) for n in (1, 2)]
    queue = [net(9), net(4), net(7)]
    split = split_routes(desired(1, 2, 4, 7, 9, 3), held, quota=4, queue=queue)
    assert split.routed == {net(1), net(2), net(9), net(4)}
    assert split.overflow == (net(7), net(3))  # the queue, then the newcomer


def test_leases_without_another_path_go_first() -> None:
    split = split_routes(desired(1, 2, 3), [], quota=1, queue=[net(1), net(2)], no_other_path=[net(3)])
    assert split.routed == {net(3)}
    assert split.overflow == (net(1), net(2))


def test_stale_and_deleting_entries() -> None:
    # Our entry for a gone lease still takes a slot until deleted; a Deleting one no longer does.
    stale = entry(50)
    leaving = entry(51, status="Deleting")
    split = split_routes(desired(1, 2), [stale, leaving], quota=2)
    assert split.routed == {net(1)} and split.overflow == (net(2),)


def test_quota_zero_overflows_everyone_and_a_shrunk_quota_keeps_what_is_held() -> None:
    assert split_routes(desired(1, 2), [], quota=0).overflow == (net(1), net(2))
    # Held beyond the quota (it shrank): the cloud keeps those entries, and so do we.
    split = split_routes(desired(1, 2, 3), [entry(1), entry(2)], quota=1)
    assert split.routed == {net(1), net(2)} and split.overflow == (net(3),)


def test_plan_creates_nothing_for_overflow_and_reports_it() -> None:
    wanted = desired(1, 2, 3)
    plan = plan_routes(table_id="vtb-1", desired=wanted, actual=[entry(1)], network=NETWORK, in_sync=True,
                       cluster_id=CLUSTER, overflow=[net(3)])
    assert [s.destination for s in plan.create] == ["10.244.2.0/24"]
    states = {s.destination: s.state for s in plan.statuses}
    assert states[net(3)] is RouteState.OVERFLOW and RouteState.OVERFLOW in HEALTHY_STATES
    # A node in the overflow has a path, so its Node is not "network unavailable", and it says how.
    state = node_route_states(plan.statuses, {})[net(3)]
    assert state.ok and "VXLAN" in state.reason
    assert node_route_states(plan.statuses, {})[net(1)].reason == ""  # routed: nothing to explain
    # An overflow lease that holds an entry (trimmed) keeps it until released, and is reported moving.
    plan = plan_routes(table_id="vtb-1", desired=wanted, actual=[entry(1)], network=NETWORK, in_sync=True,
                       cluster_id=CLUSTER, overflow=[net(1)])
    [moving] = [s for s in plan.statuses if s.destination == net(1)]
    assert not plan.delete and moving.state is RouteState.OVERFLOW and "confirmed" in moving.reason
    plan = plan_routes(table_id="vtb-1", desired=wanted, actual=[entry(1)], network=NETWORK, in_sync=True,
                       cluster_id=CLUSTER, overflow=[net(1)], release=[net(1)])
    assert [e.destination for e in plan.delete] == ["10.244.1.0/24"]
    # Released but still Pending: not deleted yet (the table takes one change at a time).
    plan = plan_routes(table_id="vtb-1", desired=wanted, actual=[entry(1, status="Pending")], network=NETWORK,
                       in_sync=True, cluster_id=CLUSTER, overflow=[net(1)], release=[net(1)])
    assert not plan.delete


def test_a_quota_read_below_what_the_table_holds_trims_ours_highest_address_first() -> None:
    wanted = desired(1, 2, 3, 4, 5)
    held = [entry(n) for n in (1, 2, 3, 4)]
    # Without a read (trim=False) nothing held moves: the refusal-learned quota cannot be below what is held.
    assert split_routes(wanted, held, quota=2).routed == {net(1), net(2), net(3), net(4)}
    split = split_routes(wanted, held, quota=2, trim=True, cluster_id=CLUSTER)
    assert split.trimmed == (net(4), net(3))
    assert split.routed == {net(1), net(2)}
    # Trimmed leases head the queue, then the waiting one; no slot is free while they still hold theirs.
    assert split.overflow == (net(4), net(3), net(5)) and split.free == 0
    # A foreign entry counts against the quota but is never trimmed; neither is a lease with no other path.
    foreign = entry(9, description="hand-made", destination="10.244.9.0/24")
    split = split_routes(wanted, [*held, foreign], quota=3, trim=True, cluster_id=CLUSTER,
                         no_other_path=[net(4)])
    assert split.trimmed == (net(3), net(2)) and net(4) in split.routed
    # Once the trimmed entries are gone the table is within its quota: the split stays, nothing flaps.
    after = split_routes(wanted, [entry(1), entry(2)], quota=2, trim=True, cluster_id=CLUSTER,
                         queue=(net(4), net(3), net(5)))
    assert not after.trimmed and after.routed == {net(1), net(2)} and after.overflow == (net(4), net(3), net(5))


def test_who_must_confirm_before_a_trimmed_entry_goes() -> None:
    classic = Lease(net(20), LeaseAttrs(IPv4Address("192.168.0.20"), "ali-vpc",
                                        {"InstanceId": "i-20", "NetworkType": "classic", "VNI": 1,
                                         "VtepMAC": "02:00:00:00:00:20"}))
    ackers = overflow_ackers([lease(1), lease(2), lease(3), classic], vpc_id=VPC)
    # Our VPC nodes (the writer leaves out the moving one itself); a classic node already reaches everyone
    # over VXLAN.
    assert ackers.required == {net(1), net(2), net(3)} and not ackers.blockers
    old_backend = Lease(net(30), LeaseAttrs(IPv4Address("192.168.0.30")))
    stock = Lease(net(31), LeaseAttrs(IPv4Address("192.168.0.31"), "vxlan",
                                      {"VNI": 1, "VtepMAC": "02:00:00:00:00:31"}))
    ackers = overflow_ackers([lease(1), lease(3), old_backend, stock], vpc_id=VPC)
    assert len(ackers.blockers) == 2
    assert any("old ali-vpc backend" in b for b in ackers.blockers)
    assert any("vxlan backend" in b for b in ackers.blockers)


def test_published_overflow_round_trips_and_bad_values_say_what_is_wrong() -> None:
    published = TableOverflow((net(8), net(3)), 8)
    assert TableOverflow.from_json(published.to_json()) == published
    assert "Moving" not in published.to_json()
    moving = TableOverflow((net(8), net(3)), 8, (net(8),))
    assert TableOverflow.from_json(moving.to_json()) == moving
    with pytest.raises(ValueError, match="not in Overflow"):
        TableOverflow.from_json('{"Overflow":["10.244.1.0/24"],"Moving":["10.244.2.0/24"]}')
    confirmation = ProgrammedOverflow(frozenset({net(3), net(8)}), IPv4Address("192.168.0.1"))
    assert ProgrammedOverflow.from_json(confirmation.to_json()) == confirmation
    for raw, why in [("x", "not JSON"), ('{"PublicIP":"nope","Programmed":[]}', "not an IPv4 address"),
                     ('{"Programmed":"10.244.1.0/24"}', "not a list")]:
        with pytest.raises(ValueError, match=why):
            ProgrammedOverflow.from_json(raw)
    assert TableOverflow.from_json('{"Quota":null,"Overflow":[]}') == TableOverflow()
    for raw, why in [("[", "not JSON"), ("[]", "not a JSON object"), ('{"Overflow":"x"}', "not a list"),
                     ('{"Quota":-1,"Overflow":[]}', "not a whole number"),
                     ('{"Overflow":["10.244.1.0/33"]}', "not an IPv4 subnet")]:
        with pytest.raises(ValueError, match=why):
            TableOverflow.from_json(raw)
