"""flannel's VXLAN backend as data: settings, peers, kernel entries and the plan that reconciles them.

Pure: the daemon's VXLAN backend (``flannel_alivpc.routed.vxlan``) feeds it
leases and what it observed in the kernel, and applies the plan.

flannel's conventions (vxlan.go, vxlan_network.go, device.go), kept so that a
stock flanneld vxlan node and this daemon program each other correctly:

* device ``flannel.<VNI>``, VNI 1 and UDP port 8472 unless the Backend config
  says otherwise, learning as ``Learning`` says (off by default), MTU =
  (Backend MTU or interface MTU) - 50;
* the lease publishes ``BackendType`` "vxlan" and ``BackendData``
  ``{"VNI": <vni>, "VtepMAC": "<mac>"}``;
* per remote lease, in this order: a permanent neighbour entry (the subnet's
  network address -> the peer's VtepMAC), a permanent FDB entry (VtepMAC ->
  the peer's PublicIP) and an onlink route (subnet via its network address on
  the device); removal undoes them in reverse;
* with ``DirectRouting``, a peer whose PublicIP the kernel reaches without a
  gateway (same L2 subnet as the external interface: ``ip route get`` shows
  no ``via``) gets only a plain route, subnet via its PublicIP, and no
  neighbour or FDB entry; every other peer goes through the device.

Ownership: the device belongs to this daemon, so every neighbour, FDB entry
and route on it is ours to change, within the flannel Network. Direct routes
live on the external interface, which is not ours: they carry
``DIRECT_ROUTE_PROTOCOL`` and only routes with that mark are ever deleted. Two rules keep
bad input from causing damage: nothing is deleted before the first complete
lease snapshot, and the entries of a subnet whose lease is malformed or
unusable (no VtepMAC, another VNI) are kept as they are.
"""

from __future__ import annotations

import functools
import ipaddress
import random
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.core.network import IPv4Network, Lease, NetworkConfig

IPv4Address = ipaddress.IPv4Address

VXLAN_BACKEND_TYPE = "vxlan"
DEFAULT_VNI = 1
DEFAULT_PORT = 8472
"""The kernel's default VXLAN port, which flannel relies on when Port is unset."""
ENCAP_OVERHEAD = 50
"""Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers."""
MAX_VNI = (1 << 24) - 1
DIRECT_ROUTE_PROTOCOL = 76
"""The rtnetlink protocol number on our DirectRouting routes: the mark that proves they are ours."""


def device_name(vni: int) -> str:
    return f"flannel.{vni}"


@dataclass(frozen=True)
class VxlanSettings:
    """The VXLAN keys of the network config's Backend object, with flannel's defaults."""

    vni: int = DEFAULT_VNI
    port: int = DEFAULT_PORT
    mtu: int | None = None
    """Base MTU from the config; the device gets this (or the interface's MTU) minus 50."""
    gbp: bool = False
    learning: bool = False
    """flannel's ``Learning``: the device learns remote MACs too; the static entries are written all the same."""
    direct_routing: bool = False

    @property
    def device(self) -> str:
        return device_name(self.vni)

    def device_mtu(self, iface_mtu: int) -> int:
        return (self.mtu or iface_mtu) - ENCAP_OVERHEAD


def _int_key(config: NetworkConfig, name: str, default: int | None, low: int, high: int) -> int | None:
    value = config.backend_value(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f'network config: Backend "{name}" must be an integer, got {value!r}')
    if not low <= value <= high:
        raise ConfigError(f'network config: Backend "{name}" {value} is out of range {low}..{high}')
    return value


def _bool_key(config: NetworkConfig, name: str) -> bool:
    value = config.backend_value(name)
    if value is None:  # absent, or null, which Go's decoder leaves at false
        return False
    if not isinstance(value, bool):
        raise ConfigError(f'network config: Backend "{name}" must be true or false, got {value!r}')
    return value


def parse_vxlan_settings(config: NetworkConfig) -> VxlanSettings:
    """VNI, Port, MTU, GBP, Learning, DirectRouting from the Backend object (keys matched case-insensitively)."""
    vni = _int_key(config, "VNI", DEFAULT_VNI, 0, MAX_VNI)
    port = _int_key(config, "Port", 0, 0, 65535)
    mtu = _int_key(config, "MTU", None, ENCAP_OVERHEAD + 68, 65535)
    return VxlanSettings(vni=vni if vni is not None else DEFAULT_VNI, port=port or DEFAULT_PORT,
                         mtu=mtu or None, gbp=_bool_key(config, "GBP"), learning=_bool_key(config, "Learning"),
                         direct_routing=_bool_key(config, "DirectRouting"))


def random_vtep_mac(rng: random.Random | None = None) -> str:
    """A random locally administered unicast MAC, as flannel generates one before creating the device."""
    raw = bytearray((rng or random.SystemRandom()).getrandbits(8) for _ in range(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def parse_mac(value: Any) -> str | None:
    """A unicast MAC in canonical form (lower case, colons), or None if ``value`` is not one."""
    if not isinstance(value, str):
        return None
    return _parse_mac_text(value)


@functools.lru_cache(maxsize=8192)
def _parse_mac_text(value: str) -> str | None:
    text = value.strip().lower().replace("-", ":")
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        return None
    try:
        raw = bytes.fromhex("".join(parts))
    except ValueError:
        return None
    if raw[0] & 0x01 or raw == bytes(6):
        return None  # multicast/broadcast or all-zero: never a VTEP
    return text


def vxlan_backend_data(vni: int, vtep_mac: str) -> dict[str, Any]:
    """flannel's vxlan BackendData, field names and order as Go writes them."""
    return {"VNI": vni, "VtepMAC": vtep_mac}


# -- peers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VxlanPeer:
    subnet: IPv4Network
    public_ip: IPv4Address
    vtep_mac: str

    @property
    def gateway(self) -> IPv4Address:
        """The subnet's network address: the neighbour entry's IP and the route's gateway."""
        return self.subnet.network_address


def vtep_of(lease: Lease, vni: int) -> VxlanPeer | str:
    """The VXLAN peer a lease describes, or why it cannot be one."""
    mac_value = lease.attrs.backend_field("VtepMAC")
    if mac_value is None:
        return "publishes no VtepMAC"
    mac = parse_mac(mac_value)
    if mac is None:
        return f"VtepMAC {mac_value!r} is not a unicast MAC address"
    lease_vni = lease.attrs.backend_field("VNI")
    if lease_vni is not None and (isinstance(lease_vni, bool) or lease_vni != vni):
        return f"uses VNI {lease_vni!r}, this node VNI {vni}"
    return VxlanPeer(subnet=lease.subnet, public_ip=lease.attrs.public_ip, vtep_mac=mac)


@dataclass(frozen=True)
class PeerSet:
    peers: dict[IPv4Network, VxlanPeer]
    unusable: dict[IPv4Network, str] = field(default_factory=dict)
    """Leases that need VXLAN but cannot get it, with the reason: their entries are kept, never deleted."""


def select_peers(leases: Iterable[Lease], *, own_subnet: IPv4Network | None, network: IPv4Network, vni: int,
                 wanted: Callable[[Lease], bool],
                 decode: Callable[[Lease, int], VxlanPeer | str] = vtep_of) -> PeerSet:
    """The remote leases to reach over VXLAN: ``wanted`` ones inside the Network, except our own.

    Two leases announcing the same VtepMAC cannot both be reached (an FDB entry
    maps a MAC to one VTEP): the lower subnet keeps it, the other is unusable.
    ``decode`` turns a lease into a peer (``vtep_of``; callers may memoise it).
    """
    peers: dict[IPv4Network, VxlanPeer] = {}
    unusable: dict[IPv4Network, str] = {}
    owner_of_mac: dict[str, IPv4Network] = {}
    low = int(network.network_address)
    high = int(network.broadcast_address)
    for lease in sorted(leases, key=lambda item: int(item.subnet.network_address)):
        subnet = lease.subnet
        inside = low <= int(subnet.network_address) and int(subnet.broadcast_address) <= high
        if subnet == own_subnet or not inside or not wanted(lease):
            continue
        peer = decode(lease, vni)
        if isinstance(peer, str):
            unusable[lease.subnet] = peer
            continue
        holder = owner_of_mac.get(peer.vtep_mac)
        if holder is not None:
            unusable[lease.subnet] = f"VtepMAC {peer.vtep_mac} is also announced by {holder}"
            continue
        owner_of_mac[peer.vtep_mac] = lease.subnet
        peers[lease.subnet] = peer
    return PeerSet(peers, unusable)


# -- kernel entries and the plan ---------------------------------------------------------------


@dataclass(frozen=True)
class NeighbourEntry:
    ip: IPv4Address
    mac: str | None
    permanent: bool = True


@dataclass(frozen=True)
class FdbKey:
    mac: str
    dst: IPv4Address


@dataclass(frozen=True)
class PeerRoute:
    """A route to a peer's subnet: onlink through the device (gateway = the subnet's network address), or,
    with DirectRouting, a plain route via the peer's PublicIP (``onlink`` False, off the device)."""

    dst: IPv4Network
    gateway: IPv4Address | None
    onlink: bool = True

    @property
    def direct(self) -> bool:
        return not self.onlink


@dataclass(frozen=True)
class VxlanObservation:
    """What the device carries (neighbours by IP, FDB entries, routes by destination), plus our direct routes."""

    neighbours: Mapping[IPv4Address, NeighbourEntry]
    fdb: frozenset[FdbKey]
    routes: Mapping[IPv4Network, PeerRoute]


EMPTY_OBSERVATION = VxlanObservation({}, frozenset(), {})


@dataclass(frozen=True)
class PeerChange:
    subnet: IPv4Network
    action: str  # "add" | "update" | "remove"
    reason: str


@dataclass(frozen=True)
class VxlanPlan:
    """Changes in the order they must be applied: neighbours, FDB, routes; then deletes reversed."""

    neighbours: tuple[tuple[IPv4Network, NeighbourEntry], ...] = ()
    fdb: tuple[tuple[IPv4Network, FdbKey], ...] = ()
    routes: tuple[PeerRoute, ...] = ()
    delete_routes: tuple[PeerRoute, ...] = ()
    delete_fdb: tuple[FdbKey, ...] = ()
    delete_neighbours: tuple[NeighbourEntry, ...] = ()
    changes: tuple[PeerChange, ...] = ()
    kept: tuple[IPv4Network, ...] = ()
    """Subnets with entries but no usable lease, left alone (snapshot incomplete, lease malformed or unusable)."""

    @property
    def empty(self) -> bool:
        return not (self.neighbours or self.fdb or self.routes or self.delete_routes or self.delete_fdb
                    or self.delete_neighbours)


def _subnet_of(ip: IPv4Address, prefixlen: int) -> IPv4Network:
    return IPv4Network((ip, prefixlen), strict=False)


def plan_vxlan(
    *,
    peers: Mapping[IPv4Network, VxlanPeer],
    observed: VxlanObservation,
    network: IPv4Network,
    subnet_len: int,
    in_sync: bool,
    protected: Collection[IPv4Network] = (),
    direct: Collection[IPv4Network] = (),
) -> VxlanPlan:
    """Diff the desired peers against the device's entries and our direct routes (pure).

    ``direct`` peers (DirectRouting, PublicIP on-link) get a route via their
    PublicIP and no neighbour or FDB entry; the route replace that switches a
    peer between the two kinds is the one write that changes its path, so it
    is never without a route. ``protected`` subnets (malformed or unusable
    leases) keep whatever they have; before the first complete snapshot
    (``in_sync`` False) nothing is deleted at all.
    """
    protected_set = set(protected)

    def is_protected(subnet: IPv4Network) -> bool:
        return subnet in protected_set or any(subnet.overlaps(p) for p in protected_set)

    neighbours: list[tuple[IPv4Network, NeighbourEntry]] = []
    fdb: list[tuple[IPv4Network, FdbKey]] = []
    routes: list[PeerRoute] = []
    changes: list[PeerChange] = []
    desired_fdb: set[FdbKey] = set()
    desired_ips: set[IPv4Address] = set()
    direct_set = set(direct)
    for subnet in sorted(peers, key=lambda s: int(s.network_address)):
        peer = peers[subnet]
        current = observed.neighbours.get(peer.gateway)
        current_route = observed.routes.get(subnet)
        had_any = current is not None or current_route is not None
        if subnet in direct_set:
            route = PeerRoute(subnet, peer.public_ip, onlink=False)
            if current_route != route:
                routes.append(route)
                if current_route is None and current is None:
                    changes.append(PeerChange(subnet, "add", f"lease present, on-link: direct route via "
                                                             f"{peer.public_ip}"))
                else:
                    changes.append(PeerChange(subnet, "update", f"now reached directly via {peer.public_ip}"))
            continue
        neighbour = NeighbourEntry(peer.gateway, peer.vtep_mac)
        forward = FdbKey(peer.vtep_mac, peer.public_ip)
        route = PeerRoute(subnet, peer.gateway)
        desired_fdb.add(forward)
        desired_ips.add(peer.gateway)
        why: list[str] = []
        touched = False
        if current_route is not None and current_route.direct:
            why.append(f"no longer on-link: through the device instead of directly via {current_route.gateway}")
        if current != neighbour:
            neighbours.append((subnet, neighbour))
            touched = True
            if current is not None and current.mac != peer.vtep_mac:
                why.append(f"VtepMAC {current.mac} -> {peer.vtep_mac}")
        if forward not in observed.fdb:
            fdb.append((subnet, forward))
            touched = True
            old = sorted(str(k.dst) for k in observed.fdb if k.mac == peer.vtep_mac)
            if old:
                why.append(f"PublicIP {', '.join(old)} -> {peer.public_ip}")
        if current_route != route:
            routes.append(route)
            touched = True
        if touched and not had_any:
            changes.append(PeerChange(subnet, "add", "lease present, entries missing"))
        elif touched:
            changes.append(PeerChange(subnet, "update", "; ".join(why) or "entries incomplete, repaired"))

    delete_routes: list[PeerRoute] = []
    delete_fdb: list[FdbKey] = []
    delete_neighbours: list[NeighbourEntry] = []
    kept: set[IPv4Network] = set()
    removed: set[IPv4Network] = set()
    protected_macs: set[str] = set()
    for ip, entry in observed.neighbours.items():
        if ip in desired_ips or ip not in network:
            continue
        subnet = _subnet_of(ip, subnet_len)
        if not in_sync or is_protected(subnet):
            kept.add(subnet)
            if entry.mac:
                protected_macs.add(entry.mac)
            continue
        delete_neighbours.append(entry)
        removed.add(subnet)
    for dst, route in observed.routes.items():
        if dst in peers or dst.network_address not in network or dst.prefixlen < network.prefixlen:
            continue
        if not in_sync or is_protected(dst):
            kept.add(dst)
            continue
        delete_routes.append(route)
        removed.add(dst)
    if in_sync:
        for key in sorted(observed.fdb, key=lambda k: (k.mac, int(k.dst))):
            if key not in desired_fdb and key.mac not in protected_macs:
                delete_fdb.append(key)
    for subnet in sorted(removed - set(peers), key=lambda s: int(s.network_address)):
        changes.append(PeerChange(subnet, "remove", "no lease for this subnet any more"))
    return VxlanPlan(
        neighbours=tuple(neighbours), fdb=tuple(fdb), routes=tuple(routes),
        delete_routes=tuple(sorted(delete_routes, key=lambda r: int(r.dst.network_address))),
        delete_fdb=tuple(delete_fdb),
        delete_neighbours=tuple(sorted(delete_neighbours, key=lambda n: int(n.ip))),
        changes=tuple(changes), kept=tuple(sorted(kept, key=lambda s: int(s.network_address))),
    )
