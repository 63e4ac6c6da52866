"""The route daemon with ``--kube-subnet-mgr``: Nodes as leases, Lease-elected writers,
NetworkUnavailable from the real route state.

Real daemon processes, the cloud emulator, and the kube-apiserver stand-in
driven through the official client. The daemons' token carries exactly the
DaemonSet's RBAC; every test ends by checking that nothing was refused (403).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_alivpc.core.kube_subnets import DEFAULT_ANNOTATION_PREFIX as PREFIX
from flannel_alivpc.testbed.cluster import Node
from flannel_alivpc.testbed.kube_cluster import KubeCluster

pytestmark = pytest.mark.slow

CONVERGE = 30.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[KubeCluster]:
    with KubeCluster(tmp_path, route_delay=0.2, writer_lock_ttl=3, resync_interval=5.0) as c:
        yield c
        forbidden = [r for r in c.kube.requests if r.status == 403]
        assert forbidden == [], f"requests outside the DaemonSet's RBAC: {forbidden[:3]}"


def _diagnose(cluster: KubeCluster) -> str:
    logs = "\n".join(f"--- {n.hostname}\n{n.log()[-3000:]}" for n in cluster.nodes)
    return f"table: {cluster.table_entries()}\nexpected: {cluster.expected_routes()}\n{logs}"


def _converge(cluster: KubeCluster) -> None:
    assert cluster.wait_until(cluster.converged, CONVERGE), _diagnose(cluster)


def _condition_is(cluster: KubeCluster, node: Node, status: str, reason: str) -> bool:
    condition = cluster.network_unavailable(node)
    return condition is not None and condition["status"] == status and condition["reason"] == reason


def _writer(cluster: KubeCluster) -> Node:
    for node in cluster.nodes:
        if node.running:
            status, body = node.healthz()
            if status and json.loads(body)["tables"][cluster.route_table_id]["writer"]:
                return node
    raise AssertionError("no writer\n" + _diagnose(cluster))


def test_nodes_publish_flannel_annotations_and_get_routes_and_conditions(cluster: KubeCluster) -> None:
    cluster.start(instances=3)
    cluster.start_all()
    _converge(cluster)
    for node in cluster.nodes:
        annotations = cluster.node_object(node)["metadata"]["annotations"]  # type: ignore[index]
        assert annotations[f"{PREFIX}/kube-subnet-manager"] == "true"
        assert annotations[f"{PREFIX}/backend-type"] == "ali-vpc"
        assert annotations[f"{PREFIX}/public-ip"] == node.private_ip
        data = json.loads(annotations[f"{PREFIX}/backend-data"])
        assert data["InstanceId"] == node.instance_id and data["VNI"] == 1 and data["VtepMAC"]
    # The route table follows the podCIDRs, and every node is told its routes exist.
    pod_cidrs = {cluster.node_object(n)["spec"]["podCIDR"]: n.instance_id for n in cluster.nodes}  # type: ignore[index]
    assert cluster.instance_routes() == pod_cidrs
    for node in cluster.nodes:
        assert cluster.wait_until(lambda n=node: _condition_is(cluster, n, "False", "RouteCreated"), CONVERGE), \
            _diagnose(cluster)
    # subnet.env from the podCIDR.
    env = dict(line.split("=", 1) for line in cluster.nodes[0].subnet_file.read_text().splitlines())
    assert env["FLANNEL_SUBNET"] == cluster.node_object(cluster.nodes[0])["spec"]["podCIDR"].replace(  # type: ignore[index]
        ".0/24", ".1/24")
    # One watch per daemon, no periodic re-listing: node list requests are one per daemon start.
    lists = [r for r in cluster.kube.requests if r.method == "GET" and r.path == "/api/v1/nodes"
             and "watch=true" not in r.query]
    assert len(lists) == len(cluster.nodes)


def test_pod_cidr_assigned_late_and_node_deleted(cluster: KubeCluster) -> None:
    cluster.start(instances=2)
    late = cluster.new_instance("late")
    cluster.add_kube_node(late, pod_cidr=None)
    cluster.start_all()
    assert cluster.wait_until(lambda: "has no podCIDR yet" in late.log(), 15), late.log()
    assert cluster.wait_until(lambda: len(cluster.instance_routes()) == 2, CONVERGE), _diagnose(cluster)
    cidr = cluster.next_pod_cidr()
    cluster.assign_pod_cidr(late, cidr)
    assert cluster.wait_until(lambda: cluster.instance_routes().get(cidr) == late.instance_id, CONVERGE), \
        _diagnose(cluster)
    # The Node is deleted (scale-in): its daemon ends, its route is garbage-collected.
    gone = cluster.nodes[0]
    gone_cidr = cluster.node_object(gone)["spec"]["podCIDR"]  # type: ignore[index]
    cluster.delete_kube_node(gone)
    assert cluster.wait_until(lambda: gone_cidr not in cluster.table_entries(), CONVERGE), _diagnose(cluster)
    assert cluster.wait_until(lambda: not gone.running, 15)
    assert cluster.instance_routes().get(cidr) == late.instance_id


def test_writer_killed_another_takes_over_through_the_lease(cluster: KubeCluster) -> None:
    cluster.start(instances=3)
    cluster.start_all()
    _converge(cluster)
    writer = _writer(cluster)
    lease = cluster.kube.get_object("coordination.k8s.io/v1", "leases", "kube-system",
                                    f"flannel-alivpc-writer-{cluster.route_table_id}")
    assert lease is not None and lease["spec"]["holderIdentity"].startswith(writer.hostname)
    cluster.stop_node(writer, kill=True)
    newcomer = cluster.new_instance("newcomer")
    cluster.add_kube_node(newcomer, pod_cidr=cluster.next_pod_cidr())
    cluster.start_node(newcomer)
    assert cluster.wait_until(lambda: newcomer.instance_id in cluster.instance_routes().values(), CONVERGE), \
        _diagnose(cluster)
    assert _writer(cluster) is not writer  # how fast: benchmarks/writer_failover.py


def test_refused_route_sets_no_route_created_with_one_event(cluster: KubeCluster) -> None:
    """A Node whose entry the cloud refuses (its instance is gone) is NetworkUnavailable, with one Event.

    (A node refused for the quota is reached over VXLAN instead: see tests/e2e/test_quota_overflow.py.)
    """
    cluster.start(instances=2)
    ghost = cluster.new_instance("ghost")
    cluster.add_kube_node(ghost, pod_cidr=cluster.next_pod_cidr(), annotations={
        f"{PREFIX}/kube-subnet-manager": "true", f"{PREFIX}/backend-type": "ali-vpc",
        f"{PREFIX}/public-ip": ghost.private_ip,
        f"{PREFIX}/backend-data": json.dumps({"InstanceId": "i-released", "NetworkType": "vpc",
                                             "VpcId": cluster.vpc_id})})
    cluster.start_node(cluster.nodes[0])
    cluster.start_node(cluster.nodes[1])
    assert cluster.wait_until(lambda: _condition_is(cluster, ghost, "True", "NoRouteCreated"), CONVERGE), \
        _diagnose(cluster)
    assert "InvalidNextHop.NotFound" in cluster.network_unavailable(ghost)["message"]  # type: ignore[index]
    # Several refused retries later, still one Event for this one change of state.
    time.sleep(2 * 5.0)
    events = [e for e in cluster.node_events(ghost) if e["reason"] == "NoRouteCreated"]
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert all(_condition_is(cluster, n, "False", "RouteCreated") for n in cluster.nodes[:2])
    # The instance is back under that id (fixed annotations): the route is made and the condition clears.
    def repoint(obj: dict) -> dict:  # type: ignore[type-arg]
        obj["metadata"]["annotations"][f"{PREFIX}/backend-data"] = json.dumps(
            {"InstanceId": ghost.instance_id, "NetworkType": "vpc", "VpcId": cluster.vpc_id})
        return obj

    cluster.kube.write(cluster.kube.resource("v1", "nodes"), "", ghost.hostname, subresource="", change=repoint)
    assert cluster.wait_until(lambda: _condition_is(cluster, ghost, "False", "RouteCreated"), 45), \
        _diagnose(cluster)


def test_malformed_peer_annotations_skip_that_peer_only(cluster: KubeCluster) -> None:
    cluster.start(instances=2)
    bad = cluster.new_instance("bad-peer")
    cluster.add_kube_node(bad, pod_cidr=cluster.next_pod_cidr(), annotations={
        f"{PREFIX}/kube-subnet-manager": "true", f"{PREFIX}/backend-type": "vxlan",
        f"{PREFIX}/public-ip": "not-an-address", f"{PREFIX}/backend-data": "{broken"})
    cluster.start_node(cluster.nodes[0])
    cluster.start_node(cluster.nodes[1])
    assert cluster.wait_until(lambda: len(cluster.instance_routes()) == 2, CONVERGE), _diagnose(cluster)
    assert cluster.wait_until(lambda: any(e["reason"] == "MalformedFlannelAnnotations"
                                          for e in cluster.node_events(bad)), CONVERGE)
    assert all(n.running for n in cluster.nodes[:2])


def test_api_server_failures_keep_every_route(cluster: KubeCluster) -> None:
    cluster.start(instances=2)
    cluster.start_all()
    _converge(cluster)
    before = cluster.instance_routes()
    cluster.kube.inject_failure("*", r"^/api/v1/nodes", status=503, count=10_000)
    cluster.kube.end_watches()  # the open watches end; every re-watch and re-list now fails
    assert cluster.wait_until(lambda: all(n.healthz("/readyz")[0] == 503 for n in cluster.nodes), 30)
    time.sleep(6.0)  # more than a resync
    assert cluster.instance_routes() == before
    assert all(n.running for n in cluster.nodes)
    cluster.kube.clear_failures()
    assert cluster.wait_until(lambda: all(n.healthz("/readyz")[0] == 200 for n in cluster.nodes), 45)
    assert cluster.instance_routes() == before


def test_bad_kube_input_is_refused_clearly(cluster: KubeCluster) -> None:
    cluster.start(instances=2)
    outside, nameless = cluster.nodes
    cluster.assign_pod_cidr(outside, "10.99.0.0/24")
    cluster.start_node(outside)
    nameless.env["NODE_NAME"] = ""
    cluster.start_node(nameless)
    assert cluster.wait_until(lambda: not outside.running and not nameless.running, 20)
    assert "10.99.0.0/24" in outside.log() and "10.244.0.0/16" in outside.log()
    assert nameless.process is not None and nameless.process.returncode == 1
    assert "NODE_NAME" in nameless.log() and "spec.nodeName" in nameless.log()
    assert "Traceback" not in outside.log() + nameless.log()
    assert cluster.table_entries() == {}


def test_a_node_waiting_for_its_pod_cidr_stops_cleanly(cluster: KubeCluster) -> None:
    """SIGTERM while waiting (a DaemonSet rollout, a drain) ends the wait at once with exit 0."""
    cluster.start(instances=1, assign_pod_cidrs=False)
    node = cluster.nodes[0]
    cluster.start_node(node)
    assert cluster.wait_until(lambda: "has no podCIDR yet" in node.log(), 15), node.log()
    started = time.monotonic()
    assert cluster.stop_node(node) == 0, node.log()
    assert time.monotonic() - started < 5
    assert cluster.table_entries() == {}
