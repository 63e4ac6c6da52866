"""``externalTrafficPolicy: Local``: only nodes with ready endpoints are backends, weighted by their count."""

from __future__ import annotations

from flannel_alivpc.core.kube import Endpoint, EndpointSlice, Node, ObjectMeta, Service
from flannel_alivpc.slb.annotations import parse_annotations
from flannel_alivpc.slb.desired import ready_endpoints_by_node, select_backends
from tests.slb.conftest import SlbBed, wait_for


def _writes(bed: SlbBed) -> dict[str, int]:
    counters = bed.emulator.faults.counters()
    return {a: sum(c.values()) for a, c in counters.items() if not a.startswith("Describe")}


def test_local_backends_follow_the_ready_endpoints_minimally(bed: SlbBed) -> None:
    one, two, three, four = bed.add_instance_nodes(4)
    bed.create_service("web", traffic_policy="Local")
    # Two slices for one Service (counts add up); unready endpoints and other Services' slices do not count.
    bed.set_endpoints("web", [("node-1", True), ("node-2", True), ("node-2", False), ("node-3", False)])
    bed.set_endpoints("web", [("node-1", True)], slice_name="web-fghij")
    bed.set_endpoints("other", [("node-4", True)])
    controller = bed.start_controller()
    wait_for(lambda: bed.converged("web", backends=2), what="the Local SLB")
    assert bed.weights("web") == {one: 2, two: 1}

    # node-2's endpoint becomes unready: node-2 leaves, nothing else is written.
    bed.emulator.faults.reset_counters()
    bed.set_endpoints("web", [("node-1", True), ("node-2", False), ("node-2", False), ("node-3", False)])
    wait_for(lambda: bed.weights("web") == {one: 2}, what="node-2 removed")
    assert _writes(bed) == {"RemoveBackendServers": 1}

    # One endpoint moves from node-1 to node-3: node-3 is added, node-1 reweighed, nothing removed.
    bed.emulator.faults.reset_counters()
    bed.set_endpoints("web", [("node-3", True)], slice_name="web-fghij")
    wait_for(lambda: bed.weights("web") == {one: 1, three: 1}, what="node-3 added, node-1 reweighed")
    assert _writes(bed) == {"AddBackendServers": 1, "SetBackendServers": 1}

    # Back to Cluster: every eligible node, weight 100.
    bed.set_traffic_policy("web", "Cluster")
    wait_for(lambda: bed.weights("web") == {one: 100, two: 100, three: 100, four: 100}, what="all nodes")
    assert controller.stats.failures == 0, controller.stats.last_error


def test_local_without_ready_endpoints_has_no_backends_and_says_so(bed: SlbBed) -> None:
    bed.add_instance_nodes(2)
    bed.create_service("web", traffic_policy="Local")
    bed.start_controller()
    wait_for(lambda: bed.converged("web", backends=0))
    wait_for(lambda: bed.events("web", "UnAvailableLoadBalancer"), what="the warning")
    bed.set_endpoints("web", [("node-2", True)])
    wait_for(lambda: len(bed.weights("web")) == 1, what="node-2 added")


def _node(name: str, ready: bool = True, labels: dict[str, str] | None = None) -> Node:
    return Node(meta=ObjectMeta(name=name, labels=labels or {}), provider_id=f"r.i-{name}", ready=ready)


def _slice(name: str, service: str | None, *endpoints: tuple[str, bool]) -> EndpointSlice:
    labels = {"kubernetes.io/service-name": service} if service else {}
    return EndpointSlice(meta=ObjectMeta(name=name, namespace="ns", labels=labels),
                         endpoints=tuple(Endpoint(node, ready) for node, ready in endpoints))


def test_weights_are_capped_and_ineligible_nodes_stay_out() -> None:
    options, _ = parse_annotations({})
    assert options is not None
    slices = [_slice("a", "web", *[("big", True)] * 150, ("small", True), ("down", True), ("master", True)),
              _slice("b", "web", ("small", False), ("", True)), _slice("c", None, ("small", True)),
              _slice("d", "other", ("small", True))]
    counts = ready_endpoints_by_node(slices, "ns/web")
    assert counts == {"big": 150, "small": 1, "down": 1, "master": 1}
    nodes = [_node("big"), _node("small"), _node("down", ready=False), _node("idle"),
             _node("master", labels={"node-role.kubernetes.io/master": ""})]
    choice = select_backends(nodes, options, "r", lambda ip: None, counts)
    assert {b.server_id: b.weight for b in choice.backends} == {"i-big": 100, "i-small": 1}
    cluster = select_backends(nodes, options, "r", lambda ip: None)
    assert {b.server_id: b.weight for b in cluster.backends} == {"i-big": 100, "i-small": 100, "i-idle": 100}
    assert Service(meta=ObjectMeta(name="x")).external_traffic_policy == "Cluster"
