"""flannel's data model: config rules, lease keys and values, allocation, subnet.env."""

from __future__ import annotations

import json
import random
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


def test_config_defaults_follow_flannel() -> None:
    config = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "ali-vpc"}}')
    assert config.subnet_len == 24
    assert config.subnet_min == IPv4Network("10.244.1.0/24")  # flannel skips the first subnet
    assert config.subnet_max == IPv4Network("10.244.255.0/24")
    assert config.backend_type == "ali-vpc"
    small = parse_network_config('{"Network": "10.5.0.0/26"}')
    assert small.subnet_len == 28 and small.backend_type == "udp"


@pytest.mark.parametrize(("raw", "message"), [
    ("{not json", "not valid JSON"),
    ('{"Backend": {"Type": "ali-vpc"}}', 'no "Network"'),
    ('{"Network": "10.0.0.0/30"}', "too small"),
    ('{"Network": "10.0.0.0/16", "SubnetLen": 31}', "too long"),
    ('{"Network": "10.0.0.0/16", "SubnetLen": 17}', "fewer than 4 subnets"),
    ('{"Network": "10.0.0.0/16", "SubnetMin": "10.0.1.5"}', "not aligned"),
    ('{"Network": "10.0.0.0/16", "EnableIPv6": true}', "IPv6"),
    ('{"Network": "banana"}', "not an IPv4 CIDR"),
])
def test_bad_configs_are_refused_with_a_clear_message(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_network_config(raw)


def test_backend_keys_match_case_insensitively_like_go() -> None:
    config = parse_network_config('{"Network": "10.0.0.0/16", "Backend": {"type": "vxlan", "vni": 4}}')
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
