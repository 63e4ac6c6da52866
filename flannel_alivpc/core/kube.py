"""Typed views of the Kubernetes objects the SLB controller reads and writes.

Pure values, built by ``flannel_alivpc.clients.kube`` from API answers (the only
module that imports the ``kubernetes`` client); everything above it works with
these and never with the client's models or raw JSON. ``parse_*`` take the
object as the API serves it (camelCase JSON), so the same code reads list
answers and watch events.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from flannel_alivpc.core.errors import FlannelAliVpcError


class KubeError(FlannelAliVpcError):
    """A Kubernetes API request failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeNotFound(KubeError):
    """The object does not exist (404)."""


class KubeConflict(KubeError):
    """Optimistic concurrency lost (409): re-read and try again."""


class KubeGone(KubeError):
    """A watch asked for history the server no longer has (410): list again."""


class KubeUnavailable(KubeError):
    """No answer, a 5xx or 429: try again later."""


@dataclass(frozen=True)
class ObjectMeta:
    name: str
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    finalizers: tuple[str, ...] = ()
    deletion_timestamp: str | None = None


@dataclass(frozen=True)
class ServicePort:
    port: int
    protocol: str = "TCP"
    node_port: int = 0
    name: str = ""


@dataclass(frozen=True)
class Service:
    meta: ObjectMeta
    type: str = "ClusterIP"
    ports: tuple[ServicePort, ...] = ()
    load_balancer_class: str | None = None
    external_traffic_policy: str = "Cluster"
    ingress_ips: tuple[str, ...] = ()
    ingress_hostnames: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.meta.namespace}/{self.meta.name}"


@dataclass(frozen=True)
class Taint:
    key: str
    effect: str = ""
    value: str = ""


@dataclass(frozen=True)
class Node:
    meta: ObjectMeta
    provider_id: str = ""
    unschedulable: bool = False
    ready: bool | None = None
    """The Ready condition: True, False/Unknown, or None when the node reports none."""
    taints: tuple[Taint, ...] = ()
    internal_ips: tuple[str, ...] = ()
    pod_cidrs: tuple[str, ...] = ()
    """``spec.podCIDRs`` (or the single ``spec.podCIDR`` of older servers), as written."""
    conditions: Mapping[str, NodeCondition] = field(default_factory=dict)
    """``status.conditions`` by type."""


@dataclass(frozen=True)
class NodeCondition:
    type: str
    status: str
    reason: str = ""
    message: str = ""


NETWORK_UNAVAILABLE = "NetworkUnavailable"


SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""The label that ties an EndpointSlice to its Service."""


@dataclass(frozen=True)
class Endpoint:
    node_name: str = ""
    ready: bool = False
    """``conditions.ready``; a missing value counts as ready, as the API documents."""


@dataclass(frozen=True)
class EndpointSlice:
    """A discovery.k8s.io/v1 EndpointSlice, reduced to what decides SLB backends."""

    meta: ObjectMeta
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.meta.namespace}/{self.meta.name}"

    @property
    def service_key(self) -> str | None:
        """``namespace/name`` of the Service this slice belongs to (None without the label)."""
        name = self.meta.labels.get(SERVICE_NAME_LABEL)
        return f"{self.meta.namespace}/{name}" if name else None


@dataclass(frozen=True)
class Lease:
    name: str
    namespace: str
    holder: str = ""
    duration_seconds: int = 15
    acquire_time: float | None = None
    renew_time: float | None = None
    transitions: int = 0
    resource_version: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """What the holder publishes beside holding it (the route daemon: each table's route state)."""


T = TypeVar("T")
EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True)
class WatchEvent(Generic[T]):
    type: EventType
    object: T


# -- parsing ----------------------------------------------------------------------------------

def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _dict(value).items() if v is not None}


def parse_meta(raw: Mapping[str, Any]) -> ObjectMeta:
    meta = _dict(raw.get("metadata"))
    return ObjectMeta(
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        uid=str(meta.get("uid") or ""),
        resource_version=str(meta.get("resourceVersion") or ""),
        labels=_strings(meta.get("labels")),
        annotations=_strings(meta.get("annotations")),
        finalizers=tuple(str(f) for f in meta.get("finalizers") or ()),
        deletion_timestamp=str(meta["deletionTimestamp"]) if meta.get("deletionTimestamp") else None,
    )


def parse_service(raw: Mapping[str, Any]) -> Service:
    spec = _dict(raw.get("spec"))
    ports = tuple(
        ServicePort(port=int(p.get("port") or 0), protocol=str(p.get("protocol") or "TCP"),
                    node_port=int(p.get("nodePort") or 0), name=str(p.get("name") or ""))
        for p in spec.get("ports") or () if isinstance(p, dict)
    )
    ingress = [i for i in _dict(_dict(raw.get("status")).get("loadBalancer")).get("ingress") or ()
               if isinstance(i, dict)]
    return Service(
        meta=parse_meta(raw),
        type=str(spec.get("type") or "ClusterIP"),
        ports=ports,
        load_balancer_class=str(spec["loadBalancerClass"]) if spec.get("loadBalancerClass") else None,
        external_traffic_policy=str(spec.get("externalTrafficPolicy") or "Cluster"),
        ingress_ips=tuple(str(i["ip"]) for i in ingress if i.get("ip")),
        ingress_hostnames=tuple(str(i["hostname"]) for i in ingress if i.get("hostname")),
    )


def parse_node(raw: Mapping[str, Any]) -> Node:
    spec = _dict(raw.get("spec"))
    status = _dict(raw.get("status"))
    ready: bool | None = None
    for condition in status.get("conditions") or ():
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
    taints = tuple(Taint(key=str(t.get("key") or ""), effect=str(t.get("effect") or ""),
                         value=str(t.get("value") or ""))
                   for t in spec.get("taints") or () if isinstance(t, dict))
    ips = tuple(str(a.get("address")) for a in status.get("addresses") or ()
                if isinstance(a, dict) and a.get("type") == "InternalIP" and a.get("address"))
    cidrs = [str(c) for c in spec.get("podCIDRs") or () if c]
    if not cidrs and spec.get("podCIDR"):
        cidrs = [str(spec["podCIDR"])]
    conditions = {str(c["type"]): NodeCondition(type=str(c["type"]), status=str(c.get("status") or ""),
                                                reason=str(c.get("reason") or ""),
                                                message=str(c.get("message") or ""))
                  for c in status.get("conditions") or () if isinstance(c, dict) and c.get("type")}
    return Node(meta=parse_meta(raw), provider_id=str(spec.get("providerID") or ""),
                unschedulable=bool(spec.get("unschedulable")), ready=ready, taints=taints, internal_ips=ips,
                pod_cidrs=tuple(cidrs), conditions=conditions)


def parse_endpoint_slice(raw: Mapping[str, Any]) -> EndpointSlice:
    endpoints = []
    for item in raw.get("endpoints") or ():
        if not isinstance(item, dict):
            continue
        ready = _dict(item.get("conditions")).get("ready")
        endpoints.append(Endpoint(node_name=str(item.get("nodeName") or ""), ready=ready is None or ready is True))
    return EndpointSlice(meta=parse_meta(raw), endpoints=tuple(endpoints))


MICROTIME = "%Y-%m-%dT%H:%M:%S"


def parse_time(value: Any) -> float | None:
    """A Kubernetes Time or MicroTime (``2024-01-01T00:00:00[.ffffff]Z``) as Unix time."""
    if not value:
        return None
    text = str(value).rstrip("Z").replace("+00:00", "")
    whole, _, fraction = text.partition(".")
    try:
        seconds = calendar.timegm(time.strptime(whole, MICROTIME))
    except ValueError:
        return None
    return seconds + (float("0." + fraction) if fraction.isdigit() else 0.0)


def format_microtime(value: float) -> str:
    return time.strftime(MICROTIME, time.gmtime(value)) + f".{int((value % 1) * 1e6):06d}Z"


def parse_lease(raw: Mapping[str, Any]) -> Lease:
    meta = parse_meta(raw)
    spec = _dict(raw.get("spec"))
    return Lease(
        name=meta.name, namespace=meta.namespace, holder=str(spec.get("holderIdentity") or ""),
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=parse_time(spec.get("acquireTime")), renew_time=parse_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0), resource_version=meta.resource_version,
        annotations=meta.annotations,
    )


def lease_body(lease: Lease) -> dict[str, Any]:
    """The JSON body of a Lease for create and update."""
    spec: dict[str, Any] = {"holderIdentity": lease.holder, "leaseDurationSeconds": lease.duration_seconds,
                            "leaseTransitions": lease.transitions}
    if lease.acquire_time is not None:
        spec["acquireTime"] = format_microtime(lease.acquire_time)
    if lease.renew_time is not None:
        spec["renewTime"] = format_microtime(lease.renew_time)
    metadata: dict[str, Any] = {"name": lease.name, "namespace": lease.namespace}
    if lease.resource_version:
        metadata["resourceVersion"] = lease.resource_version
    if lease.annotations:
        metadata["annotations"] = dict(lease.annotations)
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}
