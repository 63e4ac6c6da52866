"""The kube-apiserver stand-in, driven by the official client as the controller drives the real one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch

from flannel_alivpc.testbed.kube_apiserver import KubeApiServer, json_patch, merge_patch, strategic_merge_patch
from tests.slb.conftest import TOKENS


@pytest.fixture
def core(kube_server: KubeApiServer, tmp_path: Path) -> Iterator[client.CoreV1Api]:
    api = config.new_client_from_config(str(kube_server.write_kubeconfig(tmp_path / "k", token="admin-token")))
    yield client.CoreV1Api(api)
    api.close()


def _service(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], **spec}}


def test_service_defaults_and_node_ports(core: client.CoreV1Api) -> None:
    svc = core.create_namespaced_service("default", _service())
    port = svc.spec.ports[0]
    assert (port.protocol, port.target_port) == ("TCP", 80)
    assert 30000 <= port.node_port <= 32767
    assert svc.spec.cluster_ip and svc.spec.external_traffic_policy == "Cluster"
    assert svc.metadata.uid and svc.metadata.resource_version
    with pytest.raises(client.ApiException) as error:
        core.create_namespaced_service("default", _service())
    assert error.value.status == 409 and error.value.reason == "Conflict"


def test_list_and_watch_from_a_resource_version_then_410_after_compaction(
        kube_server: KubeApiServer, core: client.CoreV1Api) -> None:
    core.create_namespaced_service("default", _service("a"))
    listed = core.list_service_for_all_namespaces()
    assert [s.metadata.name for s in listed.items] == ["a"]
    version = listed.metadata.resource_version
    seen: list[tuple[str, str]] = []

    def follow() -> None:
        for event in watch.Watch().stream(core.list_service_for_all_namespaces, resource_version=version,
                                          timeout_seconds=1):
            seen.append((event["type"], event["object"].metadata.name))

    thread = threading.Thread(target=follow)
    thread.start()
    core.create_namespaced_service("default", _service("b"))
    core.patch_namespaced_service("a", "default", {"metadata": {"labels": {"x": "y"}}})
    core.delete_namespaced_service("b", "default")
    thread.join()
    assert seen == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    kube_server.compact()
    with pytest.raises(client.ApiException) as error:
        list(watch.Watch().stream(core.list_service_for_all_namespaces, resource_version=version, timeout_seconds=1))
    assert error.value.status == 410


def test_watch_without_a_version_starts_with_the_current_objects(core: client.CoreV1Api) -> None:
    core.create_namespaced_service("default", _service("a"))
    events = list(watch.Watch().stream(core.list_namespaced_service, namespace="default", timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "a")]


def test_status_subresource_and_optimistic_concurrency(core: client.CoreV1Api) -> None:
    body = {**_service(), "status": {"loadBalancer": {"ingress": [{"ip": "1.1.1.1"}]}}}
    svc = core.create_namespaced_service("default", body)
    assert not svc.status.load_balancer.ingress  # status is not set on create
    core.patch_namespaced_service("web", "default", {"status": {"loadBalancer": {"ingress": [{"ip": "2.2.2.2"}]}}},
                                  _content_type="application/merge-patch+json")
    assert not core.read_namespaced_service("web", "default").status.load_balancer.ingress
    core.patch_namespaced_service_status("web", "default", {"status": {"loadBalancer": {"ingress": [{"ip": "3.3.3.3"}]},
                                                            "spec": {"type": "ClusterIP"}}},
                                         _content_type="application/merge-patch+json")
    now = core.read_namespaced_service("web", "default")
    assert now.status.load_balancer.ingress[0].ip == "3.3.3.3" and now.spec.type == "LoadBalancer"
    with pytest.raises(client.ApiException) as error:
        core.patch_namespaced_service("web", "default", {"metadata": {"resourceVersion": svc.metadata.resource_version,
                                                                      "labels": {"a": "b"}}},
                                      _content_type="application/merge-patch+json")
    assert error.value.status == 409


def test_finalizers_hold_deletion_until_removed(core: client.CoreV1Api, kube_server: KubeApiServer) -> None:
    core.create_namespaced_service("default", _service())
    core.patch_namespaced_service("web", "default", {"metadata": {"finalizers": ["a/x"]}})
    core.patch_namespaced_service("web", "default", {"metadata": {"finalizers": ["b/y"]}})  # strategic: merged
    deleting = core.delete_namespaced_service("web", "default")
    assert deleting.metadata.deletion_timestamp is not None
    assert sorted(deleting.metadata.finalizers) == ["a/x", "b/y"]
    with pytest.raises(client.ApiException) as error:
        core.patch_namespaced_service("web", "default", {"metadata": {"finalizers": ["c/z"]}})
    assert error.value.status == 422
    core.patch_namespaced_service("web", "default", [{"op": "remove", "path": "/metadata/finalizers/0"}])
    assert core.read_namespaced_service("web", "default").metadata.finalizers == ["b/y"]
    core.patch_namespaced_service("web", "default", {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b/y"]}})
    assert kube_server.get_object("v1", "services", "default", "web") is None


def test_events_leases_and_authentication(kube_server: KubeApiServer, core: client.CoreV1Api,
                                          tmp_path: Path) -> None:
    event = core.create_namespaced_event("default", {
        "metadata": {"generateName": "web."}, "involvedObject": {"kind": "Service", "name": "web"},
        "reason": "Test", "message": "hello", "type": "Normal"})
    assert event.metadata.name.startswith("web.")
    coordination = client.CoordinationV1Api(core.api_client)
    lease = coordination.create_namespaced_lease("kube-system", {"metadata": {"name": "l"},
                                                                 "spec": {"holderIdentity": "me"}})
    lease.spec.holder_identity = "you"
    coordination.replace_namespaced_lease("l", "kube-system", lease)
    with pytest.raises(client.ApiException) as error:
        coordination.replace_namespaced_lease("l", "kube-system", lease)  # the old resourceVersion
    assert error.value.status == 409
    anonymous = config.new_client_from_config(str(kube_server.write_kubeconfig(tmp_path / "anon")))
    with pytest.raises(client.ApiException) as error:
        client.CoreV1Api(anonymous).list_node()
    assert error.value.status == 401
    assert {r.user for r in kube_server.requests} >= {"admin"}
    assert set(TOKENS.values()) >= {"admin"}


def test_label_and_field_selectors(core: client.CoreV1Api) -> None:
    for name, labels in (("n1", {"pool": "a"}), ("n2", {"pool": "b"}), ("n3", {})):
        core.create_node({"metadata": {"name": name, "labels": labels}})
    assert [n.metadata.name for n in core.list_node(label_selector="pool=a").items] == ["n1"]
    assert [n.metadata.name for n in core.list_node(label_selector="pool,pool!=a").items] == ["n2"]
    assert [n.metadata.name for n in core.list_node(label_selector="!pool").items] == ["n3"]
    assert [n.metadata.name for n in core.list_node(field_selector="metadata.name=n2").items] == ["n2"]


def test_patch_algorithms() -> None:
    doc = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    assert merge_patch(doc, {"a": {"b": None, "c": [3]}, "e": 1}) == {"a": {"c": [3]}, "d": "x", "e": 1}
    assert json_patch(doc, [{"op": "test", "path": "/d", "value": "x"}, {"op": "add", "path": "/a/c/-", "value": 3},
                            {"op": "move", "from": "/d", "path": "/f"}]) == {"a": {"b": 1, "c": [1, 2, 3]}, "f": "x"}
    with pytest.raises(ValueError):
        json_patch(doc, [{"op": "test", "path": "/d", "value": "y"}])
    ports = {"spec": {"ports": [{"port": 80, "nodePort": 1}, {"port": 81}]}}
    assert strategic_merge_patch(ports, {"spec": {"ports": [{"port": 80, "name": "web"}, {"port": 81,
                                                                                          "$patch": "delete"}]}}) \
        == {"spec": {"ports": [{"port": 80, "nodePort": 1, "name": "web"}]}}
