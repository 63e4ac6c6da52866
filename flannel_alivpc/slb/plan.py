"""Desired SLB vs observed SLB -> the smallest set of changes, and the order they are applied in.

``plan_changes`` is pure. ``apply_plan`` runs a plan through ``clients.slb``,
checking ``guard`` (the leader check) before every write, in this order:

1. create the SLB (with its ownership tags and the client token);
2. change its charge type/bandwidth and instance spec;
3. add new backend servers and fix weights -- before any listener starts or
   any server leaves, so traffic always has somewhere to go;
4. delete listeners that are replaced (protocol or NodePort changed, or a
   foreign listener on a port the Service needs) or no longer wanted;
5. create new listeners, then update changed ones;
6. start every listener that is not running (new ones start stopped);
7. remove backend servers that are no longer eligible.

What is never changed:

* a reused SLB (``id`` annotation): its attributes, and its listeners unless
  ``force-override-listeners`` is true; only backend servers marked as ours
  are removed from it;
* listeners whose description does not mark them as this Service's, except a
  listener on a port the Service needs (on our own SLB, or with force-override);
* immutable attributes (address type, network, vSwitch): a difference is a
  ``refusal``, reported, and nothing of the plan is applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flannel_alivpc.clients.slb import SlbClient
from flannel_alivpc.core.loadbalancer import BackendServer, ListenerInfo, LoadBalancerInfo, LoadBalancerState
from flannel_alivpc.slb.desired import BACKEND_PORT_DEFAULT
from flannel_alivpc.slb.model import ListenerSpec, LoadBalancerSpec, owns_listener

ListenerKey = tuple[int, str]


@dataclass(frozen=True)
class Plan:
    create: bool = False
    internet_spec: tuple[str, int | None] | None = None
    """(charge type, bandwidth or None) for ModifyLoadBalancerInternetSpec."""
    instance_spec: str = ""
    add_backends: tuple[BackendServer, ...] = ()
    set_weights: tuple[BackendServer, ...] = ()
    delete_listeners: tuple[ListenerKey, ...] = ()
    create_listeners: tuple[ListenerSpec, ...] = ()
    update_listeners: tuple[ListenerSpec, ...] = ()
    start_listeners: tuple[ListenerKey, ...] = ()
    remove_backends: tuple[str, ...] = ()
    refusals: tuple[str, ...] = ()
    """Differences that cannot be applied; when present, nothing is applied."""

    @property
    def empty(self) -> bool:
        return not (self.create or self.internet_spec or self.instance_spec or self.add_backends
                    or self.set_weights or self.delete_listeners or self.create_listeners
                    or self.update_listeners or self.start_listeners or self.remove_backends)

    def summary(self) -> str:
        parts = []
        if self.create:
            parts.append("create SLB")
        if self.internet_spec:
            parts.append(f"charge {self.internet_spec[0]} bandwidth {self.internet_spec[1]}")
        if self.instance_spec:
            parts.append(f"spec {self.instance_spec}")
        for label, items in (("add backends", [b.server_id for b in self.add_backends]),
                             ("reweigh backends", [b.server_id for b in self.set_weights]),
                             ("delete listeners", [f"{p}/{proto}" for p, proto in self.delete_listeners]),
                             ("create listeners", [f"{x.port}/{x.protocol}" for x in self.create_listeners]),
                             ("update listeners", [f"{x.port}/{x.protocol}" for x in self.update_listeners]),
                             ("start listeners", [f"{p}/{proto}" for p, proto in self.start_listeners]),
                             ("remove backends", list(self.remove_backends))):
            if items:
                parts.append(f"{label} {','.join(items)}")
        return "; ".join(parts) or "no changes"


def _conflict(a: str, b: str) -> bool:
    """Two protocols that cannot share an SLB port: only TCP and UDP can."""
    return (a == "udp") == (b == "udp")


def listener_differs(desired: ListenerSpec, observed: ListenerInfo) -> list[str]:
    """Names of the managed attributes whose observed value is not the desired one."""
    differing = []
    for name, value in desired.attributes.items():
        seen = observed.attributes.get(name, "")
        if name == "HealthCheckConnectPort" and value == BACKEND_PORT_DEFAULT \
                and seen in ("", "0", BACKEND_PORT_DEFAULT, str(observed.backend_port)):
            continue
        if seen != value:
            differing.append(name)
    return differing


@dataclass
class _ListenerChanges:
    deletes: list[ListenerKey]
    creates: list[ListenerSpec]
    updates: list[ListenerSpec]
    starts: list[ListenerKey]


def _plan_listeners(desired: LoadBalancerSpec, observed: LoadBalancerState) -> _ListenerChanges:
    deletes: list[ListenerKey] = []
    creates: list[ListenerSpec] = []
    updates: list[ListenerSpec] = []
    starts: list[ListenerKey] = []
    by_key = {(o.port, o.protocol): o for o in observed.listeners}
    gone: set[ListenerKey] = set()
    for want in desired.listeners:
        for other in observed.listeners:
            key = (other.port, other.protocol)
            if other.port == want.port and key != want.key and _conflict(other.protocol, want.protocol) \
                    and key not in gone:
                deletes.append(key)
                gone.add(key)
        have = by_key.get(want.key)
        if have is None:
            creates.append(want)
            starts.append(want.key)
        elif have.backend_port != want.backend_port:
            # BackendServerPort cannot be changed in place: the listener is made again.
            deletes.append(want.key)
            gone.add(want.key)
            creates.append(want)
            starts.append(want.key)
        else:
            if listener_differs(want, have):
                updates.append(want)
            if have.status != "running":
                starts.append(want.key)
    wanted = {w.key for w in desired.listeners}
    for other in observed.listeners:
        key = (other.port, other.protocol)
        if key not in wanted and key not in gone and owns_listener(
                other.description, desired.service, desired.namespace, desired.cluster_id):
            deletes.append(key)
            gone.add(key)
    return _ListenerChanges(deletes, creates, updates, starts)


def plan_changes(desired: LoadBalancerSpec, observed: LoadBalancerState | None) -> Plan:
    """The changes that turn ``observed`` (``None``: no SLB yet) into ``desired``."""
    description = desired.backend_description
    wanted_backends = [BackendServer(b.server_id, b.weight, description) for b in desired.backends]
    if observed is None:
        if desired.reuse_id:
            return Plan(refusals=(f"the SLB {desired.reuse_id} named by the id annotation does not exist",))
        new = desired.listeners if desired.manages_listeners else ()
        return Plan(create=True, add_backends=tuple(wanted_backends), create_listeners=new,
                    start_listeners=tuple(x.key for x in new))
    info = observed.info
    refusals: list[str] = []
    internet_spec: tuple[str, int | None] | None = None
    instance_spec = ""
    if not desired.reuse_id:
        if info.address_type and info.address_type != desired.address_type:
            refusals.append(f"the address type of {info.load_balancer_id} is {info.address_type} and cannot "
                            f"change to {desired.address_type}: delete and recreate the Service")
        elif desired.vswitch_id and info.vswitch_id and info.vswitch_id != desired.vswitch_id:
            refusals.append(f"the vSwitch of {info.load_balancer_id} is {info.vswitch_id} and cannot change to "
                            f"{desired.vswitch_id}")
        if info.address_type == "internet":
            by_bandwidth = desired.charge_type == "paybybandwidth"
            if info.internet_charge_type != desired.charge_type or \
                    (by_bandwidth and info.bandwidth != desired.bandwidth):
                internet_spec = (desired.charge_type, desired.bandwidth if by_bandwidth else None)
        if desired.spec and info.spec != desired.spec:
            instance_spec = desired.spec
    if refusals:
        return Plan(refusals=tuple(refusals))
    present = {b.server_id: b for b in observed.backends}
    adds = tuple(b for b in wanted_backends if b.server_id not in present)
    weights = tuple(b for b in wanted_backends if b.server_id in present and present[b.server_id].weight != b.weight)
    wanted_ids = {b.server_id for b in wanted_backends}
    removes = tuple(b.server_id for b in observed.backends if b.server_id not in wanted_ids
                    and (not desired.reuse_id or b.description == description))
    listeners = _ListenerChanges([], [], [], [])
    if desired.manages_listeners:
        listeners = _plan_listeners(desired, observed)
    return Plan(
        internet_spec=internet_spec, instance_spec=instance_spec, add_backends=adds, set_weights=weights,
        delete_listeners=tuple(listeners.deletes), create_listeners=tuple(listeners.creates),
        update_listeners=tuple(listeners.updates), start_listeners=tuple(listeners.starts),
        remove_backends=removes,
    )


def _sendable(attributes: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in attributes.items() if v != ""}


def apply_plan(slb: SlbClient, desired: LoadBalancerSpec, plan: Plan, info: LoadBalancerInfo | None,
               guard: Callable[[], None]) -> LoadBalancerInfo:
    """Apply ``plan`` in the documented order; returns the SLB (created if the plan says so).

    Stops at the first failing call (the error propagates); the next pass
    observes what was done and plans the rest.
    """
    if plan.refusals:
        raise ValueError("a plan with refusals is not applied")
    if plan.create:
        guard()
        info = slb.create(name=desired.name, client_token=desired.client_token, tags=desired.tags,
                          address_type=desired.address_type,
                          charge_type=desired.charge_type if desired.address_type == "internet" else None,
                          bandwidth=desired.bandwidth if desired.address_type == "internet" else None,
                          spec=desired.spec or None, vswitch_id=desired.vswitch_id or None)
    if info is None:
        raise ValueError("no SLB to apply the plan to")
    lb = info.load_balancer_id
    if plan.internet_spec:
        guard()
        slb.modify_internet_spec(lb, charge_type=plan.internet_spec[0], bandwidth=plan.internet_spec[1])
    if plan.instance_spec:
        guard()
        slb.modify_spec(lb, plan.instance_spec)
    if plan.add_backends:
        guard()
        slb.add_backends(lb, plan.add_backends)
    if plan.set_weights:
        guard()
        slb.set_backend_weights(lb, plan.set_weights)
    for port, protocol in plan.delete_listeners:
        guard()
        slb.delete_listener(lb, port=port, protocol=protocol)
    for listener in plan.create_listeners:
        guard()
        slb.create_listener(lb, protocol=listener.protocol, port=listener.port, backend_port=listener.backend_port,
                            attributes=_sendable(dict(listener.attributes)))
    for listener in plan.update_listeners:
        guard()
        slb.set_listener(lb, protocol=listener.protocol, port=listener.port,
                         attributes=_sendable(dict(listener.attributes)))
    for port, protocol in plan.start_listeners:
        guard()
        slb.start_listener(lb, port=port, protocol=protocol)
    if plan.remove_backends:
        guard()
        slb.remove_backends(lb, plan.remove_backends)
    return info
