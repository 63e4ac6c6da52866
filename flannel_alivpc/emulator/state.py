"""The emulated cloud's state: regions, VPCs, vRouters, route tables and entries, vSwitches,
ECS instances, access keys and the settings that shape its behaviour.

One ``CloudState`` holds everything behind one lock; action handlers run under
that lock, so each API call is atomic, as each real call is from the caller's
point of view. Asynchronous route-entry transitions are computed lazily from
timestamps (``settle``), so no background thread is needed and a dump taken at
any moment is consistent.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import secrets
import string
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

Clock = Callable[[], float]

DEFAULT_REGION = "cn-hangzhou"
KNOWN_REGIONS = {
    "cn-hangzhou": "China (Hangzhou)",
    "cn-shanghai": "China (Shanghai)",
    "cn-beijing": "China (Beijing)",
    "cn-shenzhen": "China (Shenzhen)",
    "cn-hongkong": "China (Hong Kong)",
    "ap-southeast-1": "Singapore",
    "us-west-1": "US (Silicon Valley)",
    "eu-central-1": "Germany (Frankfurt)",
}
# The range Alibaba Cloud reserves for its own services; every route table has
# a System entry for it and custom entries may not point into it.
SERVICE_CIDR = ipaddress.ip_network("100.64.0.0/10")

_ID_ALPHABET = string.ascii_lowercase + string.digits


class UnknownResource(LookupError):
    """A referenced resource does not exist (the admin API answers 404)."""


def _network(name: str, value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``value`` parsed as a network; errors name the field ``name``."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a CIDR string, got {value!r}")
    try:
        return ipaddress.ip_network(value)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def _address(name: str, value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected an IP address string, got {value!r}")
    try:
        return ipaddress.ip_address(value)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def new_id(prefix: str) -> str:
    return f"{prefix}-emu" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(14))


def iso_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass
class Settings:
    region: str = DEFAULT_REGION
    route_delay: float = 2.0
    """Seconds a route entry stays Pending (or Deleting) before it settles."""
    route_quota: int = 200
    """Custom route entries allowed per route table."""
    sts_ttl: float = 3600.0
    """Lifetime of STS credentials handed out for RAM roles."""
    timestamp_skew: float = 900.0
    """Largest accepted difference between a request's Timestamp and now."""


@dataclass
class AccessKey:
    access_key_id: str
    secret: str = field(repr=False)
    security_token: str = field(default="", repr=False)
    expires_at: float | None = None
    role: str = ""


@dataclass
class Vpc:
    vpc_id: str
    region: str
    cidr: str
    name: str
    vrouter_id: str
    created: float
    is_default: bool = False


@dataclass
class VRouter:
    vrouter_id: str
    vpc_id: str
    region: str
    created: float


@dataclass
class RouteEntry:
    entry_id: str
    table_id: str
    destination: str
    entry_type: str  # System | Custom
    next_hop_type: str
    next_hop_id: str
    created: float
    ready_at: float
    name: str = ""
    description: str = ""
    delete_at: float | None = None
    """When set, the entry is being deleted and disappears at this time."""

    def status(self, now: float) -> str:
        if self.delete_at is not None:
            return "Deleting"
        return "Available" if now >= self.ready_at else "Pending"


@dataclass
class RouteTable:
    table_id: str
    vrouter_id: str
    vpc_id: str
    region: str
    table_type: str  # System | Custom
    created: float
    name: str = ""
    description: str = ""
    entries: dict[str, RouteEntry] = field(default_factory=dict)

    def settle(self, now: float) -> None:
        """Drop entries whose deletion has completed."""
        gone = [e.entry_id for e in self.entries.values() if e.delete_at is not None and now >= e.delete_at]
        for entry_id in gone:
            del self.entries[entry_id]

    def unstable(self, now: float) -> list[RouteEntry]:
        return [e for e in self.entries.values() if e.status(now) != "Available"]

    def custom_count(self) -> int:
        return sum(1 for e in self.entries.values() if e.entry_type == "Custom" and e.delete_at is None)

    def find_destination(self, destination: str) -> RouteEntry | None:
        for entry in self.entries.values():
            if entry.destination == destination and entry.delete_at is None:
                return entry
        return None


@dataclass
class VSwitch:
    vswitch_id: str
    vpc_id: str
    region: str
    zone: str
    cidr: str
    route_table_id: str
    created: float
    name: str = ""


@dataclass
class Instance:
    instance_id: str
    region: str
    zone: str
    hostname: str
    private_ip: str
    network_type: str  # vpc | classic
    vpc_id: str
    vswitch_id: str
    mac: str
    created: float
    status: str = "Running"
    instance_type: str = "ecs.g6.large"
    public_ip: str = ""
    ram_role: str = ""


ENTITY_TYPES: dict[str, type[Any]] = {
    "vpcs": Vpc,
    "vrouters": VRouter,
    "route_tables": RouteTable,
    "vswitches": VSwitch,
    "instances": Instance,
    "access_keys": AccessKey,
}


class CloudState:
    """Everything the emulated cloud knows, behind one re-entrant lock."""

    def __init__(self, settings: Settings | None = None, clock: Clock = time.time) -> None:
        self.settings = settings or Settings()
        self.clock = clock
        self.lock = threading.RLock()
        self.vpcs: dict[str, Vpc] = {}
        self.vrouters: dict[str, VRouter] = {}
        self.route_tables: dict[str, RouteTable] = {}
        self.vswitches: dict[str, VSwitch] = {}
        self.instances: dict[str, Instance] = {}
        self.access_keys: dict[str, AccessKey] = {}
        # Other products (SLB) keep their own resource maps here, keyed by kind.
        self.extensions: dict[str, dict[str, Any]] = {}
        self.state_file: str | None = None
        self._mac_counter = 0

    @contextmanager
    def locked(self) -> Iterator[float]:
        """Hold the state lock; yields ``now`` with every route table settled."""
        with self.lock:
            now = self.clock()
            for table in self.route_tables.values():
                table.settle(now)
            yield now

    # -- credentials -------------------------------------------------------

    def add_access_key(self, access_key_id: str, secret: str) -> AccessKey:
        with self.lock:
            key = AccessKey(access_key_id=access_key_id, secret=secret)
            self.access_keys[access_key_id] = key
            return key

    def issue_sts(self, role: str) -> AccessKey:
        """Current STS credentials for ``role``; a new set once half the lifetime is used.

        Old sets stay valid until they expire, as on the real service, so a
        client that refreshes late still works during the overlap.
        """
        with self.lock:
            now = self.clock()
            ttl = self.settings.sts_ttl
            live = [
                k for k in self.access_keys.values()
                if k.role == role and k.expires_at is not None and k.expires_at - now > ttl / 2
            ]
            if live:
                return max(live, key=lambda k: k.expires_at or 0)
            key = AccessKey(
                access_key_id="STS." + secrets.token_hex(10),
                secret=secrets.token_urlsafe(24),
                security_token="CAIS" + secrets.token_urlsafe(48),
                expires_at=now + ttl,
                role=role,
            )
            self.access_keys[key.access_key_id] = key
            return key

    # -- topology ------------------------------------------------------------

    def create_vpc(self, *, cidr: str = "192.168.0.0/16", name: str = "", region: str | None = None) -> Vpc:
        with self.lock:
            now = self.clock()
            region = region or self.settings.region
            cidr = str(_network("cidr", cidr))
            vpc = Vpc(vpc_id=new_id("vpc"), region=region, cidr=cidr, name=name,
                      vrouter_id=new_id("vrt"), created=now)
            self.vpcs[vpc.vpc_id] = vpc
            self.vrouters[vpc.vrouter_id] = VRouter(vpc.vrouter_id, vpc.vpc_id, region, now)
            table = self._new_table(vpc, "System", name="")
            self._add_system_entry(table, str(SERVICE_CIDR), "service")
            return vpc

    def create_route_table(self, *, vpc_id: str, name: str = "") -> RouteTable:
        with self.lock:
            vpc = self._vpc(vpc_id)
            table = self._new_table(vpc, "Custom", name=name)
            self._add_system_entry(table, str(SERVICE_CIDR), "service")
            for vsw in self.vswitches.values():
                if vsw.vpc_id == vpc_id:
                    self._add_system_entry(table, vsw.cidr, "local")
            return table

    def create_vswitch(
        self, *, vpc_id: str, cidr: str, zone: str = "", route_table_id: str = "", name: str = ""
    ) -> VSwitch:
        with self.lock:
            vpc = self._vpc(vpc_id)
            net = _network("cidr", cidr)
            vpc_net = ipaddress.ip_network(vpc.cidr)
            if net.version != vpc_net.version or not net.subnet_of(vpc_net):  # type: ignore[arg-type]
                raise ValueError(f"cidr: vSwitch CIDR {cidr} is not inside VPC CIDR {vpc.cidr}")
            for other in self.vswitches.values():
                if other.vpc_id == vpc_id and net.overlaps(ipaddress.ip_network(other.cidr)):
                    raise ValueError(f"cidr: {cidr} overlaps vSwitch {other.vswitch_id} ({other.cidr})")
            system_table = self.system_table(vpc_id)
            table_id = route_table_id or system_table.table_id
            table = self.route_tables.get(table_id)
            if table is None:
                raise UnknownResource(f"route_table_id: no route table {table_id!r}")
            if table.vpc_id != vpc_id:
                raise ValueError(f"route_table_id: route table {table_id} belongs to another VPC")
            vsw = VSwitch(vswitch_id=new_id("vsw"), vpc_id=vpc_id, region=vpc.region,
                          zone=zone or f"{vpc.region}-g", cidr=str(net), route_table_id=table_id,
                          created=self.clock(), name=name)
            self.vswitches[vsw.vswitch_id] = vsw
            # Every route table of the VPC gets a System entry for the new vSwitch.
            for table in self.route_tables.values():
                if table.vpc_id == vpc_id:
                    self._add_system_entry(table, vsw.cidr, "local")
            return vsw

    def create_instance(
        self,
        *,
        hostname: str,
        private_ip: str = "",
        network_type: str = "vpc",
        vswitch_id: str = "",
        ram_role: str = "",
        public_ip: str = "",
        region: str | None = None,
    ) -> Instance:
        with self.lock:
            if network_type not in ("vpc", "classic"):
                raise ValueError("network_type: must be vpc or classic")
            vpc_id = zone = ""
            region = region or self.settings.region
            if network_type == "vpc":
                if not vswitch_id:
                    candidates = [v for v in self.vswitches.values() if v.region == region]
                    if not candidates:
                        raise ValueError("no vSwitch to put a VPC instance in; create a VPC first")
                    vswitch_id = candidates[0].vswitch_id
                vsw = self.vswitches.get(vswitch_id)
                if vsw is None:
                    raise UnknownResource(f"vswitch_id: no vSwitch {vswitch_id!r}")
                vpc_id, zone, region = vsw.vpc_id, vsw.zone, vsw.region
                private_ip = private_ip or self._free_ip(ipaddress.ip_network(vsw.cidr))
                if _address("private_ip", private_ip) not in ipaddress.ip_network(vsw.cidr):
                    raise ValueError(f"private_ip: {private_ip} is not in vSwitch CIDR {vsw.cidr}")
            else:
                vswitch_id = ""
                zone = f"{region}-b"
                private_ip = private_ip or self._free_ip(ipaddress.ip_network("10.0.0.0/8"))
                _address("private_ip", private_ip)
            if any(i.private_ip == private_ip for i in self.instances.values()):
                raise ValueError(f"private_ip: {private_ip} is already used by another instance")
            self._mac_counter += 1
            c = self._mac_counter
            mac = f"00:16:3e:{(c >> 16) & 0xFF:02x}:{(c >> 8) & 0xFF:02x}:{c & 0xFF:02x}"
            inst = Instance(instance_id=new_id("i"), region=region, zone=zone, hostname=hostname,
                            private_ip=private_ip, network_type=network_type, vpc_id=vpc_id,
                            vswitch_id=vswitch_id, mac=mac, created=self.clock(), ram_role=ram_role,
                            public_ip=public_ip)
            self.instances[inst.instance_id] = inst
            return inst

    def _vpc(self, vpc_id: str) -> Vpc:
        vpc = self.vpcs.get(vpc_id)
        if vpc is None:
            raise UnknownResource(f"vpc_id: no VPC {vpc_id!r}")
        return vpc

    def system_table(self, vpc_id: str) -> RouteTable:
        for table in self.route_tables.values():
            if table.vpc_id == vpc_id and table.table_type == "System":
                return table
        raise KeyError(vpc_id)

    def add_custom_entry(self, table_id: str, destination: str, next_hop_type: str, next_hop_id: str,
                         name: str = "") -> RouteEntry:
        """An Available Custom entry put straight into a table, bypassing the API's rules.

        For seeding what users or other tools created (NAT default routes, VPN
        routes, leftovers) in tests, the demo and the admin API.
        """
        with self.lock:
            table = self.route_tables[table_id]
            now = self.clock()
            entry = RouteEntry(entry_id=new_id("rte"), table_id=table_id,
                               destination=str(ipaddress.ip_network(destination)), entry_type="Custom",
                               next_hop_type=next_hop_type, next_hop_id=next_hop_id, created=now, ready_at=now,
                               name=name)
            table.entries[entry.entry_id] = entry
            return entry

    def instance_by_ip(self, ip: str) -> Instance | None:
        for inst in self.instances.values():
            if inst.private_ip == ip:
                return inst
        return None

    def _new_table(self, vpc: Vpc, table_type: str, *, name: str) -> RouteTable:
        table = RouteTable(table_id=new_id("vtb"), vrouter_id=vpc.vrouter_id, vpc_id=vpc.vpc_id,
                           region=vpc.region, table_type=table_type, created=self.clock(), name=name)
        self.route_tables[table.table_id] = table
        return table

    def _add_system_entry(self, table: RouteTable, cidr: str, next_hop_type: str) -> None:
        now = self.clock()
        entry = RouteEntry(entry_id=new_id("rte"), table_id=table.table_id, destination=cidr,
                           entry_type="System", next_hop_type=next_hop_type, next_hop_id="",
                           created=now, ready_at=now)
        table.entries[entry.entry_id] = entry

    def _free_ip(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
        used = {i.private_ip for i in self.instances.values()}
        # Skip the first addresses: Alibaba Cloud reserves them for the vSwitch gateway.
        for offset, host in enumerate(net.hosts()):
            if offset >= 10 and str(host) not in used:
                return str(host)
        raise ValueError(f"no free address left in {net}")

    # -- persistence ---------------------------------------------------------

    def to_json(self, *, include_secrets: bool = False) -> dict[str, Any]:
        """The whole state as JSON; key secrets and tokens only for the state file."""
        with self.locked() as now:
            data: dict[str, Any] = {"now": now, "settings": dataclasses.asdict(self.settings)}
            for kind in ENTITY_TYPES:
                data[kind] = {k: dataclasses.asdict(v) for k, v in getattr(self, kind).items()}
            if not include_secrets:
                for key in data["access_keys"].values():
                    key["secret"] = "***"
                    key["security_token"] = "***" if key["security_token"] else ""
            for table_json, table in zip(data["route_tables"].values(), self.route_tables.values(), strict=True):
                for entry_json, entry in zip(table_json["entries"].values(), table.entries.values(), strict=True):
                    entry_json["status"] = entry.status(now)
            data["extensions"] = {
                kind: {k: dataclasses.asdict(v) for k, v in items.items()}
                for kind, items in self.extensions.items()
            }
            return data

    def load_json(self, data: dict[str, Any], extension_types: dict[str, type[Any]]) -> None:
        with self.lock:
            self.settings = Settings(**data.get("settings", {}))
            for kind, cls in ENTITY_TYPES.items():
                items = {}
                for key, raw in data.get(kind, {}).items():
                    raw = dict(raw)
                    if cls is RouteTable:
                        raw["entries"] = {
                            eid: RouteEntry(**{k: v for k, v in e.items() if k != "status"})
                            for eid, e in raw.get("entries", {}).items()
                        }
                    items[key] = cls(**raw)
                setattr(self, kind, items)
            for kind, items in data.get("extensions", {}).items():
                if kind in extension_types:
                    cls = extension_types[kind]
                    self.extensions[kind] = {k: cls.from_json(v) for k, v in items.items()}
            # Continue after the highest MAC handed out, so a released instance's
            # successor never repeats a MAC that is still in use.
            self._mac_counter = max((int(i.mac.replace(":", "")[6:], 16) for i in self.instances.values()),
                                    default=0)

    def save(self) -> None:
        """Write the state file atomically (when one was given)."""
        if not self.state_file:
            return
        # Under the lock, so that a slower writer never replaces a newer snapshot.
        with self.lock:
            # Not sort_keys: maps keep their creation order, which listings and defaults follow.
            payload = json.dumps(self.to_json(include_secrets=True), indent=1)
            directory = os.path.dirname(os.path.abspath(self.state_file))
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".emulator-state-")
            with os.fdopen(fd, "w") as handle:
                handle.write(payload)
            os.replace(tmp, self.state_file)
