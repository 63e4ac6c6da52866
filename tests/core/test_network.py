"""flannel's data model: config rules, lease keys and values, allocation, subnet.env."""

from __future__ import annotations

import json
import random
import re
from ipaddress import IPv4Address, IPv4Network

import pytest

from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.core.network import (
    LeaseAttrs,
    LeaseFormatError,
    parse_lease_value,
    parse_network_config,
    parse_subnet_key,
    pick_free_subnet,
    previous_subnet,
    render_subnet_env,
    subnet_key,
)

# -- flannel's pkg/subnet/config_test.go, ported ---------------------------------------------


def test_config_defaults() -> None:
    config = parse_network_config('{ "network": "10.3.0.0/16" }')
    assert config.network == IPv4Network("10.3.0.0/16")
    assert config.subnet_min.network_address == IPv4Address("10.3.1.0")  # flannel skips the first subnet
    assert config.subnet_max.network_address == IPv4Address("10.3.255.0")
    assert config.subnet_len == 24


def test_config_overrides() -> None:
    config = parse_network_config('{ "Network": "10.3.0.0/16", "SubnetMin": "10.3.5.0", "SubnetMax": "10.3.8.0", '
                                  '"SubnetLen": 28 }')
    assert config.network == IPv4Network("10.3.0.0/16")
    assert config.subnet_min == IPv4Network("10.3.5.0/28")
    assert config.subnet_max == IPv4Network("10.3.8.0/28")
    assert config.subnet_len == 28


@pytest.mark.parametrize("raw", [
    '{ "enableIPv6": true, "ipv6Network": "fc00::/48", "enableIPv4": false }',
    '{ "EnableIPv6": true, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::", '
    '"IPv6SubnetMax": "fc00:0:0:f::", "IPv6SubnetLen": 124, "enableIPv4": false }',
    '{ "Network": "10.3.0.0/16", "EnableIPv6": true, "IPv6Network": "fc00::/48" }',
])
def test_ipv6_configs_of_config_test_are_refused_until_dual_stack(raw: str) -> None:
    with pytest.raises(ConfigError, match="EnableIPv6 is not supported by flannel-alivpc yet"):
        parse_network_config(raw)


# -- CheckNetworkConfig's rules ------------------------------------------------------------------------


@pytest.mark.parametrize(("network", "subnet_len"), [
    ("10.0.0.0/8", 24), ("10.5.0.0/22", 24), ("10.5.0.0/23", 25), ("10.5.0.0/26", 28), ("10.5.0.0/28", 30),
])
def test_default_subnet_len(network: str, subnet_len: int) -> None:
    assert parse_network_config(json.dumps({"Network": network})).subnet_len == subnet_len


@pytest.mark.parametrize(("raw", "message"), [
    ("{not json", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ('{"Backend": {"Type": "ali-vpc"}}', 'no "Network"; please define a correct Network'),
    ('{"Network": "0.0.0.0/0"}', "please define a correct Network"),
    ('{"Network": "10.0.0.0/29"}', "minimum useful network prefix is /28"),
    ('{"Network": "10.0.0.0/16", "SubnetLen": 31}', "SubnetLen must be less than /31"),
    ('{"Network": "10.0.0.0/16", "SubnetLen": 17}', "at least four"),
    ('{"Network": "10.0.0.0/16", "SubnetLen": "24"}', '"SubnetLen" must be a non-negative integer'),
    ('{"Network": "10.0.0.0/16", "SubnetLen": 24.0}', '"SubnetLen" must be a non-negative integer'),
    ('{"Network": "10.0.0.0/16", "SubnetLen": true}', '"SubnetLen" must be a non-negative integer'),
    ('{"Network": "10.0.0.0/16", "SubnetLen": -1}', '"SubnetLen" must be a non-negative integer'),
    ('{"Network": "10.0.0.0/16", "SubnetMin": "10.0.1.5"}', "SubnetMin 10.0.1.5 is not on a SubnetLen boundary"),
    ('{"Network": "10.0.0.0/16", "SubnetMax": "10.0.9.128"}', "SubnetMax 10.0.9.128 is not on a SubnetLen"),
    ('{"Network": "10.0.0.0/16", "SubnetMin": "10.1.0.0"}', "SubnetMin 10.1.0.0 is not in the range of the Network"),
    ('{"Network": "10.0.0.0/16", "SubnetMax": "9.0.0.0"}', "SubnetMax 9.0.0.0 is not in the range of the Network"),
    # flannel decodes SubnetMin/Max as addresses: a CIDR, a number or null does not parse.
    ('{"Network": "10.0.0.0/16", "SubnetMin": "10.0.4.0/24"}', "not an IPv4 address \\(an address, not a CIDR\\)"),
    ('{"Network": "10.0.0.0/16", "SubnetMax": 5}', '"SubnetMax" 5 is not an IPv4 address'),
    ('{"Network": "10.0.0.0/16", "SubnetMin": null}', '"SubnetMin" null is not an IPv4 address'),
    ('{"Network": "10.0.0.0/16", "EnableIPv6": true}', "EnableIPv6 is not supported"),
    ('{"Network": "10.0.0.0/16", "EnableIPv4": false}', "EnableIPv4 false"),
    ('{"Network": "10.0.0.0/16", "EnableIPv4": "yes"}', '"EnableIPv4" must be true or false'),
    ('{"Network": "10.0.0.0/16", "IPv6Network": "banana"}', '"IPv6Network" "banana" is not a CIDR'),
    ('{"Network": "banana"}', "not a CIDR"),
    ('{"Network": "10.0.0.1"}', "not a CIDR"),
    ('{"Network": "fc00::/48"}', "not an IPv4 CIDR"),
    ('{"Network": null}', "not a CIDR"),
    ('{"Network": "10.0.0.0/16", "Backend": "vxlan"}', '"Backend" must be an object'),
    ('{"Network": "10.0.0.0/16", "Backend": {"Type": 5}}', 'Backend "Type" must be a string'),
])
def test_configs_flannel_refuses_are_refused_with_a_clear_message(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_network_config(raw)


def test_configs_flannel_accepts_are_accepted_with_its_meaning() -> None:
    # SubnetMin above SubnetMax is not a config error in flannel: allocation then finds nothing.
    inverted = parse_network_config('{"Network": "10.0.0.0/16", "SubnetMin": "10.0.9.0", "SubnetMax": "10.0.3.0"}')
    assert inverted.subnet_min == IPv4Network("10.0.9.0/24") and inverted.subnet_max == IPv4Network("10.0.3.0/24")
    with pytest.raises(ConfigError, match=re.escape("SubnetMin 10.0.9.0 is above SubnetMax 10.0.3.0")):
        pick_free_subnet(inverted, [])
    # "0.0.0.0" is flannel's zero value: the default bound.
    zero = parse_network_config('{"Network": "10.0.0.0/16", "SubnetMin": "0.0.0.0"}')
    assert zero.subnet_min == IPv4Network("10.0.1.0/24")
    # Host bits in Network are dropped, as net.ParseCIDR does.
    assert parse_network_config('{"Network": "10.244.7.9/16"}').network == IPv4Network("10.244.0.0/16")
    # Unknown keys are ignored; JSON null for a boolean keeps its default; EnableNFTables is read.
    extra = parse_network_config('{"Network": "10.0.0.0/16", "Foo": 1, "EnableIPv4": null, "EnableNFTables": true}')
    assert extra.enable_nftables and extra.subnet_len == 24
    # IPv6 keys with IPv6 off are decoded (so must be well-formed) and otherwise ignored.
    assert parse_network_config('{"Network": "10.0.0.0/16", "IPv6Network": "fc00::/48"}').subnet_len == 24
    # An IPv4-mapped IPv6 spelling is an IPv4 address to Go's net.ParseIP.
    mapped = parse_network_config('{"Network": "10.0.0.0/16", "SubnetMin": "::ffff:10.0.4.0"}')
    assert mapped.subnet_min == IPv4Network("10.0.4.0/24")


@pytest.mark.parametrize(("backend", "backend_type"), [
    (None, "udp"),  # no Backend key at all: flannel's parseBackendType says "udp"
    ("{}", ""),  # a Backend without Type reads as "" (flanneld then finds no such backend)
    ("null", ""),
    ('{"Type": null}', ""),
    ('{"type": "vxlan"}', "vxlan"),
    ('{"TYPE": "host-gw", "Type": "ali-vpc"}', "ali-vpc"),  # several spellings: the last wins, as in Go
])
def test_backend_type_reads_as_flannel_reads_it(backend: str | None, backend_type: str) -> None:
    raw = '{"Network": "10.0.0.0/16"' + (f', "Backend": {backend}' if backend is not None else "") + "}"
    assert parse_network_config(raw).backend_type == backend_type


def test_keys_match_case_insensitively_and_the_last_spelling_wins() -> None:
    config = parse_network_config('{"network": "10.1.0.0/16", "NETWORK": "10.0.0.0/16", '
                                  '"Backend": {"type": "vxlan", "vni": 4}}')
    assert config.network == IPv4Network("10.0.0.0/16")
    assert config.backend_type == "vxlan" and config.backend_value("VNI") == 4


def test_subnet_keys_round_trip_and_dual_stack_keys_parse() -> None:
    subnet = IPv4Network("10.5.52.0/24")
    assert subnet_key(subnet) == "10.5.52.0-24"
    assert parse_subnet_key("/coreos.com/network/subnets/10.5.52.0-24") == subnet
    assert parse_subnet_key("10.5.52.0-24&fc00::-64") == subnet
    with pytest.raises(LeaseFormatError):
        parse_subnet_key("/coreos.com/network/subnets/garbage")


def test_lease_value_is_byte_compatible_with_flannel() -> None:
    attrs = LeaseAttrs(IPv4Address("192.168.64.3"), "vxlan", {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"})
    assert attrs.to_json() == ('{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
                               '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}')
    bare = LeaseAttrs(IPv4Address("1.2.3.4"))
    assert bare.to_json() == '{"PublicIP":"1.2.3.4","PublicIPv6":null}'
    # Pre-0.18 writers had no PublicIPv6 key; they still parse.
    old = parse_lease_value('{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"x"}}')
    assert old.backend_field("vni") == 1


@pytest.mark.parametrize("raw", ['{"PublicIP": "nope"}', "[]", "{", '{"PublicIP": "1.2.3.4", "BackendData": 5}'])
def test_malformed_lease_values_are_refused(raw: str) -> None:
    with pytest.raises(LeaseFormatError):
        parse_lease_value(raw)


def test_allocation_skips_taken_subnets_and_reports_exhaustion() -> None:
    config = parse_network_config('{"Network": "10.0.0.0/22"}')  # subnets .1 .. .3 usable
    taken = [IPv4Network("10.0.1.0/24"), IPv4Network("10.0.2.0/24")]
    assert pick_free_subnet(config, taken, random.Random(1)) == IPv4Network("10.0.3.0/24")
    with pytest.raises(ConfigError, match="out of subnets"):
        pick_free_subnet(config, [*taken, IPv4Network("10.0.3.0/24")])


def test_subnet_env_matches_flannel_and_reads_back() -> None:
    config = parse_network_config(json.dumps({"Network": "10.5.0.0/16"}))
    text = render_subnet_env(config, IPv4Network("10.5.52.0/24"), mtu=1500, ip_masq=True)
    assert text == "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n"
    assert previous_subnet(text) == IPv4Network("10.5.52.0/24")
    assert previous_subnet("garbage") is None
