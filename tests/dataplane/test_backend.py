"""The VXLAN backend's passes against a stateful fake kernel (no root): order, undo, repair, safety."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from flannel_alivpc.clients.netlink import (
    AlreadyExists,
    FdbEntry,
    FdbOp,
    Interface,
    InvalidArgument,
    Link,
    Neighbour,
    NeighbourOp,
    NetlinkError,
    Op,
    Route,
    RouteLookup,
    RouteOp,
    VxlanDeviceSpec,
    VxlanInfo,
)
from flannel_alivpc.core.network import Lease, LeaseAttrs
from flannel_alivpc.core.vxlan import DIRECT_ROUTE_PROTOCOL, VxlanSettings, vxlan_backend_data
from flannel_alivpc.routed.leases import LeaseSnapshot
from flannel_alivpc.routed.vxlan import VxlanBackend, choose_vtep_mac

NETWORK = IPv4Network("10.244.0.0/16")
OWN = IPv4Network("10.244.1.0/24")
ETH0 = Interface("eth0", 2, 1500, (IPv4Address("10.0.0.11"),))
MY_MAC = "02:00:00:00:01:01"


@dataclass
class FakeKernel:
    """Just enough of the kernel's tables; records every op in order; can be told to refuse some."""

    links: dict[str, Link] = field(default_factory=dict)
    address_store: dict[int, list[IPv4Interface]] = field(default_factory=dict)
    neigh: dict[IPv4Address, str] = field(default_factory=dict)
    fdb_entries: set[tuple[str, IPv4Address]] = field(default_factory=set)
    route_entries: dict[IPv4Network, Route] = field(default_factory=dict)
    on_link: set[IPv4Address] = field(default_factory=set)
    """Addresses ``lookup_routes`` reports as directly connected (the rest go via a gateway)."""
    lookups: int = 0
    learned_fdb: set[tuple[str, IPv4Address]] = field(default_factory=set)
    """FDB entries the kernel learned itself (NUD_REACHABLE, not permanent)."""
    ops: list[Op] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    """``describe()`` texts of ops to fail with EINVAL."""
    dumps: int = 0
    sysctls: dict[str, str] = field(default_factory=dict)
    _index: itertools.count[int] = field(default_factory=lambda: itertools.count(10))

    @property
    def route_table(self) -> dict[IPv4Network, IPv4Address | None]:
        return {dst: route.gateway for dst, route in self.route_entries.items()}

    # links and addresses
    def link(self, name: str) -> Link | None:
        return self.links.get(name)

    def create_vxlan(self, spec: VxlanDeviceSpec) -> Link:
        if spec.name in self.links:
            raise AlreadyExists("exists", errno=17)
        link = Link(next(self._index), spec.name, "vxlan", spec.mtu, spec.mac, False,
                    vxlan=VxlanInfo(spec.vni, spec.port, spec.local, spec.link_index, spec.learning, spec.gbp))
        self.links[spec.name] = link
        return link

    def delete_link(self, name: str) -> bool:
        link = self.links.pop(name, None)
        if link is not None:
            self.neigh.clear()
            self.fdb_entries.clear()
            self.route_entries = {d: r for d, r in self.route_entries.items() if r.oif != link.index}
            self.address_store.pop(link.index, None)
        return link is not None

    def set_link(self, index: int, *, up: bool | None = None, mtu: int | None = None, mac: str | None = None,
                 master: int | None = None) -> None:
        name, link = next((n, lk) for n, lk in self.links.items() if lk.index == index)
        self.links[name] = replace(link, up=link.up if up is None else up, mtu=mtu or link.mtu, mac=mac or link.mac)

    def addresses(self, index: int) -> list[IPv4Interface]:
        return list(self.address_store.get(index, []))

    def add_address(self, index: int, address: IPv4Interface) -> None:
        store = self.address_store.setdefault(index, [])
        if address not in store:
            store.append(address)

    def delete_address(self, index: int, address: IPv4Interface) -> None:
        store = self.address_store.setdefault(index, [])
        if address in store:
            store.remove(address)

    def write_sysctl(self, key: str, value: str | int) -> None:
        self.sysctls[key] = str(value)

    # tables
    def neighbours(self, ifindex: int | None = None) -> list[Neighbour]:
        self.dumps += 1
        return [Neighbour(ifindex or 0, ip, mac, 0x80) for ip, mac in self.neigh.items()]

    def fdb(self, ifindex: int | None = None) -> list[FdbEntry]:
        learned = [FdbEntry(ifindex or 0, mac, dst, 0x02, 2) for mac, dst in self.learned_fdb]
        return [FdbEntry(ifindex or 0, mac, dst, 0x80, 2) for mac, dst in self.fdb_entries] + learned

    def routes(self, *, oif: int | None = None, table: int | None = 254, protocol: int | None = None) -> list[Route]:
        return [r for r in self.route_entries.values() if oif is None or r.oif == oif]

    def lookup_routes(self, destinations: Sequence[IPv4Address]) -> list[RouteLookup | NetlinkError]:
        self.lookups += len(destinations)
        return [RouteLookup(ip, None if ip in self.on_link else IPv4Address("10.0.0.1"), ETH0.index, None, 1)
                for ip in destinations]

    def apply(self, ops: Sequence[Op]) -> list[NetlinkError | None]:
        results: list[NetlinkError | None] = []
        for op in ops:
            self.ops.append(op)
            if op.describe() in self.refuse:
                results.append(InvalidArgument(op.describe(), errno=22))
                continue
            if isinstance(op, NeighbourOp):
                if op.action == "replace":
                    self.neigh[op.ip] = op.mac
                else:
                    self.neigh.pop(op.ip, None)
            elif isinstance(op, FdbOp):
                if op.action == "replace":
                    self.fdb_entries = {(m, d) for m, d in self.fdb_entries if m != op.mac} | {(op.mac, op.dst)}
                else:
                    self.fdb_entries.discard((op.mac, op.dst))
            elif isinstance(op, RouteOp) and op.action == "replace":
                # A replace takes over the destination whatever device it was on, as the kernel's does.
                self.route_entries[op.dst] = Route(op.dst, op.gateway, op.oif or ETH0.index, op.onlink, 254,
                                                   op.protocol, 0)
            else:
                self.route_entries.pop(op.dst, None)
            results.append(None)
        return results


def _lease(n: int, mac: str | None = None) -> Lease:
    subnet = IPv4Network(f"10.244.{n}.0/24")
    return Lease(subnet, LeaseAttrs(IPv4Address(f"10.0.0.{n}"), "vxlan",
                                    vxlan_backend_data(1, mac or f"02:00:00:00:00:{n:02x}")))


class World:
    def __init__(self, *, eager: bool = True, kernel: FakeKernel | None = None,
                 settings: VxlanSettings | None = None) -> None:
        self.kernel = kernel or FakeKernel()
        self.snapshot = LeaseSnapshot(leases={}, malformed={}, revision=1, in_sync=True)
        self.backend = VxlanBackend(netlink=self.kernel, settings=settings or VxlanSettings(),  # type: ignore[arg-type]
                                    iface=ETH0,
                                    network=NETWORK, subnet_len=24, snapshot=lambda: self.snapshot,
                                    wanted=lambda lease: True, vtep_mac=MY_MAC, eager=eager, full_resync=3600)
        self.backend.own_subnet = OWN

    def leases(self, *leases: Lease, in_sync: bool = True) -> None:
        self.snapshot = LeaseSnapshot(leases={lease.subnet: lease for lease in leases}, malformed={}, revision=1,
                                      in_sync=in_sync)

    def peers(self) -> dict[IPv4Network, tuple[str, IPv4Address]]:
        """subnet -> (MAC, PublicIP) for every subnet with all three entries consistent."""
        result = {}
        for dst, gateway in self.kernel.route_table.items():
            mac = self.kernel.neigh.get(gateway) if gateway else None
            dsts = [d for m, d in self.kernel.fdb_entries if m == mac]
            if mac and len(dsts) == 1:
                result[dst] = (mac, dsts[0])
        return result


@pytest.fixture
def world() -> World:
    return World()


def test_device_is_created_as_flannel_does_with_the_subnet_address(world: World) -> None:
    world.backend.reconcile()
    device = world.kernel.links["flannel.1"]
    assert (device.mac, device.mtu, device.up) == (MY_MAC, 1450, True)
    assert device.vxlan == VxlanInfo(1, 8472, IPv4Address("10.0.0.11"), 2, False, False)
    assert world.kernel.addresses(device.index) == [IPv4Interface("10.244.1.0/32")]
    assert world.kernel.sysctls == {"net/ipv6/conf/flannel.1/accept_ra": "0"}


def test_entries_are_written_neighbour_fdb_route_and_removed_in_reverse(world: World) -> None:
    world.leases(_lease(2), _lease(3))
    world.backend.reconcile()
    kinds = [type(op).__name__ for op in world.kernel.ops]
    assert kinds == ["NeighbourOp", "NeighbourOp", "FdbOp", "FdbOp", "RouteOp", "RouteOp"]
    assert world.peers() == {IPv4Network("10.244.2.0/24"): ("02:00:00:00:00:02", IPv4Address("10.0.0.2")),
                             IPv4Network("10.244.3.0/24"): ("02:00:00:00:00:03", IPv4Address("10.0.0.3"))}
    world.kernel.ops.clear()
    world.leases(_lease(2))
    world.backend.reconcile()
    assert [(type(op).__name__, op.action) for op in world.kernel.ops] == [
        ("RouteOp", "delete"), ("FdbOp", "delete"), ("NeighbourOp", "delete")]
    assert list(world.peers()) == [IPv4Network("10.244.2.0/24")]


def test_a_new_peer_that_cannot_get_its_route_gets_nothing_and_is_retried(world: World) -> None:
    world.kernel.refuse.add(RouteOp("replace", IPv4Network("10.244.3.0/24"), IPv4Address("10.244.3.0"), 10,
                                    onlink=True).describe())
    world.leases(_lease(2), _lease(3))
    with pytest.raises(NetlinkError, match=r"10\.244\.3\.0/24"):
        world.backend.reconcile()
    assert list(world.peers()) == [IPv4Network("10.244.2.0/24")]
    assert IPv4Address("10.244.3.0") not in world.kernel.neigh  # the partial add was undone
    assert "02:00:00:00:00:03" not in {m for m, _ in world.kernel.fdb_entries}
    world.kernel.refuse.clear()
    dumps = world.kernel.dumps
    world.backend.reconcile()
    assert len(world.peers()) == 2
    assert world.kernel.dumps == dumps + 1  # after a failure the pass looks at the kernel again


def test_nothing_is_deleted_before_the_first_complete_snapshot(world: World) -> None:
    world.leases(_lease(2))
    world.backend.reconcile()
    fresh = World(kernel=world.kernel)  # the daemon restarts: same kernel, new process
    fresh.leases(in_sync=False)
    fresh.backend.reconcile()
    assert list(fresh.peers()) == [IPv4Network("10.244.2.0/24")]
    fresh.leases(in_sync=True)
    fresh.backend.reconcile()
    assert fresh.peers() == {}


def test_incompatible_device_is_recreated_with_its_mac(world: World) -> None:
    world.kernel.create_vxlan(VxlanDeviceSpec("flannel.1", 1, 4789, None, 2, "02:aa:bb:cc:dd:ee", 1400,
                                              learning=True))
    mac = choose_vtep_mac(world.kernel, VxlanSettings(), None)  # type: ignore[arg-type]
    assert mac == "02:aa:bb:cc:dd:ee"
    world.backend.vtep_mac = mac
    world.leases(_lease(2))
    world.backend.reconcile()
    device = world.kernel.links["flannel.1"]
    assert device.mac == mac and device.vxlan is not None
    assert (device.vxlan.port, device.vxlan.learning, device.mtu) == (8472, False, 1450)
    assert len(world.peers()) == 1


def test_device_deleted_behind_our_back_is_rebuilt_with_its_entries(world: World) -> None:
    world.leases(_lease(2), _lease(3))
    world.backend.reconcile()
    world.kernel.delete_link("flannel.1")
    world.backend.reconcile()
    assert len(world.peers()) == 2 and world.kernel.links["flannel.1"].mac == MY_MAC


def test_vpc_node_without_vxlan_peers_leaves_the_kernel_alone() -> None:
    world = World(eager=False)
    world.leases(_lease(2))
    world.backend._wanted = lambda lease: False
    world.backend.reconcile()
    assert world.kernel.links == {} and world.kernel.ops == []
    world.backend._wanted = lambda lease: True
    world.backend.reconcile()
    assert "flannel.1" in world.kernel.links and len(world.peers()) == 1


def test_peer_without_vtep_mac_keeps_its_entries_and_is_reported(world: World) -> None:
    world.leases(_lease(2))
    world.backend.reconcile()
    broken = Lease(IPv4Network("10.244.2.0/24"), LeaseAttrs(IPv4Address("10.0.0.2"), "vxlan", {"VNI": 1}))
    world.leases(broken)
    world.backend.reconcile()
    assert list(world.peers()) == [IPv4Network("10.244.2.0/24")]
    assert "no VtepMAC" in world.backend.report.unusable[IPv4Network("10.244.2.0/24")]


def test_malformed_lease_on_a_peer_subnet_keeps_its_entries(world: World) -> None:
    world.leases(_lease(2), _lease(3))
    world.backend.reconcile()
    world.snapshot = LeaseSnapshot(leases={IPv4Network("10.244.3.0/24"): _lease(3)}, malformed={"x": "not JSON"},
                                   revision=2, in_sync=True,
                                   malformed_by_subnet={IPv4Network("10.244.2.0/24"): "not JSON"})
    world.backend.reconcile()
    assert len(world.peers()) == 2  # garbage on a key is no reason to cut a node off


def test_learning_on_makes_a_learning_device_and_leaves_learned_entries_alone() -> None:
    world = World(settings=VxlanSettings(learning=True))
    world.leases(_lease(2))
    world.kernel.learned_fdb.add(("02:00:00:00:00:77", IPv4Address("10.0.0.77")))
    world.backend.reconcile()
    device = world.kernel.links["flannel.1"]
    assert device.vxlan is not None and device.vxlan.learning
    # flannel's static entries are written all the same; the kernel's own entries are not ours to delete.
    assert len(world.peers()) == 1
    assert not [op for op in world.kernel.ops if op.action == "delete"]
    # The same daemon without Learning recreates a learning device (flannel's config decides).
    off = World(kernel=world.kernel)
    off.leases(_lease(2))
    off.backend.reconcile()
    device = world.kernel.links["flannel.1"]
    assert device.vxlan is not None and not device.vxlan.learning and len(off.peers()) == 1


def test_direct_routing_routes_on_link_peers_via_their_public_ip_and_asks_the_kernel_once() -> None:
    world = World(settings=VxlanSettings(direct_routing=True))
    near, far = _lease(2), _lease(3)
    world.kernel.on_link.add(near.attrs.public_ip)
    world.leases(near, far)
    world.backend.reconcile()
    direct = world.kernel.route_entries[near.subnet]
    assert (direct.gateway, direct.onlink, direct.oif, direct.protocol) == (near.attrs.public_ip, False, ETH0.index,
                                                                            DIRECT_ROUTE_PROTOCOL)
    assert list(world.peers()) == [far.subnet]  # the far one has its three entries on the device
    assert IPv4Address("10.244.2.0") not in world.kernel.neigh
    assert world.kernel.lookups == 2 and world.backend.report.direct == 1
    world.backend.reconcile()
    assert world.kernel.lookups == 2  # remembered until the next full observation
    # The near node moves off our L2 subnet: at the next full pass it goes through the device.
    world.kernel.on_link.clear()
    world.backend.forget_observation()
    world.backend.reconcile()
    assert set(world.peers()) == {near.subnet, far.subnet} and world.backend.report.direct == 0
    # A direct route whose lease is gone is removed; someone else's route in the Network is not.
    world.kernel.on_link.add(near.attrs.public_ip)
    world.backend.forget_observation()
    world.backend.reconcile()
    foreign = IPv4Network("10.244.50.0/24")
    world.kernel.route_entries[foreign] = Route(foreign, IPv4Address("10.0.0.50"), ETH0.index, False, 254, 4, 0)
    world.leases(far)
    world.backend.forget_observation()
    world.backend.reconcile()
    assert near.subnet not in world.kernel.route_entries and foreign in world.kernel.route_entries
