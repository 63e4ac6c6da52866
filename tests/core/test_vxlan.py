"""flannel's VXLAN conventions as data: config keys, lease decoding, and the plan per remote lease."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv4Network

import pytest

from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.core.network import Lease, LeaseAttrs, parse_lease_value, parse_network_config
from flannel_alivpc.core.vxlan import (
    EMPTY_OBSERVATION,
    FdbKey,
    NeighbourEntry,
    PeerRoute,
    VxlanObservation,
    VxlanPeer,
    VxlanPlan,
    parse_mac,
    parse_vxlan_settings,
    plan_vxlan,
    random_vtep_mac,
    select_peers,
    vxlan_backend_data,
)

NETWORK = IPv4Network("10.244.0.0/16")


def lease(subnet: str, ip: str, data: dict[str, object] | None, backend: str = "vxlan") -> Lease:
    return Lease(IPv4Network(subnet), LeaseAttrs(IPv4Address(ip), backend, data))


def peer(subnet: str, ip: str, mac: str) -> VxlanPeer:
    return VxlanPeer(IPv4Network(subnet), IPv4Address(ip), mac)


def observed_for(*peers: VxlanPeer) -> VxlanObservation:
    return VxlanObservation(
        {p.gateway: NeighbourEntry(p.gateway, p.vtep_mac) for p in peers},
        frozenset(FdbKey(p.vtep_mac, p.public_ip) for p in peers),
        {p.subnet: PeerRoute(p.subnet, p.gateway) for p in peers},
    )


def plan(peers: list[VxlanPeer], observed: VxlanObservation = EMPTY_OBSERVATION, *, in_sync: bool = True,
         protected: tuple[IPv4Network, ...] = (), direct: tuple[IPv4Network, ...] = ()) -> VxlanPlan:
    return plan_vxlan(peers={p.subnet: p for p in peers}, observed=observed, network=NETWORK, subnet_len=24,
                      in_sync=in_sync, protected=protected, direct=direct)


# -- settings ---------------------------------------------------------------------------------


def test_defaults_are_flannels() -> None:
    settings = parse_vxlan_settings(parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'))
    assert (settings.vni, settings.port, settings.device, settings.device_mtu(1500)) == (1, 8472, "flannel.1", 1450)
    assert settings.device_mtu(9001) == 8951


def test_config_keys_are_matched_case_insensitively() -> None:
    config = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "vni": 42, '
                                  '"port": 4789, "MTU": 1400, "DirectRouting": true}}')
    settings = parse_vxlan_settings(config)
    assert (settings.vni, settings.port, settings.device, settings.device_mtu(1500)) == (42, 4789, "flannel.42", 1350)
    assert settings.direct_routing


def test_learning_and_direct_routing_are_read_with_flannels_meaning() -> None:
    # Go's decoder matches "directRouting", "Directrouting"... and leaves null at false.
    config = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "learning": true, '
                                  '"Directrouting": true, "GBP": null}}')
    settings = parse_vxlan_settings(config)
    assert settings.learning and settings.direct_routing and not settings.gbp
    assert not parse_vxlan_settings(parse_network_config('{"Network": "10.244.0.0/16"}')).learning


@pytest.mark.parametrize(("backend", "message"), [
    ('"VNI": "one"', '"VNI" must be an integer'),
    ('"VNI": 16777216', "out of range"),
    ('"Port": 70000', "out of range"),
    ('"VNI": 1.5', '"VNI" must be an integer'),
    ('"Learning": "yes"', '"Learning" must be true or false'),
    ('"DirectRouting": 1', '"DirectRouting" must be true or false'),
    ('"GBP": "yes"', "true or false"),
])
def test_bad_backend_keys_are_refused_with_the_key_named(backend: str, message: str) -> None:
    config = parse_network_config(f'{{"Network": "10.244.0.0/16", "Backend": {{"Type": "vxlan", {backend}}}}}')
    with pytest.raises(ConfigError, match=message):
        parse_vxlan_settings(config)


def test_generated_macs_are_locally_administered_unicast() -> None:
    rng = random.Random(7)
    for _ in range(50):
        mac = random_vtep_mac(rng)
        first = int(mac[:2], 16)
        assert first & 0x02 and not first & 0x01
        assert parse_mac(mac) == mac


def test_backend_data_serialises_as_flanneld_writes_it() -> None:
    attrs = LeaseAttrs(IPv4Address("192.168.64.3"), "vxlan", vxlan_backend_data(1, "c6:d2:32:6f:8f:44"))
    assert attrs.to_json() == ('{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
                               '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}')


# -- which leases become peers ----------------------------------------------------------------


def test_stock_flanneld_lease_is_a_peer() -> None:
    raw = ('{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
           '"BackendData":{"VNI":1,"VtepMAC":"C6:D2:32:6F:8F:44"}}')
    stock = Lease(IPv4Network("10.244.3.0/24"), parse_lease_value(raw))
    peers = select_peers([stock], own_subnet=None, network=NETWORK, vni=1, wanted=lambda _: True)
    assert peers.peers == {stock.subnet: peer("10.244.3.0/24", "192.168.64.3", "c6:d2:32:6f:8f:44")}


def test_own_lease_unwanted_and_outside_network_are_skipped() -> None:
    mine = lease("10.244.1.0/24", "10.0.0.1", vxlan_backend_data(1, "02:00:00:00:00:01"))
    vpc = lease("10.244.2.0/24", "10.0.0.2", {"InstanceId": "i-1", "NetworkType": "vpc", "VNI": 1,
                                              "VtepMAC": "02:00:00:00:00:02"}, backend="ali-vpc")
    outside = lease("10.99.0.0/24", "10.0.0.3", vxlan_backend_data(1, "02:00:00:00:00:03"))
    peers = select_peers([mine, vpc, outside], own_subnet=mine.subnet, network=NETWORK, vni=1,
                         wanted=lambda item: item.attrs.backend_type == "vxlan")
    assert peers.peers == {} and peers.unusable == {}


@pytest.mark.parametrize(("data", "reason"), [
    ({"InstanceId": "i-old"}, "no VtepMAC"),
    ({"VNI": 1, "VtepMAC": "not-a-mac"}, "not a unicast MAC"),
    ({"VNI": 1, "VtepMAC": "01:00:5e:00:00:01"}, "not a unicast MAC"),
    ({"VNI": 2, "VtepMAC": "02:00:00:00:00:09"}, "VNI 2"),
])
def test_leases_that_cannot_be_reached_are_reported_not_guessed(data: dict[str, object], reason: str) -> None:
    bad = lease("10.244.9.0/24", "10.0.0.9", data)
    peers = select_peers([bad], own_subnet=None, network=NETWORK, vni=1, wanted=lambda _: True)
    assert peers.peers == {}
    assert reason in peers.unusable[bad.subnet]


def test_duplicate_vtep_mac_keeps_the_lower_subnet() -> None:
    first = lease("10.244.3.0/24", "10.0.0.3", vxlan_backend_data(1, "02:00:00:00:00:33"))
    clone = lease("10.244.4.0/24", "10.0.0.4", vxlan_backend_data(1, "02:00:00:00:00:33"))
    peers = select_peers([clone, first], own_subnet=None, network=NETWORK, vni=1, wanted=lambda _: True)
    assert list(peers.peers) == [first.subnet]
    assert "also announced by 10.244.3.0/24" in peers.unusable[clone.subnet]


# -- the plan ------------------------------------------------------------------------------------


def test_new_peer_gets_neighbour_fdb_and_onlink_route() -> None:
    p = peer("10.244.2.0/24", "192.168.0.12", "02:00:00:00:00:02")
    result = plan([p])
    assert result.neighbours == ((p.subnet, NeighbourEntry(IPv4Address("10.244.2.0"), "02:00:00:00:00:02")),)
    assert result.fdb == ((p.subnet, FdbKey("02:00:00:00:00:02", IPv4Address("192.168.0.12"))),)
    assert result.routes == (PeerRoute(p.subnet, IPv4Address("10.244.2.0")),)
    assert [(c.subnet, c.action) for c in result.changes] == [(p.subnet, "add")]


def test_matching_entries_need_nothing() -> None:
    p = peer("10.244.2.0/24", "192.168.0.12", "02:00:00:00:00:02")
    assert plan([p], observed_for(p)).empty


def test_vtep_mac_change_rewrites_neighbour_and_replaces_the_fdb_entry() -> None:
    old = peer("10.244.2.0/24", "192.168.0.12", "02:00:00:00:00:02")
    new = peer("10.244.2.0/24", "192.168.0.12", "02:00:00:00:00:99")
    result = plan([new], observed_for(old))
    assert [n.mac for _, n in result.neighbours] == ["02:00:00:00:00:99"]
    assert [k for _, k in result.fdb] == [FdbKey("02:00:00:00:00:99", IPv4Address("192.168.0.12"))]
    assert result.delete_fdb == (FdbKey("02:00:00:00:00:02", IPv4Address("192.168.0.12")),)
    assert result.routes == () and result.delete_routes == () and result.delete_neighbours == ()
    assert "VtepMAC 02:00:00:00:00:02 -> 02:00:00:00:00:99" in result.changes[0].reason


def test_public_ip_change_moves_the_fdb_entry_only() -> None:
    old = peer("10.244.2.0/24", "192.168.0.12", "02:00:00:00:00:02")
    new = peer("10.244.2.0/24", "192.168.0.77", "02:00:00:00:00:02")
    result = plan([new], observed_for(old))
    assert result.neighbours == () and result.routes == ()
    assert [k.dst for _, k in result.fdb] == [IPv4Address("192.168.0.77")]
    assert result.delete_fdb == (FdbKey("02:00:00:00:00:02", IPv4Address("192.168.0.12")),)
    assert "PublicIP 192.168.0.12 -> 192.168.0.77" in result.changes[0].reason


def test_gone_lease_loses_all_three_entries() -> None:
    keep = peer("10.244.2.0/24", "192.168.0.12", "02:00:00:00:00:02")
    gone = peer("10.244.3.0/24", "192.168.0.13", "02:00:00:00:00:03")
    result = plan([keep], observed_for(keep, gone))
    assert result.delete_routes == (PeerRoute(gone.subnet, gone.gateway),)
    assert result.delete_fdb == (FdbKey(gone.vtep_mac, gone.public_ip),)
    assert result.delete_neighbours == (NeighbourEntry(gone.gateway, gone.vtep_mac),)
    assert [(c.subnet, c.action) for c in result.changes] == [(gone.subnet, "remove")]


def test_nothing_is_deleted_before_the_first_complete_snapshot() -> None:
    gone = peer("10.244.3.0/24", "192.168.0.13", "02:00:00:00:00:03")
    result = plan([], observed_for(gone), in_sync=False)
    assert result.empty and result.kept == (gone.subnet,)


def test_malformed_or_unusable_lease_keeps_its_entries() -> None:
    held = peer("10.244.3.0/24", "192.168.0.13", "02:00:00:00:00:03")
    result = plan([], observed_for(held), protected=(held.subnet,))
    assert result.empty and result.kept == (held.subnet,)


def test_entries_outside_the_network_are_not_ours() -> None:
    foreign = peer("172.16.5.0/24", "192.168.0.50", "02:00:00:00:00:50")
    result = plan([], observed_for(foreign))
    assert result.delete_routes == () and result.delete_neighbours == ()


def test_stray_fdb_destination_of_a_live_peer_is_removed() -> None:
    p = peer("10.244.2.0/24", "192.168.0.12", "02:00:00:00:00:02")
    observed = observed_for(p)
    observed = VxlanObservation(observed.neighbours, observed.fdb | {FdbKey(p.vtep_mac, IPv4Address("192.168.0.99"))},
                                observed.routes)
    assert plan([p], observed).delete_fdb == (FdbKey(p.vtep_mac, IPv4Address("192.168.0.99")),)


def test_route_without_onlink_or_wrong_gateway_is_replaced() -> None:
    p = peer("10.244.2.0/24", "192.168.0.12", "02:00:00:00:00:02")
    base = observed_for(p)
    broken = VxlanObservation(base.neighbours, base.fdb, {p.subnet: PeerRoute(p.subnet, p.gateway, onlink=False)})
    assert plan([p], broken).routes == (PeerRoute(p.subnet, p.gateway),)


# -- DirectRouting ---------------------------------------------------------------------------------------


def test_on_link_peer_gets_only_a_route_via_its_public_ip() -> None:
    near = peer("10.244.2.0/24", "192.168.0.12", "02:00:00:00:00:02")
    far = peer("10.244.3.0/24", "10.0.0.13", "02:00:00:00:00:03")
    result = plan([near, far], direct=(near.subnet,))
    assert result.routes == (PeerRoute(near.subnet, near.public_ip, onlink=False), PeerRoute(far.subnet, far.gateway))
    assert [s for s, _ in result.neighbours] == [far.subnet] and [s for s, _ in result.fdb] == [far.subnet]
    assert [(c.subnet, c.action) for c in result.changes] == [(near.subnet, "add"), (far.subnet, "add")]
    assert "direct route via 192.168.0.12" in result.changes[0].reason
    observed = VxlanObservation({far.gateway: NeighbourEntry(far.gateway, far.vtep_mac)},
                                frozenset({FdbKey(far.vtep_mac, far.public_ip)}),
                                {near.subnet: result.routes[0], far.subnet: result.routes[1]})
    assert plan([near, far], observed, direct=(near.subnet,)).empty


def test_peer_becoming_on_link_switches_with_one_route_replace_then_loses_its_entries() -> None:
    p = peer("10.244.2.0/24", "192.168.0.12", "02:00:00:00:00:02")
    result = plan([p], observed_for(p), direct=(p.subnet,))
    # The replace moves the destination off the device; no route delete, so no moment without a route.
    assert result.routes == (PeerRoute(p.subnet, p.public_ip, onlink=False),) and result.delete_routes == ()
    assert result.delete_fdb == (FdbKey(p.vtep_mac, p.public_ip),)
    assert result.delete_neighbours == (NeighbourEntry(p.gateway, p.vtep_mac),)
    assert [(c.action, c.reason) for c in result.changes] == [("update", "now reached directly via 192.168.0.12")]


def test_peer_no_longer_on_link_goes_back_through_the_device() -> None:
    p = peer("10.244.2.0/24", "192.168.0.12", "02:00:00:00:00:02")
    observed = VxlanObservation({}, frozenset(), {p.subnet: PeerRoute(p.subnet, p.public_ip, onlink=False)})
    result = plan([p], observed)
    assert [n for _, n in result.neighbours] == [NeighbourEntry(p.gateway, p.vtep_mac)]
    assert result.routes == (PeerRoute(p.subnet, p.gateway),) and result.delete_routes == ()
    assert "no longer on-link" in result.changes[0].reason


def test_direct_route_of_a_gone_lease_is_removed_but_never_before_the_snapshot() -> None:
    gone = PeerRoute(IPv4Network("10.244.9.0/24"), IPv4Address("192.168.0.19"), onlink=False)
    observed = VxlanObservation({}, frozenset(), {gone.dst: gone})
    assert plan([], observed).delete_routes == (gone,)
    assert plan([], observed, in_sync=False).empty
