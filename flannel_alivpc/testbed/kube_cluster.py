"""A kube-mode cluster on one machine: the cloud emulator, the kube-apiserver stand-in and
route daemons run with ``--kube-subnet-mgr``, each the real daemon in its own process.

The test plays the controller-manager: it creates each Node with a podCIDR
(or without, to assign it late) and deletes Nodes. Every daemon talks to the
API server with one service-account token whose rights are exactly the RBAC
rules the rendered manifests bind to the DaemonSet's account, so a request
outside them is refused with 403.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from pathlib import Path
from typing import Any

from flannel_alivpc.core.kube_subnets import DEFAULT_ANNOTATION_PREFIX
from flannel_alivpc.emulator.server import Topology
from flannel_alivpc.installer import manifests
from flannel_alivpc.routed.config import DaemonConfig
from flannel_alivpc.testbed.cluster import DEFAULT_NETWORK_CONFIG, LocalCluster, Node
from flannel_alivpc.testbed.kube_apiserver import KubeApiServer, PolicyRule

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:flannel-alivpc"


def daemon_permissions() -> list[PolicyRule]:
    """The rules the rendered manifests bind to the DaemonSet's service account, as the stand-in enforces them."""
    objects = manifests.daemon_rbac()
    bound = {(o["roleRef"]["kind"], o["roleRef"]["name"], o["metadata"].get("namespace")) for o in objects
             if o["kind"].endswith("Binding")
             and any(s["name"] == manifests.DAEMON_NAME for s in o["subjects"])}
    return [PolicyRule.from_manifest(rule, o["metadata"].get("namespace"))
            for o in objects if o["kind"] in ("Role", "ClusterRole")
            and (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) in bound
            for rule in o["rules"]]


class KubeCluster(LocalCluster):
    def __init__(self, workdir: Path, **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.token = secrets.token_urlsafe(16)
        self.kube = KubeApiServer(tokens={self.token: SERVICE_ACCOUNT},
                                  permissions={SERVICE_ACCOUNT: daemon_permissions()})
        self.kubeconfig = workdir / "kubeconfig"
        self.net_conf = workdir / "net-conf.json"
        self._next_cidr = 1

    def start(self, *, instances: int, network_config: str | None = DEFAULT_NETWORK_CONFIG,
              assign_pod_cidrs: bool = True) -> Topology:
        self.emulator.start()
        self.topology = self.emulator.bootstrap(instances=instances)
        self.kube.start()
        self.kube.write_kubeconfig(self.kubeconfig, token=self.token, namespace=NAMESPACE)
        self.network_config = network_config
        if network_config is not None:
            self.net_conf.write_text(network_config)
        for instance_id in self.topology.instance_ids:
            self.add_kube_node(self.add_node(instance_id), pod_cidr=self.next_pod_cidr() if assign_pod_cidrs
                               else None)
        return self.topology

    def close(self) -> None:
        super().close()
        self.kube.stop()

    def next_pod_cidr(self) -> str:
        network = ipaddress.ip_network(json.loads(self.network_config or DEFAULT_NETWORK_CONFIG)["Network"])
        cidr = list(network.subnets(new_prefix=24))[self._next_cidr]
        self._next_cidr += 1
        return str(cidr)

    # -- the controller-manager's part -------------------------------------------------------------

    def add_kube_node(self, node: Node, *, pod_cidr: str | None, annotations: dict[str, str] | None = None) -> None:
        spec: dict[str, Any] = {"providerID": f"cn-hangzhou.{node.instance_id}"}
        if pod_cidr:
            spec.update(podCIDR=pod_cidr, podCIDRs=[pod_cidr])
        self.kube.create(self.kube.resource("v1", "nodes"), "", {
            "metadata": {"name": node.hostname, "annotations": dict(annotations or {})},
            "spec": spec,
            "status": {"addresses": [{"type": "InternalIP", "address": node.private_ip}]},
        })

    def assign_pod_cidr(self, node: Node, pod_cidr: str) -> None:
        def change(obj: dict[str, Any]) -> dict[str, Any]:
            obj["spec"].update(podCIDR=pod_cidr, podCIDRs=[pod_cidr])
            return obj

        self.kube.write(self.kube.resource("v1", "nodes"), "", node.hostname, subresource="", change=change)

    def delete_kube_node(self, node: Node) -> None:
        self.kube.delete(self.kube.resource("v1", "nodes"), "", node.hostname, {})

    def node_object(self, node: Node) -> dict[str, Any] | None:
        return self.kube.get_object("v1", "nodes", "", node.hostname)

    def network_unavailable(self, node: Node) -> dict[str, Any] | None:
        obj = self.node_object(node) or {}
        for condition in (obj.get("status") or {}).get("conditions") or ():
            if condition.get("type") == "NetworkUnavailable":
                return dict(condition)
        return None

    def node_events(self, node: Node) -> list[dict[str, Any]]:
        return [e for e in self.kube.objects("v1", "events")
                if (e.get("involvedObject") or {}).get("kind") == "Node"
                and e["involvedObject"].get("name") == node.hostname]

    # -- daemons ----------------------------------------------------------------------------------

    def node_env(self) -> dict[str, str]:
        return {**super().node_env(), "POD_NAMESPACE": NAMESPACE}

    def start_node(self, node: Node) -> None:
        node.env.setdefault("NODE_NAME", node.hostname)
        super().start_node(node)

    def leave(self, node: Node) -> None:
        """Scale-in: the daemon stops and the Node object is deleted (its lease with it)."""
        self.stop_node(node)
        self.delete_kube_node(node)

    def describe_lease_source(self) -> list[str]:
        return [f"kube-apiserver   {self.kube.url}  (the in-repo stand-in; daemons run --kube-subnet-mgr "
                f"with the DaemonSet's RBAC)",
                f"network config   {self.net_conf} = {self.network_config}"]

    def lease_source_args(self) -> list[str]:
        return ["--kube-subnet-mgr", "--kubeconfig-file", str(self.kubeconfig), "--net-config-path",
                str(self.net_conf)]

    def inspect_args(self) -> list[str]:
        return self.lease_source_args()

    # -- observation ------------------------------------------------------------------------------

    def inspect_config(self) -> DaemonConfig:
        """``routes``/``leases`` in kube mode, as an operator runs them (the stand-in's kubeconfig)."""
        return DaemonConfig(etcd_endpoints=[], kube_subnet_mgr=True, kubeconfig_file=str(self.kubeconfig),
                            net_config_path=str(self.net_conf), pod_namespace=NAMESPACE,
                            api_endpoint=self.emulator.endpoint, region=self.emulator.state.settings.region,
                            metadata_url=f"{self.emulator.endpoint}/meta/{self.nodes[0].instance_id}")

    def expected_routes(self) -> dict[str, str]:
        """destination -> instance id for every Node whose annotations publish an ali-vpc lease."""
        expected = {}
        for obj in self.kube.objects("v1", "nodes"):
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            if annotations.get(f"{DEFAULT_ANNOTATION_PREFIX}/kube-subnet-manager") != "true":
                continue
            try:
                data = json.loads(annotations.get(f"{DEFAULT_ANNOTATION_PREFIX}/backend-data") or "null") or {}
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("InstanceId") and obj["spec"].get("podCIDR"):
                expected[obj["spec"]["podCIDR"]] = str(data["InstanceId"])
        return expected
