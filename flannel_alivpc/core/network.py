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


_SECRET_BACKEND_KEYS = frozenset({"accesskeysecret", "accesskeyid"})


@dataclass(frozen=True)
class NetworkConfig:
    network: IPv4Network
    subnet_len: int
    subnet_min: IPv4Network
    subnet_max: IPv4Network
    backend_type: str
    """flannel's reading of ``Backend.Type``: "udp" with no Backend at all, "" for a Backend without Type."""
    backend: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """May hold flannel's old ali-vpc AccessKeySecret: shown only through ``__repr__``'s masking."""
    enable_nftables: bool = False

    def __repr__(self) -> str:
        shown = {k: "***" if k.lower() in _SECRET_BACKEND_KEYS else v for k, v in self.backend.items()}
        return (f"NetworkConfig(network={self.network}, subnet_len={self.subnet_len}, subnet_min={self.subnet_min}, "
                f"subnet_max={self.subnet_max}, backend_type={self.backend_type!r}, backend={shown!r})")

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


_ABSENT = object()
_EXAMPLE = '{"Network": "10.244.0.0/16", "Backend": {"Type": "ali-vpc"}}'


def parse_network_config(raw: bytes | str, *, source: str = "network config") -> NetworkConfig:
    """flannel's ParseConfig + CheckNetworkConfig: the same documents accepted, the same defaults.

    Go's decoder rules carry over: keys match case-insensitively (the last of
    several spellings wins), unknown keys are ignored, a value of the wrong
    JSON type is an error. flannel's quirks are kept on purpose so that a
    config flanneld accepts is accepted here and means the same: SubnetMin and
    SubnetMax are plain addresses (a CIDR is refused), "0.0.0.0" means unset,
    and SubnetMin above SubnetMax is accepted (allocation then finds nothing).
    IPv6 is refused until dual stack exists.
    """
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise ConfigError(f"{source} is not valid JSON ({error}); fix the value, e.g. {_EXAMPLE}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a JSON object, e.g. {_EXAMPLE}")
    lowered = {k.lower(): v for k, v in data.items()}
    enable_ipv4 = _bool_field(lowered, "EnableIPv4", True, source)
    enable_ipv6 = _bool_field(lowered, "EnableIPv6", False, source)
    enable_nftables = _bool_field(lowered, "EnableNFTables", False, source)
    _check_ipv6_syntax(lowered, source)
    if enable_ipv6:
        raise ConfigError(f"{source}: EnableIPv6 is not supported by flannel-alivpc yet (no dual stack); "
                          "remove it or set it to false")
    if not enable_ipv4:
        raise ConfigError(f"{source}: EnableIPv4 false leaves nothing to do (IPv6-only is not supported); "
                          "remove it or set it to true")
    if "network" not in lowered:
        raise ConfigError(f'{source} has no "Network"; please define a correct Network parameter, '
                          'the pod CIDR, e.g. "10.244.0.0/16"')
    network = _network_field(lowered["network"], source)
    subnet_len = _uint_field(lowered, "SubnetLen", source)
    if subnet_len > 0:
        if subnet_len > 30:
            raise ConfigError(f'{source}: "SubnetLen" {subnet_len} is too long, SubnetLen must be less than /31; '
                              "use at most 30")
        if subnet_len < network.prefixlen + 2:
            raise ConfigError(f'{source}: "SubnetLen" {subnet_len} leaves fewer than 4 subnets in {network} '
                              f"(the network must be able to accommodate at least four); use at least "
                              f"{network.prefixlen + 2}")
    elif network.prefixlen > 28:
        raise ConfigError(f"{source}: network {network} is too small; the minimum useful network prefix is /28")
    else:
        subnet_len = 24 if network.prefixlen <= 22 else network.prefixlen + 2
    size = 1 << (32 - subnet_len)
    first = int(network.network_address)
    subnet_min = _subnet_bound(lowered, "SubnetMin", first + size, network, subnet_len, source)
    subnet_max = _subnet_bound(lowered, "SubnetMax", first + network.num_addresses - size, network, subnet_len,
                               source)
    backend, backend_type = _backend_field(lowered, source)
    return NetworkConfig(network=network, subnet_len=subnet_len, subnet_min=subnet_min, subnet_max=subnet_max,
                         backend_type=backend_type, backend=backend, enable_nftables=enable_nftables)


def _bool_field(fields: Mapping[str, Any], name: str, default: bool, source: str) -> bool:
    value = fields.get(name.lower())
    if value is None:  # absent, or JSON null (which Go leaves at the default)
        return default
    if not isinstance(value, bool):
        raise ConfigError(f'{source}: "{name}" must be true or false, got {json.dumps(value)}')
    return value


def _uint_field(fields: Mapping[str, Any], name: str, source: str) -> int:
    value = fields.get(name.lower())
    if value is None:
        return 0
    # Go decodes into a uint: a JSON integer literal >= 0; 24.0, "24" and true are errors.
    if type(value) is not int or value < 0:
        raise ConfigError(f'{source}: "{name}" must be a non-negative integer like 24, got {json.dumps(value)}')
    return value


def _network_field(value: Any, source: str) -> IPv4Network:
    text = value if isinstance(value, str) else json.dumps(value)
    if "/" not in text:
        raise ConfigError(f'{source}: "Network" {text!r} is not a CIDR; write it with its prefix length, '
                          'e.g. "10.244.0.0/16"')
    try:
        # flannel (net.ParseCIDR) keeps the network part of an address with host bits set.
        network = IPv4Network(text, strict=False)
    except ValueError:
        raise ConfigError(f'{source}: "Network" {text!r} is not an IPv4 CIDR; e.g. "10.244.0.0/16"') from None
    if network.prefixlen == 0 and int(network.network_address) == 0:
        raise ConfigError(f'{source}: "Network" 0.0.0.0/0 is not a usable pod network; please define a correct '
                          'Network parameter, e.g. "10.244.0.0/16"')
    return network


def _parse_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """An IPv4 address as Go's net.ParseIP + To4 reads one (IPv4-mapped IPv6 included); None otherwise."""
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        pass
    try:
        return ipaddress.IPv6Address(text).ipv4_mapped
    except ValueError:
        return None


def _subnet_bound(fields: Mapping[str, Any], name: str, default: int, network: IPv4Network, subnet_len: int,
                  source: str) -> IPv4Network:
    raw = fields.get(name.lower(), _ABSENT)
    if raw is _ABSENT:
        return IPv4Network((default, subnet_len))
    address = _parse_ipv4(raw) if isinstance(raw, str) else None
    if address is None:
        hint = " (an address, not a CIDR)" if isinstance(raw, str) and "/" in raw else ""
        raise ConfigError(f'{source}: "{name}" {json.dumps(raw)} is not an IPv4 address{hint}; write the first '
                          f'address of a subnet, e.g. "{IPv4Network((default, subnet_len)).network_address}"')
    if int(address) == 0:
        return IPv4Network((default, subnet_len))  # flannel reads 0.0.0.0 as "not set"
    if address not in network:
        raise ConfigError(f"{source}: {name} {address} is not in the range of the Network {network}")
    if int(address) % (1 << (32 - subnet_len)):
        raise ConfigError(f"{source}: {name} {address} is not on a SubnetLen boundary (/{subnet_len}); use "
                          f"{IPv4Network((address, subnet_len), strict=False).network_address}")
    return IPv4Network((address, subnet_len))


def _check_ipv6_syntax(fields: Mapping[str, Any], source: str) -> None:
    """The IPv6 keys are decoded by flannel even with IPv6 off, so a malformed one fails there too."""
    raw_network = fields.get("ipv6network", _ABSENT)
    if raw_network is not _ABSENT:
        try:
            ipaddress.ip_network(str(raw_network), strict=False)
            if not isinstance(raw_network, str):
                raise ValueError
        except ValueError:
            raise ConfigError(f'{source}: "IPv6Network" {json.dumps(raw_network)} is not a CIDR; fix or remove '
                              "it") from None
    for name in ("IPv6SubnetMin", "IPv6SubnetMax"):
        raw = fields.get(name.lower())
        if raw is None:
            continue
        try:
            ipaddress.ip_address(str(raw))
            if not isinstance(raw, str):
                raise ValueError
        except ValueError:
            raise ConfigError(f'{source}: "{name}" {json.dumps(raw)} is not an IP address; fix or remove '
                              "it") from None
    _uint_field(fields, "IPv6SubnetLen", source)


def _backend_field(fields: Mapping[str, Any], source: str) -> tuple[Mapping[str, Any], str]:
    """The Backend object and flannel's parseBackendType reading of it."""
    if "backend" not in fields:
        return {}, "udp"  # flannel's default when there is no Backend at all
    backend = fields["backend"]
    if backend is None:
        return {}, ""  # Go keeps the raw "null", which decodes to an empty Type
    if not isinstance(backend, dict):
        raise ConfigError(f'{source}: "Backend" must be an object like {{"Type": "ali-vpc"}}, got '
                          f"{json.dumps(backend)}")
    backend_type: Any = ""
    for key, value in backend.items():
        if key.lower() == "type":
            backend_type = value
    if backend_type is None:
        backend_type = ""
    if not isinstance(backend_type, str):
        raise ConfigError(f'{source}: Backend "Type" must be a string like "ali-vpc", got {json.dumps(backend_type)}')
    return backend, backend_type


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
    if not candidates and int(config.subnet_min.network_address) > stop:
        raise ConfigError(f"out of subnets: SubnetMin {config.subnet_min.network_address} is above SubnetMax "
                          f"{config.subnet_max.network_address}, so there is none to allocate; fix SubnetMin/SubnetMax "
                          "in the network config")
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
