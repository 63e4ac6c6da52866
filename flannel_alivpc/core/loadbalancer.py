"""Typed views of Classic Load Balancer (SLB) resources, as observed through the API.

Built by ``flannel_alivpc.clients.slb`` from API answers; the SLB controller's
planner compares them with what it wants. Listener attributes are kept under
the names ``Describe*ListenerAttribute`` uses (``HealthCheck``,
``HealthCheckInterval``, ...), with every value as a string, so a desired value
and an observed one compare equal exactly when the cloud holds what we asked
for whatever JSON type the API chose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoadBalancerInfo:
    load_balancer_id: str
    name: str = ""
    address: str = ""
    address_type: str = ""
    """``internet`` or ``intranet``."""
    network_type: str = ""
    """``vpc`` or ``classic``."""
    vpc_id: str = ""
    vswitch_id: str = ""
    internet_charge_type: str = ""
    bandwidth: int = 0
    spec: str = ""
    status: str = ""
    delete_protection: str = "off"
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendServer:
    server_id: str
    weight: int = 100
    description: str = ""


@dataclass(frozen=True)
class ListenerInfo:
    port: int
    protocol: str
    """``tcp``, ``udp``, ``http`` or ``https``."""
    backend_port: int
    status: str = ""
    """``running``, ``stopped``, ``starting``, ``configuring``, ``stopping``."""
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return self.attributes.get("Description", "")


@dataclass(frozen=True)
class LoadBalancerState:
    """One load balancer as the cloud holds it: attributes, listeners, backend servers."""

    info: LoadBalancerInfo
    listeners: tuple[ListenerInfo, ...] = ()
    backends: tuple[BackendServer, ...] = ()
