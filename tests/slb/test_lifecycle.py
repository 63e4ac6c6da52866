"""Create, update and delete lifecycles of a Service's SLB, end to end."""

from __future__ import annotations

from tests.slb.conftest import LEGACY, P, SlbBed, wait_for

FINALIZER = "slb.flannel-alivpc.io/cleanup"


def test_create_gives_one_tagged_slb_with_listeners_backends_status_and_finalizer(bed: SlbBed) -> None:
    instances = bed.add_instance_nodes(3)
    created = bed.create_service("web", [(80, "TCP"), (53, "UDP")])
    bed.start_controller()
    wait_for(lambda: bed.converged("web", ports=2, backends=3), what="the SLB")
    lb = bed.lb_for("web")
    assert lb is not None
    uid = created["metadata"]["uid"]
    assert lb.name == ("a" + uid.replace("-", ""))[:32]
    assert lb.tags["ack.aliyun.com"] == "test-cluster"
    assert lb.tags["kubernetes.service"] == "default/web"
    assert lb.address_type == "internet" and lb.internet_charge_type == "paybytraffic" and lb.bandwidth == 50
    node_ports = {p["port"]: p["nodePort"] for p in created["spec"]["ports"]}
    listeners = bed.listeners(lb)
    assert set(listeners) == {(80, "tcp"), (53, "udp")}
    assert listeners[(80, "tcp")].backend_port == node_ports[80]
    assert listeners[(80, "tcp")].attributes["Description"] == "k8s/80/web/default/test-cluster"
    assert listeners[(80, "tcp")].attributes["HealthCheck"] == "on"
    assert listeners[(80, "tcp")].attributes["Scheduler"] == "rr"
    assert sorted(b.server_id for b in lb.backends) == sorted(instances)
    assert all(b.weight == 100 for b in lb.backends)
    svc = bed.service("web")
    assert svc is not None and FINALIZER in svc["metadata"]["finalizers"]
    wait_for(lambda: bed.events("web", "EnsuredLoadBalancer"), what="an EnsuredLoadBalancer event")


def test_updates_are_minimal_and_removing_an_annotation_restores_the_default(bed: SlbBed) -> None:
    bed.add_instance_nodes(2)
    bed.create_service("web", [(80, "TCP"), (443, "TCP")])
    controller = bed.start_controller()
    wait_for(lambda: bed.converged("web", ports=2, backends=2))
    lb_id = bed.lb_for("web").load_balancer_id  # type: ignore[union-attr]
    bed.emulator.faults.reset_counters()

    bed.patch_annotations("web", {LEGACY + "HealthyThreshold": "5", P + "scheduler": "wlc"})
    wait_for(lambda: bed.listeners(bed.lb_for("web"))[(80, "tcp")].attributes["HealthyThreshold"] == 5)  # type: ignore[arg-type]
    wait_for(lambda: bed.listeners(bed.lb_for("web"))[(443, "tcp")].attributes["Scheduler"] == "wlc")  # type: ignore[arg-type]
    counters = bed.emulator.faults.counters()
    writes = {a: sum(c.values()) for a, c in counters.items() if not a.startswith("Describe")}
    # One attribute call per listener, nothing else rewritten.
    assert writes == {"SetLoadBalancerTCPListenerAttribute": 2}, writes

    bed.patch_annotations("web", {LEGACY + "HealthyThreshold": None, P + "scheduler": None})
    wait_for(lambda: bed.listeners(bed.lb_for("web"))[(80, "tcp")].attributes["HealthyThreshold"] == 3)  # type: ignore[arg-type]
    wait_for(lambda: bed.listeners(bed.lb_for("web"))[(80, "tcp")].attributes["Scheduler"] == "rr")  # type: ignore[arg-type]
    assert bed.lb_for("web").load_balancer_id == lb_id  # type: ignore[union-attr]
    assert controller.stats.failures == 0, controller.stats.last_error


def test_port_and_protocol_changes_replace_only_the_affected_listener(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    bed.create_service("web", [(80, "TCP"), (8080, "TCP")])
    bed.start_controller()
    wait_for(lambda: bed.converged("web", ports=2))
    bed.core.patch_namespaced_service("web", "default", {"spec": {"ports": [
        {"name": "p80", "port": 80, "protocol": "TCP", "targetPort": 8080},
        {"name": "p9090", "port": 9090, "protocol": "TCP", "targetPort": 8080}]}},
        _content_type="application/merge-patch+json")
    wait_for(lambda: set(bed.listeners(bed.lb_for("web"))) == {(80, "tcp"), (9090, "tcp")})  # type: ignore[arg-type]
    bed.emulator.faults.reset_counters()
    bed.patch_annotations("web", {LEGACY + "ProtocolPort": "http:80"})
    wait_for(lambda: set(bed.listeners(bed.lb_for("web"))) == {(80, "http"), (9090, "tcp")})  # type: ignore[arg-type]
    wait_for(lambda: bed.converged("web", ports=2))
    counters = bed.emulator.faults.counters()
    assert counters.get("DeleteLoadBalancerListener", {}).get("Success") == 1
    assert counters.get("CreateLoadBalancerHTTPListener", {}).get("Success") == 1
    assert "CreateLoadBalancerTCPListener" not in counters


def test_delete_removes_the_slb_then_the_finalizer(bed: SlbBed) -> None:
    bed.add_instance_nodes(2)
    bed.create_service("web")
    bed.create_service("other")
    bed.start_controller()
    wait_for(lambda: bed.converged("web") and bed.converged("other"))
    other_id = bed.lb_for("other").load_balancer_id  # type: ignore[union-attr]
    bed.core.delete_namespaced_service("web", "default")
    wait_for(lambda: bed.service("web") is None, what="the Service to go")
    assert [lb.load_balancer_id for lb in bed.balancers()] == [other_id]
    wait_for(lambda: bed.events("web", "DeletedLoadBalancer"))


def test_type_change_away_from_load_balancer_cleans_up(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    bed.create_service("web")
    bed.start_controller()
    wait_for(lambda: bed.converged("web"))
    bed.core.patch_namespaced_service("web", "default", {"spec": {"type": "ClusterIP"}})
    wait_for(lambda: not bed.balancers())
    svc = wait_for(lambda: (s := bed.service("web")) and FINALIZER not in (s["metadata"].get("finalizers") or [])
                   and s)
    assert not svc["status"]["loadBalancer"].get("ingress")


def test_services_of_other_types_and_classes_are_ignored(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    bed.create_service("plain", service_type="ClusterIP")
    bed.create_service("nodeport", service_type="NodePort")
    bed.core.create_namespaced_service("default", {
        "metadata": {"name": "nlb"}, "spec": {"type": "LoadBalancer", "loadBalancerClass": "alibabacloud.com/nlb",
                                              "ports": [{"port": 80}]}})
    bed.create_service("web")
    bed.start_controller()
    wait_for(lambda: bed.converged("web"))
    assert len(bed.balancers()) == 1
