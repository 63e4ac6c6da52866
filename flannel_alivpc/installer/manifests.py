"""The Kubernetes manifests: built here, rendered into manifests/ and applied by the installer.

One source for both: ``manifests/*.yaml`` are this module's output with the
default values (``make manifests``, or ``python -m flannel_alivpc.installer.manifests
DIR``), and the installer applies the same objects with this cluster's values
(pod CIDR, backend, etcd endpoint, image). A test checks that the files in the
repository equal a fresh rendering, validates them against the Kubernetes
OpenAPI schemas and checks them against the code (flags, env names, ports).

What runs where:

* DaemonSet ``flannel-alivpc`` (kube-system): the route daemon on every node.
  hostNetwork, capabilities NET_ADMIN and NET_RAW only (not privileged),
  tolerates every taint, system-node-critical. Init containers put the flannel
  CNI plugin in /opt/cni/bin and the conflist in /etc/cni/net.d. It reaches
  the cluster's etcd with a client certificate from the Secret
  ``flannel-alivpc-etcd`` and the cloud with the access key from the Secret
  ``flannel-alivpc-credentials`` (optional: without it, the instance's RAM role).
* ConfigMap ``flannel-alivpc-config``: net-conf.json (ali-vpc or vxlan variant)
  and the CNI conflist. The daemon reads the network config from etcd
  (``<prefix>/config``); the installer writes net-conf.json there.
* Deployment ``flannel-alivpc-slb-controller``: ``flannel-alivpc slb-controller``
  on a control-plane node, with its ServiceAccount and RBAC.
* Secret template for the access key; the RAM policy in ram-policy.json.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flannel_alivpc import __version__
from flannel_alivpc.installer import yamlout
from flannel_alivpc.installer.ram import render_ram_policy

NAMESPACE = "kube-system"
DAEMON_NAME = "flannel-alivpc"
CONFIG_MAP_NAME = "flannel-alivpc-config"
CREDENTIALS_SECRET = "flannel-alivpc-credentials"
ETCD_SECRET = "flannel-alivpc-etcd"
SLB_NAME = "flannel-alivpc-slb-controller"
IMAGE_NAME = "flannel-alivpc"
DEFAULT_IMAGE = f"{IMAGE_NAME}:{__version__}"
CNI_PLUGIN_IMAGE = "docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel1"
HEALTHZ_PORT = 8471
HEALTHZ_IP = "127.0.0.1"
SLB_HEALTHZ_PORT = 8473
"""The SLB controller's /healthz (host network, so not the daemon's port on the same node)."""
DEFAULT_POD_CIDR = "172.16.0.0/16"
DEFAULT_SERVICE_CIDR = "172.19.0.0/20"
ETCD_ENDPOINT_PLACEHOLDER = "https://REPLACE-WITH-MASTER-IP:2379"
ETCD_CERT_DIR = "/etc/flannel-alivpc/etcd"
CNI_CONFLIST = "/etc/cni/net.d/10-flannel.conflist"
SUBNET_DIR = "/run/flannel"
VXLAN_VNI = 1
VXLAN_PORT = 8472
NONROOT_UID = 10001
"""The image's unprivileged user (the Dockerfile creates it with this uid)."""

KEY_ID_ENV = "ACCESS_KEY_ID"
KEY_SECRET_ENV = "ACCESS_KEY_SECRET"
SECRET_KEY_ID = "access-key-id"
SECRET_KEY_SECRET = "access-key-secret"
BACKENDS = ("ali-vpc", "vxlan")


@dataclass(frozen=True)
class ManifestValues:
    """What differs between clusters. The defaults render the files in manifests/."""

    image: str = DEFAULT_IMAGE
    cni_plugin_image: str = CNI_PLUGIN_IMAGE
    pod_cidr: str = DEFAULT_POD_CIDR
    backend: str = "ali-vpc"
    etcd_endpoints: str = ETCD_ENDPOINT_PLACEHOLDER
    healthz_port: int = HEALTHZ_PORT


def net_conf(pod_cidr: str, backend: str) -> dict[str, Any]:
    """flannel's network config: the guide's flannel-vpc.yml / flannel-vxlan.yml, without any key."""
    if backend == "ali-vpc":
        return {"Network": pod_cidr, "Backend": {"Type": "ali-vpc"}}
    if backend == "vxlan":
        return {"Network": pod_cidr, "Backend": {"Type": "vxlan", "VNI": VXLAN_VNI, "Port": VXLAN_PORT}}
    raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")


def net_conf_json(pod_cidr: str, backend: str) -> str:
    return json.dumps(net_conf(pod_cidr, backend), indent=2) + "\n"


def cni_conflist() -> dict[str, Any]:
    return {
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _meta(name: str, namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespaced:
        meta["namespace"] = NAMESPACE
    meta["labels"] = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "flannel-alivpc"}
    return meta


def _key_env() -> list[dict[str, Any]]:
    """The access key from the Secret; optional, so a node with a RAM role needs no Secret."""
    return [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": CREDENTIALS_SECRET, "key": key, "optional": True}}}
        for env, key in ((KEY_ID_ENV, SECRET_KEY_ID), (KEY_SECRET_ENV, SECRET_KEY_SECRET))
    ]


def _hardened(*, root: bool, capabilities: Sequence[str] = ()) -> dict[str, Any]:
    context: dict[str, Any] = {
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    if capabilities:
        context["capabilities"]["add"] = list(capabilities)
    if root:
        # Writing /run/flannel and /etc/cni/net.d on the host and using NET_ADMIN need uid 0.
        context["runAsUser"] = 0
    else:
        context.update({"runAsNonRoot": True, "runAsUser": NONROOT_UID, "runAsGroup": NONROOT_UID})
    return context


def configmap(values: ManifestValues) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(CONFIG_MAP_NAME),
        "data": {
            "net-conf.json": net_conf_json(values.pod_cidr, values.backend),
            "cni-conf.json": json.dumps(cni_conflist(), indent=2) + "\n",
        },
    }


def daemon_args(values: ManifestValues) -> list[str]:
    return ["--healthz-ip", HEALTHZ_IP, "--healthz-port", str(values.healthz_port)]


def daemon_env(values: ManifestValues) -> list[dict[str, Any]]:
    return [
        {"name": "FLANNELD_ETCD_ENDPOINTS", "value": values.etcd_endpoints},
        {"name": "FLANNELD_ETCD_CAFILE", "value": f"{ETCD_CERT_DIR}/ca.crt"},
        {"name": "FLANNELD_ETCD_CERTFILE", "value": f"{ETCD_CERT_DIR}/tls.crt"},
        {"name": "FLANNELD_ETCD_KEYFILE", "value": f"{ETCD_CERT_DIR}/tls.key"},
        *_key_env(),
    ]


def daemonset(values: ManifestValues) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": DAEMON_NAME}
    probe = {"httpGet": {"host": HEALTHZ_IP, "path": "/healthz", "port": values.healthz_port}}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(DAEMON_NAME),
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "hostNetwork": True,
                    "priorityClassName": "system-node-critical",
                    "serviceAccountName": DAEMON_NAME,
                    "automountServiceAccountToken": False,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    # Every taint, NoExecute included: pod networking must come up on every node.
                    "tolerations": [{"operator": "Exists"}],
                    "initContainers": [
                        {
                            "name": "install-cni-plugin",
                            "image": values.cni_plugin_image,
                            "command": ["cp"],
                            "args": ["-f", "/flannel", "/opt/cni/bin/flannel"],
                            "securityContext": _hardened(root=True),
                            "volumeMounts": [{"name": "cni-plugin", "mountPath": "/opt/cni/bin"}],
                        },
                        {
                            "name": "install-cni",
                            "image": values.image,
                            "command": ["cp"],
                            "args": ["-f", "/etc/kube-flannel/cni-conf.json", CNI_CONFLIST],
                            "securityContext": _hardened(root=True),
                            "volumeMounts": [
                                {"name": "cni-conf", "mountPath": "/etc/cni/net.d"},
                                {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel", "readOnly": True},
                            ],
                        },
                    ],
                    "containers": [{
                        "name": "route-daemon",
                        "image": values.image,
                        "args": daemon_args(values),
                        "env": daemon_env(values),
                        "securityContext": _hardened(root=True, capabilities=["NET_ADMIN", "NET_RAW"]),
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                        "livenessProbe": {**probe, "initialDelaySeconds": 30, "periodSeconds": 30,
                                          "failureThreshold": 4},
                        "readinessProbe": {"httpGet": {**probe["httpGet"], "path": "/readyz"},
                                           "periodSeconds": 10},
                        "volumeMounts": [
                            {"name": "run-flannel", "mountPath": SUBNET_DIR},
                            {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel", "readOnly": True},
                            {"name": "etcd-certs", "mountPath": ETCD_CERT_DIR, "readOnly": True},
                            {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                        ],
                    }],
                    "volumes": [
                        {"name": "run-flannel", "hostPath": {"path": SUBNET_DIR, "type": "DirectoryOrCreate"}},
                        {"name": "cni-plugin", "hostPath": {"path": "/opt/cni/bin", "type": "DirectoryOrCreate"}},
                        {"name": "cni-conf", "hostPath": {"path": "/etc/cni/net.d", "type": "DirectoryOrCreate"}},
                        {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                        {"name": "flannel-cfg", "configMap": {"name": CONFIG_MAP_NAME}},
                        {"name": "etcd-certs", "secret": {"secretName": ETCD_SECRET, "defaultMode": 0o400}},
                    ],
                },
            },
        },
    }


def rbac() -> list[dict[str, Any]]:
    """ServiceAccounts, and the SLB controller's ClusterRole (the daemon needs no API access)."""
    daemon_account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(DAEMON_NAME),
                      "automountServiceAccountToken": False}
    slb_account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(SLB_NAME)}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": _meta(SLB_NAME, namespaced=False),
        "rules": [
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "update", "patch"]},
            {"apiGroups": [""], "resources": ["services/status"], "verbs": ["update", "patch"]},
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _meta(SLB_NAME, namespaced=False),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SLB_NAME},
        "subjects": [{"kind": "ServiceAccount", "name": SLB_NAME, "namespace": NAMESPACE}],
    }
    # Leader election: a coordination.k8s.io Lease in kube-system only.
    election_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(SLB_NAME),
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                   "verbs": ["get", "create", "update", "patch"]}],
    }
    election_binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(SLB_NAME),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SLB_NAME},
        "subjects": [{"kind": "ServiceAccount", "name": SLB_NAME, "namespace": NAMESPACE}],
    }
    return [daemon_account, slb_account, role, binding, election_role, election_binding]


def slb_args() -> list[str]:
    return ["slb-controller", "--healthz-ip", HEALTHZ_IP, "--healthz-port", str(SLB_HEALTHZ_PORT)]


def slb_deployment(values: ManifestValues) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": SLB_NAME}
    probe = {"httpGet": {"host": HEALTHZ_IP, "path": "/healthz", "port": SLB_HEALTHZ_PORT}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(SLB_NAME),
        "spec": {
            "replicas": 1,
            # Never two controllers writing the same SLBs, even during a rollout.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": SLB_NAME,
                    "priorityClassName": "system-cluster-critical",
                    # The host's network: the metadata service (region, RAM role) without
                    # depending on the pod network it helps to build.
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "nodeSelector": {"kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""},
                    "tolerations": [
                        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                         "effect": "NoSchedule"},
                        {"key": "node.cloudprovider.kubernetes.io/uninitialized", "operator": "Exists",
                         "effect": "NoSchedule"},
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"},
                    ],
                    "containers": [{
                        "name": "slb-controller",
                        "image": values.image,
                        "args": slb_args(),
                        "env": _key_env(),
                        "securityContext": _hardened(root=False),
                        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "384Mi"}},
                        # Unhealthy: a watch ended for good, or (leader) a Service failed 10 passes in a row.
                        "livenessProbe": {**probe, "initialDelaySeconds": 60, "periodSeconds": 30,
                                          "failureThreshold": 4},
                        "readinessProbe": {"httpGet": {**probe["httpGet"], "path": "/readyz"},
                                           "periodSeconds": 10},
                    }],
                },
            },
        },
    }


def secret_template() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(CREDENTIALS_SECRET),
        "type": "Opaque",
        "stringData": {SECRET_KEY_ID: "REPLACE-WITH-ACCESS-KEY-ID",
                       SECRET_KEY_SECRET: "REPLACE-WITH-ACCESS-KEY-SECRET"},
    }


def credentials_secret(key_id: str, key_secret: str) -> dict[str, Any]:
    """The real Secret, for ``kubectl apply -f -`` on stdin (never written to disk or argv)."""
    secret = secret_template()
    secret["stringData"] = {SECRET_KEY_ID: key_id, SECRET_KEY_SECRET: key_secret}
    return secret


def etcd_secret(ca_pem: str, cert_pem: str, key_pem: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(ETCD_SECRET),
        "type": "Opaque",
        "stringData": {"ca.crt": ca_pem, "tls.crt": cert_pem, "tls.key": key_pem},
    }


def cluster_objects(values: ManifestValues, *, slb_controller: bool) -> list[dict[str, Any]]:
    """What the installer applies on a master, in order."""
    objects = [*rbac(), configmap(values), daemonset(values)]
    if slb_controller:
        objects.append(slb_deployment(values))
    return objects


_REGENERATE = "Generated by flannel_alivpc.installer.manifests: regenerate with `make manifests`."


def repository_files(values: ManifestValues | None = None) -> dict[str, str]:
    """File name -> content of everything in manifests/ (README.md aside)."""
    v = values or ManifestValues()
    vxlan = ManifestValues(image=v.image, cni_plugin_image=v.cni_plugin_image, pod_cidr=v.pod_cidr,
                           backend="vxlan", etcd_endpoints=v.etcd_endpoints, healthz_port=v.healthz_port)
    return {
        "rbac.yaml": yamlout.dump_all(rbac(), [
            "ServiceAccounts and RBAC. The route daemon needs no Kubernetes API access;",
            "the SLB controller watches Services, Nodes and EndpointSlices and holds a leader Lease.",
            _REGENERATE]),
        "net-conf-alivpc.yaml": yamlout.dump_all([configmap(v)], [
            "Network config for VPC clusters (the guide's flannel-vpc.yml, without the access key).",
            "Set Network to the cluster's pod CIDR; put net-conf.json into etcd at",
            "/coreos.com/network/config (the installer does both). Apply this or the vxlan variant.",
            _REGENERATE]),
        "net-conf-vxlan.yaml": yamlout.dump_all([configmap(vxlan)], [
            "Network config for clusters of stock flanneld vxlan nodes (no cloud access): flannel-compatible VXLAN",
            "(the guide's flannel-vxlan.yml). Security groups must allow UDP 8472 between nodes.",
            _REGENERATE]),
        "flannel-alivpc.yaml": yamlout.dump_all([daemonset(v)], [
            "The route daemon on every node. Replace REPLACE-WITH-MASTER-IP with the etcd address;",
            f"create the Secret {ETCD_SECRET} (ca.crt, tls.crt, tls.key: an etcd client certificate)",
            f"and, unless the nodes have a RAM role, {CREDENTIALS_SECRET} (secret.template.yaml).",
            _REGENERATE]),
        "slb-controller.yaml": yamlout.dump_all([slb_deployment(v)], [
            "The SLB controller: Services of type LoadBalancer -> Alibaba Cloud SLB.", _REGENERATE]),
        "secret.template.yaml": yamlout.dump_all([secret_template()], [
            "The access key of a RAM user holding ram-policy.json. Fill in, then",
            "`kubectl apply -f secret.template.yaml`, and do not commit the filled-in copy.", _REGENERATE]),
        "ram-policy.json": render_ram_policy(),
    }


def write_repository_files(directory: Path) -> list[str]:
    """Write the files of manifests/ into ``directory``; returns the names that changed."""
    changed = []
    for name, content in repository_files().items():
        path = directory / name
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            changed.append(name)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m flannel_alivpc.installer.manifests DIRECTORY", file=sys.stderr)
        return 2
    directory = Path(args[0])
    directory.mkdir(parents=True, exist_ok=True)
    for name in write_repository_files(directory):
        print(f"wrote {directory / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
