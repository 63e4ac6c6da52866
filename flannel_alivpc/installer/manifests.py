"""The Kubernetes manifests: built here, rendered into manifests/ and applied by the installer.

One source for both: ``manifests/`` is this module's output with the default
values (``make manifests``), ``python -m flannel_alivpc.installer.manifests
[--image REF] DIR`` renders the same files with another image (also env
``FLANNEL_ALIVPC_IMAGE``), and the installer applies the same objects with this
cluster's values. What is shipped applies as it is: nothing in it is a
placeholder (the etcd address comes from the etcd Secret, which the cluster
needs anyway). A test checks that the files in the repository equal a fresh
rendering, validates them against the Kubernetes OpenAPI schemas and checks
them against the code (flags, env names, ports). YAML is PyYAML's safe dumper.

What runs where:

* DaemonSet ``flannel-alivpc`` (kube-system): the route daemon on every node,
  with ``--ip-masq`` as kube-flannel.yml runs flanneld. hostNetwork,
  capabilities NET_ADMIN and NET_RAW only (not privileged), tolerates every
  taint, system-node-critical; labelled ``app: flannel``/``k8s-app: flannel``
  as upstream's pods are, beside the recommended labels. Init containers put
  the flannel CNI plugin in /opt/cni/bin and the conflist in /etc/cni/net.d.
  It reaches the cloud with the access key in the Secret
  ``flannel-alivpc-credentials`` (optional: without it, the instance's RAM
  role). Two subnet managers (``SUBNET_MANAGERS``):

  - ``kube``, the default (``flannel-alivpc.yaml``): ``--kube-subnet-mgr``,
    the Nodes' podCIDRs are the leases; NODE_NAME/POD_NAMESPACE from the
    downward API; the service-account token with exactly ``daemon_rbac()``;
  - ``etcd`` (``flannel-alivpc-etcd.yaml``): the leases in etcd, at the
    address and with the client certificate in the Secret
    ``flannel-alivpc-etcd``; no service-account token at all.
* ConfigMap ``flannel-alivpc-config``: the CNI conflist and, in kube mode,
  net-conf.json (mounted at /etc/kube-flannel as kube-flannel.yml does). In
  etcd mode the daemon reads net-conf.json from etcd (``<prefix>/config``),
  never from a ConfigMap, and the ConfigMap says so; net-conf-*.json are the
  values to put there (the installer does).
* Deployment ``flannel-alivpc-slb-controller``: ``flannel-alivpc slb-controller``
  on a control-plane node, with its ServiceAccount and RBAC.
* The RAM policy in ram-policy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from flannel_alivpc import __version__
from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.core.kube_subnets import EVENT_NAMESPACE, RBAC_CLUSTER_RULES, RBAC_EVENT_RULES, RBAC_NAMESPACE_RULES
from flannel_alivpc.core.network import DEFAULT_PREFIX
from flannel_alivpc.installer.ram import render_ram_policy

NAMESPACE = "kube-system"
DAEMON_NAME = "flannel-alivpc"
CONFIG_MAP_NAME = "flannel-alivpc-config"
CREDENTIALS_SECRET = "flannel-alivpc-credentials"
ETCD_SECRET = "flannel-alivpc-etcd"
SLB_NAME = "flannel-alivpc-slb-controller"
IMAGE_NAME = "flannel-alivpc"
IMAGE_REPOSITORY = "registry.cn-hangzhou.aliyuncs.com/flannel-alivpc"
"""Where ``make image`` tags (and ``make push`` pushes) the image; ``IMAGE=...`` picks another."""
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}/{IMAGE_NAME}:{__version__}"
IMAGE_ENV = "FLANNEL_ALIVPC_IMAGE"
CNI_PLUGIN_IMAGE = "docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel1"
HEALTHZ_PORT = 8471
HEALTHZ_IP = "127.0.0.1"
SLB_HEALTHZ_PORT = 8473
"""The SLB controller's /healthz (host network, so not the daemon's port on the same node)."""
DEFAULT_POD_CIDR = "172.16.0.0/16"
DEFAULT_SERVICE_CIDR = "172.19.0.0/20"
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
ETCD_ENDPOINTS_KEY = "endpoints"
"""The etcd Secret's key holding the etcd URLs (comma-separated), beside ca.crt, tls.crt and tls.key."""
BACKENDS = ("ali-vpc", "vxlan")
SUBNET_MANAGERS = ("kube", "etcd")
"""``kube`` (the default: leases are the Nodes' podCIDRs, flanneld's --kube-subnet-mgr) or ``etcd``."""
NET_CONF_DIR = "/etc/kube-flannel"
"""Where the daemons keep their leases and read the network config; each renders its own daemon wiring."""
UPSTREAM_LABELS = {"app": "flannel", "k8s-app": "flannel", "tier": "node"}
"""kube-flannel.yml's labels: selectors, dashboards and runbooks written for flannel find these pods."""

_IMAGE_REFERENCE = re.compile(
    r"^(?P<registry>[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?)/"  # a host: has a dot or a port, or is localhost
    r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})|@sha256:[0-9a-f]{64})$")


def check_image_reference(value: str, source: str) -> str:
    """``value`` if it names a registry and a version (tag or digest); else a ConfigError naming ``source``."""
    match = _IMAGE_REFERENCE.match(value)
    registry = match.group("registry") if match else ""
    qualified = "." in registry or ":" in registry or registry == "localhost"
    if not (match and qualified) or match.group("tag") == "latest":
        raise ConfigError(f"{source} {value!r}: expected a registry-qualified, versioned image reference such "
                          f"as {DEFAULT_IMAGE} (registry host, repository, then :<version> or @sha256:<digest>)")
    return value


@dataclass(frozen=True)
class ManifestValues:
    """What differs between clusters. The defaults render the files in manifests/."""

    image: str = DEFAULT_IMAGE
    cni_plugin_image: str = CNI_PLUGIN_IMAGE
    pod_cidr: str = DEFAULT_POD_CIDR
    backend: str = "ali-vpc"
    """With ``pod_cidr``, the network config: in etcd mode it lives in etcd (net-conf-*.json), not here."""
    subnet_manager: str = "kube"
    etcd_prefix: str = DEFAULT_PREFIX
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


def _labels(name: str, *, upstream: bool = False) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "flannel-alivpc"}
    if upstream:
        labels.update(UPSTREAM_LABELS)
    return labels


def _meta(name: str, namespaced: bool = True, *, upstream: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespaced:
        meta["namespace"] = NAMESPACE
    meta["labels"] = _labels(name, upstream=upstream)
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


def _check_subnet_manager(values: ManifestValues) -> None:
    if values.subnet_manager not in SUBNET_MANAGERS:
        raise ValueError(f"unknown subnet manager {values.subnet_manager!r}: use one of {', '.join(SUBNET_MANAGERS)}")


def configmap(values: ManifestValues) -> dict[str, Any]:
    _check_subnet_manager(values)
    meta = _meta(CONFIG_MAP_NAME, upstream=True)
    data = {"cni-conf.json": json.dumps(cni_conflist(), indent=2) + "\n"}
    if values.subnet_manager == "kube":
        # As kube-flannel.yml: net-conf.json beside the CNI config, mounted at /etc/kube-flannel.
        data["net-conf.json"] = net_conf_json(values.pod_cidr, values.backend)
    else:
        # The etcd subnet manager reads net-conf.json from etcd: a copy here would be a second,
        # silently ignored source of truth, so there is none and the ConfigMap says where it is.
        meta["annotations"] = {"flannel-alivpc.io/network-config": f"read from etcd at {values.etcd_prefix}/config, "
                                                                   f"not from this ConfigMap"}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def daemon_args(values: ManifestValues) -> list[str]:
    mode = ["--kube-subnet-mgr"] if values.subnet_manager == "kube" else []
    return ["--ip-masq", *mode, "--healthz-ip", HEALTHZ_IP, "--healthz-port", str(values.healthz_port)]


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def daemon_env(values: ManifestValues) -> list[dict[str, Any]]:
    _check_subnet_manager(values)
    if values.subnet_manager == "kube":
        # The downward API, as kube-flannel.yml: which Node this is, and the namespace of the writer Leases.
        return [_field_env("POD_NAME", "metadata.name"), _field_env("POD_NAMESPACE", "metadata.namespace"),
                _field_env("NODE_NAME", "spec.nodeName"), *_key_env()]
    endpoints = {"secretKeyRef": {"name": ETCD_SECRET, "key": ETCD_ENDPOINTS_KEY}}
    return [
        {"name": "FLANNELD_ETCD_ENDPOINTS", "valueFrom": endpoints},
        {"name": "FLANNELD_ETCD_PREFIX", "value": values.etcd_prefix},
        {"name": "FLANNELD_ETCD_CAFILE", "value": f"{ETCD_CERT_DIR}/ca.crt"},
        {"name": "FLANNELD_ETCD_CERTFILE", "value": f"{ETCD_CERT_DIR}/tls.crt"},
        {"name": "FLANNELD_ETCD_KEYFILE", "value": f"{ETCD_CERT_DIR}/tls.key"},
        *_key_env(),
    ]


def daemonset(values: ManifestValues) -> dict[str, Any]:
    # The selector is immutable once applied: it stays the recommended label alone.
    selector = {"app.kubernetes.io/name": DAEMON_NAME}
    kube = values.subnet_manager == "kube"
    probe = {"httpGet": {"host": HEALTHZ_IP, "path": "/healthz", "port": values.healthz_port}}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(DAEMON_NAME, upstream=True),
        "spec": {
            "selector": {"matchLabels": selector},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": _labels(DAEMON_NAME, upstream=True)},
                "spec": {
                    "hostNetwork": True,
                    "priorityClassName": "system-node-critical",
                    "serviceAccountName": DAEMON_NAME,
                    # Only kube mode talks to the API server; an etcd-mode pod holds no token at all.
                    "automountServiceAccountToken": kube,
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
                            "args": ["-f", f"{NET_CONF_DIR}/cni-conf.json", CNI_CONFLIST],
                            "securityContext": _hardened(root=True),
                            "volumeMounts": [
                                {"name": "cni-conf", "mountPath": "/etc/cni/net.d"},
                                {"name": "flannel-cfg", "mountPath": NET_CONF_DIR, "readOnly": True},
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
                            {"name": "flannel-cfg", "mountPath": NET_CONF_DIR, "readOnly": True} if kube
                            else {"name": "etcd-certs", "mountPath": ETCD_CERT_DIR, "readOnly": True},
                            {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                        ],
                    }],
                    "volumes": [
                        {"name": "run-flannel", "hostPath": {"path": SUBNET_DIR, "type": "DirectoryOrCreate"}},
                        {"name": "cni-plugin", "hostPath": {"path": "/opt/cni/bin", "type": "DirectoryOrCreate"}},
                        {"name": "cni-conf", "hostPath": {"path": "/etc/cni/net.d", "type": "DirectoryOrCreate"}},
                        {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                        {"name": "flannel-cfg", "configMap": {"name": CONFIG_MAP_NAME}},
                        *([] if kube else [
                            {"name": "etcd-certs", "secret": {"secretName": ETCD_SECRET, "defaultMode": 0o400}}]),
                    ],
                },
            },
        },
    }


def _binding(kind: str, name: str, account: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": _labels(account)}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": f"{kind}Binding", "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]}


def daemon_rbac() -> list[dict[str, Any]]:
    """The route daemon's rights in kube mode, and no more (core.kube_subnets RBAC_*):

    a ClusterRole for the Nodes, a Role for Leases in its own namespace, a Role
    for Events in the namespace Events about Nodes go to.
    """
    objects: list[dict[str, Any]] = []
    for kind, namespace, rules in (("ClusterRole", None, RBAC_CLUSTER_RULES),
                                   ("Role", NAMESPACE, RBAC_NAMESPACE_RULES),
                                   ("Role", EVENT_NAMESPACE, RBAC_EVENT_RULES)):
        meta: dict[str, Any] = {"name": DAEMON_NAME, "labels": _labels(DAEMON_NAME)}
        if namespace:
            meta["namespace"] = namespace
        objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
                        "rules": [dict(rule) for rule in rules]})
        objects.append(_binding(kind, DAEMON_NAME, DAEMON_NAME, namespace))
    return objects


def rbac() -> list[dict[str, Any]]:
    """ServiceAccounts, the route daemon's rights (used in kube mode only), the SLB controller's ClusterRole."""
    # The token is mounted by the DaemonSet in kube mode only (automountServiceAccountToken there).
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
    return [daemon_account, *daemon_rbac(), slb_account, role, binding, election_role, election_binding]


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


def credentials_secret(key_id: str, key_secret: str) -> dict[str, Any]:
    """The access key's Secret, for ``kubectl apply -f -`` on stdin (never written to disk or argv)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(CREDENTIALS_SECRET),
        "type": "Opaque",
        "stringData": {SECRET_KEY_ID: key_id, SECRET_KEY_SECRET: key_secret},
    }


def etcd_secret(endpoints: str, ca_pem: str, cert_pem: str, key_pem: str) -> dict[str, Any]:
    """How the daemons reach etcd: its URLs and a client certificate."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(ETCD_SECRET),
        "type": "Opaque",
        "stringData": {ETCD_ENDPOINTS_KEY: endpoints, "ca.crt": ca_pem, "tls.crt": cert_pem, "tls.key": key_pem},
    }


def cluster_objects(values: ManifestValues, *, slb_controller: bool) -> list[dict[str, Any]]:
    """What the installer applies on a master, in order."""
    objects = [*rbac(), configmap(values), daemonset(values)]
    if slb_controller:
        objects.append(slb_deployment(values))
    return objects


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper; multi-line strings (the JSON files in ConfigMaps) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # PyYAML falls back to a quoted style by itself when a literal block cannot hold the text exactly.
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(documents: Iterable[Any], header: Sequence[str] = ()) -> str:
    """YAML documents separated by ``---``, keys in the order given, after ``header`` as ``#`` lines."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header)
    body = yaml.dump_all(list(documents), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                         width=1 << 16)  # no folding of long strings
    return comment + body


_REGENERATE = "Generated by flannel_alivpc.installer.manifests: regenerate with `make manifests`."


def repository_files(values: ManifestValues | None = None) -> dict[str, str]:
    """File name -> content of everything in manifests/ (README.md aside)."""
    v = values or ManifestValues()
    etcd_mode = replace(v, subnet_manager="etcd")
    return {
        "rbac.yaml": dump_yaml(rbac(), [
            "ServiceAccounts and RBAC. The route daemon (kube mode): read Nodes, patch nodes/status, Leases in",
            f"{NAMESPACE}, Events in {EVENT_NAMESPACE}; nothing else. The SLB controller watches Services, Nodes",
            "and EndpointSlices and holds a leader Lease.",
            _REGENERATE]),
        "flannel-alivpc.yaml": dump_yaml([configmap(v), daemonset(v)], [
            "The route daemon on every node (--kube-subnet-mgr: each Node's podCIDR is its lease, as with",
            "kube-flannel.yml), its CNI config and net-conf.json. The cluster must assign podCIDRs",
            f"(kube-controller-manager --allocate-node-cidrs, --cluster-cidr = the Network, here {v.pod_cidr}).",
            f"Unless the nodes have a RAM role, create the Secret {CREDENTIALS_SECRET} first (manifests/README.md).",
            _REGENERATE]),
        "flannel-alivpc-etcd.yaml": dump_yaml([configmap(etcd_mode), daemonset(etcd_mode)], [
            "The route daemon with leases in etcd (flannel's etcd subnet manager). Before applying it, put the",
            f"network config into etcd at {v.etcd_prefix}/config (net-conf-alivpc.json or net-conf-vxlan.json) and",
            f"create the Secret {ETCD_SECRET}: {ETCD_ENDPOINTS_KEY} (the etcd URLs), ca.crt, tls.crt, tls.key (a",
            "client certificate of a user confined to the prefix: installer/etcd_access.py); unless the nodes",
            f"have a RAM role, also {CREDENTIALS_SECRET} (manifests/README.md).",
            _REGENERATE]),
        "slb-controller.yaml": dump_yaml([slb_deployment(v)], [
            "The SLB controller: Services of type LoadBalancer -> Alibaba Cloud SLB.", _REGENERATE]),
        "net-conf-alivpc.json": net_conf_json(v.pod_cidr, "ali-vpc"),
        "net-conf-vxlan.json": net_conf_json(v.pod_cidr, "vxlan"),
        "ram-policy.json": render_ram_policy(),
    }


def write_repository_files(directory: Path, values: ManifestValues | None = None) -> list[str]:
    """Write the files of manifests/ into ``directory``; returns the names that changed."""
    changed = []
    for name, content in repository_files(values).items():
        path = directory / name
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            changed.append(name)
    return changed


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flannel_alivpc.installer.manifests",
        description="Render the manifests (and the RAM policy) into DIRECTORY.")
    parser.add_argument("directory", metavar="DIRECTORY", type=Path)
    parser.add_argument("--image", default=None,
                        help=f"the flannel-alivpc image (default: env {IMAGE_ENV}, else {DEFAULT_IMAGE})")
    args = parser.parse_args(argv)
    source, image = ("--image", args.image) if args.image is not None else (IMAGE_ENV, env.get(IMAGE_ENV))
    try:
        values = ManifestValues(image=check_image_reference(image, source) if image is not None else DEFAULT_IMAGE)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.directory.mkdir(parents=True, exist_ok=True)
    for name in write_repository_files(args.directory, values):
        print(f"wrote {args.directory / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
