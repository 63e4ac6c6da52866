"""The desired state of one Service's SLB ("local model"), and how ownership is written on the cloud.

``LoadBalancerSpec`` is what ``desired.desired_spec`` computes from a Service,
its annotations and the Nodes; ``plan.plan_changes`` compares it with the
observed ``core.loadbalancer.LoadBalancerState``.

Ownership marks (so the controller finds its SLBs again and deletes only those):

* an SLB it creates is named ``"a" + uid without dashes`` (32 characters at
  most, the upstream cloud-provider rule) and tagged
  ``kubernetes.do.not.delete=<name>``, ``ack.aliyun.com=<cluster id>`` and
  ``kubernetes.service=<namespace>/<name>``; it is found by the first two tags;
* a listener it manages has the description ``k8s/<port>/<service>/<namespace>/<cluster id>``;
* a backend server it added carries the description ``k8s/<service>/<namespace>/<cluster id>``
  (this matters on a reused SLB, where other servers may be attached).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

TAG_NAME = "kubernetes.do.not.delete"
TAG_CLUSTER = "ack.aliyun.com"
TAG_SERVICE = "kubernetes.service"


def load_balancer_name(uid: str) -> str:
    return ("a" + uid.replace("-", ""))[:32]


def ownership_tags(*, uid: str, cluster_id: str) -> dict[str, str]:
    """The tags that prove an SLB is this cluster's SLB for the Service with ``uid``."""
    return {TAG_NAME: load_balancer_name(uid), TAG_CLUSTER: cluster_id}


def listener_description(port: int, service: str, namespace: str, cluster_id: str) -> str:
    return f"k8s/{port}/{service}/{namespace}/{cluster_id}"


def owns_listener(description: str, service: str, namespace: str, cluster_id: str) -> bool:
    parts = description.split("/")
    return len(parts) == 5 and parts[0] == "k8s" and parts[2:] == [service, namespace, cluster_id]


def backend_description(service: str, namespace: str, cluster_id: str) -> str:
    return f"k8s/{service}/{namespace}/{cluster_id}"


@dataclass(frozen=True)
class ListenerSpec:
    port: int
    protocol: str
    """``tcp``, ``udp``, ``http`` or ``https``."""
    backend_port: int
    """The Service's NodePort."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    """Under their ``Describe*`` names; every value the controller manages, defaults included."""

    @property
    def key(self) -> tuple[int, str]:
        return self.port, self.protocol


@dataclass(frozen=True)
class BackendSpec:
    server_id: str
    weight: int = 100


@dataclass(frozen=True)
class LoadBalancerSpec:
    service: str
    namespace: str
    uid: str
    cluster_id: str
    region: str
    name: str
    client_token: str
    tags: Mapping[str, str]
    """Set at creation; the first two are the ownership proof."""
    reuse_id: str = ""
    """An existing SLB named by the ``id`` annotation: never created, never deleted."""
    force_override: bool = False
    address_type: str = "internet"
    network_type: str = ""
    vswitch_id: str = ""
    charge_type: str = "paybytraffic"
    bandwidth: int = 50
    spec: str = ""
    """Empty: the instance spec is not managed."""
    listeners: tuple[ListenerSpec, ...] = ()
    backends: tuple[BackendSpec, ...] = ()

    @property
    def owned_tags(self) -> dict[str, str]:
        return {k: v for k, v in self.tags.items() if k in (TAG_NAME, TAG_CLUSTER)}

    @property
    def manages_listeners(self) -> bool:
        return not self.reuse_id or self.force_override

    @property
    def backend_description(self) -> str:
        return backend_description(self.service, self.namespace, self.cluster_id)
