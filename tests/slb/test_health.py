"""/healthz, /readyz and /metrics of a running SLB controller."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from flannel_alivpc.slb.controller import ServiceController
from flannel_alivpc.slb.health import HealthServer
from tests.slb.conftest import SlbBed, wait_for

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, whatever *_proxy says


def get(server: HealthServer, path: str) -> tuple[int, str]:
    try:
        with NO_PROXY.open(f"http://127.0.0.1:{server.port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def health(server: HealthServer) -> tuple[int, dict[str, Any]]:
    status, body = get(server, "/healthz")
    return status, json.loads(body)


@pytest.fixture
def serve(bed: SlbBed) -> Iterator[Any]:
    servers: list[HealthServer] = []

    def start(controller: ServiceController, name: str = "a") -> HealthServer:
        server = HealthServer("127.0.0.1", 0, health=controller.health, ready=controller.ready,
                              metrics=controller.metrics, api_calls=bed.apis[name].counter.snapshot)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_healthz_and_metrics_of_a_leader_and_a_stuck_service(bed: SlbBed, serve: Any) -> None:
    bed.add_instance_nodes(2)
    bed.create_service("web")
    controller = bed.start_controller(stuck_after=3)
    server = serve(controller)
    wait_for(lambda: bed.converged("web", backends=2))
    status, report = health(server)
    assert status == 200 and report["healthy"] is True
    assert report["role"] == "leader" and report["services"] == 1 and report["failing"] == {}
    assert all(report["watches"].values()) and set(report["watches"]) == {"services", "nodes", "endpointslices"}
    assert get(server, "/readyz")[0] == 200
    status, metrics = get(server, "/metrics")
    assert status == 200
    assert 'flannel_alivpc_slb_api_calls_total{action="CreateLoadBalancer",outcome="success"} 1.0' in metrics
    assert "flannel_alivpc_slb_leader 1.0" in metrics
    assert "flannel_alivpc_slb_services 1.0" in metrics
    assert 'flannel_alivpc_slb_passes_total{outcome="success"}' in metrics

    # A Service whose passes keep failing: after stuck_after passes in a row the leader is unhealthy.
    bed.kube.inject_failure("PATCH", r"/services/broken/status", status=500, count=1000)
    bed.create_service("broken")
    wait_for(lambda: health(server)[0] == 503, what="an unhealthy report")
    status, report = health(server)
    assert report["stuck"] == ["default/broken"] and report["failing"]["default/broken"] >= 3
    assert "broken" in report["last_error"]
    assert 'flannel_alivpc_slb_passes_total{outcome="failure"}' in get(server, "/metrics")[1]
    assert "flannel_alivpc_slb_failing_services 1.0" in get(server, "/metrics")[1]
    assert get(server, "/nothing")[0] == 404

    # Fixed: the next pass succeeds and the controller is healthy again.
    bed.kube.clear_failures()
    wait_for(lambda: health(server)[0] == 200, what="healthy again")


def test_a_standby_is_healthy_and_says_so(bed: SlbBed, serve: Any) -> None:
    bed.add_instance_nodes(1)
    first = bed.start_controller("a", token="token-a", elect=True, lease_duration=2.0)
    wait_for(lambda: first.leading, what="a leader")
    second = bed.start_controller("b", token="token-b", elect=True, lease_duration=2.0)
    server = serve(second, "b")
    status, report = health(server)
    assert status == 200 and report["role"] == "standby"
    assert "flannel_alivpc_slb_leader 0.0" in get(server, "/metrics")[1]
