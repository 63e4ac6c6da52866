"""The kernel's network configuration through netlink: the only module importing pyroute2.

Callers get plain dataclasses; netlink messages and pyroute2 objects never
leave this module.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute

from flannel_alivpc.core.errors import ConfigError

_AF_INET = 2


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    mtu: int
    ipv4: tuple[ipaddress.IPv4Address, ...]

    @property
    def primary_ipv4(self) -> ipaddress.IPv4Address | None:
        return self.ipv4[0] if self.ipv4 else None


def _attr(msg: Any, name: str) -> Any:
    value = msg.get(name)
    return value if value is not None else msg.get_attr(name)


def list_interfaces() -> list[Interface]:
    """Every link with its IPv4 addresses, in index order."""
    with IPRoute() as ipr:
        addresses: dict[int, list[ipaddress.IPv4Address]] = {}
        for addr in ipr.get_addr(family=_AF_INET):
            value = _attr(addr, "IFA_LOCAL") or _attr(addr, "IFA_ADDRESS")
            if value:
                addresses.setdefault(addr["index"], []).append(ipaddress.IPv4Address(value))
        result = []
        for link in ipr.get_links():
            index = link["index"]
            result.append(Interface(name=str(_attr(link, "IFLA_IFNAME")), index=index,
                                    mtu=int(_attr(link, "IFLA_MTU") or 1500),
                                    ipv4=tuple(addresses.get(index, []))))
        return sorted(result, key=lambda i: i.index)


def default_route_interface() -> Interface:
    """The interface of the IPv4 default route (flannel's choice when no --iface is given)."""
    with IPRoute() as ipr:
        routes = ipr.get_default_routes(family=_AF_INET)
        indexes = [_attr(r, "RTA_OIF") for r in routes]
    interfaces = {i.index: i for i in list_interfaces()}
    for index in indexes:
        if index in interfaces:
            return interfaces[index]
    raise ConfigError("no IPv4 default route to pick the external interface from; pass --iface")


def select_interface(names_or_ips: list[str], regexes: list[str]) -> Interface:
    """flannel's --iface/--iface-regex rules: the first match wins, --iface before regexes."""
    interfaces = list_interfaces()
    for wanted in names_or_ips:
        for iface in interfaces:
            if iface.name == wanted or wanted in (str(ip) for ip in iface.ipv4):
                if wanted in (str(ip) for ip in iface.ipv4):
                    # An address names the interface, and that address is the one to use.
                    address = ipaddress.IPv4Address(wanted)
                    return Interface(iface.name, iface.index, iface.mtu,
                                     (address, *(ip for ip in iface.ipv4 if ip != address)))
                if iface.ipv4:
                    return iface
    for pattern in regexes:
        compiled = re.compile(pattern)
        for iface in interfaces:
            if iface.ipv4 and (compiled.search(iface.name) or any(compiled.search(str(ip)) for ip in iface.ipv4)):
                return iface
    if names_or_ips or regexes:
        wanted_text = ", ".join(names_or_ips + [f"/{r}/" for r in regexes])
        raise ConfigError(f"no interface with an IPv4 address matches {wanted_text}; "
                          f"available: {', '.join(i.name for i in interfaces)}")
    return default_route_interface()
