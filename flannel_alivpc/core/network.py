"""flannel's data model: the network config, subnet lease keys and values, subnet.env.

Everything here is pure and byte-compatible with flannel >= 0.18 (etcd v3):

* ``<prefix>/config`` holds the network config JSON; ``parse_network_config``
  applies flannel's defaults and checks (SubnetLen, SubnetMin/Max alignment).
* ``<prefix>/subnets/10.5.52.0-24`` holds one lease; the value is the JSON of
  flannel's LeaseAttrs: ``PublicIP``, ``PublicIPv6`` (always present, null when
  unset), ``BackendType`` and ``BackendData`` (omitted when empty).
* ``subnet.env`` is what the CNI plugin reads.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flannel_alivpc.core.errors import ConfigError

DEFAULT_PREFIX = "/coreos.com/network"
BACKEND_TYPE = "ali-vpc"
LEASE_TTL = 24 * 3600
# flannel picks a random subnet among the first this-many free candidates.
ALLOCATION_CANDIDATES = 100

IPv4Network = ipaddress.IPv4Network

_SUBNET_KEY = re.compile(r"(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$")


class LeaseFormatError(ValueError):
    """A lease key or value that is not in flannel's format."""


@dataclass(frozen=True)
class NetworkConfig:
    network: IPv4Network
    subnet_len: int
    subnet_min: IPv4Network
    subnet_max: IPv4Network
    backend_type: str
    backend: Mapping[str, Any] = field(default_factory=dict)

    def backend_value(self, name: str, default: Any = None) -> Any:
        """A Backend key, matched case-insensitively as Go's json decoder does."""
        for key, value in self.backend.items():
            if key.lower() == name.lower():
                return value
        return default

    def subnet_fits(self, subnet: IPv4Network) -> bool:
        """True when ``subnet`` is one flannel could have allocated under this config."""
        return (
            subnet.prefixlen == self.subnet_len
            and subnet.subnet_of(self.network)
            and int(self.subnet_min.network_address) <= int(subnet.network_address)
            <= int(self.subnet_max.network_address)
        )


def parse_network_config(raw: bytes | str, *, source: str = "network config") -> NetworkConfig:
    """Parse and validate flannel's network config JSON with flannel's defaults."""
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise ConfigError(f"{source} is not valid JSON ({error}); fix the value, e.g. "
                          '{"Network": "10.244.0.0/16", "Backend": {"Type": "ali-vpc"}}') from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a JSON object")
    lowered = {k.lower(): v for k, v in data.items()}
    if lowered.get("enableipv6"):
        raise ConfigError(f"{source}: EnableIPv6 is not supported by flannel-alivpc; remove it")
    if lowered.get("enableipv4") is False:
        raise ConfigError(f"{source}: EnableIPv4 must be true")
    raw_network = lowered.get("network")
    if not raw_network:
        raise ConfigError(f'{source} has no "Network"; set it to the pod CIDR, e.g. "10.244.0.0/16"')
    try:
        network = ipaddress.IPv4Network(raw_network, strict=False)
    except ValueError:
        raise ConfigError(f'{source}: "Network" {raw_network!r} is not an IPv4 CIDR') from None
    subnet_len = lowered.get("subnetlen") or 0
    if not isinstance(subnet_len, int):
        raise ConfigError(f'{source}: "SubnetLen" must be an integer')
    if subnet_len == 0:
        if network.prefixlen > 28:
            raise ConfigError(f"{source}: network {network} is too small; flannel needs at least a /28")
        subnet_len = 24 if network.prefixlen <= 22 else network.prefixlen + 2
    if subnet_len > 30:
        raise ConfigError(f'{source}: "SubnetLen" {subnet_len} is too long; at most 30')
    if subnet_len < network.prefixlen + 2:
        raise ConfigError(f'{source}: "SubnetLen" {subnet_len} leaves fewer than 4 subnets in {network}; '
                          f"use at least {network.prefixlen + 2}")
    size = 1 << (32 - subnet_len)
    first = int(network.network_address)
    subnet_min = _subnet_bound(lowered.get("subnetmin"), IPv4Network((first + size, subnet_len)),
                               subnet_len, "SubnetMin", source)
    last = first + network.num_addresses - size
    subnet_max = _subnet_bound(lowered.get("subnetmax"), IPv4Network((last, subnet_len)),
                               subnet_len, "SubnetMax", source)
    if not (subnet_min.subnet_of(network) and subnet_max.subnet_of(network)):
        raise ConfigError(f"{source}: SubnetMin/SubnetMax must lie inside {network}")
    if int(subnet_min.network_address) > int(subnet_max.network_address):
        raise ConfigError(f"{source}: SubnetMin {subnet_min} is above SubnetMax {subnet_max}")
    backend = lowered.get("backend")
    if backend is None:
        backend = {}
    if not isinstance(backend, dict):
        raise ConfigError(f'{source}: "Backend" must be an object like {{"Type": "ali-vpc"}}')
    backend_type = next((str(v) for k, v in backend.items() if k.lower() == "type"), "udp")
    return NetworkConfig(network=network, subnet_len=subnet_len, subnet_min=subnet_min,
                         subnet_max=subnet_max, backend_type=backend_type, backend=backend)


def _subnet_bound(raw: Any, default: IPv4Network, subnet_len: int, name: str, source: str) -> IPv4Network:
    if not raw:
        return default
    try:
        address = ipaddress.IPv4Address(str(raw).split("/")[0])
    except ValueError:
        raise ConfigError(f"{source}: {name} {raw!r} is not an IPv4 address") from None
    if int(address) % (1 << (32 - subnet_len)):
        raise ConfigError(f"{source}: {name} {raw} is not aligned to SubnetLen /{subnet_len}")
    return IPv4Network((int(address), subnet_len))


# -- lease keys and values --------------------------------------------------------


def subnet_key(subnet: IPv4Network) -> str:
    """flannel's key for a subnet: ``10.5.52.0-24``."""
    return f"{subnet.network_address}-{subnet.prefixlen}"


def parse_subnet_key(key: str) -> IPv4Network:
    """The IPv4 subnet of a lease key (dual-stack keys keep their IPv4 part)."""
    match = _SUBNET_KEY.search(key)
    if not match:
        raise LeaseFormatError(f"lease key {key!r} is not of the form A.B.C.D-LEN")
    try:
        return IPv4Network(f"{match.group(1)}/{match.group(2)}")
    except ValueError:
        raise LeaseFormatError(f"lease key {key!r} does not name a valid subnet") from None


@dataclass(frozen=True)
class LeaseAttrs:
    """The value of a lease key: flannel's LeaseAttrs."""

    public_ip: ipaddress.IPv4Address
    backend_type: str = ""
    backend_data: Mapping[str, Any] | None = None
    public_ipv6: str | None = None

    def to_json(self) -> str:
        # Key order and presence follow Go's encoding of the struct: PublicIPv6 has no
        # omitempty (always present), BackendType and BackendData do.
        value: dict[str, Any] = {"PublicIP": str(self.public_ip), "PublicIPv6": self.public_ipv6}
        if self.backend_type:
            value["BackendType"] = self.backend_type
        if self.backend_data:
            value["BackendData"] = dict(self.backend_data)
        return json.dumps(value, separators=(",", ":"))

    def backend_field(self, name: str) -> Any:
        if not self.backend_data:
            return None
        for key, value in self.backend_data.items():
            if key.lower() == name.lower():
                return value
        return None

    @property
    def instance_id(self) -> str | None:
        """The ECS instance of an ali-vpc lease (None for other backends)."""
        value = self.backend_field("InstanceId")
        return str(value) if value else None


def parse_lease_value(raw: bytes | str) -> LeaseAttrs:
    try:
        data = json.loads(raw)
    except ValueError:
        raise LeaseFormatError("lease value is not JSON") from None
    if not isinstance(data, dict):
        raise LeaseFormatError("lease value is not a JSON object")
    public_ip = data.get("PublicIP")
    try:
        address = ipaddress.IPv4Address(public_ip)
    except ValueError:
        raise LeaseFormatError(f"lease PublicIP {public_ip!r} is not an IPv4 address") from None
    backend_data = data.get("BackendData")
    if backend_data is not None and not isinstance(backend_data, dict):
        raise LeaseFormatError("lease BackendData is not a JSON object")
    backend_type = data.get("BackendType") or ""
    if not isinstance(backend_type, str):
        raise LeaseFormatError("lease BackendType is not a string")
    ipv6 = data.get("PublicIPv6")
    return LeaseAttrs(public_ip=address, backend_type=backend_type, backend_data=backend_data,
                      public_ipv6=ipv6 if isinstance(ipv6, str) else None)


@dataclass(frozen=True)
class Lease:
    subnet: IPv4Network
    attrs: LeaseAttrs
    expiration: float | None = None
    """Wall-clock expiry; None for a reservation (a key with no etcd lease) or when not looked up."""
    etcd_lease: int = 0


# -- allocation --------------------------------------------------------------------


def pick_free_subnet(
    config: NetworkConfig, taken: Iterable[IPv4Network], rng: random.Random | None = None
) -> IPv4Network:
    """A free subnet as flannel picks one: random among the first free candidates."""
    taken_list = list(taken)
    size = 1 << (32 - config.subnet_len)
    candidates: list[IPv4Network] = []
    address = int(config.subnet_min.network_address)
    stop = int(config.subnet_max.network_address)
    while address <= stop and len(candidates) < ALLOCATION_CANDIDATES:
        subnet = IPv4Network((address, config.subnet_len))
        if not any(subnet.overlaps(other) for other in taken_list):
            candidates.append(subnet)
        address += size
    if not candidates:
        raise ConfigError(f"out of subnets: every /{config.subnet_len} in {config.network} "
                          f"({config.subnet_min}..{config.subnet_max}) is leased")
    return (rng or random.Random()).choice(candidates)


# -- subnet.env --------------------------------------------------------------------


def render_subnet_env(config: NetworkConfig, subnet: IPv4Network, *, mtu: int, ip_masq: bool) -> str:
    """subnet.env as flannel writes it: FLANNEL_SUBNET is the subnet's first address."""
    first = subnet.network_address + 1
    return (
        f"FLANNEL_NETWORK={config.network}\n"
        f"FLANNEL_SUBNET={first}/{subnet.prefixlen}\n"
        f"FLANNEL_MTU={mtu}\n"
        f"FLANNEL_IPMASQ={'true' if ip_masq else 'false'}\n"
    )


def parse_subnet_env(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key:
            values[key] = value
    return values


def previous_subnet(text: str) -> IPv4Network | None:
    """The subnet recorded in a subnet.env (FLANNEL_SUBNET), if any."""
    raw = parse_subnet_env(text).get("FLANNEL_SUBNET")
    if not raw:
        return None
    try:
        return IPv4Network(raw, strict=False)
    except ValueError:
        return None
