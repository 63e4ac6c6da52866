"""This node's VXLAN data plane: the ``flannel.<VNI>`` device and one neighbour, FDB entry and route per peer.

Which peers: on the classic network and with ``Backend.Type`` "vxlan", every
remote lease; on a VPC node, only the leases the VPC route table does not
carry (classic nodes, stock flanneld vxlan nodes, other VPCs, and the
overflow of a full table), or every peer while the node itself is in the
overflow (the daemon's ``wanted``). A VPC node creates the device lazily,
when the first such peer appears, so a VPC-only cluster's nodes keep an
untouched kernel.

One reconcile pass (run by ``ReconcileLoop``):

1. desired peers from the lease snapshot (pure, ``core.vxlan.select_peers``);
2. the device: created if missing, recreated if incompatible (other VNI,
   port, local address, lower device, GBP or learning), MTU and state and
   MAC corrected; the lease's network address as /32 on it;
3. observe: a full dump of the device's neighbours, FDB entries and routes
   (and of our DirectRouting routes) on the first pass, after any failure or
   device change, and at every resync; in between, the last dump updated
   with this daemon's own successful writes (so a lease change costs three
   writes, not three dumps). With DirectRouting, which peers are on-link is
   asked of the kernel (``ip route get <PublicIP>``, batched) for new
   PublicIPs, and for all of them again on every full observation;
4. plan (pure, ``core.vxlan.plan_vxlan``) and apply in flannel's order:
   neighbours, FDB entries, routes, in batches; a peer whose FDB entry or
   route could not be written has its fresh entries undone; deletes go
   routes, FDB, neighbours, each tried independently.

Nothing is deleted before the first complete lease snapshot, so entries left
from before a restart stay until the daemon knows which leases are gone, and
are removed on that first full pass. The device is never removed on exit
(flannel does not either): pods keep their connectivity across restarts.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

from flannel_alivpc.clients.netlink import (
    NUD_PERMANENT,
    AlreadyExists,
    FdbOp,
    Interface,
    Link,
    NeighbourOp,
    Netlink,
    NetlinkError,
    Op,
    RouteOp,
    VxlanDeviceSpec,
)
from flannel_alivpc.clients.netns import NamespaceError
from flannel_alivpc.core.network import IPv4Network, Lease
from flannel_alivpc.core.vxlan import (
    DIRECT_ROUTE_PROTOCOL,
    FdbKey,
    NeighbourEntry,
    PeerRoute,
    PeerSet,
    VxlanObservation,
    VxlanPeer,
    VxlanPlan,
    VxlanSettings,
    parse_mac,
    plan_vxlan,
    random_vtep_mac,
    select_peers,
    vtep_of,
)
from flannel_alivpc.routed.leases import LeaseSnapshot

log = logging.getLogger(__name__)

_ZERO_MAC = "00:00:00:00:00:00"


class VxlanDeviceError(NetlinkError):
    """The VXLAN device could not be brought into the required shape."""


def choose_vtep_mac(netlink: Netlink, settings: VxlanSettings, previous: str | None) -> str:
    """The MAC for the device: the existing device's, else the one published before, else a new random one.

    flannel generates the MAC before creating the device (systemd would
    otherwise rewrite it) and keeps an existing device's; reusing the
    published one too keeps it stable across restarts even when the device is
    gone (a VPC node creates it lazily, or someone deleted it).
    """
    existing = netlink.link(settings.device)
    if existing is not None and existing.kind == "vxlan":
        mac = parse_mac(existing.mac)
        if mac:
            return mac
    return previous or random_vtep_mac()


def incompatibility(link: Link, spec: VxlanDeviceSpec) -> str | None:
    """Why an existing link cannot serve as the device (flannel's vxlanLinksIncompat, plus learning)."""
    if link.kind != "vxlan" or link.vxlan is None:
        return f"it is a {link.kind or 'non-vxlan'} link"
    info = link.vxlan
    if info.vni != spec.vni:
        return f"VNI {info.vni}, want {spec.vni}"
    if info.port and spec.port and info.port != spec.port:
        return f"port {info.port}, want {spec.port}"
    if info.local and spec.local and info.local != spec.local:
        return f"local address {info.local}, want {spec.local}"
    if info.link and spec.link_index and info.link != spec.link_index:
        return f"lower device #{info.link}, want #{spec.link_index}"
    if info.gbp != spec.gbp:
        return f"GBP {'on' if info.gbp else 'off'}, want {'on' if spec.gbp else 'off'}"
    if info.learning != spec.learning:
        return f"learning {'on' if info.learning else 'off'}, want {'on' if spec.learning else 'off'}"
    return None


@dataclass
class VxlanReport:
    """What the last pass saw and did, for /healthz, /metrics and logs."""

    device: str
    ifindex: int | None = None
    peers: int = 0
    unusable: dict[IPv4Network, str] = field(default_factory=dict)
    direct: int = 0
    """Peers reached by a direct route (DirectRouting, PublicIP on-link)."""
    kept: int = 0
    changes: int = 0
    failures: list[str] = field(default_factory=list)
    full_observations: int = 0
    programmed: frozenset[IPv4Network] = frozenset()
    """The peers whose neighbour, FDB entry and route (or direct route) are in the kernel after this pass."""


class VxlanBackend:
    """Reconciles the device and its entries with the leases; ``reconcile`` is the ReconcileLoop pass."""

    def __init__(
        self,
        *,
        netlink: Netlink,
        settings: VxlanSettings,
        iface: Interface,
        network: IPv4Network,
        subnet_len: int,
        snapshot: Callable[[], LeaseSnapshot],
        wanted: Callable[[Lease], bool],
        vtep_mac: str,
        eager: bool,
        full_resync: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.netlink = netlink
        self.settings = settings
        self.iface = iface
        self.network = network
        self.subnet_len = subnet_len
        self._snapshot = snapshot
        self._wanted = wanted
        self.vtep_mac = vtep_mac
        self.eager = eager
        self.full_resync = full_resync
        self._clock = clock
        self.own_subnet: IPv4Network | None = None
        self._observed: VxlanObservation | None = None
        self._observed_index: int | None = None
        self._last_full = 0.0
        self._address_ok_for: tuple[int, IPv4Network] | None = None
        self._warned: dict[IPv4Network, str] = {}
        self._decoded: dict[IPv4Network, tuple[Lease, VxlanPeer | str]] = {}
        self._on_link: dict[IPv4Address, bool] = {}
        """DirectRouting: whether the kernel reaches a PublicIP without a gateway (refreshed on full passes)."""
        self.report = VxlanReport(settings.device)

    # -- the device ---------------------------------------------------------------------------

    @property
    def spec(self) -> VxlanDeviceSpec:
        return VxlanDeviceSpec(name=self.settings.device, vni=self.settings.vni, port=self.settings.port,
                               local=self.iface.primary_ipv4, link_index=self.iface.index, mac=self.vtep_mac,
                               mtu=self.settings.device_mtu(self.iface.mtu), learning=self.settings.learning,
                               gbp=self.settings.gbp)

    def ensure_device(self) -> Link:
        """The device as the spec says, created or repaired; its address once the lease is known."""
        spec = self.spec
        if spec.local is not None and spec.local.is_loopback:
            # No peer can reach a VTEP on a loopback address; refuse rather than program a dead path.
            raise VxlanDeviceError(f"cannot build {spec.name} on {self.iface.name} ({spec.local}): VXLAN peers "
                                   "cannot reach a loopback address; pick the node's external interface with "
                                   "--iface", operation="ensure device")
        link = self.netlink.link(spec.name)
        if link is not None:
            reason = incompatibility(link, spec)
            if reason:
                log.warning("%s already exists with an incompatible configuration (%s); recreating it",
                            spec.name, reason)
                self.netlink.delete_link(spec.name)
                link = None
        if link is None:
            try:
                link = self.netlink.create_vxlan(spec)
            except AlreadyExists:
                link = self.netlink.link(spec.name)
                if link is None or incompatibility(link, spec):
                    raise
            log.info("created %s: VNI %d, port %d, local %s dev %s, MTU %d, VtepMAC %s", spec.name, spec.vni,
                     spec.port, spec.local, self.iface.name, spec.mtu, spec.mac)
            self._disable_accept_ra(spec.name)
        if link.mtu != spec.mtu:
            log.info("%s: MTU %d -> %d", spec.name, link.mtu, spec.mtu)
            self.netlink.set_link(link.index, mtu=spec.mtu)
        if parse_mac(link.mac) != spec.mac:
            log.info("%s: MAC %s -> %s (the VtepMAC this node publishes)", spec.name, link.mac, spec.mac)
            self.netlink.set_link(link.index, mac=spec.mac)
        if not link.up:
            self.netlink.set_link(link.index, up=True)
        final = self.netlink.link(spec.name)
        if final is None:
            raise VxlanDeviceError(f"{spec.name} disappeared while being configured", operation="ensure device")
        if parse_mac(final.mac) != spec.mac:
            # Something (udev/systemd MACAddressPolicy) rewrote it after we set it: flannel#1155, #1795.
            raise VxlanDeviceError(f"{spec.name} has MAC {final.mac} after setting {spec.mac}; check udev/"
                                   "systemd-networkd MACAddressPolicy for flannel.* links", operation="ensure device")
        self.ensure_address(final)
        return final

    def _disable_accept_ra(self, name: str) -> None:
        # No IPv6 on this node: nothing to disable.
        with contextlib.suppress(OSError, NamespaceError):
            self.netlink.write_sysctl(f"net/ipv6/conf/{name}/accept_ra", 0)

    def ensure_address(self, link: Link) -> None:
        """The own subnet's network address as /32 on the device; other addresses in the Network removed."""
        subnet = self.own_subnet
        if subnet is None or self._address_ok_for == (link.index, subnet):
            return
        wanted = IPv4Interface(f"{subnet.network_address}/32")
        present = self.netlink.addresses(link.index)
        for address in present:
            if address != wanted and address.ip in self.network:
                log.info("%s: removing address %s (not this node's subnet %s)", link.name, address, subnet)
                self.netlink.delete_address(link.index, address)
        if wanted not in present:
            self.netlink.add_address(link.index, wanted)
            log.info("%s: address %s", link.name, wanted)
        self._address_ok_for = (link.index, subnet)

    # -- one pass -------------------------------------------------------------------------------

    def forget_observation(self) -> None:
        """Make the next pass dump the kernel again (someone else changed it)."""
        self._observed = None

    def _decode(self, lease: Lease, vni: int) -> VxlanPeer | str:
        """``vtep_of``, remembered per lease: the watcher hands out the same object until the key changes."""
        cached = self._decoded.get(lease.subnet)
        if cached is not None and cached[0] is lease:
            return cached[1]
        result = vtep_of(lease, vni)
        self._decoded[lease.subnet] = (lease, result)
        return result

    def _peers(self, snapshot: LeaseSnapshot) -> PeerSet:
        peers = select_peers(snapshot.leases.values(), own_subnet=self.own_subnet, network=self.network,
                             vni=self.settings.vni, wanted=self._wanted, decode=self._decode)
        if len(self._decoded) > len(snapshot.leases):
            self._decoded = {subnet: entry for subnet, entry in self._decoded.items() if subnet in snapshot.leases}
        for subnet, reason in peers.unusable.items():
            if self._warned.get(subnet) != reason:
                lease = snapshot.leases.get(subnet)
                log.warning("lease %s (PublicIP %s) cannot be reached over VXLAN: it %s; its entries are left as "
                            "they are", subnet, lease.attrs.public_ip if lease else "?", reason)
        self._warned = dict(peers.unusable)
        return peers

    def _device_ready(self, link: Link | None) -> bool:
        spec = self.spec
        return (link is not None and link.up and link.mtu == spec.mtu and parse_mac(link.mac) == spec.mac
                and incompatibility(link, spec) is None)

    def reconcile(self) -> float | None:
        started = time.perf_counter()
        try:
            return self._reconcile()
        finally:
            log.debug("vxlan pass: %d peers, %d changes, %.1f ms", self.report.peers, self.report.changes,
                      1000 * (time.perf_counter() - started))

    def _reconcile(self) -> float | None:
        snapshot = self._snapshot()
        peers = self._peers(snapshot)
        report = VxlanReport(self.settings.device, peers=len(peers.peers), unusable=dict(peers.unusable),
                             full_observations=self.report.full_observations)
        self.report = report
        link = self.netlink.link(self.settings.device)
        if link is None and not self.eager and not peers.peers:
            # A VPC node with no peer to reach over VXLAN: its kernel stays as it is.
            self._observed = None
            return None
        if not self._device_ready(link):
            link = self.ensure_device()
            self._observed = None
        assert link is not None
        report.ifindex = link.index
        now = self._clock()
        if self._observed is None or self._observed_index != link.index or now - self._last_full >= self.full_resync:
            self._recheck_address(link)
            observed = self._observe(link)
            self._on_link.clear()
            self._last_full = now
            report.full_observations += 1
        else:
            self.ensure_address(link)
            observed = self._observed
        direct = self._direct_subnets(peers)
        report.direct = len(direct)
        plan = plan_vxlan(peers=peers.peers, observed=observed, network=self.network, subnet_len=self.subnet_len,
                          in_sync=snapshot.in_sync,
                          protected=set(snapshot.malformed_subnets()) | set(peers.unusable), direct=direct)
        report.kept = len(plan.kept)
        if plan.empty:
            self._observed = observed
            self._observed_index = link.index
            report.programmed = frozenset(peers.peers)
            return None
        errors = self._apply(link, plan, observed, peers, direct)
        report.changes = len(plan.changes)
        if errors:
            report.failures = errors
            self._observed = None  # look again next time
            raise NetlinkError(f"{len(errors)} change(s) on {link.name} failed, first: {errors[0]}",
                               operation="vxlan reconcile")
        report.programmed = frozenset(peers.peers)
        return None

    def _recheck_address(self, link: Link) -> None:
        # On full passes look at the address again: someone may have removed it.
        self._address_ok_for = None
        self.ensure_address(link)

    def _direct_subnets(self, peers: PeerSet) -> set[IPv4Network]:
        """The peers DirectRouting reaches without the device: flannel's ip.DirectRouting(PublicIP)."""
        if not self.settings.direct_routing:
            return set()
        unknown = sorted({peer.public_ip for peer in peers.peers.values()} - set(self._on_link))
        for address, answer in zip(unknown, self.netlink.lookup_routes(unknown), strict=True):
            if isinstance(answer, NetlinkError):
                log.warning("DirectRouting: no route to PublicIP %s (%s); its peer goes through %s", address,
                            answer, self.settings.device)
                self._on_link[address] = False
            else:
                self._on_link[address] = answer.on_link
        return {subnet for subnet, peer in peers.peers.items() if self._on_link.get(peer.public_ip)}

    def _observe(self, link: Link) -> VxlanObservation:
        neighbours = {n.ip: NeighbourEntry(n.ip, n.mac, n.permanent) for n in self.netlink.neighbours(link.index)}
        # Only permanent FDB entries are ours: with Learning on, the kernel adds (and ages) its own.
        fdb = frozenset(FdbKey(e.mac, e.dst) for e in self.netlink.fdb(link.index)
                        if e.dst is not None and e.mac != _ZERO_MAC and e.state & NUD_PERMANENT)
        routes: dict[IPv4Network, PeerRoute] = {}
        for route in self.netlink.routes():
            if route.dst.prefixlen == 0:
                continue
            if route.oif == link.index:
                routes[route.dst] = PeerRoute(route.dst, route.gateway, route.onlink)
            elif (route.protocol == DIRECT_ROUTE_PROTOCOL and route.gateway is not None
                  and route.dst.subnet_of(self.network)):
                routes.setdefault(route.dst, PeerRoute(route.dst, route.gateway, onlink=False))
        self._observed_index = link.index
        return VxlanObservation(neighbours, fdb, routes)

    @staticmethod
    def _route_op(action: str, route: PeerRoute, index: int) -> RouteOp:
        if route.direct:
            # As flannel writes it: no device, the kernel resolves the on-link PublicIP itself.
            return RouteOp(action, route.dst, route.gateway, protocol=DIRECT_ROUTE_PROTOCOL)
        return RouteOp(action, route.dst, route.gateway, index, onlink=action == "replace")

    def _apply(self, link: Link, plan: VxlanPlan, observed: VxlanObservation, peers: PeerSet,
               direct: set[IPv4Network]) -> list[str]:
        """Apply ``plan`` in flannel's order; returns the errors (the observation cache is kept current)."""
        index = link.index
        neighbours = dict(observed.neighbours)
        fdb = set(observed.fdb)
        routes = dict(observed.routes)
        errors: list[str] = []
        new_peers = {change.subnet for change in plan.changes if change.action == "add"}
        failed: set[IPv4Network] = set()

        def run(ops: list[Op]) -> list[NetlinkError | None]:
            results = self.netlink.apply(ops)
            errors.extend(str(error) for error in results if error is not None)
            return results

        # 1. neighbours
        results = run([NeighbourOp("replace", index, entry.ip, entry.mac or "") for _, entry in plan.neighbours])
        for (subnet, entry), error in zip(plan.neighbours, results, strict=True):
            if error is None:
                neighbours[entry.ip] = entry
            else:
                failed.add(subnet)
        # 2. FDB entries
        fdb_todo = [(subnet, key) for subnet, key in plan.fdb if subnet not in failed]
        results = run([FdbOp("replace", index, key.mac, key.dst) for _, key in fdb_todo])
        for (subnet, key), error in zip(fdb_todo, results, strict=True):
            if error is None:
                fdb.add(key)
            else:
                failed.add(subnet)
        # 3. routes, last: the kernel must never resolve a gateway it has no entry for
        route_todo = [route for route in plan.routes if route.dst not in failed]
        results = run([self._route_op("replace", route, index) for route in route_todo])
        for route, error in zip(route_todo, results, strict=True):
            if error is None:
                routes[route.dst] = route
            else:
                failed.add(route.dst)
        # A new peer that could not get all three entries gets none (flannel undoes partial adds).
        undo = sorted(failed & new_peers, key=lambda s: int(s.network_address))
        if undo:
            undo_ops: list[Op] = []
            for subnet in undo:
                peer = peers.peers[subnet]
                # A direct peer had only its route to write; the other deletes then find nothing, which is fine.
                undo_ops += [RouteOp("delete", subnet, peer.gateway, index),
                             FdbOp("delete", index, peer.vtep_mac, peer.public_ip),
                             NeighbourOp("delete", index, peer.gateway)]
                routes.pop(subnet, None)
                fdb.discard(FdbKey(peer.vtep_mac, peer.public_ip))
                neighbours.pop(peer.gateway, None)
            run(undo_ops)
        # 4. deletes, reversed: routes, FDB, neighbours; each independent of the others' outcome
        results = run([self._route_op("delete", route, index) for route in plan.delete_routes])
        for route, error in zip(plan.delete_routes, results, strict=True):
            if error is None:
                routes.pop(route.dst, None)
        results = run([FdbOp("delete", index, key.mac, key.dst) for key in plan.delete_fdb])
        for key, error in zip(plan.delete_fdb, results, strict=True):
            if error is None:
                fdb.discard(key)
        results = run([NeighbourOp("delete", index, entry.ip) for entry in plan.delete_neighbours])
        for entry, error in zip(plan.delete_neighbours, results, strict=True):
            if error is None:
                neighbours.pop(entry.ip, None)
        for change in plan.changes:
            if change.subnet in failed:
                log.error("%s: could not %s peer %s (%s); retrying", link.name, change.action, change.subnet,
                          change.reason)
                continue
            known = peers.peers.get(change.subnet)
            target = f" via {known.public_ip} ({known.vtep_mac})" if known and change.subnet not in direct else ""
            verb = {"add": "added", "update": "updated", "remove": "removed"}[change.action]
            log.info("%s: %s peer %s%s: %s", link.name, verb, change.subnet, target, change.reason)
        self._observed = VxlanObservation(neighbours, frozenset(fdb), routes)
        self._observed_index = index
        return errors
