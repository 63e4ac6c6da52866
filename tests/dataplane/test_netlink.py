"""The netlink client against a real kernel (in a scratch namespace): typed, replace, idempotent, named errors."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from flannel_alivpc.clients.netlink import (
    AlreadyExists,
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
)
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
