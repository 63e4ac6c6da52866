"""Pods on different nodes talk over TCP, through the kernels the daemons programmed.

All-VPC (the router namespace forwards by the emulator's route table), all-
classic (VXLAN), mixed (both); nodes leaving, daemons restarting, leftovers
from before a restart, and a pre-existing incompatible device.
"""

from __future__ import annotations

import threading
import time
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from flannel_alivpc.clients.netlink import FdbOp, NeighbourOp, Netlink, RouteOp, VxlanDeviceSpec
from flannel_alivpc.testbed.dataplane import DataplaneCluster, DataplaneNode, TcpSession
from tests.dataplane.support import all_connected, expected_vxlan, lease_data, needs_root, vxlan_peers_of, wait

pytestmark = needs_root


def test_vpc_pods_talk_through_the_route_table_and_node_kernels_stay_untouched(dataplane: DataplaneCluster) -> None:
    dataplane.start_dataplane(vpc=3)
    dataplane.start_all()
    dataplane.wait_for_subnets(dataplane.dp_nodes)
    all_connected(dataplane)
    # The packets went through the router, whose routes are the table's Available entries.
    subnets = {dataplane.subnet_of(n): IPv4Address(n.private_ip) for n in dataplane.dp_nodes}
    assert dataplane.router_routes() == subnets
    # On a VPC-only cluster the daemons changed nothing in the nodes' kernels.
    for node in dataplane.dp_nodes:
        with Netlink(netns=node.netns) as nl:
            assert sorted(link.name for link in nl.links()) == ["cni0", "eth0", "lo", "vp0"]
            assert {str(r.dst) for r in nl.routes()} == {"0.0.0.0/0", "192.168.0.0/20", str(dataplane.subnet_of(node))}
        assert node.subnet_env["FLANNEL_MTU"] == "1500"
    # A node leaves: its route table entry and the router's route go, the others keep talking.
    leaving = dataplane.dp_nodes[-1]
    gone = dataplane.subnet_of(leaving)
    dataplane.remove_node(leaving)
    wait(dataplane, lambda: gone not in dataplane.router_routes() and str(gone) not in dataplane.table_entries(),
         f"route for {gone} still present after its node left")
    all_connected(dataplane)


def _break_node_before_start(node: DataplaneNode) -> str:
    """An incompatible flannel.1 (port 4789, learning on) as an older setup could leave; returns its MAC."""
    with Netlink(netns=node.netns) as nl:
        eth0 = nl.link("eth0")
        assert eth0 is not None
        device = nl.create_vxlan(VxlanDeviceSpec("flannel.1", 1, 4789, None, eth0.index, "02:aa:00:00:00:01",
                                                 1400, learning=True))
        return device.mac


def _leave_leftovers(node: DataplaneNode) -> IPv4Network:
    """Entries for a subnet nobody leases, as a crash or a peer leaving during downtime leaves them."""
    stale = IPv4Network("10.244.250.0/24")
    with Netlink(netns=node.netns) as nl:
        eth0 = nl.link("eth0")
        assert eth0 is not None
        device = nl.create_vxlan(VxlanDeviceSpec("flannel.1", 1, 8472, node.address.ip, eth0.index,
                                                 "02:bb:00:00:00:01", 1300))
        nl.set_link(device.index, up=True)
        nl.add_address(device.index, IPv4Interface("10.244.251.0/32"))  # not this node's subnet
        for op in (NeighbourOp("replace", device.index, stale.network_address, "02:cc:00:00:00:01"),
                   FdbOp("replace", device.index, "02:cc:00:00:00:01", IPv4Address("10.0.0.250")),
                   RouteOp("replace", stale, stale.network_address, device.index, onlink=True)):
            nl.apply_one(op)
    return stale


def test_classic_pods_talk_over_flannel_vxlan(dataplane: DataplaneCluster) -> None:
    dataplane.start_dataplane(classic=3)
    first, second, third = dataplane.dp_nodes
    old_mac = _break_node_before_start(first)
    stale = _leave_leftovers(second)
    dataplane.start_all()
    dataplane.wait_for_subnets(dataplane.dp_nodes)
    all_connected(dataplane)
    leases = lease_data(dataplane)
    for node in dataplane.dp_nodes:
        peers = [other for other in dataplane.dp_nodes if other is not node]
        wait(dataplane, lambda n=node, p=peers: vxlan_peers_of(dataplane, n) == expected_vxlan(dataplane, n, p),
             f"{node.hostname}: VXLAN entries do not match the leases")
        entries = dataplane.vxlan_entries(node)
        device = entries.device
        assert device is not None and device.vxlan is not None
        # flannel's device: VNI 1, port 8472, learning off, MTU iface - 50, the lease's network address /32.
        assert (device.vxlan.vni, device.vxlan.port, device.vxlan.learning, device.mtu) == (1, 8472, False, 1450)
        assert device.vxlan.local == node.address.ip
        subnet = dataplane.subnet_of(node)
        assert entries.addresses == (IPv4Interface(f"{subnet.network_address}/32"),)
        assert node.subnet_env["FLANNEL_MTU"] == "1450"
        # The lease tells peers how to reach the device.
        data = leases[subnet]
        assert data["BackendType"] == "ali-vpc"
        assert data["BackendData"] == {"InstanceId": node.instance_id, "NetworkType": "classic", "VNI": 1,
                                       "VtepMAC": device.mac}
    # The incompatible device was recreated, keeping its MAC; the leftovers are gone.
    recreated = dataplane.vxlan_entries(first).device
    assert recreated is not None and recreated.mac == old_mac and recreated.vxlan is not None
    assert recreated.vxlan.port == 8472 and not recreated.vxlan.learning
    left = dataplane.vxlan_entries(second)
    assert stale not in left.routes and stale.network_address not in left.neighbours
    assert "02:cc:00:00:00:01" not in left.fdb
    # A node leaves: its neighbour, FDB entry and route vanish from every other node.
    gone = dataplane.subnet_of(third)
    gone_mac = str(leases[gone]["BackendData"]["VtepMAC"])  # type: ignore[index]
    dataplane.remove_node(third)

    def forgotten() -> bool:
        for node in (first, second):
            entries = dataplane.vxlan_entries(node)
            if gone in entries.routes or gone.network_address in entries.neighbours or gone_mac in entries.fdb:
                return False
        return True

    wait(dataplane, forgotten, f"entries for {gone} left behind")
    all_connected(dataplane)


def test_mixed_cluster_every_pair_of_nodes_connects(dataplane: DataplaneCluster) -> None:
    dataplane.start_dataplane(vpc=2, classic=2)
    vpc = [n for n in dataplane.dp_nodes if n.network_type == "vpc"]
    classic = [n for n in dataplane.dp_nodes if n.network_type == "classic"]
    dataplane.start_all()
    dataplane.wait_for_subnets(dataplane.dp_nodes)
    all_connected(dataplane)
    # Bulk transfers cross the VPC/VXLAN boundary too (VPC pods have MTU 1500, flannel.1 1450).
    all_connected(dataplane, size=200_000)
    # VPC pairs go through the route table, which holds only VPC nodes' subnets...
    assert dataplane.router_routes() == {dataplane.subnet_of(n): IPv4Address(n.private_ip) for n in vpc}
    # ...every other pair over VXLAN: a VPC node's flannel.1 carries only the classic peers,
    # a classic node's every peer.
    leases = lease_data(dataplane)
    assert dataplane.topology is not None
    for node in vpc:
        assert vxlan_peers_of(dataplane, node) == expected_vxlan(dataplane, node, classic)
        assert node.subnet_env["FLANNEL_MTU"] == "1500"
        device = dataplane.vxlan_entries(node).device
        assert device is not None
        # VPC nodes publish their VTEP too: that is how classic nodes reach them.
        assert leases[dataplane.subnet_of(node)]["BackendData"] == {
            "InstanceId": node.instance_id, "NetworkType": "vpc", "VpcId": dataplane.topology.vpc_id,
            "VNI": 1, "VtepMAC": device.mac}
    for node in classic:
        others = [n for n in dataplane.dp_nodes if n is not node]
        assert vxlan_peers_of(dataplane, node) == expected_vxlan(dataplane, node, others)
    # A VPC node leaves: its table entry, router route and the classic nodes' entries for it go.
    leaving = vpc[1]
    gone = dataplane.subnet_of(leaving)
    dataplane.remove_node(leaving)
    wait(dataplane, lambda: gone not in dataplane.router_routes()
         and all(gone not in vxlan_peers_of(dataplane, n) for n in classic),
         f"{gone} not cleaned up everywhere")
    all_connected(dataplane)


def test_daemon_restart_loses_nothing_and_cleans_what_changed_meanwhile(dataplane: DataplaneCluster) -> None:
    dataplane.start_dataplane(classic=3)
    first, second, third = dataplane.dp_nodes
    dataplane.start_all()
    dataplane.wait_for_subnets(dataplane.dp_nodes)
    all_connected(dataplane)
    before = dataplane.vxlan_entries(first)
    mac_before = lease_data(dataplane)[dataplane.subnet_of(first)]["BackendData"]
    session = TcpSession(third.pods[0].netns, first.pods[0].ip)
    failures: list[float] = []
    stop = threading.Event()

    def keep_talking() -> None:
        while not stop.is_set():
            if not session.roundtrip():
                failures.append(time.monotonic())
            time.sleep(0.02)

    talker = threading.Thread(target=keep_talking, daemon=True)
    talker.start()
    try:
        dataplane.stop_node(first)
        # While the daemon is down, a peer leaves: its entries stay on the first node for now.
        gone = dataplane.subnet_of(second)
        dataplane.remove_node(second)
        time.sleep(0.5)
        assert gone in dataplane.vxlan_entries(first).routes
        dataplane.start_node(first)
        wait(dataplane, lambda: gone not in dataplane.vxlan_entries(first).routes,
             "the restarted daemon did not remove the entries of a lease that went away while it was down")
        time.sleep(0.5)
    finally:
        stop.set()
        talker.join(5)
        session.close()
    assert not failures, f"{len(failures)} round trips failed across the restart"
    after = dataplane.vxlan_entries(first)
    assert after.device == before.device  # same device: same index, MAC, MTU
    assert lease_data(dataplane)[dataplane.subnet_of(first)]["BackendData"] == mac_before
    left = dataplane.vxlan_entries(first)
    assert gone.network_address not in left.neighbours
    all_connected(dataplane)


def test_kernel_state_survives_sigkill_and_a_deleted_device_comes_back(dataplane: DataplaneCluster) -> None:
    """SIGKILL keeps the kernel state and a new daemon adopts it; a deleted flannel.1 is rebuilt at once."""
    dataplane.start_dataplane(classic=2)
    first, second = dataplane.dp_nodes
    dataplane.start_all()
    dataplane.wait_for_subnets(dataplane.dp_nodes)
    all_connected(dataplane)
    dataplane.stop_node(first, kill=True)
    all_connected(dataplane)
    offset = len(first.log())
    dataplane.start_node(first)
    wait(dataplane, lambda: "acquired lease" in first.log()[offset:], "daemon did not restart")
    all_connected(dataplane)
    # The device and the entries were adopted as they were: nothing created, nothing re-added.
    restarted = first.log()[offset:]
    assert "created flannel.1" not in restarted and "added peer" not in restarted
    assert second.running
    # A network restart deletes flannel.1: the daemon recreates it (same MAC) with its entries,
    # well before the next periodic resync.
    before = dataplane.vxlan_entries(first)
    assert before.device is not None
    with Netlink(netns=first.netns) as nl:
        assert nl.delete_link("flannel.1")
    wait(dataplane, lambda: dataplane.vxlan_entries(first).routes == before.routes, "flannel.1 not rebuilt",
         timeout=5.0)
    rebuilt = dataplane.vxlan_entries(first)
    assert rebuilt.device is not None and rebuilt.device.mac == before.device.mac
    assert rebuilt.addresses == before.addresses
    all_connected(dataplane)
