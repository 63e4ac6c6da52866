"""flanneld's kube subnet manager data model: a Node's lease in its annotations and ``spec.podCIDR``.

Pure, and byte-compatible with upstream's ``pkg/subnet/kube`` so a stock
``flanneld --kube-subnet-mgr`` node and ours are peers:

* annotation names are ``<prefix>/backend-type``, ``backend-data``,
  ``public-ip``, ``public-ip-overwrite``, ``node-public-ip`` and
  ``kube-subnet-manager`` (``"true"`` marks a Node whose annotations are a
  lease); the default prefix ``flannel.alpha.coreos.com`` gets a ``/``, a prefix
  with a slash and a name part gets a ``-`` (``example.com/net`` ->
  ``example.com/net-backend-type``);
* ``backend-data`` is the JSON of BackendData (``null`` when there is none),
  ``public-ip`` the dotted quad, or the value of ``public-ip-overwrite`` when
  the operator set one;
* the lease's subnet is the IPv4 entry of ``spec.podCIDRs`` (``spec.podCIDR``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.core.kube import Node
from flannel_alivpc.core.network import IPv4Network, Lease, LeaseAttrs

DEFAULT_ANNOTATION_PREFIX = "flannel.alpha.coreos.com"
_PREFIX_FORMAT = re.compile(r"(?:[a-z0-9_-]+\.)+[a-z0-9_-]+/(?:[a-z0-9_-]+-)?$")


EVENT_NAMESPACE = "default"
"""Where Events about Nodes (cluster-scoped) are created, as the kubelet's are."""

# What the route daemon's service account may do in kube mode, and nothing else: the manifests'
# ClusterRole and Roles are rendered from these, and the kube-mode tests hold the daemons to them.
RBAC_CLUSTER_RULES: tuple[dict[str, list[str]], ...] = (
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
)
"""Cluster-wide: read the Nodes (everyone's lease), patch this node's annotations and conditions."""
RBAC_NAMESPACE_RULES: tuple[dict[str, list[str]], ...] = (
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
)
"""In the daemon's own namespace: the writer Leases and the cluster id."""
RBAC_EVENT_RULES: tuple[dict[str, list[str]], ...] = (
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
)
"""In ``EVENT_NAMESPACE``: Warning Events about Nodes (refused routes, malformed annotations)."""


@dataclass(frozen=True)
class FlannelAnnotations:
    kube_subnet_manager: str
    backend_data: str
    backend_type: str
    public_ip: str
    public_ip_overwrite: str
    node_public_ip: str

    @classmethod
    def for_prefix(cls, prefix: str) -> FlannelAnnotations:
        """The names for ``--kube-annotation-prefix``, by upstream's rules (and its refusals)."""
        slashes = prefix.count("/")
        if slashes > 1:
            raise ConfigError(f"--kube-annotation-prefix {prefix!r}: the prefix can contain at most one slash")
        if slashes == 0:
            prefix += "/"
        if not prefix.endswith(("/", "-")):
            prefix += "-"
        if not _PREFIX_FORMAT.match(prefix):
            raise ConfigError(f"--kube-annotation-prefix {prefix!r}: the prefix must be in the format "
                              f"fqdn/[0-9a-z-_]*, e.g. {DEFAULT_ANNOTATION_PREFIX}")
        return cls(kube_subnet_manager=prefix + "kube-subnet-manager", backend_data=prefix + "backend-data",
                   backend_type=prefix + "backend-type", public_ip=prefix + "public-ip",
                   public_ip_overwrite=prefix + "public-ip-overwrite", node_public_ip=prefix + "node-public-ip")


def ipv4_pod_cidr(node: Node) -> IPv4Network | None:
    """The Node's IPv4 pod CIDR; None when none is assigned yet. Raises ValueError for a malformed one."""
    if len(node.pod_cidrs) > 2:
        raise ValueError(f"node {node.meta.name} has {len(node.pod_cidrs)} pod CIDRs; expected IPv4, IPv6 or both")
    for raw in node.pod_cidrs:
        network = ipaddress.ip_network(raw, strict=False)
        if isinstance(network, ipaddress.IPv4Network):
            return network
    return None


def node_lease(node: Node, names: FlannelAnnotations) -> Lease | None:
    """The lease a Node's annotations publish, as upstream's nodeToLease reads it.

    None for a Node not (yet) managed by a flannel subnet manager; ValueError
    (naming the bad annotation) for one whose annotations cannot be a lease.
    """
    annotations = node.meta.annotations
    if annotations.get(names.kube_subnet_manager) != "true":
        return None
    raw_ip = annotations.get(names.public_ip, "")
    try:
        public_ip = ipaddress.IPv4Address(raw_ip)
    except ValueError:
        raise ValueError(f"annotation {names.public_ip}={raw_ip!r} is not an IPv4 address") from None
    raw_data = annotations.get(names.backend_data, "")
    data: Any = None
    if raw_data:
        try:
            data = json.loads(raw_data)
        except ValueError:
            raise ValueError(f"annotation {names.backend_data} is not JSON: {raw_data[:80]!r}") from None
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"annotation {names.backend_data} is not a JSON object: {raw_data[:80]!r}")
    subnet = ipv4_pod_cidr(node)
    if subnet is None:
        raise ValueError(f"node {node.meta.name} has no IPv4 pod CIDR (spec.podCIDRs {list(node.pod_cidrs)})")
    attrs = LeaseAttrs(public_ip=public_ip, backend_type=annotations.get(names.backend_type, ""),
                       backend_data=data or None)
    return Lease(subnet=subnet, attrs=attrs)


def backend_data_json(attrs: LeaseAttrs) -> str:
    """BackendData as Go's json.RawMessage marshals it: compact, ``null`` when empty."""
    return json.dumps(dict(attrs.backend_data), separators=(",", ":")) if attrs.backend_data else "null"


def lease_annotations(node: Node, names: FlannelAnnotations, attrs: LeaseAttrs) -> dict[str, str] | None:
    """The annotations to patch so the Node publishes ``attrs`` (upstream's AcquireLease); None if already so.

    ``public-ip-overwrite``, when set, is what peers see as the PublicIP.
    """
    current: Mapping[str, str] = node.meta.annotations
    data = backend_data_json(attrs)
    overwrite = current.get(names.public_ip_overwrite, "")
    public_ip = overwrite or str(attrs.public_ip)
    wanted = {names.backend_type: attrs.backend_type, names.backend_data: data, names.public_ip: public_ip,
              names.kube_subnet_manager: "true"}
    if all(current.get(key) == value for key, value in wanted.items()):
        return None
    return wanted


def check_pod_cidr(subnet: IPv4Network, network: IPv4Network, node_name: str) -> None:
    """Upstream refuses a podCIDR outside the flannel Network; so do we, naming both."""
    if not subnet.subnet_of(network):
        raise ConfigError(f"node {node_name} has podCIDR {subnet}, which the flannel Network {network} does not "
                          f"contain: make the controller-manager's --cluster-cidr and net-conf.json's Network agree")
