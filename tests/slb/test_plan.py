"""The planner and the desired-state builder, pure: no servers."""

from __future__ import annotations

from flannel_alivpc.core.kube import Node, ObjectMeta, Service, ServicePort, Taint
from flannel_alivpc.core.loadbalancer import BackendServer, ListenerInfo, LoadBalancerInfo, LoadBalancerState
from flannel_alivpc.slb.annotations import PREFIX, Options, parse_annotations
from flannel_alivpc.slb.desired import desired_spec, eligible, instance_from_provider_id, select_backends
from flannel_alivpc.slb.model import LoadBalancerSpec
from flannel_alivpc.slb.plan import plan_changes

SERVICE = Service(meta=ObjectMeta(name="web", namespace="default", uid="1234-5678"), type="LoadBalancer",
                  ports=(ServicePort(80, "TCP", 30080), ServicePort(53, "UDP", 30053)))


def _spec(annotations: dict[str, str] | None = None, backends: tuple[str, ...] = ("i-1", "i-2"),
          service: Service = SERVICE) -> LoadBalancerSpec:
    options, problems = parse_annotations(annotations or {})
    assert options is not None, problems
    spec, problems = desired_spec(service, options, backends=backends, cluster_id="c1", region="cn-hangzhou")
    assert spec is not None, problems
    return spec


def _observed(spec: LoadBalancerSpec, **info: str) -> LoadBalancerState:
    """What the cloud holds after the spec was applied exactly."""
    listeners = tuple(ListenerInfo(x.port, x.protocol, x.backend_port, "running", dict(x.attributes))
                      for x in spec.listeners)
    backends = tuple(BackendServer(b.server_id, b.weight, spec.backend_description) for b in spec.backends)
    fields = {"address_type": "internet", "internet_charge_type": "paybytraffic", "bandwidth": "5120", **info}
    lb = LoadBalancerInfo(load_balancer_id="lb-1", address_type=fields["address_type"],
                          internet_charge_type=fields["internet_charge_type"], bandwidth=int(fields["bandwidth"]))
    return LoadBalancerState(lb, listeners, backends)


def test_nothing_to_do_when_the_cloud_matches() -> None:
    spec = _spec()
    plan = plan_changes(spec, _observed(spec))
    assert plan.empty, plan.summary()


def test_a_new_slb_gets_everything_in_one_plan() -> None:
    spec = _spec()
    plan = plan_changes(spec, None)
    assert plan.create and [b.server_id for b in plan.add_backends] == ["i-1", "i-2"]
    assert [x.key for x in plan.create_listeners] == [(53, "udp"), (80, "tcp")]
    assert plan.start_listeners == ((53, "udp"), (80, "tcp"))


def test_an_attribute_change_updates_only_that_listener() -> None:
    before = _spec()
    after = _spec({PREFIX + "persistence-timeout": "60"}, service=Service(
        meta=SERVICE.meta, type="LoadBalancer", ports=(ServicePort(80, "TCP", 30080),)))
    plan = plan_changes(after, _observed(before))
    assert [x.key for x in plan.update_listeners] == [(80, "tcp")]
    assert plan.delete_listeners == ((53, "udp"),)  # ours, no longer wanted
    assert not plan.create_listeners and not plan.add_backends


def test_nodeport_change_recreates_and_foreign_listeners_stay() -> None:
    spec = _spec()
    observed = _observed(spec)
    moved = ListenerInfo(80, "tcp", 31111, "running", dict(spec.listeners[1].attributes))
    foreign = ListenerInfo(22, "tcp", 22, "running", {"Description": "ssh"})
    stopped = ListenerInfo(53, "udp", 30053, "stopped", dict(spec.listeners[0].attributes))
    state = LoadBalancerState(observed.info, (moved, foreign, stopped), observed.backends)
    plan = plan_changes(spec, state)
    assert plan.delete_listeners == ((80, "tcp"),)
    assert [x.key for x in plan.create_listeners] == [(80, "tcp")]
    assert set(plan.start_listeners) == {(80, "tcp"), (53, "udp")}


def test_backends_added_before_removed_and_reused_slbs_keep_foreign_servers() -> None:
    spec = _spec(backends=("i-2", "i-3"))
    observed = _observed(_spec(backends=("i-1", "i-2")))
    plan = plan_changes(spec, observed)
    assert [b.server_id for b in plan.add_backends] == ["i-3"] and plan.remove_backends == ("i-1",)
    reused = _spec({PREFIX + "id": "lb-1"}, backends=("i-2",))
    foreign = LoadBalancerState(observed.info, (), (BackendServer("i-9", 100, "someone"),
                                                    BackendServer("i-1", 100, reused.backend_description)))
    plan = plan_changes(reused, foreign)
    assert plan.remove_backends == ("i-1",) and not plan.create_listeners and not plan.delete_listeners


def test_immutable_changes_are_refused_and_spec_changes_planned() -> None:
    spec = _spec({PREFIX + "address-type": "intranet", PREFIX + "slb-network-type": "classic"})
    plan = plan_changes(spec, _observed(spec, address_type="internet"))
    assert plan.refusals and plan.empty
    spec = _spec({PREFIX + "charge-type": "paybybandwidth", PREFIX + "bandwidth": "20",
                  PREFIX + "spec": "slb.s2.small"})
    plan = plan_changes(spec, _observed(spec))
    assert plan.internet_spec == ("paybybandwidth", 20) and plan.instance_spec == "slb.s2.small"
    assert plan_changes(_spec({PREFIX + "id": "lb-x"}), None).refusals


def _node(name: str, **kw: object) -> Node:
    labels = kw.pop("labels", {})
    return Node(meta=ObjectMeta(name=name, labels=labels), **kw)  # type: ignore[arg-type]


def test_eligible_nodes_and_provider_ids() -> None:
    options = Options()
    assert eligible(_node("a", ready=True), options)
    assert not eligible(_node("a", ready=False), options)
    assert not eligible(_node("a"), options)  # no Ready condition
    assert not eligible(_node("a", ready=True, labels={"node-role.kubernetes.io/master": ""}), options)
    assert not eligible(_node("a", ready=True, taints=(Taint("ToBeDeletedByClusterAutoscaler"),)), options)
    assert eligible(_node("a", ready=True, unschedulable=True), options)
    assert instance_from_provider_id("cn-hangzhou.i-abc", "cn-hangzhou") == "i-abc"
    assert instance_from_provider_id("alicloud://cn-hangzhou.i-abc", "cn-hangzhou") == "i-abc"
    assert instance_from_provider_id("cn-beijing.i-abc", "cn-hangzhou") is None
    assert instance_from_provider_id("aws:///us-east-1a/i-abc", "cn-hangzhou") is None
    nodes = [_node("a", ready=True, provider_id="cn-hangzhou.i-a"), _node("b", ready=True, internal_ips=("10.0.0.2",)),
             _node("c", ready=True, internal_ips=("10.0.0.3",))]
    choice = select_backends(nodes, options, "cn-hangzhou", {"10.0.0.2": "i-b"}.get)
    assert choice.instance_ids == ("i-a", "i-b") and choice.unresolved == ("c",)


def test_https_without_a_certificate_is_a_problem() -> None:
    options, _ = parse_annotations({PREFIX + "protocol-port": "https:80"})
    assert options is not None
    spec, problems = desired_spec(SERVICE, options, backends=(), cluster_id="c", region="r")
    assert spec is None and problems[0].annotation == PREFIX + "cert-id"
