"""``Backend.Type: vxlan``: flanneld's vxlan backend, no cloud at all, side by side with stock flanneld nodes.

The stock node is played by the test bed exactly as flanneld sets one up: its
lease in flanneld's JSON, its flannel.1 made by hand, and its entries for the
other nodes programmed the way flanneld's handleSubnetEvents does it (which
ignores every lease whose BackendType is not "vxlan").
"""

from __future__ import annotations

import json
from ipaddress import IPv4Interface, IPv4Network

from flannel_alivpc.clients.netlink import Netlink, Route
from flannel_alivpc.core.vxlan import DIRECT_ROUTE_PROTOCOL
from flannel_alivpc.testbed.dataplane import DataplaneCluster, DataplaneNode, network_config
from tests.dataplane.support import all_connected, expected_vxlan, lease_data, needs_root, vxlan_peers_of, wait

pytestmark = needs_root


def test_ours_and_stock_flanneld_program_each_other_and_follow_vtep_changes(dataplane: DataplaneCluster) -> None:
    # No service answers on the metadata URL: a daemon that tried the metadata service would fail.
    dataplane.serve_cloud = False
    dataplane.start_dataplane(classic=2, config=network_config("vxlan"))
    ours = list(dataplane.dp_nodes)
    dataplane.start_all()
    dataplane.wait_for_subnets(ours)
    stock_subnet = IPv4Network("10.244.200.0/24")
    stock = dataplane.add_stock_vxlan_node("stock", stock_subnet)
    # Our leases are exactly what a stock flanneld writes, so it reads and programs them.
    with dataplane.etcd_client() as etcd:
        kvs, _ = etcd.get_prefix(f"{dataplane.prefix}/subnets/")
    for kv in kvs:
        raw = json.loads(kv.value)
        assert list(raw) == ["PublicIP", "PublicIPv6", "BackendType", "BackendData"]
        assert raw["BackendType"] == "vxlan" and list(raw["BackendData"]) == ["VNI", "VtepMAC"]
    assert dataplane.program_stock_node(stock) == len(ours)
    # ...and ours read the stock node's lease.
    for node in ours:
        peers = [n for n in dataplane.dp_nodes if n is not node]
        wait(dataplane, lambda n=node, p=peers: vxlan_peers_of(dataplane, n) == expected_vxlan(dataplane, n, p),
             f"{node.hostname} did not program its peers")
    all_connected(dataplane)

    # The stock node reboots with a new VtepMAC (flanneld in etcd mode keeps none): ours follow,
    # and the FDB entry of the old MAC does not linger (stock flanneld would leave it).
    old_mac = stock.stock_vtep
    dataplane.change_stock_vtep(stock, stock_subnet, vtep_mac="02:5e:00:00:00:42")
    # The kernel flushes a device's neighbours when its MAC changes; the rebooted flanneld re-adds them.
    dataplane.program_stock_node(stock)
    for node in ours:
        wait(dataplane, lambda n=node: vxlan_peers_of(dataplane, n).get(stock_subnet)
             == ("02:5e:00:00:00:42", {str(stock.address.ip)}) and old_mac not in dataplane.vxlan_entries(n).fdb,
             f"{node.hostname} did not follow the new VtepMAC")
    all_connected(dataplane)

    # The stock node's PublicIP changes: the FDB entry now points at the new address.
    dataplane.change_stock_vtep(stock, stock_subnet, address=IPv4Interface("10.0.0.222/24"))
    for node in ours:
        wait(dataplane, lambda n=node: vxlan_peers_of(dataplane, n).get(stock_subnet)
             == ("02:5e:00:00:00:42", {"10.0.0.222"}), f"{node.hostname} did not follow the new PublicIP")
    all_connected(dataplane)

    # No cloud access at all: the daemons never needed the metadata service or the API.
    for node in ours:
        assert node.running, node.log()
        log = node.log()
        assert "metadata" not in log.lower() and "no cloud access" in log


def test_vni_port_and_learning_come_from_the_network_config(dataplane: DataplaneCluster) -> None:
    dataplane.start_dataplane(classic=2, config=network_config("vxlan", VNI=7, Port=4789, Learning=True))
    dataplane.start_all()
    dataplane.wait_for_subnets(dataplane.dp_nodes)
    all_connected(dataplane)
    leases = lease_data(dataplane)
    for node in dataplane.dp_nodes:
        entries = dataplane.vxlan_entries(node, vni=7)
        assert entries.device is not None and entries.device.name == "flannel.7"
        assert entries.device.vxlan is not None and entries.device.vxlan.port == 4789
        assert entries.device.vxlan.learning  # flannel's "Learning": the kernel learns, static entries stay
        assert leases[dataplane.subnet_of(node)]["BackendData"] == {"VNI": 7, "VtepMAC": entries.device.mac}


def test_bad_vxlan_config_is_refused_clearly_and_nothing_is_taken(dataplane: DataplaneCluster) -> None:
    dataplane.start_dataplane(classic=1, config=network_config("vxlan", DirectRouting="yes"))
    node = dataplane.dp_nodes[0]
    dataplane.start_all()
    wait(dataplane, lambda: not node.running, "the daemon kept running with a config it cannot serve")
    assert node.process is not None and node.process.returncode == 2
    assert 'Backend "DirectRouting" must be true or false' in node.log()
    assert dataplane.lease_key_of(node) is None
    assert dataplane.vxlan_entries(node).device is None


def test_direct_routing_with_a_stock_flanneld_node_on_the_same_subnet(dataplane: DataplaneCluster) -> None:
    dataplane.serve_cloud = False
    # cls1 and the stock node share 10.0.0.0/24 (one L2 segment); vpc1 is on 192.168.0.0/20, behind the router.
    dataplane.start_dataplane(vpc=1, classic=1, config=network_config("vxlan", DirectRouting=True))
    vpc1, cls1 = dataplane.dp_nodes
    dataplane.start_all()
    dataplane.wait_for_subnets([vpc1, cls1])
    stock_subnet = IPv4Network("10.244.200.0/24")
    stock = dataplane.add_stock_vxlan_node("stock", stock_subnet)
    assert dataplane.program_stock_node(stock, direct_routing=True) == 2
    cls1_subnet, vpc1_subnet = dataplane.subnet_of(cls1), dataplane.subnet_of(vpc1)

    def routes(node: DataplaneNode) -> dict[IPv4Network, Route]:
        with Netlink(netns=node.netns) as nl:
            return {r.dst: r for r in nl.routes() if r.dst.subnet_of(IPv4Network("10.244.0.0/16"))}

    def direct_to_stock() -> bool:
        route = routes(cls1).get(stock_subnet)
        return route is not None and route.gateway == stock.address.ip and not route.onlink

    wait(dataplane, direct_to_stock, "cls1 has no direct route to the stock node")
    with Netlink(netns=cls1.netns) as nl:
        eth0 = nl.link("eth0")
        assert eth0 is not None
        direct = routes(cls1)[stock_subnet]
        assert (direct.oif, direct.protocol) == (eth0.index, DIRECT_ROUTE_PROTOCOL)
        # Off the device: no neighbour or FDB entry for the on-link peer, as flanneld does it.
        assert stock.stock_vtep not in dataplane.vxlan_entries(cls1).fdb
        assert stock_subnet.network_address not in dataplane.vxlan_entries(cls1).neighbours
        # The peer behind the router still goes through flannel.1, from both ends.
        wait(dataplane, lambda: vxlan_peers_of(dataplane, cls1).get(vpc1_subnet) is not None,
             "cls1 does not reach vpc1 over VXLAN")
    assert routes(stock)[cls1_subnet].gateway == cls1.address.ip and not routes(stock)[cls1_subnet].onlink
    assert routes(stock)[vpc1_subnet].onlink and routes(vpc1)[stock_subnet].onlink
    assert routes(vpc1)[cls1_subnet].onlink
    all_connected(dataplane)  # TCP both ways between every pair: direct, VXLAN, and stock <-> ours
