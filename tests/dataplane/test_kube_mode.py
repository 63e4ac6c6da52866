"""Kube mode in the network-namespace test bed (issue #9): ``--kube-subnet-mgr`` daemons with real packets.

The daemons reach the kube-apiserver stand-in through the router namespace's
relay, with the DaemonSet's RBAC and nothing more (every test ends by checking
that nothing was refused). Our ali-vpc VPC nodes reach each other through the
router mirror of the route table; a stock flanneld vxlan node, its Node
annotated exactly as upstream's kube subnet manager annotates it and its
kernel set up as flanneld sets it up, exchanges TCP with them both ways:
ours reach it over VXLAN from its annotations, it reaches ours through the
vRouter (flanneld ignores Nodes whose backend-type is not vxlan). A quota
lowered below the table moves nodes to VXLAN with the confirmations on the
Nodes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from flannel_alivpc.clients.netlink import Netlink
from flannel_alivpc.core.routes import TableOverflow
from flannel_alivpc.routed.kube_leases import OVERFLOW_ANNOTATION, PROGRAMMED_ANNOTATION, writer_lease_name
from flannel_alivpc.testbed.dataplane import FLANNEL_ANNOTATION, DataplaneNode, KubeDataplaneCluster, tcp_echo
from tests.dataplane.support import all_connected, needs_root, vxlan_peers_of, wait
from tests.e2e.test_quota_overflow import routed, set_quota, vxlan_routes

pytestmark = needs_root


@pytest.fixture
def kube_dataplane(tmp_path: Path) -> Iterator[KubeDataplaneCluster]:
    with KubeDataplaneCluster(tmp_path, route_delay=0.2, writer_lock_ttl=3, resync_interval=10.0) as cluster:
        yield cluster
        forbidden = [r for r in cluster.kube.requests if r.status == 403]
        assert forbidden == [], f"requests outside the DaemonSet's RBAC: {forbidden[:3]}"


def _node(cluster: KubeDataplaneCluster, node: DataplaneNode) -> dict[str, Any]:
    obj = cluster.node_object(node)
    assert obj is not None, f"no Node {node.hostname}"
    return obj


def _pod_cidr(cluster: KubeDataplaneCluster, node: DataplaneNode) -> IPv4Network:
    return IPv4Network(_node(cluster, node)["spec"]["podCIDR"])


def _flannel_annotations(cluster: KubeDataplaneCluster, node: DataplaneNode) -> dict[str, str]:
    annotations: dict[str, str] = _node(cluster, node)["metadata"].get("annotations") or {}
    return {k: v for k, v in annotations.items() if k.startswith(f"{FLANNEL_ANNOTATION}/")}


def _route_created(cluster: KubeDataplaneCluster, node: DataplaneNode) -> bool:
    condition = cluster.network_unavailable(node)
    return condition is not None and (condition["status"], condition["reason"]) == ("False", "RouteCreated")


def test_vpc_nodes_in_kube_mode_reach_each_other_through_the_router_mirror(
        kube_dataplane: KubeDataplaneCluster) -> None:
    kube_dataplane.start_dataplane(vpc=3)
    kube_dataplane.start_all()
    kube_dataplane.wait_for_subnets(kube_dataplane.dp_nodes)
    all_connected(kube_dataplane)
    # Each daemon took its Node's podCIDR and published its lease there, as flanneld does.
    nodes = kube_dataplane.dp_nodes
    for node in nodes:
        pod_cidr = _pod_cidr(kube_dataplane, node)
        assert node.subnet_env["FLANNEL_SUBNET"] == f"{pod_cidr.network_address + 1}/{pod_cidr.prefixlen}"
        annotations = _flannel_annotations(kube_dataplane, node)
        assert annotations[f"{FLANNEL_ANNOTATION}/kube-subnet-manager"] == "true"
        assert annotations[f"{FLANNEL_ANNOTATION}/backend-type"] == "ali-vpc"
        assert annotations[f"{FLANNEL_ANNOTATION}/public-ip"] == str(node.address.ip)
        assert json.loads(annotations[f"{FLANNEL_ANNOTATION}/backend-data"])["InstanceId"] == node.instance_id
        wait(kube_dataplane, lambda n=node: _route_created(kube_dataplane, n),
             f"{node.hostname}: NetworkUnavailable is not False/RouteCreated")
    # The packets went through the router, whose routes are the table's entries for the podCIDRs...
    assert kube_dataplane.router_routes() == {_pod_cidr(kube_dataplane, n): IPv4Address(n.private_ip) for n in nodes}
    # ...and nothing else: no node got a VXLAN device or a route of ours.
    for node in nodes:
        with Netlink(netns=node.netns) as nl:
            assert sorted(link.name for link in nl.links()) == ["cni0", "eth0", "lo", "vp0"]
    # A Node is deleted (scale-in): its entry and the router's route go, the others keep talking.
    leaving = nodes[-1]
    gone = _pod_cidr(kube_dataplane, leaving)
    kube_dataplane.remove_node(leaving)
    wait(kube_dataplane, lambda: gone not in kube_dataplane.router_routes()
         and str(gone) not in kube_dataplane.table_entries(), f"route for {gone} still present after its Node went")
    all_connected(kube_dataplane)


def test_stock_flanneld_vxlan_node_and_ours_exchange_tcp_both_ways(kube_dataplane: KubeDataplaneCluster) -> None:
    kube_dataplane.start_dataplane(vpc=2)
    ours = list(kube_dataplane.dp_nodes)
    kube_dataplane.start_all()
    kube_dataplane.wait_for_subnets(ours)
    stock_subnet = IPv4Network("10.244.200.0/24")
    stock = kube_dataplane.add_stock_vxlan_node("stock", stock_subnet, vpc=True)
    assert stock.stock_vtep is not None
    # Exactly the annotations flanneld's kube subnet manager writes for a vxlan node.
    assert _flannel_annotations(kube_dataplane, stock) == {
        f"{FLANNEL_ANNOTATION}/backend-data": f'{{"VNI":1,"VtepMAC":"{stock.stock_vtep}"}}',
        f"{FLANNEL_ANNOTATION}/backend-type": "vxlan",
        f"{FLANNEL_ANNOTATION}/kube-subnet-manager": "true",
        f"{FLANNEL_ANNOTATION}/public-ip": str(stock.address.ip),
    }
    # flanneld programs only vxlan Nodes: ours (ali-vpc) get no entries on the stock node...
    assert kube_dataplane.program_stock_node(stock) == 0
    assert kube_dataplane.vxlan_entries(stock).empty
    # ...while ours read its annotations and reach it over VXLAN; each other stays through the table.
    for node in ours:
        wait(kube_dataplane, lambda n=node: vxlan_peers_of(kube_dataplane, n)
             == {stock_subnet: (stock.stock_vtep, {str(stock.address.ip)})},
             f"{node.hostname} did not program the stock node from its annotations")
    routed = {_pod_cidr(kube_dataplane, n): IPv4Address(n.private_ip) for n in ours}
    wait(kube_dataplane, lambda: kube_dataplane.router_routes() == routed, "our nodes routed through the table")
    # TCP both ways between the stock node's pod and ours (and between ours), bulk included.
    all_connected(kube_dataplane)
    all_connected(kube_dataplane, size=200_000)

    # The stock node restarts with a new VtepMAC (re-annotated): ours follow, the old MAC's FDB entry goes.
    old_mac = stock.stock_vtep
    kube_dataplane.change_stock_vtep(stock, stock_subnet, vtep_mac="02:5e:00:00:00:42")
    for node in ours:
        wait(kube_dataplane, lambda n=node: vxlan_peers_of(kube_dataplane, n).get(stock_subnet)
             == ("02:5e:00:00:00:42", {str(stock.address.ip)}) and old_mac not in kube_dataplane.vxlan_entries(n).fdb,
             f"{node.hostname} did not follow the stock node's new VtepMAC")
    for pod in kube_dataplane.pods(ours):
        assert tcp_echo(pod.netns, stock.pods[0].ip), f"{pod.name} cannot reach the stock pod after its new VtepMAC"
        assert tcp_echo(stock.pods[0].netns, pod.ip), f"the stock pod cannot reach {pod.name}"


def test_a_node_no_route_table_carries_is_told_once_its_vxlan_is_programmed(
        kube_dataplane: KubeDataplaneCluster) -> None:
    """A classic-network node has no route entry anywhere: its NetworkUnavailable clears once flannel.1 and its
    peers are in its kernel, and its pods reach the VPC node's over VXLAN."""
    kube_dataplane.start_dataplane(vpc=1, classic=1)
    kube_dataplane.start_all()
    kube_dataplane.wait_for_subnets(kube_dataplane.dp_nodes)
    vpc, classic = kube_dataplane.dp_nodes
    wait(kube_dataplane, lambda: _route_created(kube_dataplane, vpc) and _route_created(kube_dataplane, classic),
         "both nodes' NetworkUnavailable=False")
    condition = kube_dataplane.network_unavailable(classic)
    assert condition is not None and "flannel.1" in condition["message"] and "VXLAN" in condition["message"]
    all_connected(kube_dataplane)


def _published_overflow(cluster: KubeDataplaneCluster) -> TableOverflow:
    lease = cluster.kube.get_object("coordination.k8s.io/v1", "leases", "kube-system",
                                    writer_lease_name(cluster.route_table_id))
    raw = ((lease or {}).get("metadata") or {}).get("annotations", {}).get(OVERFLOW_ANNOTATION)
    return TableOverflow.from_json(raw) if raw else TableOverflow()


def test_a_lowered_quota_moves_nodes_to_vxlan_with_confirmations_on_their_nodes(
        kube_dataplane: KubeDataplaneCluster) -> None:
    """Kube mode: the overflow on the writer Lease, each node's VXLAN confirmation on its own Node, within RBAC."""
    kube_dataplane.start_dataplane(vpc=4)
    set_quota(kube_dataplane, 10)
    kube_dataplane.start_all()
    kube_dataplane.wait_for_subnets(kube_dataplane.dp_nodes, timeout=60)
    wait(kube_dataplane, lambda: len(routed(kube_dataplane)) == 4, "all 4 routed", 60)
    subnets = sorted((_pod_cidr(kube_dataplane, n) for n in kube_dataplane.dp_nodes),
                     key=lambda s: int(s.network_address))
    set_quota(kube_dataplane, 2)
    wait(kube_dataplane, lambda: routed(kube_dataplane) == set(subnets[:2])
         and set(_published_overflow(kube_dataplane).subnets) == set(subnets[2:])
         and not _published_overflow(kube_dataplane).moving, "the two highest moved to VXLAN", 60)
    for node in kube_dataplane.dp_nodes:
        own = _pod_cidr(kube_dataplane, node)
        expected = ({s for s in subnets if s != own} if own in subnets[2:] else set(subnets[2:]))
        wait(kube_dataplane, lambda node=node, expected=expected: vxlan_routes(kube_dataplane, node) == expected,  # type: ignore[misc]
             f"{node.hostname}: VXLAN routes to {sorted(map(str, expected))}")
    all_connected(kube_dataplane)
    # A Node carries its confirmation only while something moves.
    wait(kube_dataplane, lambda: not any(PROGRAMMED_ANNOTATION in (_node(kube_dataplane, n)["metadata"]
                                                                   .get("annotations") or {})
                                         for n in kube_dataplane.dp_nodes), "confirmations removed")
    set_quota(kube_dataplane, 10)
    wait(kube_dataplane, lambda: len(routed(kube_dataplane)) == 4 and not _published_overflow(kube_dataplane).subnets,
         "all 4 routed again", 60)
    all_connected(kube_dataplane)
