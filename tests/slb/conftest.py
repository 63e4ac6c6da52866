"""The SLB controller's test bed: the kube-apiserver stand-in, the cloud emulator, and the controller.

``SlbBed`` is what a test drives: it creates Nodes (one per emulated instance)
and Services through the official ``kubernetes`` client -- the same client the
controller uses -- starts and stops controllers (each with its own bearer
token and its own cloud client, so their writes can be told apart), and reads
the emulated SLBs straight from the emulator's state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from flannel_alivpc.clients.aliyun_sdk import AliyunApi
from flannel_alivpc.clients.credentials import StaticCredentials
from flannel_alivpc.clients.ecs import EcsClient
from flannel_alivpc.clients.kube import KubeClient
from flannel_alivpc.clients.slb import SlbClient
from flannel_alivpc.core.retry import RetryPolicy
from flannel_alivpc.emulator import slb_api
from flannel_alivpc.emulator.server import Emulator, Topology
from flannel_alivpc.slb.controller import CloudAccess, ControllerSettings, ServiceController
from flannel_alivpc.slb.leader import LeaderElector
from flannel_alivpc.testbed.kube_apiserver import KubeApiServer
from tests.conftest import EMULATOR_AK, EMULATOR_SECRET

REGION = "cn-hangzhou"
P = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-"
LEGACY = "service.beta.kubernetes.io/alicloud-loadbalancer-"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)
TOKENS = {"admin-token": "admin", "token-a": "replica-a", "token-b": "replica-b"}


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll until ``predicate()`` is truthy; returns its value or fails the test."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}; last value {last!r}")


class SlbBed:
    def __init__(self, kube: KubeApiServer, emulator: Emulator, topology: Topology, tmp: Path) -> None:
        self.kube = kube
        self.emulator = emulator
        self.topology = topology
        self.tmp = tmp
        admin = kube.write_kubeconfig(tmp / "admin.kubeconfig", token="admin-token")
        self.api = config.new_client_from_config(str(admin))
        self.core = client.CoreV1Api(self.api)
        self.discovery = client.DiscoveryV1Api(self.api)
        self.controllers: list[ServiceController] = []
        self.apis: dict[str, AliyunApi] = {}

    # -- Kubernetes side ---------------------------------------------------------------------

    def add_node(self, name: str, *, instance_id: str | None = None, ip: str = "", ready: bool = True,
                 labels: dict[str, str] | None = None, provider_id: str | None = None,
                 unschedulable: bool = False) -> None:
        spec: dict[str, Any] = {"unschedulable": unschedulable}
        if provider_id is not None:
            spec["providerID"] = provider_id
        elif instance_id:
            spec["providerID"] = f"{REGION}.{instance_id}"
        status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                  "addresses": [{"type": "InternalIP", "address": ip}] if ip else []}
        self.core.create_node({"metadata": {"name": name, "labels": labels or {}}, "spec": spec, "status": status})

    def add_instance_nodes(self, count: int | None = None) -> list[str]:
        """A Ready node for each emulated instance (by providerID); returns the instance ids."""
        ids = self.topology.instance_ids[:count]
        for n, instance_id in enumerate(ids):
            inst = self.emulator.state.instances[instance_id]
            self.add_node(f"node-{n + 1}", instance_id=instance_id, ip=inst.private_ip)
        return list(ids)

    def set_node_ready(self, name: str, ready: bool) -> None:
        self.core.patch_node_status(name, {"status": {"conditions": [
            {"type": "Ready", "status": "True" if ready else "False"}]}})

    def create_service(self, name: str, ports: list[tuple[int, str]] | None = None, *,
                       annotations: dict[str, str] | None = None, namespace: str = "default",
                       service_type: str = "LoadBalancer", traffic_policy: str | None = None) -> dict[str, Any]:
        body = {"metadata": {"name": name, "annotations": annotations or {}},
                "spec": {"type": service_type, "selector": {"app": name},
                         **({"externalTrafficPolicy": traffic_policy} if traffic_policy else {}),
                         "ports": [{"name": f"p{port}", "port": port, "protocol": proto, "targetPort": 8080}
                                   for port, proto in (ports or [(80, "TCP")])]}}
        created: dict[str, Any] = self.api.sanitize_for_serialization(
            self.core.create_namespaced_service(namespace, body))
        return created

    def patch_annotations(self, name: str, annotations: dict[str, str | None], namespace: str = "default") -> None:
        self.core.patch_namespaced_service(name, namespace, {"metadata": {"annotations": annotations}},
                                           _content_type="application/merge-patch+json")

    def set_traffic_policy(self, name: str, policy: str, namespace: str = "default") -> None:
        self.core.patch_namespaced_service(name, namespace, {"spec": {"externalTrafficPolicy": policy}},
                                           _content_type="application/merge-patch+json")

    def set_endpoints(self, service: str, endpoints: list[tuple[str, bool]], *, slice_name: str | None = None,
                      namespace: str = "default") -> None:
        """Create or replace an EndpointSlice of ``service`` with these (node name, ready) endpoints."""
        name = slice_name or f"{service}-abcde"
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": {"name": name, "namespace": namespace,
                             "labels": {"kubernetes.io/service-name": service}},
                "ports": [{"name": "p80", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [f"10.244.{n // 250}.{n % 250 + 1}"], "nodeName": node,
                               "conditions": {"ready": ready}} for n, (node, ready) in enumerate(endpoints)]}
        existing = self.kube.get_object("discovery.k8s.io/v1", "endpointslices", namespace, name)
        if existing is None:
            self.discovery.create_namespaced_endpoint_slice(namespace, body)
        else:
            self.discovery.replace_namespaced_endpoint_slice(name, namespace, body)

    def weights(self, name: str) -> dict[str, int]:
        """Backend instance -> weight of the Service's SLB."""
        lb = self.lb_for(name)
        return {b.server_id: b.weight for b in lb.backends} if lb is not None else {}

    def service(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return self.kube.get_object("v1", "services", namespace, name)

    def ingress(self, name: str) -> list[str]:
        svc = self.service(name) or {}
        return [i.get("ip") for i in svc.get("status", {}).get("loadBalancer", {}).get("ingress") or []]

    def events(self, name: str | None = None, reason: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.kube.objects("v1", "events")
                if (name is None or e["involvedObject"]["name"] == name)
                and (reason is None or e["reason"] == reason)]

    # -- cloud side -----------------------------------------------------------------------------

    def balancers(self) -> list[slb_api.LoadBalancer]:
        with self.emulator.state.lock:
            return list(slb_api.balancers(self.emulator.state).values())

    def lb_for(self, name: str, namespace: str = "default") -> slb_api.LoadBalancer | None:
        svc = self.service(name, namespace)
        if svc is None:
            return None
        wanted = ("a" + svc["metadata"]["uid"].replace("-", ""))[:32]
        found = [lb for lb in self.balancers() if lb.tags.get("kubernetes.do.not.delete") == wanted]
        assert len(found) <= 1, f"duplicate SLBs for {name}: {[lb.load_balancer_id for lb in found]}"
        return found[0] if found else None

    @staticmethod
    def listeners(lb: slb_api.LoadBalancer) -> dict[tuple[int, str], slb_api.Listener]:
        return {(item.port, item.protocol): item for item in lb.listeners}

    def slb_client(self) -> SlbClient:
        api = AliyunApi(REGION, self.emulator.endpoint, StaticCredentials(EMULATOR_AK, EMULATOR_SECRET),
                        retry=FAST_RETRY)
        return SlbClient(api, REGION)

    def converged(self, name: str, *, ports: int = 1, backends: int | None = None) -> bool:
        """The Service's SLB exists with its listeners running, backends attached and the address shown."""
        lb = self.lb_for(name)
        if lb is None or len(lb.listeners) != ports or any(item.status != "running" for item in lb.listeners):
            return False
        if backends is not None and len(lb.backends) != backends:
            return False
        return self.ingress(name) == [lb.address]

    # -- controllers -----------------------------------------------------------------------------

    def start_controller(self, name: str = "a", *, token: str = "token-a", elect: bool = False,
                         lease_duration: float = 2.0, read_timeout: float = 10.0,
                         **overrides: Any) -> ServiceController:
        kubeconfig = self.kube.write_kubeconfig(self.tmp / f"{name}.kubeconfig", token=token)
        kube = KubeClient.connect(str(kubeconfig))
        api = AliyunApi(REGION, self.emulator.endpoint, StaticCredentials(EMULATOR_AK, EMULATOR_SECRET),
                        retry=FAST_RETRY, read_timeout=read_timeout, connect_timeout=2)
        self.apis[name] = api
        settings = ControllerSettings(**{
            "region": REGION, "cluster_id": "test-cluster", "workers": 2, "resync_interval": 3.0,
            "backoff_base": 0.1, "backoff_max": 1.0, "watch_timeout": 5, "service_coalesce": 0.02,
            "node_coalesce": 0.05, "vswitch_id": self.topology.vswitch_id, **overrides})
        cloud = CloudAccess(lambda region: SlbClient(api, region), ecs=EcsClient(api))
        elector = None
        if elect:
            elector = LeaderElector(kube, namespace="kube-system", name="slb-test", identity=f"replica-{name}",
                                    lease_duration=lease_duration, renew_deadline=lease_duration * 0.7,
                                    retry_period=lease_duration / 8)
        controller = ServiceController(kube, cloud, settings, elector=elector)
        controller.start(sync_timeout=10)
        self.controllers.append(controller)
        return controller

    def stop_controller(self, controller: ServiceController, *, release: bool = True) -> None:
        controller.stop(release=release)
        controller.kube.close()
        if controller in self.controllers:
            self.controllers.remove(controller)

    def close(self) -> None:
        for controller in list(self.controllers):
            self.stop_controller(controller)
        self.api.close()


@pytest.fixture
def kube_server() -> Iterator[KubeApiServer]:
    server = KubeApiServer(tokens=TOKENS).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bed(kube_server: KubeApiServer, emulator: Emulator, tmp_path: Path) -> Iterator[SlbBed]:
    topology = emulator.bootstrap(instances=4)
    harness = SlbBed(kube_server, emulator, topology, tmp_path)
    try:
        yield harness
    finally:
        harness.close()
