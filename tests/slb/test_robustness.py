"""Bad input, node churn, reuse, crashes, throttling, faults and two replicas."""

from __future__ import annotations

import logging
import time

import pytest

from tests.slb.conftest import LEGACY, P, SlbBed, wait_for


def test_a_bad_annotation_is_reported_and_the_slb_is_left_as_it_is(bed: SlbBed,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    bed.add_instance_nodes(2)
    bed.create_service("web", [(80, "TCP")], annotations={LEGACY + "HealthyThreshold": "4"})
    bed.create_service("never", annotations={LEGACY + "AddressType": "outer-space"})
    bed.start_controller()
    wait_for(lambda: bed.converged("web", backends=2))
    before = bed.lb_for("web")
    assert before is not None
    snapshot = (dict(before.listeners[0].attributes), [b.server_id for b in before.backends])
    bed.emulator.faults.reset_counters()
    with caplog.at_level(logging.ERROR):
        bed.patch_annotations("web", {LEGACY + "HealthyThreshold": "99", LEGACY + "Bandwidth": "lots"})
        events = wait_for(lambda: len(bed.events("web", "InvalidAnnotation")) >= 2 and
                          bed.events("web", "InvalidAnnotation"))
        # A node change would normally touch the backends: not while the annotations are bad.
        bed.set_node_ready("node-1", False)
        time.sleep(0.5)
    messages = " ".join(e["message"] for e in events)
    assert LEGACY + "HealthyThreshold='99'" in messages and LEGACY + "Bandwidth='lots'" in messages
    assert all(e["type"] == "Warning" for e in events)
    assert LEGACY + "HealthyThreshold='99'" in caplog.text
    after = bed.lb_for("web")
    assert after is not None
    assert (dict(after.listeners[0].attributes), [b.server_id for b in after.backends]) == snapshot
    writes = [a for a in bed.emulator.faults.counters() if not a.startswith("Describe")]
    assert writes == []
    # The Service that never had a valid annotation has no SLB and no finalizer.
    assert bed.lb_for("never") is None
    assert bed.events("never", "InvalidAnnotation")
    svc = bed.service("never")
    assert svc is not None and not svc["metadata"].get("finalizers")
    # Fixing the annotation resumes management.
    bed.patch_annotations("web", {LEGACY + "HealthyThreshold": "5", LEGACY + "Bandwidth": None})
    wait_for(lambda: bed.lb_for("web").listeners[0].attributes["HealthyThreshold"] == 5)  # type: ignore[union-attr]
    wait_for(lambda: len(bed.lb_for("web").backends) == 1)  # type: ignore[union-attr]


def test_node_churn_adds_and_removes_backends(bed: SlbBed) -> None:
    ids = bed.add_instance_nodes(3)
    bed.create_service("web", annotations={P + "remove-unscheduled-backend": "on"})
    bed.create_service("pool", annotations={P + "backend-label": "pool=blue"})
    bed.start_controller()
    wait_for(lambda: bed.converged("web", backends=3))
    wait_for(lambda: bed.events("pool", "UnAvailableLoadBalancer"))

    def backends(name: str) -> set[str]:
        lb = bed.lb_for(name)
        return {b.server_id for b in lb.backends} if lb else set()

    bed.set_node_ready("node-2", False)
    wait_for(lambda: backends("web") == {ids[0], ids[2]})
    bed.set_node_ready("node-2", True)
    bed.core.patch_node("node-3", {"spec": {"unschedulable": True}})
    wait_for(lambda: backends("web") == {ids[0], ids[1]})
    bed.core.patch_node("node-1", {"metadata": {"labels": {"pool": "blue"}}})
    wait_for(lambda: backends("pool") == {ids[0]})
    bed.core.delete_node("node-1")
    wait_for(lambda: backends("web") == {ids[1]} and backends("pool") == set())
    # A node without providerID is found by its private IP.
    fourth = bed.topology.instance_ids[3]
    bed.add_node("node-4", ip=bed.emulator.state.instances[fourth].private_ip, provider_id="")
    wait_for(lambda: backends("web") == {ids[1], fourth})
    # alicloud:// prefixed providerIDs are accepted; masters and excluded nodes are not backends.
    bed.core.patch_node("node-2", {"spec": {"providerID": f"alicloud://cn-hangzhou.{ids[1]}"}})
    bed.core.patch_node("node-4", {"metadata": {"labels": {"node-role.kubernetes.io/master": ""}}})
    wait_for(lambda: backends("web") == {ids[1]})


def test_reuse_keeps_other_listeners_and_is_never_deleted(bed: SlbBed) -> None:
    bed.add_instance_nodes(2)
    slb = bed.slb_client()
    mine = slb.create(name="shared", client_token="t-1", tags={"owner": "ops"}, address_type="internet",
                      charge_type=None, bandwidth=None, spec=None, vswitch_id=None)
    slb.create_listener(mine.load_balancer_id, protocol="tcp", port=22, backend_port=22,
                        attributes={"Description": "ssh"})
    slb.create_listener(mine.load_balancer_id, protocol="tcp", port=80, backend_port=8000,
                        attributes={"Description": "someone's"})
    bed.create_service("plain", annotations={P + "id": mine.load_balancer_id})
    bed.start_controller()

    def ours() -> list[str]:
        lb = next(lb for lb in bed.balancers() if lb.load_balancer_id == mine.load_balancer_id)
        return sorted(b.server_id for b in lb.backends)

    wait_for(lambda: len(ours()) == 2 and bed.ingress("plain") == [mine.address])
    lb = next(lb for lb in bed.balancers() if lb.load_balancer_id == mine.load_balancer_id)
    assert {(x.port, x.attributes["Description"], x.backend_port) for x in lb.listeners} == \
        {(22, "ssh", 22), (80, "someone's", 8000)}  # not touched without force-override
    assert len(bed.balancers()) == 1

    bed.patch_annotations("plain", {P + "force-override-listeners": "true"})
    # The override deletes the foreign listener and creates ours: in between port 80 has none.
    wait_for(lambda: getattr(bed.listeners(bed.balancers()[0]).get((80, "tcp")), "attributes", {})
             .get("Description") == "k8s/80/plain/default/test-cluster")
    lb = bed.balancers()[0]
    assert bed.listeners(lb)[(22, "tcp")].attributes["Description"] == "ssh"

    bed.core.delete_namespaced_service("plain", "default")
    wait_for(lambda: bed.service("plain") is None)
    lb = bed.balancers()[0]
    assert lb.load_balancer_id == mine.load_balancer_id
    assert set(bed.listeners(lb)) == {(22, "tcp")}
    assert lb.backends == []


def test_an_slb_created_for_another_service_is_not_reused(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    bed.create_service("first")
    bed.start_controller()
    wait_for(lambda: bed.converged("first"))
    first = bed.lb_for("first")
    assert first is not None
    bed.create_service("thief", annotations={P + "id": first.load_balancer_id})
    wait_for(lambda: bed.events("thief", "SyncLoadBalancerFailed"))
    assert bed.ingress("thief") == []


def test_a_deleted_slb_is_not_silently_recreated(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    bed.create_service("web")
    bed.start_controller()
    wait_for(lambda: bed.converged("web"))
    lb = bed.lb_for("web")
    assert lb is not None
    bed.slb_client().delete(lb.load_balancer_id)  # "someone deleted it in the console"
    bed.patch_annotations("web", {P + "scheduler": "wrr"})
    wait_for(lambda: bed.events("web", "LoadBalancerMissing"))
    assert bed.balancers() == []


def test_restart_mid_change_leaves_nothing_orphaned_or_duplicated(bed: SlbBed) -> None:
    bed.add_instance_nodes(2)
    bed.emulator.faults.set_rules({"CreateLoadBalancerTCPListener": {"error": {"code": "ServiceUnavailable"}}})
    bed.create_service("web", [(80, "TCP"), (81, "TCP")])
    first = bed.start_controller("a")
    wait_for(lambda: bed.lb_for("web") is not None and first.stats.failures >= 1)
    bed.stop_controller(first)  # "crashes" half way: SLB and backends, no listeners, no status
    assert bed.ingress("web") == []
    bed.emulator.faults.clear()
    bed.start_controller("b", token="token-b")
    wait_for(lambda: bed.converged("web", ports=2, backends=2))
    assert len(bed.balancers()) == 1


def test_a_lost_create_answer_does_not_make_a_second_slb(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    # The cloud creates the SLB but answers after the client gave up: every retry (same client
    # token) and every later pass must end up with that one SLB.
    bed.emulator.faults.set_rules({"CreateLoadBalancer": {"latency": 0.6}})
    bed.create_service("web")
    controller = bed.start_controller(read_timeout=0.2)
    wait_for(lambda: controller.stats.failures >= 1, what="a timed-out create")
    bed.emulator.faults.clear()
    wait_for(lambda: bed.converged("web"))
    assert len(bed.balancers()) == 1


def test_throttling_backs_off_reports_and_converges(bed: SlbBed) -> None:
    bed.add_instance_nodes(2)
    bed.emulator.faults.set_rules({"*": {"throttle": {"rate": 15, "burst": 5}}})
    for n in range(4):
        bed.create_service(f"svc-{n}", [(80, "TCP"), (443, "TCP")])
    controller = bed.start_controller(workers=3, resync_interval=30.0)
    wait_for(lambda: all(bed.converged(f"svc-{n}", ports=2, backends=2) for n in range(4)), timeout=40)
    throttled = sum(c.get("Throttling.User", 0) for c in bed.emulator.faults.counters().values())
    assert throttled > 0
    assert len(bed.balancers()) == 4
    if controller.stats.failures:
        failed = [e for n in range(4) for e in bed.events(f"svc-{n}", "SyncLoadBalancerFailed")]
        assert any("Throttling" in e["message"] for e in failed)


def test_api_faults_become_events_that_say_what_failed_then_recover(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    bed.emulator.faults.set_rules({"AddBackendServers": {"error": {
        "code": "Forbidden.RAM", "status": 403, "message": "User not authorized to operate on the specified "
        "resource."}}})
    bed.create_service("web")
    bed.start_controller()
    event = wait_for(lambda: bed.events("web", "SyncLoadBalancerFailed"))[0]
    assert "AddBackendServers" in event["message"] and "Forbidden.RAM" in event["message"]
    assert event["type"] == "Warning"
    bed.emulator.faults.clear()
    wait_for(lambda: bed.converged("web", backends=1))
    assert len(bed.balancers()) == 1


def test_kube_api_failures_are_retried(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    bed.create_service("web")
    bed.kube.inject_failure("PATCH", r"/services/web/status$", status=500, count=2)
    bed.kube.inject_failure("GET", r"^/api/v1/nodes$", status=503, count=1)
    bed.start_controller()
    wait_for(lambda: bed.converged("web"))
    bed.kube.compact()  # every watch now has to re-list
    bed.core.patch_node("node-1", {"metadata": {"labels": {"after": "compaction"}}})
    bed.create_service("later")
    wait_for(lambda: bed.converged("later"))


def test_two_replicas_only_the_leader_writes_and_the_standby_takes_over(bed: SlbBed) -> None:
    bed.add_instance_nodes(2)
    a = bed.start_controller("a", token="token-a", elect=True)
    wait_for(lambda: a.leading)
    b = bed.start_controller("b", token="token-b", elect=True)
    bed.create_service("web")
    wait_for(lambda: bed.converged("web", backends=2))
    time.sleep(0.5)
    assert not b.leading
    b_writes = [r for r in bed.kube.requests if r.user == "replica-b" and r.method != "GET"]
    assert all("/leases/" in r.path or r.path.endswith("/leases") for r in b_writes), b_writes
    assert not any(r.method == "PATCH" and "/leases" in r.path for r in b_writes)
    cloud_writes_b = {k for k in bed.apis["b"].counter.snapshot() if not k[0].startswith("Describe")}
    assert cloud_writes_b == set()
    assert bed.apis["b"].counter.snapshot() == {}  # the standby does not even read the cloud

    bed.stop_controller(a, release=False)  # dies without handing the lease back
    wait_for(lambda: b.leading, timeout=10)
    bed.create_service("after")
    wait_for(lambda: bed.converged("after", backends=2))
    assert any(not k[0].startswith("Describe") for k in bed.apis["b"].counter.snapshot())
