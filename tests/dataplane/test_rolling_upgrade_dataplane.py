"""A rolling upgrade from flannel's own ali-vpc backend (v0.8-v0.19), with real packets (issue #12).

The cluster starts as that backend left it: VPC nodes with bare leases and
unmarked route entries made through the ECS API, no VXLAN device, their pods
reaching each other only through the vRouter (the router namespace, whose
kernel follows the route table). Our daemons then replace the old nodes one
at a time. Throughout, TCP streams (one from an upgraded node to a still-old
one, one between two old ones) must keep flowing with no reset and no gap
longer than a second, and the table and the router's kernel are polled: not
one old node's subnet may stop being forwarded to its node, at any moment.
"""

from __future__ import annotations

import threading
import time
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from flannel_alivpc.clients.netlink import Netlink
from flannel_alivpc.core.routes import ROUTE_NAME, entry_cluster
from flannel_alivpc.emulator.state import RouteEntry
from flannel_alivpc.testbed.dataplane import RTPROT_EMULATOR, DataplaneCluster, DataplaneNode, TcpStream
from tests.dataplane.support import all_connected, lease_data, needs_root, wait

pytestmark = needs_root

MAX_GAP = 1.0
"""Seconds a stream may go without a completed round trip."""


class ForwardingWatch:
    """Polls the route table and the router's kernel routes every 10 ms from a thread.

    Records each moment a watched subnet's entry was missing, not Available or
    pointing at another instance, or the router's kernel did not send the
    subnet to the node's address.
    """

    def __init__(self, cluster: DataplaneCluster, expected: dict[IPv4Network, DataplaneNode]) -> None:
        self.cluster = cluster
        self.expected = expected
        self.violations: list[str] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forwarding-watch", daemon=True)

    def _run(self) -> None:
        # Its own socket: the router sync thread uses the cluster's.
        with Netlink(netns=self.cluster.router) as router:
            while not self._stop.wait(0.01):
                entries = self.cluster.table_entries()
                kernel = {r.dst: r.gateway for r in router.routes(protocol=RTPROT_EMULATOR)}
                self.polls += 1
                for subnet, node in self.expected.items():
                    entry = entries.get(str(subnet))
                    if entry is None or entry[1:] != (node.instance_id, "Available"):
                        self.violations.append(f"{time.monotonic():.3f} table {subnet}: {entry}")
                    if kernel.get(subnet) != IPv4Address(node.private_ip):
                        self.violations.append(f"{time.monotonic():.3f} router {subnet}: {kernel.get(subnet)}")

    def __enter__(self) -> ForwardingWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _entry(cluster: DataplaneCluster, subnet: IPv4Network) -> RouteEntry:
    state = cluster.emulator.state
    with state.locked():
        table = state.route_tables[cluster.route_table_id]
        return next(e for e in table.entries.values() if e.destination == str(subnet))


def _lease_instance(cluster: DataplaneCluster, subnet: IPv4Network) -> object:
    """The InstanceId the subnet's lease names (None while it is still the old backend's bare lease)."""
    data = lease_data(cluster)[subnet].get("BackendData")
    return data.get("InstanceId") if isinstance(data, dict) else None


def _links(node: DataplaneNode) -> list[str]:
    with Netlink(netns=node.netns) as nl:
        return sorted(link.name for link in nl.links())


def test_old_alivpc_nodes_replaced_one_at_a_time_keep_every_stream_flowing(dataplane: DataplaneCluster) -> None:
    dataplane.start_dataplane()
    subnets = [IPv4Network(f"10.244.{10 + n}.0/24") for n in range(4)]
    old = [dataplane.add_old_alivpc_node(f"old{n + 1}", subnet) for n, subnet in enumerate(subnets)]
    expected = dict(zip(subnets, old, strict=True))
    wait(dataplane, lambda: dataplane.router_routes() == {s: IPv4Address(n.private_ip) for s, n in expected.items()},
         "the old backend's entries did not become the router's routes")
    # The old cluster works, through the vRouter alone: no node has a VXLAN device.
    all_connected(dataplane)
    assert {tuple(_links(node)) for node in old} == {("cni0", "eth0", "lo", "vp0")}
    assert all(list(value) == ["PublicIP", "PublicIPv6"] for value in lease_data(dataplane).values())

    first, _, third, last = old
    streams = [TcpStream(third.pods[0], last.pods[0])]  # two old nodes, until they are upgraded themselves
    try:
        with ForwardingWatch(dataplane, expected) as watch:
            for subnet, node in expected.items():
                dataplane.start_node(node)
                # Same lease (flannel finds it by PublicIP), now naming the instance; same subnet for the pods.
                wait(dataplane, lambda s=subnet, n=node: _lease_instance(dataplane, s) == n.instance_id,
                     f"{node.hostname} did not take over its lease")
                assert set(lease_data(dataplane)) == set(subnets)
                assert node.subnet_env["FLANNEL_SUBNET"] == f"{subnet.network_address + 1}/24"
                if node is first:
                    streams.append(TcpStream(first.pods[0], last.pods[0]))  # upgraded -> still old
            # Every old entry adopted in place: marked as this cluster's, same next hop.
            wait(dataplane, lambda: all(entry_cluster(_entry(dataplane, s)) is not None for s in subnets),
                 "the old entries were not adopted")
    finally:
        for stream in streams:
            stream.stop()
    assert watch.polls > 100
    assert watch.violations == [], f"{len(watch.violations)} moments without forwarding: {watch.violations[:5]}"
    for stream in streams:
        assert stream.error is None and stream.roundtrips > 100, stream
        assert stream.longest_gap < MAX_GAP, stream
    assert _entry(dataplane, subnets[0]).name == ROUTE_NAME
    # Upgraded, the nodes still reach each other through the table only: no device, no route added.
    for node in old:
        assert node.running, node.log()
        assert _links(node) == ["cni0", "eth0", "lo", "vp0"]
        with Netlink(netns=node.netns) as nl:
            assert {r.dst for r in nl.routes()} == {IPv4Network("0.0.0.0/0"), IPv4Network("192.168.0.0/20"),
                                                    IPv4Interface(node.subnet_env["FLANNEL_SUBNET"]).network}
    all_connected(dataplane)
    # The adopted entries are ours now: a node that leaves has its entry and its router route removed.
    gone = subnets[1]
    dataplane.remove_node(old[1])
    wait(dataplane, lambda: gone not in dataplane.router_routes() and str(gone) not in dataplane.table_entries(),
         f"{gone} still routed after its node left")
    all_connected(dataplane)
