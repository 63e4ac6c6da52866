"""A TCP stream between pods of a routed node and an overflow node survives the move to a route entry and back.

The overflow node's VXLAN entries are removed on every node only after its
route entry is Available, and when the quota is lowered again its entry is
deleted only after every node has confirmed its VXLAN path, so the stream
sees no reset and no gap longer than a second while its path changes from
VXLAN to the VPC router and back.
"""

from __future__ import annotations

from ipaddress import IPv4Network

from flannel_alivpc.testbed.dataplane import DataplaneCluster, TcpStream
from tests.dataplane.support import all_connected, needs_root, wait
from tests.e2e.test_quota_overflow import published, routed, set_quota, vxlan_routes

pytestmark = needs_root


def test_tcp_keeps_flowing_while_an_overflow_node_moves_to_a_route_entry_and_back(
        dataplane: DataplaneCluster) -> None:
    dataplane.start_dataplane(vpc=3)
    set_quota(dataplane, 2)
    dataplane.start_all()
    dataplane.wait_for_subnets(dataplane.dp_nodes, timeout=60)
    wait(dataplane, lambda: len(published(dataplane).subnets) == 1 and len(routed(dataplane)) == 2,
         "2 routed and 1 overflow", 60)
    [moving] = published(dataplane).subnets
    overflow_node = next(n for n in dataplane.dp_nodes if dataplane.subnet_of(n) == moving)
    routed_node = next(n for n in dataplane.dp_nodes if n is not overflow_node)
    all_connected(dataplane)
    streams = [TcpStream(routed_node.pods[0], overflow_node.pods[0]),
               TcpStream(overflow_node.pods[0], routed_node.pods[0])]
    try:
        set_quota(dataplane, 5)
        wait(dataplane, lambda: moving in routed(dataplane) and not published(dataplane).subnets,
             f"{moving} moved to a route entry", 60)
        wait(dataplane, lambda: not any(vxlan_routes(dataplane, n) for n in dataplane.dp_nodes),
             "VXLAN routes removed everywhere")
        wait(dataplane, lambda: dataplane.router_routes().get(IPv4Network(moving)) is not None,
             "the router carries the moved node's route")
        # Keep streaming a while on the new path.
        target = streams[0].roundtrips + 50
        wait(dataplane, lambda: streams[0].roundtrips > target, "the stream goes on over the route table")
        # And back: the quota is lowered below what the table holds (a temporary raise expired). The
        # highest address is trimmed, which is the node that was in the overflow before.
        set_quota(dataplane, 2)
        wait(dataplane, lambda: moving not in routed(dataplane) and published(dataplane).subnets == (moving,)
             and not published(dataplane).moving, f"{moving} moved back to VXLAN", 60)
        assert len(routed(dataplane)) == 2
        for node in dataplane.dp_nodes:
            expected = {moving} if node is not overflow_node else {dataplane.subnet_of(n) for n in
                                                                   dataplane.dp_nodes if n is not node}
            wait(dataplane, lambda node=node, expected=expected: vxlan_routes(dataplane, node) == expected,  # type: ignore[misc]
                 f"{node.hostname} reaches {moving}'s side over VXLAN")
        wait(dataplane, lambda: dataplane.router_routes().get(IPv4Network(moving)) is None,
             "the router no longer carries the moved node's route")
        target = streams[0].roundtrips + 50
        wait(dataplane, lambda: streams[0].roundtrips > target, "the stream goes on over VXLAN")
    finally:
        for stream in streams:
            stream.stop()
    for stream in streams:
        assert stream.error is None, stream
        assert stream.longest_gap < 1.0, stream
    all_connected(dataplane)
