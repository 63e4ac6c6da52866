"""The netlink client against a real kernel (in a scratch namespace): typed, replace, idempotent, named errors."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from flannel_alivpc.clients.netlink import (
    AlreadyExists,
    BlackholeOp,
    DeviceNotFound,
    FdbOp,
    InvalidArgument,
    NeighbourOp,
    Netlink,
    NetlinkError,
    NotFound,
    PermissionDenied,
    RouteOp,
    Unreachable,
    VxlanDeviceSpec,
    error_from_errno,
    select_interface,
)
from flannel_alivpc.clients.netns import run_in_namespace
from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.testbed.dataplane import scratch_namespace
from tests.dataplane.support import root_test

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
PEER = IPv4Network("10.244.7.0/24")


@pytest.mark.parametrize(("code", "cls"), [
    (errno.ENODEV, DeviceNotFound), (errno.EEXIST, AlreadyExists), (errno.ENOENT, NotFound),
    (errno.ESRCH, NotFound), (errno.EPERM, PermissionDenied), (errno.EINVAL, InvalidArgument),
    (errno.ENETUNREACH, Unreachable), (errno.EBUSY, NetlinkError),
])
def test_errno_becomes_a_named_error(code: int, cls: type[NetlinkError]) -> None:
    error = error_from_errno(code, "replace route 10.244.7.0/24")
    assert type(error) is cls and error.errno == code
    assert str(error).startswith("replace route 10.244.7.0/24: ")
    if cls is PermissionDenied:
        assert "CAP_NET_ADMIN" in str(error)


@pytest.fixture
def nl() -> Iterator[Netlink]:
    with scratch_namespace("nl") as name, Netlink(netns=name) as client:
        near = client.create_veth("v0", "v1")
        far = client.link("v1")
        assert far is not None
        client.set_link(far.index, up=True)
        client.set_link(near.index, up=True)
        client.add_address(near.index, IPv4Interface("192.168.50.1/24"))
        yield client


def _vxlan(nl: Netlink) -> int:
    lower = nl.link("v0")
    assert lower is not None
    device = nl.create_vxlan(VxlanDeviceSpec("flannel.1", 1, 8472, IPv4Address("192.168.50.1"), lower.index, MAC_A,
                                             1450))
    nl.set_link(device.index, up=True)
    return device.index


@root_test
def test_vxlan_device_reads_back_as_created(nl: Netlink) -> None:
    index = _vxlan(nl)
    device = nl.link("flannel.1")
    assert device is not None and device.index == index and device.kind == "vxlan" and device.up
    assert (device.mac, device.mtu) == (MAC_A, 1450)
    assert device.vxlan is not None
    assert (device.vxlan.vni, device.vxlan.port, device.vxlan.local, device.vxlan.learning) == \
        (1, 8472, IPv4Address("192.168.50.1"), False)
    with pytest.raises(AlreadyExists) as raised:
        _vxlan(nl)
    assert raised.value.errno == errno.EEXIST


@root_test
def test_writes_replace_and_deletes_are_idempotent(nl: Netlink) -> None:
    index = _vxlan(nl)
    gateway = PEER.network_address
    ops = [NeighbourOp("replace", index, gateway, MAC_A), FdbOp("replace", index, MAC_A, IPv4Address("192.168.50.7")),
           RouteOp("replace", PEER, gateway, index, onlink=True)]
    assert nl.apply(ops) == [None, None, None]
    assert nl.apply(ops) == [None, None, None]  # the same state again: harmless
    # Replace overwrites: a new MAC for the neighbour, a new destination for the MAC.
    assert nl.apply([NeighbourOp("replace", index, gateway, MAC_B),
                     FdbOp("replace", index, MAC_A, IPv4Address("192.168.50.8"))]) == [None, None]
    [neighbour] = nl.neighbours(index)
    assert (neighbour.ip, neighbour.mac, neighbour.permanent) == (gateway, MAC_B, True)
    assert [(e.mac, e.dst) for e in nl.fdb(index)] == [(MAC_A, IPv4Address("192.168.50.8"))]
    [route] = nl.routes(oif=index)
    assert (route.dst, route.gateway, route.onlink) == (PEER, gateway, True)
    deletes = [RouteOp("delete", PEER, gateway, index), FdbOp("delete", index, MAC_A, IPv4Address("192.168.50.8")),
               NeighbourOp("delete", index, gateway)]
    assert nl.apply(deletes) == [None, None, None]
    assert nl.apply(deletes) == [None, None, None]  # already gone: still success
    assert nl.neighbours(index) == [] and nl.fdb(index) == [] and nl.routes(oif=index) == []


@root_test
def test_one_failure_in_a_batch_does_not_stop_the_others(nl: Netlink) -> None:
    index = _vxlan(nl)
    results = nl.apply([
        NeighbourOp("replace", 999, PEER.network_address, MAC_A),
        RouteOp("replace", IPv4Network("10.244.9.0/24"), IPv4Address("172.31.0.1")),
        NeighbourOp("replace", index, PEER.network_address, MAC_A),
    ])
    assert isinstance(results[0], DeviceNotFound)
    assert isinstance(results[1], Unreachable)
    assert results[2] is None
    assert [n.ip for n in nl.neighbours(index)] == [PEER.network_address]


@root_test
def test_batches_larger_than_one_send(nl: Netlink) -> None:
    index = _vxlan(nl)
    subnets = list(IPv4Network("10.128.0.0/9").subnets(new_prefix=24))[:600]
    assert nl.apply([RouteOp("replace", s, s.network_address, index, onlink=True) for s in subnets]) == [None] * 600
    assert {r.dst for r in nl.routes(oif=index)} == set(subnets)


@root_test
def test_links_and_addresses_are_idempotent(nl: Netlink) -> None:
    lower = nl.link("v0")
    assert lower is not None
    nl.add_address(lower.index, IPv4Interface("192.168.50.1/24"))  # present already: fine
    nl.delete_address(lower.index, IPv4Interface("192.168.99.1/24"))  # absent: fine
    assert nl.addresses(lower.index) == [IPv4Interface("192.168.50.1/24")]
    _vxlan(nl)
    assert nl.delete_link("flannel.1") is True
    assert nl.delete_link("flannel.1") is False
    assert nl.link("flannel.1") is None
    with pytest.raises(DeviceNotFound):
        nl.set_link(4242, up=True)


@root_test
def test_route_lookups_answer_as_ip_route_get(nl: Netlink) -> None:
    v0 = nl.link("v0")
    assert v0 is not None
    nl.apply_one(RouteOp("replace", IPv4Network("0.0.0.0/0"), IPv4Address("192.168.50.254"), v0.index))
    near, far, nowhere = IPv4Address("192.168.50.9"), IPv4Address("203.0.113.9"), IPv4Address("192.168.50.1")
    answers = nl.lookup_routes([near, far, nowhere])
    on_link, routed, local = answers
    assert not isinstance(on_link, NetlinkError) and not isinstance(routed, NetlinkError)
    assert (on_link.gateway, on_link.oif, on_link.source, on_link.on_link) == \
        (None, v0.index, IPv4Address("192.168.50.1"), True)
    assert (routed.gateway, routed.oif, routed.on_link) == (IPv4Address("192.168.50.254"), v0.index, False)
    assert not isinstance(local, NetlinkError) and not local.on_link  # our own address: a local route
    nl.apply_one(RouteOp("delete", IPv4Network("0.0.0.0/0"), IPv4Address("192.168.50.254"), v0.index))
    [unreachable] = nl.lookup_routes([far])
    assert isinstance(unreachable, Unreachable)
    many = [IPv4Address("192.168.50.10") + n for n in range(240)]  # more than one batch of 200
    assert all(not isinstance(a, NetlinkError) and a.on_link for a in nl.lookup_routes(many))


@root_test
def test_blackhole_add_is_exclusive_and_delete_idempotent(nl: Netlink) -> None:
    subnet = IPv4Network("10.244.3.0/24")
    assert nl.apply([BlackholeOp("add", subnet, metric=7)]) == [None]
    assert nl.blackhole_routes() == [subnet]
    [again] = nl.apply([BlackholeOp("add", subnet, metric=7)])
    assert isinstance(again, AlreadyExists)
    assert nl.apply([BlackholeOp("delete", subnet)] * 2) == [None, None]
    assert nl.blackhole_routes() == []


@root_test
def test_iface_can_reach_picks_the_interface_and_address_ip_route_get_would(nl: Netlink) -> None:
    # A second interface: 10.9.0.0/24 is reached over b0, everything else by the default route over v0.
    b0 = nl.create_veth("b0", "b1")
    b1 = nl.link("b1")
    assert b1 is not None
    nl.set_link(b1.index, up=True)
    nl.set_link(b0.index, up=True)
    nl.add_address(b0.index, IPv4Interface("10.9.0.5/24"))
    nl.add_address(b0.index, IPv4Interface("10.9.0.6/24"))
    v0 = nl.link("v0")
    assert v0 is not None and nl.netns is not None
    nl.apply_one(RouteOp("replace", IPv4Network("0.0.0.0/0"), IPv4Address("192.168.50.254"), v0.index))

    def select(names: list[str], can_reach: str | None) -> tuple[str, IPv4Address | None]:
        iface = run_in_namespace(nl.netns, lambda: select_interface(names, [], can_reach))
        return iface.name, iface.primary_ipv4

    assert select([], "10.9.0.77") == ("b0", IPv4Address("10.9.0.5"))
    assert select([], "203.0.113.9") == ("v0", IPv4Address("192.168.50.1"))
    assert select([], None) == ("v0", IPv4Address("192.168.50.1"))  # no flag: the default route's interface
    # flanneld's order: --iface first, --iface-can-reach only when nothing matched.
    assert select(["v0"], "10.9.0.77") == ("v0", IPv4Address("192.168.50.1"))
    assert select(["eth7"], "10.9.0.77") == ("b0", IPv4Address("10.9.0.5"))
    with pytest.raises(ConfigError, match="--iface-can-reach 'b0' is not an IPv4 address"):
        select([], "b0")
    nl.apply_one(RouteOp("delete", IPv4Network("0.0.0.0/0"), IPv4Address("192.168.50.254"), v0.index))
    with pytest.raises(ConfigError, match=r"--iface-can-reach 203\.0\.113\.9: no route to it"):
        select([], "203.0.113.9")
