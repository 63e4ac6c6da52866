"""The Kubernetes lease source's parts that need no daemon: annotation names and values as upstream
writes them, Nodes as leases, and the cluster id made once even when daemons race for it.

Against the in-repo kube-apiserver stand-in through the official client.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_alivpc.clients.kube import KubeClient
from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.core.kube import parse_node
from flannel_alivpc.core.kube_subnets import FlannelAnnotations, lease_annotations, node_lease
from flannel_alivpc.core.network import LeaseAttrs
from flannel_alivpc.routed.config import DaemonConfig
from flannel_alivpc.routed.kube_leases import PROGRAMMED_ANNOTATION, KubeLeaseSource
from flannel_alivpc.testbed.kube_apiserver import KubeApiServer
from flannel_alivpc.testbed.kube_cluster import SERVICE_ACCOUNT, daemon_permissions
from tests.routed.support import wait_for

NAMES = FlannelAnnotations.for_prefix("flannel.alpha.coreos.com")


@pytest.mark.parametrize(("prefix", "backend_type"), [
    ("flannel.alpha.coreos.com", "flannel.alpha.coreos.com/backend-type"),
    ("example.com/net", "example.com/net-backend-type"),
    ("example.com/", "example.com/backend-type"),
])
def test_annotation_names_follow_upstream(prefix: str, backend_type: str) -> None:
    assert FlannelAnnotations.for_prefix(prefix).backend_type == backend_type


@pytest.mark.parametrize("prefix", ["a/b/c", "Not_A_Domain", "example.com/UPPER"])
def test_a_bad_prefix_is_refused_clearly(prefix: str) -> None:
    with pytest.raises(ConfigError, match="--kube-annotation-prefix"):
        FlannelAnnotations.for_prefix(prefix)


def _node(annotations: dict[str, str], pod_cidrs: list[str] | None = None) -> dict[str, object]:
    cidrs = ["10.244.3.0/24"] if pod_cidrs is None else pod_cidrs
    return {"metadata": {"name": "n1", "annotations": annotations},
            "spec": {"podCIDR": cidrs[0] if cidrs else "", "podCIDRs": cidrs}}


def test_a_stock_flanneld_nodes_annotations_are_its_lease() -> None:
    stock = {f"flannel.alpha.coreos.com/{k}": v for k, v in {
        "kube-subnet-manager": "true", "backend-type": "vxlan", "public-ip": "192.168.0.20",
        "backend-data": '{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}'}.items()}
    lease = node_lease(parse_node(_node(stock, ["fd00::/64", "10.244.3.0/24"])), NAMES)
    assert lease is not None and str(lease.subnet) == "10.244.3.0/24"
    assert lease.attrs.backend_type == "vxlan" and lease.attrs.public_ip == ipaddress.IPv4Address("192.168.0.20")
    assert lease.attrs.backend_field("VtepMAC") == "c6:d2:32:6f:8f:44"
    # A Node no flannel manages is no lease; one with garbage names the bad annotation.
    assert node_lease(parse_node(_node({})), NAMES) is None
    broken = {**stock, "flannel.alpha.coreos.com/public-ip": "nope"}
    with pytest.raises(ValueError, match="public-ip"):
        node_lease(parse_node(_node(broken)), NAMES)


def test_we_write_what_upstream_writes_and_honour_the_overwrite() -> None:
    attrs = LeaseAttrs(public_ip=ipaddress.IPv4Address("192.168.0.11"), backend_type="ali-vpc",
                       backend_data={"InstanceId": "i-1", "VNI": 1})
    wanted = lease_annotations(parse_node(_node({})), NAMES, attrs)
    assert wanted == {"flannel.alpha.coreos.com/backend-type": "ali-vpc",
                      "flannel.alpha.coreos.com/backend-data": '{"InstanceId":"i-1","VNI":1}',
                      "flannel.alpha.coreos.com/public-ip": "192.168.0.11",
                      "flannel.alpha.coreos.com/kube-subnet-manager": "true"}
    assert lease_annotations(parse_node(_node(wanted)), NAMES, attrs) is None  # nothing to patch
    overwritten = {**wanted, "flannel.alpha.coreos.com/public-ip-overwrite": "203.0.113.5"}
    patch = lease_annotations(parse_node(_node(overwritten)), NAMES, attrs)
    assert patch is not None and patch["flannel.alpha.coreos.com/public-ip"] == "203.0.113.5"
    assert json.loads(patch["flannel.alpha.coreos.com/backend-data"]) == {"InstanceId": "i-1", "VNI": 1}


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeApiServer]:
    with KubeApiServer() as server:
        yield server


def test_racing_daemons_agree_on_one_cluster_id(kube: KubeApiServer, tmp_path: Path) -> None:
    """The id that marks the route entries is made once: a second writer must never mint another."""
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
    config = DaemonConfig(etcd_endpoints=[], kube_subnet_mgr=True, kubeconfig_file=str(kubeconfig),
                          pod_namespace="kube-system")
    sources = [KubeLeaseSource(config, {}, KubeClient.connect(str(kubeconfig)), own_node=False) for _ in range(6)]
    ids: list[str] = []
    start = threading.Barrier(len(sources))

    def take(source: KubeLeaseSource) -> None:
        start.wait()
        ids.append(source.cluster_id())

    threads = [threading.Thread(target=take, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(ids) == len(sources) and len(set(ids)) == 1
    assert sources[0].cluster_id() == ids[0]
    for source in sources:
        source.close()


def test_a_node_confirms_its_vxlan_path_on_its_own_node_within_the_daemons_rbac(tmp_path: Path) -> None:
    """What a writer reads before deleting a trimmed entry: each node's confirmation, by its podCIDR; a node
    carries the annotation only while something moves. Done with the DaemonSet's own RBAC, enforced."""
    token = "daemon-token"
    with KubeApiServer(tokens={token: SERVICE_ACCOUNT}, permissions={SERVICE_ACCOUNT: daemon_permissions()}) \
            as kube:
        nodes = kube.resource("v1", "nodes")
        for name, cidr in (("n1", "10.244.1.0/24"), ("n2", "10.244.2.0/24")):
            kube.create(nodes, "", {"metadata": {"name": name}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
        kubeconfig = str(kube.write_kubeconfig(tmp_path / "kubeconfig", token=token, namespace="kube-system"))

        def source(node: str) -> KubeLeaseSource:
            config = DaemonConfig(etcd_endpoints=[], kube_subnet_mgr=True, kubeconfig_file=kubeconfig,
                                  pod_namespace="kube-system", node_name=node)
            return KubeLeaseSource(config, {}, KubeClient.connect(kubeconfig))

        n1, writer = source("n1"), source("n2")
        writer.start_watching(lambda: None)
        assert writer.wait_in_sync(10) and writer.overflow_programmed() == {}
        moving = frozenset({ipaddress.IPv4Network("10.244.2.0/24")})
        n1.start_watching(lambda: None)
        n1.report_overflow_programmed(moving)
        wait_for(lambda: writer.overflow_programmed().get(ipaddress.IPv4Network("10.244.1.0/24")),
                 what="n1's confirmation seen by the writer")
        assert writer.overflow_programmed()[ipaddress.IPv4Network("10.244.1.0/24")].subnets == moving
        # Nothing moving any more: the annotation goes.
        n1.report_overflow_programmed(frozenset())
        wait_for(lambda: not writer.overflow_programmed(), what="n1's confirmation removed")
        annotations = kube.get_object("v1", "nodes", "", "n1")["metadata"].get("annotations") or {}  # type: ignore[index]
        assert PROGRAMMED_ANNOTATION not in annotations
        n1.close()
        writer.close()
