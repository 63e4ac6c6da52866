"""Route-table quota overflow end to end: real daemons in network namespaces, the emulator's quota, TCP.

The nodes a full table cannot hold are reached over VXLAN by everyone (and
reach everyone over VXLAN), the split is stable across joins and writer
restarts, nodes move back to route entries, longest waiting first, when
room appears, and a quota lowered below what the table holds moves the
excess to VXLAN with every node's VXLAN path in place before an entry goes.
Root only: the daemons program real kernels (their own namespaces), which is
the point.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from flannel_alivpc.core.routes import RouteState, TableOverflow
from flannel_alivpc.routed.lease_source import overflow_prefix
from flannel_alivpc.testbed.dataplane import DataplaneCluster, DataplaneNode, http_get
from tests.dataplane.support import all_connected, needs_root, wait

pytestmark = needs_root

CONVERGE = 60.0
HEALTHZ_PORT = 9090


@pytest.fixture
def dataplane(tmp_path: Path) -> Iterator[DataplaneCluster]:
    with DataplaneCluster(tmp_path, route_delay=0.2, writer_lock_ttl=3, resync_interval=4.0) as cluster:
        yield cluster


def set_quota(cluster: DataplaneCluster, quota: int) -> None:
    """Through the emulator's admin API, as an operator's quota request would change it."""
    request = urllib.request.Request(f"{cluster.emulator.endpoint}/_emulator/settings", method="PATCH",
                                     data=json.dumps({"route_quota": quota}).encode(),
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as answer:
        assert answer.status == 200


def published(cluster: DataplaneCluster) -> TableOverflow:
    with cluster.etcd_client() as etcd:
        kv = etcd.get(overflow_prefix(cluster.prefix) + cluster.route_table_id)
    return TableOverflow.from_json(kv.value) if kv is not None else TableOverflow()


def routed(cluster: DataplaneCluster) -> set[IPv4Network]:
    return {IPv4Network(d) for d in cluster.instance_routes()}


def vxlan_routes(cluster: DataplaneCluster, node: DataplaneNode) -> set[IPv4Network]:
    return set(cluster.vxlan_entries(node).routes)


def healthz(node: DataplaneNode, path: str = "/healthz") -> str:
    answer = http_get(node.netns, IPv4Address(node.private_ip), path, port=HEALTHZ_PORT)
    assert answer is not None, f"{node.hostname}: nothing answers on {path}"
    return answer[1]


def is_writer(cluster: DataplaneCluster, node: DataplaneNode) -> bool:
    return bool(json.loads(healthz(node))["tables"][cluster.route_table_id]["writer"])


def start(cluster: DataplaneCluster, nodes: int, quota: int) -> None:
    cluster.start_dataplane(vpc=nodes)
    set_quota(cluster, quota)
    for node in cluster.dp_nodes:
        node.extra_args = ["--healthz-ip", node.private_ip, "--healthz-port", str(HEALTHZ_PORT)]
    cluster.start_all()
    cluster.wait_for_subnets(cluster.dp_nodes, timeout=90)


def split_is(cluster: DataplaneCluster, routed_count: int, overflow_count: int) -> bool:
    overflow = published(cluster).subnets
    return (len(routed(cluster)) == routed_count and len(overflow) == overflow_count
            and not routed(cluster) & set(overflow))


def assert_paths(cluster: DataplaneCluster) -> None:
    """Routed pairs use the table; anything involving an overflow node uses VXLAN, on both sides."""
    overflow = set(published(cluster).subnets)
    for node in cluster.dp_nodes:
        own = cluster.subnet_of(node)
        others = {cluster.subnet_of(n) for n in cluster.dp_nodes if n is not node}
        expected = others if own in overflow else overflow - {own}
        wait(cluster, lambda node=node, expected=expected: vxlan_routes(cluster, node) == expected,  # type: ignore[misc]
             f"{node.hostname}: VXLAN routes should be {sorted(map(str, expected))}")


def test_twelve_nodes_on_a_quota_of_eight_then_the_quota_is_raised(dataplane: DataplaneCluster) -> None:
    start(dataplane, 12, 8)
    wait(dataplane, lambda: split_is(dataplane, 8, 4), "8 routed and 4 overflow", CONVERGE)
    assert published(dataplane).quota == 8
    assert_paths(dataplane)
    all_connected(dataplane)
    # Visible: routes shows each lease's path, the metric counts the overflow, one Warning names the quota.
    [view] = dataplane.views()
    states = {s.destination: s.state for s in view.statuses}
    assert sorted(d for d, s in states.items() if s is RouteState.OVERFLOW) == sorted(published(dataplane).subnets)
    assert view.clean and view.overflow.quota == 8
    writer_logs = [n for n in dataplane.dp_nodes if "quota of 8 custom entries" in n.log()]
    assert len(writer_logs) == 1
    # One Warning per change of the overflow (leases arriving during start-up may change it more than once),
    # none per pass: two more resync passes with a stable split add none.
    warnings = writer_logs[0].log().count("is full")
    assert warnings >= 1
    time.sleep(2 * 4.0)
    assert writer_logs[0].log().count("is full") == warnings
    # Every daemon, writer or not, knows the overflow (from the published set, not from the table).
    for node in dataplane.dp_nodes:
        assert f'flannel_alivpc_overflow_nodes{{table="{dataplane.route_table_id}"}} 4.0' in healthz(node, "/metrics")

    set_quota(dataplane, 20)
    wait(dataplane, lambda: split_is(dataplane, 12, 0), "all 12 routed after the quota was raised", CONVERGE)
    for node in dataplane.dp_nodes:
        wait(dataplane, lambda node=node: not vxlan_routes(dataplane, node),  # type: ignore[misc]
             f"{node.hostname} still has VXLAN routes")
    all_connected(dataplane)


def test_split_survives_a_writer_restart_and_leaving_nodes_free_room_for_the_longest_waiting(
        dataplane: DataplaneCluster) -> None:
    start(dataplane, 10, 7)
    wait(dataplane, lambda: split_is(dataplane, 7, 3), "7 routed and 3 overflow", CONVERGE)
    queue = published(dataplane).subnets
    before = routed(dataplane)
    writer = next(n for n in dataplane.dp_nodes if is_writer(dataplane, n))
    dataplane.restart_node(writer)
    # Another writer takes over (or the same one again): nothing moves.
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        assert routed(dataplane) == before and published(dataplane).subnets == queue
        time.sleep(0.5)
    leaving = next(n for n in dataplane.dp_nodes if dataplane.subnet_of(n) in before and n is not writer)
    dataplane.remove_node(leaving)
    wait(dataplane, lambda: queue[0] in routed(dataplane) and published(dataplane).subnets == queue[1:],
         f"{queue[0]} (longest waiting) should take the freed slot", CONVERGE)
    assert_paths(dataplane)
    all_connected(dataplane)


def test_quota_zero_refusals_for_other_reasons_and_a_lease_removed_mid_move(dataplane: DataplaneCluster) -> None:
    start(dataplane, 3, 0)
    wait(dataplane, lambda: split_is(dataplane, 0, 3), "everything over VXLAN", CONVERGE)
    assert_paths(dataplane)
    all_connected(dataplane)
    assert any("quota of 0 custom entries" in n.log() for n in dataplane.dp_nodes)
    # A lease whose instance the cloud does not know is refused for that reason: reported, not overflow.
    bogus = IPv4Network("10.244.200.0/24")
    with dataplane.etcd_client() as etcd:
        etcd.put(f"{dataplane.prefix}/subnets/10.244.200.0-24", json.dumps({
            "PublicIP": "192.168.9.9", "PublicIPv6": None, "BackendType": "ali-vpc",
            "BackendData": {"InstanceId": "i-notthere", "NetworkType": "vpc", "VpcId": dataplane.vpc_id,
                            "VNI": 1, "VtepMAC": "02:00:00:00:c8:01"}}))
    set_quota(dataplane, 10)
    wait(dataplane, lambda: split_is(dataplane, 3, 0), "all three routed once there is room", CONVERGE)
    assert bogus not in published(dataplane).subnets and bogus not in routed(dataplane)
    assert any("change for 10.244.200.0/24 refused" in n.log() for n in dataplane.dp_nodes)
    all_connected(dataplane)
    # Full again; then a lease in the overflow goes away while it waits: it leaves the overflow, no entry is made.
    set_quota(dataplane, 3)
    newcomer = dataplane.add_vpc_node("late")
    dataplane.start_node(newcomer)
    dataplane.wait_for_subnets([newcomer], timeout=60)
    late = dataplane.subnet_of(newcomer)
    wait(dataplane, lambda: late in published(dataplane).subnets, "the newcomer in the overflow", CONVERGE)
    dataplane.remove_node(newcomer)
    wait(dataplane, lambda: late not in published(dataplane).subnets, "the gone lease left the overflow", CONVERGE)
    assert late not in routed(dataplane)
    assert_paths(dataplane)


def test_a_quota_lowered_below_the_table_moves_the_excess_to_vxlan_before_deleting_entries(
        dataplane: DataplaneCluster) -> None:
    start(dataplane, 6, 10)
    wait(dataplane, lambda: split_is(dataplane, 6, 0), "all 6 routed", CONVERGE)
    subnets = sorted((dataplane.subnet_of(n) for n in dataplane.dp_nodes), key=lambda s: int(s.network_address))
    trimmed = subnets[-2:]  # highest address first
    # One node is slow (its daemon paused): until it has its VXLAN path, the trimmed entries must stay.
    slow = next(n for n in dataplane.dp_nodes
                if dataplane.subnet_of(n) not in trimmed and not is_writer(dataplane, n))
    writer = next(n for n in dataplane.dp_nodes if is_writer(dataplane, n))
    assert slow.process is not None
    os.killpg(slow.process.pid, signal.SIGSTOP)
    try:
        # The quota drops below the 6 entries the table holds, read from the Quota Center at the next pass.
        set_quota(dataplane, 4)
        wait(dataplane, lambda: set(published(dataplane).moving) == set(trimmed), "the excess published as moving",
             CONVERGE)
        waiting = json.loads(healthz(writer))["tables"][dataplane.route_table_id].get("moving_to_vxlan", {})
        wait(dataplane, lambda: json.loads(healthz(writer))["tables"][dataplane.route_table_id]
             .get("moving_to_vxlan", {}).get(str(trimmed[0])) == [str(dataplane.subnet_of(slow))],
             f"the writer waits for {slow.hostname} alone", 20)
        time.sleep(3)  # several confirmation rounds: the entries stay while the slow node has no VXLAN path
        assert set(trimmed) <= routed(dataplane), waiting
    finally:
        os.killpg(slow.process.pid, signal.SIGCONT)
    violations: list[str] = []
    deadline = time.monotonic() + CONVERGE
    while time.monotonic() < deadline:
        present = routed(dataplane)
        for subnet in trimmed:
            if subnet in present:
                continue
            # Its entry is gone: every other node must already reach it over VXLAN.
            for node in dataplane.dp_nodes:
                if dataplane.subnet_of(node) != subnet and subnet not in vxlan_routes(dataplane, node):
                    violations.append(f"{node.hostname} had no path to {subnet} after its entry was deleted")
        if not present & set(trimmed) and not published(dataplane).moving:
            break
        time.sleep(0.02)
    assert not violations, violations[:5]
    assert routed(dataplane) == set(subnets[:4])
    assert set(published(dataplane).subnets) == set(trimmed) and published(dataplane).quota == 4
    assert_paths(dataplane)
    all_connected(dataplane)
    assert "the table is over its quota: moved to VXLAN" in writer.log()
    # Visible in `routes`: the moved leases are overflow, and the table is clean.
    [view] = dataplane.views()
    states = {s.destination: s.state for s in view.statuses}
    assert {d for d, s in states.items() if s is RouteState.OVERFLOW} == set(trimmed) and view.clean
    # Room again: they come back.
    set_quota(dataplane, 10)
    wait(dataplane, lambda: split_is(dataplane, 6, 0), "all 6 routed again", CONVERGE)
    all_connected(dataplane)
