"""What one Service's SLB should look like: a pure function of the Service, its annotations, the Nodes
and (``externalTrafficPolicy: Local``) the Service's ready endpoints per node.

No I/O here. The controller resolves what needs the cloud (instance ids of
nodes without a usable providerID, the default vSwitch) and passes it in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from flannel_alivpc.core.kube import EndpointSlice, Node, Service
from flannel_alivpc.slb.annotations import PREFIX, Options, Problem
from flannel_alivpc.slb.model import (
    TAG_SERVICE,
    BackendSpec,
    ListenerSpec,
    LoadBalancerSpec,
    listener_description,
    load_balancer_name,
    ownership_tags,
)

EXCLUDE_LABELS = (
    "node-role.kubernetes.io/master",
    "node.kubernetes.io/exclude-from-external-load-balancers",
    "alpha.service-controller.kubernetes.io/exclude-balancer",
)
AUTOSCALER_TAINT = "ToBeDeletedByClusterAutoscaler"
DEFAULT_WEIGHT = 100
MAX_WEIGHT = 100
BACKEND_PORT_DEFAULT = "-520"
"""HealthCheckConnectPort meaning "the backend server port"."""


def is_load_balancer(service: Service) -> bool:
    """A Service this controller handles: type LoadBalancer with no other load balancer class."""
    return (service.type == "LoadBalancer" and service.load_balancer_class is None
            and not service.meta.annotations.get("service.beta.kubernetes.io/class"))


def eligible(node: Node, options: Options) -> bool:
    """Whether the node's instance should receive the Service's traffic."""
    labels = node.meta.labels
    if any(labels.get(key) != value for key, value in options.backend_labels.items()):
        return False
    if any(label in labels for label in EXCLUDE_LABELS) or labels.get("type") == "virtual-kubelet":
        return False
    if any(taint.key == AUTOSCALER_TAINT for taint in node.taints):
        return False
    if options.remove_unscheduled and node.unschedulable:
        return False
    return node.ready is True


def instance_from_provider_id(provider_id: str, region: str) -> str | None:
    """The ECS instance id in ``<region>.<instance-id>`` (``alicloud://`` prefix allowed).

    ``None`` when the providerID is empty, malformed, or names another region.
    """
    text = provider_id.strip()
    if text.startswith("alicloud://"):
        text = text[len("alicloud://"):]
    node_region, dot, instance = text.rpartition(".")
    if not dot:
        return None
    if not instance.startswith("i-") or (region and node_region != region):
        return None
    return instance


def is_local(service: Service) -> bool:
    """``externalTrafficPolicy: Local``: only nodes running ready endpoints receive traffic."""
    return service.external_traffic_policy == "Local"


def ready_endpoints_by_node(slices: Iterable[EndpointSlice], service_key: str) -> dict[str, int]:
    """Node name -> number of ready endpoints of the Service ``namespace/name`` on it."""
    counts: dict[str, int] = {}
    for endpoint_slice in slices:
        if endpoint_slice.service_key != service_key:
            continue
        for endpoint in endpoint_slice.endpoints:
            if endpoint.ready and endpoint.node_name:
                counts[endpoint.node_name] = counts.get(endpoint.node_name, 0) + 1
    return counts


def local_weight(endpoints: int) -> int:
    """The backend weight of a node running ``endpoints`` ready endpoints (1..100)."""
    return max(1, min(MAX_WEIGHT, endpoints))


@dataclass(frozen=True)
class BackendChoice:
    backends: tuple[BackendSpec, ...]
    unresolved: tuple[str, ...]
    """Eligible nodes whose instance is unknown (names)."""

    @property
    def instance_ids(self) -> tuple[str, ...]:
        return tuple(b.server_id for b in self.backends)


def select_backends(nodes: Iterable[Node], options: Options, region: str,
                    instance_by_ip: Callable[[str], str | None],
                    endpoints: Mapping[str, int] | None = None) -> BackendChoice:
    """The eligible nodes' instances (from providerID, else looked up by InternalIP) and their weights.

    ``endpoints`` (node name -> ready endpoints) is given for ``externalTrafficPolicy: Local``:
    then only eligible nodes with at least one ready endpoint are backends, weighted by that
    count (1..100). Without it (``Cluster``) every eligible node is a backend of weight 100.
    """
    found: dict[str, int] = {}
    unresolved: list[str] = []
    for node in sorted(nodes, key=lambda n: n.meta.name):
        if not eligible(node, options):
            continue
        weight = DEFAULT_WEIGHT
        if endpoints is not None:
            count = endpoints.get(node.meta.name, 0)
            if count <= 0:
                continue
            weight = local_weight(count)
        instance = instance_from_provider_id(node.provider_id, region)
        if instance is None and not node.provider_id:
            instance = next((i for i in map(instance_by_ip, node.internal_ips) if i), None)
        if instance is None:
            unresolved.append(node.meta.name)
        elif instance not in found:
            found[instance] = weight
    return BackendChoice(tuple(BackendSpec(i, w) for i, w in found.items()), tuple(unresolved))


def listener_attributes(protocol: str, options: Options, *, description: str) -> dict[str, str]:
    """Every attribute the controller manages on a listener, under its Describe name."""
    health = options.health
    listener_bandwidth = options.bandwidth if options.charge_type == "paybybandwidth" else -1
    attrs: dict[str, str] = {"Description": description, "Scheduler": options.scheduler,
                             "Bandwidth": str(listener_bandwidth), "AclStatus": options.acl_status}
    if options.acl_status == "on":
        attrs.update(AclId=options.acl_id, AclType=options.acl_type)
    thresholds = {"HealthyThreshold": str(health.healthy_threshold),
                  "UnhealthyThreshold": str(health.unhealthy_threshold),
                  "HealthCheckInterval": str(health.interval),
                  "HealthCheckConnectPort": str(health.connect_port) if health.connect_port else BACKEND_PORT_DEFAULT}
    if protocol in ("tcp", "udp"):
        attrs.update(PersistenceTimeout=str(options.persistence_timeout), HealthCheck=health.switch)
        if health.switch == "on":
            attrs.update(thresholds, HealthCheckConnectTimeout=str(health.connect_timeout))
            if protocol == "tcp":
                attrs["HealthCheckType"] = health.type
                if health.type == "http":
                    attrs.update(HealthCheckURI=health.uri, HealthCheckHttpCode=health.http_code)
                    if health.domain:
                        attrs["HealthCheckDomain"] = health.domain
        return attrs
    attrs.update(HealthCheck=health.flag, StickySession=options.sticky_session)
    if options.sticky_session == "on":
        attrs["StickySessionType"] = options.sticky_session_type
        if options.sticky_session_type == "insert":
            attrs["CookieTimeout"] = str(options.cookie_timeout)
        else:
            attrs["Cookie"] = options.cookie
    if health.flag == "on":
        attrs.update(thresholds, HealthCheckURI=health.uri, HealthCheckTimeout=str(health.timeout),
                     HealthCheckHttpCode=health.http_code)
        if health.domain:
            attrs["HealthCheckDomain"] = health.domain
    if protocol == "https":
        attrs["ServerCertificateId"] = options.cert_id
    return attrs


def desired_spec(service: Service, options: Options, *, backends: Iterable[BackendSpec | str], cluster_id: str,
                 region: str, default_vswitch: str = "") -> tuple[LoadBalancerSpec | None, list[Problem]]:
    """The SLB for ``service``, or ``None`` and the problems that prevent computing it."""
    problems: list[Problem] = []
    meta = service.meta
    listeners: list[ListenerSpec] = []
    for port in sorted(service.ports, key=lambda p: (p.port, p.protocol)):
        protocol = options.protocol_port.get(port.port) or port.protocol.lower()
        if protocol not in ("tcp", "udp", "http", "https"):
            problems.append(Problem("spec.ports", f"{port.port}/{port.protocol}",
                                    "the SLB supports TCP and UDP ports only"))
            continue
        if protocol == "https" and not options.cert_id:
            problems.append(Problem(PREFIX + "cert-id", "", f"is required for the https listener on port {port.port}"))
            continue
        if not port.node_port:
            problems.append(Problem("spec.ports", str(port.port), "has no nodePort yet"))
            continue
        description = listener_description(port.port, meta.name, meta.namespace, cluster_id)
        listeners.append(ListenerSpec(port=port.port, protocol=protocol, backend_port=port.node_port,
                                      attributes=listener_attributes(protocol, options, description=description)))
    # TCP and UDP may share a port on the SLB; nothing else may.
    keys = [(listener.port, listener.protocol == "udp") for listener in listeners]
    if len(set(keys)) != len(keys):
        problems.append(Problem("spec.ports", ",".join(str(port) for port, _ in keys),
                                "one SLB port cannot carry two TCP/HTTP/HTTPS listeners"))
    vswitch = ""
    network_type = options.network_type
    if options.address_type == "intranet" and network_type != "classic" and not options.reuse_id:
        vswitch = options.vswitch_id or default_vswitch
        if not vswitch:
            problems.append(Problem(PREFIX + "vswitch-id", "", "an intranet VPC SLB needs a vSwitch: set this "
                                    "annotation or the controller's --vswitch-id"))
    if problems:
        return None, problems
    tags: dict[str, str] = {**ownership_tags(uid=meta.uid, cluster_id=cluster_id),
                            TAG_SERVICE: f"{meta.namespace}/{meta.name}"}
    return LoadBalancerSpec(
        service=meta.name, namespace=meta.namespace, uid=meta.uid, cluster_id=cluster_id,
        region=options.region or region, name=load_balancer_name(meta.uid),
        client_token=f"k8s-{meta.uid}", tags=tags, reuse_id=options.reuse_id,
        force_override=options.force_override, address_type=options.address_type, network_type=network_type,
        vswitch_id=vswitch, charge_type=options.charge_type, bandwidth=options.bandwidth, spec=options.spec,
        listeners=tuple(listeners),
        backends=tuple(b if isinstance(b, BackendSpec) else BackendSpec(b) for b in backends),
    ), []
