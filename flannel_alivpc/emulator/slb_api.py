"""SLB API 2014-05-15 (Classic Load Balancer): load balancers, listeners, backend servers,
tags, server certificates and access control lists.

What is modelled (docs/emulator-slb.md lists the choices made where the docs are silent):

* a load balancer gets an ``lb-emu...`` id and an address: internet ones from
  198.18.0.0/15 (a benchmarking range, never routed), VPC intranet ones from
  the top of their vSwitch CIDR, classic intranet ones from 10.250.0.0/16;
  ``ClientToken`` makes ``CreateLoadBalancer`` idempotent;
* listeners are keyed by (port, protocol); TCP and UDP may share a port, the
  others may not. A new listener is ``stopped`` until started. Every
  attribute is stored and echoed by ``Describe*ListenerAttribute``;
* backend servers are ECS instances of the emulated cloud, 20 per call, weight
  0..100, all in one VPC or all classic;
* ``DescribeHealthStatus`` derives the state from the listener and the
  instance; the admin API can force a backend ``abnormal`` (``force_health``);
* everything lives in ``CloudState.extensions`` and is saved with the state.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import dataclasses
import hashlib
import ipaddress
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flannel_alivpc.emulator.errors import ApiError, invalid_parameter, missing_parameter
from flannel_alivpc.emulator.protocol import EXTENSION_TYPES, SLB_VERSION, Call, Params, action, check_region, page
from flannel_alivpc.emulator.state import CloudState, Instance, iso_time, new_id

LISTENER_LIMIT = 50
"""Listeners per load balancer (ListenerNumberOverLimit beyond)."""
BACKEND_BATCH_LIMIT = 20
"""Backend servers per Add/Remove/SetBackendServers call (TooManyBackendServers beyond)."""
TAG_LIMIT = 10
"""Tags per load balancer (TagCountLimit beyond)."""
ACL_ENTRY_BATCH_LIMIT = 50
ACL_ENTRY_LIMIT = 300

LB_KIND = "load_balancers"
CERT_KIND = "slb_server_certificates"
ACL_KIND = "slb_access_control_lists"

INTERNET_POOL = ipaddress.ip_network("198.18.0.0/15")
INTERNET_POOL_V6 = ipaddress.ip_network("2001:db8:5eb::/48")
CLASSIC_INTRANET_POOL = ipaddress.ip_network("10.250.0.0/16")

PROTOCOLS = ("tcp", "udp", "http", "https")
SPECS = {
    "slb.s1.small", "slb.s2.small", "slb.s2.medium", "slb.s3.small", "slb.s3.medium",
    "slb.s3.large", "slb.s3.xlarge", "slb.s3.xxlarge",
}
HEALTH_STATES = ("normal", "abnormal")
# Pay-as-you-go instances never expire; the real API reports this date.
_END_TIME = "2999-09-08T16:00:00Z"
_END_TIME_STAMP = 32493801600000


# -- persisted resources --------------------------------------------------------------------


@dataclass
class BackendServer:
    server_id: str
    weight: int = 100
    server_type: str = "ecs"
    server_ip: str = ""
    description: str = ""


@dataclass
class Listener:
    port: int
    protocol: str
    backend_port: int
    created: float
    status: str = "stopped"
    attributes: dict[str, Any] = field(default_factory=dict)
    """Keyed by the names Describe*ListenerAttribute returns."""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadBalancer:
    load_balancer_id: str
    region: str
    name: str
    address: str
    address_type: str  # internet | intranet
    network_type: str  # vpc | classic
    ip_version: str
    vpc_id: str
    vswitch_id: str
    master_zone: str
    slave_zone: str
    spec: str
    instance_charge_type: str
    pay_type: str
    internet_charge_type: str
    bandwidth: int
    created: float
    status: str = "active"
    resource_group_id: str = "rg-emu"
    delete_protection: str = "off"
    modification_protection: str = "NonProtection"
    modification_protection_reason: str = ""
    client_token: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)
    backends: list[BackendServer] = field(default_factory=list)
    health_overrides: dict[str, str] = field(default_factory=dict)
    """Backend health forced through the admin API, by server id."""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LoadBalancer:
        data = dict(raw)
        data["listeners"] = [Listener(**item) for item in raw.get("listeners", [])]
        data["backends"] = [BackendServer(**item) for item in raw.get("backends", [])]
        return cls(**data)

    def backend(self, server_id: str) -> BackendServer | None:
        return next((b for b in self.backends if b.server_id == server_id), None)


@dataclass
class ServerCertificate:
    certificate_id: str
    region: str
    name: str
    fingerprint: str
    common_name: str
    expire_time: float
    created: float
    resource_group_id: str = "rg-emu"
    alicloud_certificate_id: str = ""
    alicloud_certificate_name: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ServerCertificate:
        return cls(**raw)


@dataclass
class AclEntry:
    entry: str
    comment: str = ""


@dataclass
class AccessControlList:
    acl_id: str
    region: str
    name: str
    ip_version: str
    created: float
    resource_group_id: str = "rg-emu"
    entries: list[AclEntry] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> AccessControlList:
        data = dict(raw)
        data["entries"] = [AclEntry(**item) for item in raw.get("entries", [])]
        return cls(**data)


EXTENSION_TYPES[LB_KIND] = LoadBalancer
EXTENSION_TYPES[CERT_KIND] = ServerCertificate
EXTENSION_TYPES[ACL_KIND] = AccessControlList


def balancers(state: CloudState) -> dict[str, LoadBalancer]:
    return state.extensions.setdefault(LB_KIND, {})


def _certificates(state: CloudState) -> dict[str, ServerCertificate]:
    return state.extensions.setdefault(CERT_KIND, {})


def _acls(state: CloudState) -> dict[str, AccessControlList]:
    return state.extensions.setdefault(ACL_KIND, {})


def force_health(lb: LoadBalancer, changes: dict[str, Any]) -> dict[str, str]:
    """Force (``normal``/``abnormal``) or clear (``None``) backends' health; for the admin API.

    The forced state shows only while the listener runs with its health check on;
    a stopped instance stays ``abnormal`` whatever is forced.
    """
    for server_id, status in changes.items():
        if lb.backend(server_id) is None:
            raise ValueError(f"{server_id} is not a backend server of {lb.load_balancer_id}")
        if status is not None and status not in HEALTH_STATES:
            raise ValueError(f"health must be one of {list(HEALTH_STATES)} or null, not {status!r}")
    for server_id, status in changes.items():
        if status is None:
            lb.health_overrides.pop(server_id, None)
        else:
            lb.health_overrides[server_id] = status
    return dict(lb.health_overrides)


# -- errors ----------------------------------------------------------------------------------


def _lb_not_found() -> ApiError:
    return ApiError(404, "InvalidLoadBalancerId.NotFound", "LoadBalancerId does not exist.")


def _listener_not_found() -> ApiError:
    return ApiError(404, "ListenerNotFound",
                    "You have not created a listener for the specified port of the load balancer.")


def _wrong_protocol() -> ApiError:
    return ApiError(400, "UnsupportedOperationonfixedprotocalport",
                    "The operation is not supported by the protocol of the specified port.")


def _acl_not_found() -> ApiError:
    return ApiError(400, "AclNotExist", "The specified AclId does not exist.")


def _certificate_not_found() -> ApiError:
    return ApiError(404, "ServerCertificateId.NotFound", "The specified ServerCertificateId does not exist.")


def _backends_invalid(detail: str = "") -> ApiError:
    message = "The specified BackendServers is invalid."
    return ApiError(400, "InvalidParameter", f"{message} {detail}" if detail else message)


# -- small parsers ---------------------------------------------------------------------------


def _choice(p: Params, name: str, choices: Iterable[str], default: str) -> str:
    raw = p.get(name)
    if raw == "":
        return default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise invalid_parameter(name, f"Valid values: {', '.join(choices)}.")


def _port(p: Params, name: str) -> int:
    raw = p.required(name)
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ApiError(400, "InvalidParameter", "The specified port is not valid.")
    return port


def _bandwidth(raw: str, *, allow_unlimited: bool) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not (1 <= value <= 5120 or (allow_unlimited and value == -1)):
        raise ApiError(400, "InvalidParameter", "The specified Bandwidth is invalid.")
    return value


def _json_tags(p: Params, name: str) -> list[tuple[str, str | None]]:
    """A ``[{"TagKey": .., "TagValue": ..}]`` JSON parameter; a missing TagValue is None."""
    value = p.json_value(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_parameter(name, "It must be a JSON array of {TagKey, TagValue} objects.")
    tags: list[tuple[str, str | None]] = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("TagKey"), str) or not item["TagKey"]:
            raise invalid_parameter(name, "Every tag needs a non-empty TagKey.")
        tag_value = item.get("TagValue")
        tags.append((item["TagKey"], None if tag_value is None else str(tag_value)))
    return tags


def _repeat_tags(p: Params) -> list[tuple[str, str | None]]:
    """``Tag.N.Key``/``Tag.N.Value`` parameters."""
    tags: list[tuple[str, str | None]] = []
    for n, item in enumerate(p.repeat_list("Tag"), start=1):
        if not item.get("Key"):
            raise missing_parameter(f"Tag.{n}.Key")
        tags.append((item["Key"], item.get("Value")))
    return tags


def _tags_match(tags: dict[str, str], wanted: list[tuple[str, str | None]]) -> bool:
    return all(key in tags and (value is None or tags[key] == value) for key, value in wanted)


def _tags_json(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"TagKey": k, "TagValue": v} for k, v in tags.items()]


def _order_id() -> int:
    return 200_000_000_000_000 + secrets.randbelow(100_000_000_000_000)


def _stamp_ms(ts: float) -> int:
    return int(ts * 1000)


# -- lookups ---------------------------------------------------------------------------------


def _lb(call: Call, lb_id: str | None = None) -> LoadBalancer:
    lb_id = lb_id if lb_id is not None else call.params.required("LoadBalancerId")
    lb = balancers(call.state).get(lb_id)
    if lb is None or lb.region != call.params.region:
        raise _lb_not_found()
    return lb


def _acl(call: Call, acl_id: str) -> AccessControlList:
    acl = _acls(call.state).get(acl_id)
    if acl is None or acl.region != call.params.region:
        raise _acl_not_found()
    return acl


def _listener(lb: LoadBalancer, port: int, protocol: str) -> Listener:
    """The listener on (port, protocol); a listener of another protocol on the port is its own error."""
    same_port = [item for item in lb.listeners if item.port == port]
    for item in same_port:
        if item.protocol == protocol:
            return item
    if same_port:
        raise _wrong_protocol()
    raise _listener_not_found()


def _listener_by_port(call: Call, lb: LoadBalancer) -> Listener:
    """For Start/Stop/Delete: ListenerProtocol is needed only when TCP and UDP share the port."""
    port = _port(call.params, "ListenerPort")
    if call.params.get("ListenerProtocol"):
        return _listener(lb, port, _choice(call.params, "ListenerProtocol", PROTOCOLS, ""))
    same_port = [item for item in lb.listeners if item.port == port]
    if not same_port:
        raise _listener_not_found()
    if len(same_port) > 1:
        raise missing_parameter("ListenerProtocol")
    return same_port[0]


# -- addresses -------------------------------------------------------------------------------


def _used_addresses(state: CloudState) -> set[str]:
    used = {lb.address for lb in balancers(state).values()}
    used.update(inst.private_ip for inst in state.instances.values())
    return used


def _allocate(state: CloudState, pool: ipaddress.IPv4Network | ipaddress.IPv6Network, *,
              from_top: bool = False, reserved_top: int = 0) -> str:
    used = _used_addresses(state)
    if from_top:
        # Count down from the top of the block, past the addresses the cloud reserves there:
        # instances are numbered from the bottom, so the two rarely meet.
        last = int(pool.broadcast_address) - 1 - reserved_top
        first = int(pool.network_address) + 10
        for value in range(last, first - 1, -1):
            candidate = str(ipaddress.ip_address(value))
            if candidate not in used:
                return candidate
    else:
        for offset, host in enumerate(pool.hosts()):
            if offset >= 1 and str(host) not in used:
                return str(host)
            if offset > 1_000_000:
                break
    raise ApiError(400, "ServiceUnavailable", "The vpc subnet is not exist.")


# -- load balancers --------------------------------------------------------------------------


def _create_response(lb: LoadBalancer) -> dict[str, Any]:
    return {
        "LoadBalancerId": lb.load_balancer_id, "Address": lb.address, "LoadBalancerName": lb.name,
        "VpcId": lb.vpc_id, "VSwitchId": lb.vswitch_id, "NetworkType": lb.network_type,
        "AddressIPVersion": lb.ip_version, "ResourceGroupId": lb.resource_group_id, "OrderId": 0,
    }


def _check_name(name: str) -> str:
    if not 1 <= len(name) <= 80:
        raise ApiError(400, "InvalidParameter", "The Lb Name is Not supported.")
    return name


@action(SLB_VERSION, "CreateLoadBalancer", mutating=True)
def create_load_balancer(call: Call) -> dict[str, Any]:
    check_region(call)
    p, state = call.params, call.state
    token = p.get("ClientToken")
    if token:
        for existing in balancers(state).values():
            if existing.client_token == token and existing.region == p.region:
                return _create_response(existing)
    vswitch_id = p.get("VSwitchId")
    address_type = _choice(p, "AddressType", ("internet", "intranet"), "intranet" if vswitch_id else "internet")
    ip_version = _choice(p, "AddressIPVersion", ("ipv4", "ipv6"), "ipv4")
    charge = _choice(p, "InternetChargeType", ("paybytraffic", "paybybandwidth"), "paybytraffic")
    pay_type = _choice(p, "PayType", ("PayOnDemand", "PrePay"), "PayOnDemand")
    delete_protection = _choice(p, "DeleteProtection", ("on", "off"), "off")
    modification = _choice(p, "ModificationProtectionStatus", ("NonProtection", "ConsoleProtection"),
                           "NonProtection")
    spec = p.get("LoadBalancerSpec")
    if spec and spec not in SPECS:
        raise invalid_parameter("LoadBalancerSpec", f"Valid values: {', '.join(sorted(SPECS))}.")
    charge_type = _choice(p, "InstanceChargeType", ("PayBySpec", "PayByCLCU"), "PayBySpec" if spec else "PayByCLCU")
    if charge_type == "PayBySpec" and not spec:
        spec = "slb.s1.small"
    if address_type == "intranet" and charge == "paybybandwidth":
        raise ApiError(400, "ActionNotAllowed",
                       "The Intranet LB's InternetChargeType is not allowed change to paybybandwidth.")
    bandwidth = 5120
    if p.get("Bandwidth"):
        bandwidth = _bandwidth(p.get("Bandwidth"), allow_unlimited=False)
    elif charge == "paybybandwidth":
        bandwidth = 1
    tags = _repeat_tags(p)
    if len({k for k, _ in tags}) > TAG_LIMIT:
        raise ApiError(400, "TagCountLimit", "Tags count limit exceeded.")
    name = _check_name(p.get("LoadBalancerName") or "auto_named_slb")

    vpc_id = p.get("VpcId")
    zone = ""
    if address_type == "internet":
        if vswitch_id:
            raise invalid_parameter("VSwitchId", "An internet load balancer takes no vSwitch.")
        if p.get("Address"):
            raise invalid_parameter("Address", "Only intranet load balancers take a fixed address.")
        network_type, vpc_id = "classic", ""
        pool = INTERNET_POOL_V6 if ip_version == "ipv6" else INTERNET_POOL
        address = _allocate(state, pool)
    else:
        if ip_version == "ipv6":
            raise invalid_parameter("AddressIPVersion", "Intranet load balancers are IPv4 only.")
        if vpc_id and not vswitch_id:
            raise missing_parameter("VSwitchId")
        if vswitch_id:
            vsw = state.vswitches.get(vswitch_id)
            if vsw is None or vsw.region != p.region:
                raise ApiError(400, "ServiceUnavailable", "The vpc subnet is not exist.")
            if vpc_id and vpc_id != vsw.vpc_id:
                raise invalid_parameter("VSwitchId", f"vSwitch {vswitch_id} is not in VPC {vpc_id}.")
            network_type, vpc_id, zone = "vpc", vsw.vpc_id, vsw.zone
            net = ipaddress.ip_network(vsw.cidr)
        else:
            network_type, vpc_id = "classic", ""
            net = CLASSIC_INTRANET_POOL
        if p.get("Address"):
            address = p.get("Address")
            try:
                inside = ipaddress.ip_address(address) in net if vswitch_id else \
                    ipaddress.ip_address(address) in ipaddress.ip_network("10.0.0.0/8")
            except ValueError:
                inside = False
            if not inside:
                raise ApiError(400, "InvalidParameter", "The Ip is not Supported.")
            if address in _used_addresses(state):
                raise ApiError(400, "InvalidParameter", "The vpc Ip is exist.")
        else:
            address = _allocate(state, net, from_top=bool(vswitch_id), reserved_top=2)
    lb = LoadBalancer(
        load_balancer_id=new_id("lb"), region=p.region, name=name, address=address,
        address_type=address_type, network_type=network_type, ip_version=ip_version, vpc_id=vpc_id,
        vswitch_id=vswitch_id if network_type == "vpc" else "",
        master_zone=p.get("MasterZoneId") or zone or f"{p.region}-g", slave_zone=p.get("SlaveZoneId"),
        spec=spec, instance_charge_type=charge_type, pay_type=pay_type, internet_charge_type=charge,
        bandwidth=bandwidth, created=call.now, resource_group_id=p.get("ResourceGroupId") or "rg-emu",
        delete_protection=delete_protection, modification_protection=modification,
        modification_protection_reason=p.get("ModificationProtectionReason"), client_token=token,
        tags={k: v or "" for k, v in tags},
    )
    balancers(state)[lb.load_balancer_id] = lb
    return _create_response(lb)


@action(SLB_VERSION, "DeleteLoadBalancer", mutating=True)
def delete_load_balancer(call: Call) -> dict[str, Any]:
    check_region(call)
    lb = _lb(call)
    if lb.delete_protection == "on":
        raise ApiError(400, "OperationDenied.DeleteProtectionIsOn",
                       "The loadbalancer can't be deleted due to DeleteProtection is enabled.")
    del balancers(call.state)[lb.load_balancer_id]
    return {}


def _lb_summary(lb: LoadBalancer) -> dict[str, Any]:
    return {
        "LoadBalancerId": lb.load_balancer_id, "LoadBalancerName": lb.name, "LoadBalancerStatus": lb.status,
        "Address": lb.address, "AddressType": lb.address_type, "AddressIPVersion": lb.ip_version,
        "RegionId": lb.region, "RegionIdAlias": lb.region, "NetworkType": lb.network_type,
        "VpcId": lb.vpc_id, "VSwitchId": lb.vswitch_id, "MasterZoneId": lb.master_zone,
        "SlaveZoneId": lb.slave_zone, "CreateTime": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(lb.created)),
        "CreateTimeStamp": _stamp_ms(lb.created), "PayType": lb.pay_type,
        "InternetChargeType": lb.internet_charge_type, "InternetChargeTypeAlias": lb.internet_charge_type,
        "Bandwidth": lb.bandwidth, "LoadBalancerSpec": lb.spec, "InstanceChargeType": lb.instance_charge_type,
        "ResourceGroupId": lb.resource_group_id, "DeleteProtection": lb.delete_protection,
        "ModificationProtectionStatus": lb.modification_protection,
        "ModificationProtectionReason": lb.modification_protection_reason,
        "Tags": {"Tag": _tags_json(lb.tags)},
    }


@action(SLB_VERSION, "DescribeLoadBalancers")
def describe_load_balancers(call: Call) -> dict[str, Any]:
    check_region(call)
    p, state = call.params, call.state
    ids = {v.strip() for v in p.get("LoadBalancerId").split(",") if v.strip()}
    wanted_tags = _json_tags(p, "Tags") + _repeat_tags(p)
    filters: dict[str, Callable[[LoadBalancer], str]] = {
        "LoadBalancerName": lambda lb: lb.name, "AddressType": lambda lb: lb.address_type,
        "NetworkType": lambda lb: lb.network_type, "VpcId": lambda lb: lb.vpc_id,
        "VSwitchId": lambda lb: lb.vswitch_id, "Address": lambda lb: lb.address,
        "LoadBalancerStatus": lambda lb: lb.status, "MasterZoneId": lambda lb: lb.master_zone,
        "SlaveZoneId": lambda lb: lb.slave_zone, "PayType": lambda lb: lb.pay_type,
        "InternetChargeType": lambda lb: lb.internet_charge_type, "AddressIPVersion": lambda lb: lb.ip_version,
        "ResourceGroupId": lambda lb: lb.resource_group_id,
    }
    server_id = p.get("ServerId")
    server_ip = p.get("ServerIntranetAddress")

    def backend_ips(lb: LoadBalancer) -> set[str]:
        ips = {b.server_ip for b in lb.backends if b.server_ip}
        ips.update(state.instances[b.server_id].private_ip for b in lb.backends if b.server_id in state.instances)
        return ips

    matches = [
        lb for lb in sorted(balancers(state).values(), key=lambda lb: lb.created)
        if lb.region == p.region
        and (not ids or lb.load_balancer_id in ids)
        and all(not p.get(name) or getter(lb) == p.get(name) for name, getter in filters.items())
        and (not server_id or lb.backend(server_id) is not None)
        and (not server_ip or server_ip in backend_ips(lb))
        and _tags_match(lb.tags, wanted_tags)
    ]
    items, envelope = page(p, matches, default_size=50, max_size=100)
    return {**envelope, "LoadBalancers": {"LoadBalancer": [_lb_summary(lb) for lb in items]}}


def _backend_json(state: CloudState, backend: BackendServer) -> dict[str, Any]:
    inst = state.instances.get(backend.server_id)
    return {
        "ServerId": backend.server_id, "Weight": backend.weight, "Type": backend.server_type,
        "ServerIp": backend.server_ip or (inst.private_ip if inst else ""),
        "VpcId": inst.vpc_id if inst else "", "Description": backend.description,
    }


@action(SLB_VERSION, "DescribeLoadBalancerAttribute")
def describe_load_balancer_attribute(call: Call) -> dict[str, Any]:
    check_region(call)
    lb = _lb(call)
    listeners = sorted(lb.listeners, key=lambda item: (item.port, item.protocol))
    summary = _lb_summary(lb)
    summary["CreateTime"] = iso_time(lb.created)
    del summary["InternetChargeTypeAlias"]    # only the list carries it
    return {
        **summary,
        "EndTime": _END_TIME, "EndTimeStamp": _END_TIME_STAMP, "HasReservedInfo": "false",
        # Pay-as-you-go: no release time, nothing to renew.
        "AutoReleaseTime": 0, "RenewalStatus": "", "RenewalDuration": 0, "RenewalCycUnit": "",
        "ListenerPorts": {"ListenerPort": sorted({item.port for item in listeners})},
        # Both spellings are real: the misspelt block is the older one, kept for old clients.
        "ListenerPortsAndProtocal": {"ListenerPortAndProtocal": [
            {"ListenerPort": item.port, "ListenerProtocal": item.protocol} for item in listeners]},
        "ListenerPortsAndProtocol": {"ListenerPortAndProtocol": [
            {"ListenerPort": item.port, "ListenerProtocol": item.protocol,
             "ListenerForward": item.attributes.get("ListenerForward", "off"),
             "ForwardPort": item.attributes.get("ForwardPort", 0),
             "Description": item.attributes.get("Description", "")} for item in listeners]},
        "BackendServers": {"BackendServer": [_backend_json(call.state, b) for b in lb.backends]},
    }


@action(SLB_VERSION, "SetLoadBalancerName", mutating=True)
def set_load_balancer_name(call: Call) -> dict[str, Any]:
    check_region(call)
    lb = _lb(call)
    lb.name = _check_name(call.params.required("LoadBalancerName"))
    return {}


@action(SLB_VERSION, "SetLoadBalancerStatus", mutating=True)
def set_load_balancer_status(call: Call) -> dict[str, Any]:
    check_region(call)
    lb = _lb(call)
    call.params.required("LoadBalancerStatus")
    lb.status = _choice(call.params, "LoadBalancerStatus", ("active", "inactive"), "")
    return {}


@action(SLB_VERSION, "SetLoadBalancerDeleteProtection", mutating=True)
def set_load_balancer_delete_protection(call: Call) -> dict[str, Any]:
    check_region(call)
    lb = _lb(call)
    call.params.required("DeleteProtection")
    lb.delete_protection = _choice(call.params, "DeleteProtection", ("on", "off"), "")
    return {}


@action(SLB_VERSION, "ModifyLoadBalancerInstanceSpec", mutating=True)
def modify_load_balancer_instance_spec(call: Call) -> dict[str, Any]:
    check_region(call)
    lb = _lb(call)
    spec = call.params.required("LoadBalancerSpec")
    if spec not in SPECS:
        raise invalid_parameter("LoadBalancerSpec", f"Valid values: {', '.join(sorted(SPECS))}.")
    lb.spec, lb.instance_charge_type = spec, "PayBySpec"
    return {"OrderId": _order_id()}


@action(SLB_VERSION, "ModifyLoadBalancerInternetSpec", mutating=True)
def modify_load_balancer_internet_spec(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    lb = _lb(call)
    charge = _choice(p, "InternetChargeType", ("paybytraffic", "paybybandwidth"), lb.internet_charge_type)
    if lb.address_type == "intranet" and charge == "paybybandwidth":
        raise ApiError(400, "ActionNotAllowed",
                       "The Intranet LB's InternetChargeType is not allowed change to paybybandwidth.")
    bandwidth = _bandwidth(p.get("Bandwidth"), allow_unlimited=False) if p.get("Bandwidth") else lb.bandwidth
    lb.internet_charge_type, lb.bandwidth = charge, bandwidth
    return {"OrderId": _order_id()}


# -- listeners -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Attr:
    """One listener attribute: its Describe name, default, how to check it, other request names."""

    name: str
    default: str | int
    kind: str  # str | int | onoff | choice | bool | codes | port | bandwidth
    low: int = 0
    high: int = 0
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    def parse(self, raw: str) -> str | int:
        name = self.name
        if self.kind == "str":
            return raw
        if self.kind == "onoff":
            if raw.lower() not in ("on", "off"):
                raise invalid_parameter(name, "Valid values: on, off.")
            return raw.lower()
        if self.kind == "bool":
            if raw.lower() not in ("true", "false"):
                raise invalid_parameter(name, "Valid values: true, false.")
            return raw.lower()
        if self.kind == "choice":
            for choice in self.choices:
                if raw.lower() == choice.lower():
                    return choice
            raise invalid_parameter(name, f"Valid values: {', '.join(self.choices)}.")
        if self.kind == "codes":
            codes = [c.strip() for c in raw.split(",") if c.strip()]
            if not codes or any(c not in ("http_2xx", "http_3xx", "http_4xx", "http_5xx") for c in codes):
                raise invalid_parameter(name, "Use http_2xx, http_3xx, http_4xx, http_5xx, comma separated.")
            return ",".join(codes)
        if self.kind == "bandwidth":
            return _bandwidth(raw, allow_unlimited=True)
        try:
            value = int(raw)
        except ValueError:
            raise invalid_parameter(name, f"{raw!r} is not an integer.") from None
        if self.kind == "port":
            # -520 (and 0) mean "the backend server port", stored as 0.
            if value in (-520, 0):
                return 0
            if not 1 <= value <= 65535:
                raise ApiError(400, "InvalidParameter", "The specified port is not valid.")
            return value
        if not self.low <= value <= self.high:
            raise invalid_parameter(name, f"{value} is outside {self.low}..{self.high}.")
        return value


_COMMON_ATTRS = (
    _Attr("Bandwidth", -1, "bandwidth"),
    _Attr("Scheduler", "wrr", "choice", choices=("wrr", "wlc", "rr", "sch", "tch", "qch")),
    _Attr("Description", "", "str"),
    _Attr("VServerGroupId", "", "str"),
    _Attr("AclStatus", "off", "onoff"),
    _Attr("AclType", "", "choice", choices=("white", "black")),
    _Attr("AclId", "", "str"),
    _Attr("HealthyThreshold", 3, "int", 2, 10),
    _Attr("UnhealthyThreshold", 3, "int", 2, 10),
    _Attr("HealthCheckInterval", 2, "int", 1, 50, aliases=("healthCheckInterval",)),
    _Attr("HealthCheckConnectPort", 0, "port"),
)
_L4_ATTRS = (
    *_COMMON_ATTRS,
    # TCP/UDP listeners health-check by default; Create sends it as HealthCheckSwitch.
    _Attr("HealthCheck", "on", "onoff", aliases=("HealthCheckSwitch",)),
    _Attr("HealthCheckConnectTimeout", 5, "int", 1, 300),
    _Attr("PersistenceTimeout", 0, "int", 0, 3600),
    _Attr("ProxyProtocolV2Enabled", "false", "bool"),
    _Attr("MasterSlaveServerGroupId", "", "str"),
)
_L7_ATTRS = (
    *_COMMON_ATTRS,
    _Attr("HealthCheck", "off", "onoff"),
    _Attr("StickySession", "off", "onoff"),
    _Attr("StickySessionType", "", "choice", choices=("insert", "server")),
    _Attr("CookieTimeout", 0, "int", 1, 86400),
    _Attr("Cookie", "", "str"),
    _Attr("HealthCheckDomain", "", "str"),
    _Attr("HealthCheckURI", "/", "str"),
    _Attr("HealthCheckTimeout", 5, "int", 1, 300),
    _Attr("HealthCheckHttpCode", "http_2xx", "codes"),
    _Attr("HealthCheckMethod", "head", "choice", choices=("head", "get")),
    _Attr("XForwardedFor", "on", "onoff"),
    _Attr("XForwardedFor_SLBIP", "off", "onoff"),
    _Attr("XForwardedFor_SLBID", "off", "onoff"),
    _Attr("XForwardedFor_proto", "off", "onoff"),
    _Attr("XForwardedFor_SLBPORT", "off", "onoff"),
    _Attr("XForwardedFor_ClientSrcPort", "off", "onoff"),
    _Attr("Gzip", "on", "onoff"),
    _Attr("IdleTimeout", 15, "int", 1, 60),
    _Attr("RequestTimeout", 60, "int", 1, 180),
)
LISTENER_ATTRS: dict[str, tuple[_Attr, ...]] = {
    "tcp": (
        *_L4_ATTRS,
        _Attr("HealthCheckType", "tcp", "choice", choices=("tcp", "http")),
        _Attr("HealthCheckDomain", "", "str"),
        _Attr("HealthCheckURI", "", "str"),
        _Attr("HealthCheckHttpCode", "http_2xx", "codes"),
        _Attr("HealthCheckMethod", "", "choice", choices=("head", "get")),
        _Attr("EstablishedTimeout", 900, "int", 10, 900),
        _Attr("SynProxy", "disable", "choice", choices=("enable", "disable")),
        _Attr("ConnectionDrain", "off", "onoff"),
        _Attr("ConnectionDrainTimeout", 0, "int", 10, 900),
    ),
    "udp": (
        *_L4_ATTRS,
        _Attr("HealthCheckReq", "", "str", aliases=("healthCheckReq",)),
        _Attr("HealthCheckExp", "", "str", aliases=("healthCheckExp",)),
        _Attr("ConnectionDrain", "off", "onoff"),
        _Attr("ConnectionDrainTimeout", 0, "int", 10, 900),
    ),
    "http": (
        *_L7_ATTRS,
        _Attr("ListenerForward", "off", "onoff"),
        _Attr("ForwardPort", 0, "int", 1, 65535),
    ),
    "https": (
        *_L7_ATTRS,
        _Attr("ServerCertificateId", "", "str"),
        _Attr("CACertificateId", "", "str"),
        _Attr("EnableHttp2", "on", "onoff"),
        _Attr("TLSCipherPolicy", "tls_cipher_policy_1_0", "choice", choices=(
            "tls_cipher_policy_1_0", "tls_cipher_policy_1_1", "tls_cipher_policy_1_2",
            "tls_cipher_policy_1_2_strict", "tls_cipher_policy_1_2_strict_with_1_3")),
    ),
}


def _given_attributes(p: Params, protocol: str) -> dict[str, Any]:
    """The listener attributes present in the request, checked and normalised."""
    given: dict[str, Any] = {}
    for attr in LISTENER_ATTRS[protocol]:
        for name in (attr.name, *attr.aliases):
            raw = p.get(name)
            if raw != "":
                given[attr.name] = attr.parse(raw)
                break
    return given


def _check_listener(call: Call, lb: LoadBalancer, listener: Listener) -> None:
    """Rules that tie attributes together or to other resources, checked on the merged result."""
    a = listener.attributes
    if a.get("StickySession") == "on":
        if not a.get("StickySessionType"):
            raise missing_parameter("StickySessionType")
        if a["StickySessionType"] == "insert" and not a.get("CookieTimeout"):
            raise missing_parameter("CookieTimeout")
        if a["StickySessionType"] == "server" and not a.get("Cookie"):
            raise missing_parameter("Cookie")
    if a.get("AclStatus") == "on":
        if not a.get("AclId"):
            raise missing_parameter("AclId")
        if not a.get("AclType"):
            raise missing_parameter("AclType")
    if a.get("AclId"):
        _acl(call, a["AclId"])
    if listener.protocol == "https":
        if not a.get("ServerCertificateId"):
            raise missing_parameter("ServerCertificateId")
        cert = _certificates(call.state).get(a["ServerCertificateId"])
        if cert is None or cert.region != lb.region:
            raise _certificate_not_found()
    if a.get("ListenerForward") == "on" and not a.get("ForwardPort"):
        raise missing_parameter("ForwardPort")


def _conflicts(existing: Listener, port: int, protocol: str) -> bool:
    # TCP and UDP may share a port; every other pair may not.
    return existing.port == port and (existing.protocol == "udp") == (protocol == "udp")


def _create_listener(call: Call, protocol: str) -> dict[str, Any]:
    check_region(call)
    p = call.params
    lb = _lb(call)
    port = _port(p, "ListenerPort")
    given = _given_attributes(p, protocol)
    if given.get("VServerGroupId") or given.get("MasterSlaveServerGroupId"):
        backend_port = _port(p, "BackendServerPort") if p.get("BackendServerPort") else 0
    else:
        backend_port = _port(p, "BackendServerPort")
    if protocol in ("http", "https"):
        for required in ("StickySession", "HealthCheck"):
            p.required(required)
    if any(_conflicts(item, port, protocol) for item in lb.listeners):
        raise ApiError(400, "ListenerAlreadyExists", "A listener with the specified port already exists")
    if len(lb.listeners) >= LISTENER_LIMIT:
        raise ApiError(400, "ListenerNumberOverLimit", "The maximum number of listeners is exceeded.")
    attributes: dict[str, Any] = {attr.name: attr.default for attr in LISTENER_ATTRS[protocol]}
    attributes.update(given)
    tags = _repeat_tags(p)
    if len({k for k, _ in tags}) > TAG_LIMIT:
        raise ApiError(400, "TagCountLimit", "Tags count limit exceeded.")
    listener = Listener(port=port, protocol=protocol, backend_port=backend_port, created=call.now,
                        attributes=attributes, tags={k: v or "" for k, v in tags})
    _check_listener(call, lb, listener)
    lb.listeners.append(listener)
    return {}


def _set_listener(call: Call, protocol: str) -> dict[str, Any]:
    check_region(call)
    p = call.params
    lb = _lb(call)
    listener = _listener(lb, _port(p, "ListenerPort"), protocol)
    given = _given_attributes(p, protocol)
    merged = dataclasses.replace(listener, attributes={**listener.attributes, **given})
    for switch, group in (("VServerGroup", "VServerGroupId"), ("MasterSlaveServerGroup", "MasterSlaveServerGroupId")):
        if group not in merged.attributes:
            continue
        state = _choice(p, switch, ("on", "off"), "")
        if state == "on" and not merged.attributes.get(group):
            raise missing_parameter(group)
        if state == "off":
            merged.attributes[group] = ""
    _check_listener(call, lb, merged)
    listener.attributes = merged.attributes
    return {}


def _listener_attribute_json(lb: LoadBalancer, listener: Listener) -> dict[str, Any]:
    out: dict[str, Any] = {
        "LoadBalancerId": lb.load_balancer_id, "ListenerPort": listener.port,
        "BackendServerPort": listener.backend_port, "Status": listener.status,
        **listener.attributes,
    }
    if out.get("HealthCheckConnectPort") == 0:
        out["HealthCheckConnectPort"] = listener.backend_port
    if listener.protocol in ("tcp", "udp"):
        out["HealthCheckSwitch"] = out["HealthCheck"]
    out["AclIds"] = {"AclId": [out["AclId"]] if out.get("AclId") else []}
    return out


def _describe_listener(call: Call, protocol: str) -> dict[str, Any]:
    check_region(call)
    lb = _lb(call)
    listener = _listener(lb, _port(call.params, "ListenerPort"), protocol)
    out = _listener_attribute_json(lb, listener)
    if "ProxyProtocolV2Enabled" in out:
        out["ProxyProtocolV2Enabled"] = out["ProxyProtocolV2Enabled"] == "true"
    out["Tags"] = {"Tag": _tags_json(listener.tags)}
    if protocol in ("http", "https"):
        # Forwarding rules and the security status are not modelled: none, and "normal".
        out.update(Rules={"Rule": []}, SecurityStatus="normal")
    if protocol == "https":
        out.update(DomainExtensions={"DomainExtension": []}, XForwardedFor_ClientCertClientVerify="off",
                   XForwardedFor_ClientCertFingerprint="off", XForwardedFor_ClientCertIssuerDN="off",
                   XForwardedFor_ClientCertSubjectDN="off")
    return out


def _bind(handler: Callable[[Call, str], dict[str, Any]], protocol: str) -> Callable[[Call], dict[str, Any]]:
    def bound(call: Call) -> dict[str, Any]:
        return handler(call, protocol)
    return bound


for _protocol in PROTOCOLS:
    _upper = _protocol.upper()
    action(SLB_VERSION, f"CreateLoadBalancer{_upper}Listener", mutating=True)(_bind(_create_listener, _protocol))
    action(SLB_VERSION, f"SetLoadBalancer{_upper}ListenerAttribute", mutating=True)(_bind(_set_listener, _protocol))
    action(SLB_VERSION, f"DescribeLoadBalancer{_upper}ListenerAttribute")(_bind(_describe_listener, _protocol))


_TOP_LEVEL_LISTENER_KEYS = ("Bandwidth", "Scheduler", "VServerGroupId", "AclId", "AclType", "AclStatus", "Description")


@action(SLB_VERSION, "DescribeLoadBalancerListeners")
def describe_load_balancer_listeners(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    ids = set(p.repeat_values("LoadBalancerId"))
    protocol = _choice(p, "ListenerProtocol", PROTOCOLS, "")
    port = _port(p, "ListenerPort") if p.get("ListenerPort") else 0
    limit = p.integer("MaxResults", 20, low=1, high=100)
    wanted_tags = _repeat_tags(p)
    rows = sorted(
        ((lb, item) for lb in balancers(call.state).values() if lb.region == p.region
         and (not ids or lb.load_balancer_id in ids) for item in lb.listeners
         if (not protocol or item.protocol == protocol) and (not port or item.port == port)
         and (not p.get("Description") or item.attributes.get("Description") == p.get("Description"))
         and _tags_match(item.tags, wanted_tags)),
        key=lambda row: (row[0].load_balancer_id, row[1].port, row[1].protocol),
    )
    total = len(rows)
    token = p.get("NextToken")
    if token:
        # The token names the last listener returned, so pages stay right while listeners come and go.
        parts = token.split("/")
        if len(parts) != 3 or not parts[1].isdigit():
            raise invalid_parameter("NextToken")
        last = (parts[0], int(parts[1]), parts[2])
        rows = [r for r in rows if (r[0].load_balancer_id, r[1].port, r[1].protocol) > last]
    chunk = rows[:limit]
    next_token = ""
    if len(rows) > limit:
        lb, item = chunk[-1]
        next_token = f"{lb.load_balancer_id}/{item.port}/{item.protocol}"
    listeners = []
    for lb, item in chunk:
        detail = _listener_attribute_json(lb, item)
        for key in ("LoadBalancerId", "ListenerPort", "BackendServerPort", "Status", "AclIds",
                    *_TOP_LEVEL_LISTENER_KEYS):
            detail.pop(key, None)
        listeners.append({
            "LoadBalancerId": lb.load_balancer_id, "ListenerPort": item.port, "ListenerProtocol": item.protocol,
            "BackendServerPort": item.backend_port, "Status": item.status,
            **{key: item.attributes.get(key, "") for key in _TOP_LEVEL_LISTENER_KEYS},
            "AclIds": [item.attributes["AclId"]] if item.attributes.get("AclId") else [],
            f"{item.protocol.upper()}ListenerConfig": detail,
            "Tags": _tags_json(item.tags),
        })
    return {"Listeners": listeners, "TotalCount": total, "MaxResults": limit, "NextToken": next_token}


@action(SLB_VERSION, "StartLoadBalancerListener", mutating=True)
def start_load_balancer_listener(call: Call) -> dict[str, Any]:
    check_region(call)
    _listener_by_port(call, _lb(call)).status = "running"
    return {}


@action(SLB_VERSION, "StopLoadBalancerListener", mutating=True)
def stop_load_balancer_listener(call: Call) -> dict[str, Any]:
    check_region(call)
    _listener_by_port(call, _lb(call)).status = "stopped"
    return {}


@action(SLB_VERSION, "DeleteLoadBalancerListener", mutating=True)
def delete_load_balancer_listener(call: Call) -> dict[str, Any]:
    check_region(call)
    lb = _lb(call)
    lb.listeners.remove(_listener_by_port(call, lb))
    return {}


# -- backend servers -------------------------------------------------------------------------


def _backend_items(p: Params, *, plain_ids: bool) -> list[dict[str, Any]]:
    """The BackendServers JSON list, with keys in the documented capitalisation.

    Clients also send ``serverId``/``weight`` (the Alibaba cloud controller does), and
    very old ones a bare list of ids for RemoveBackendServers.
    """
    value = p.json_value("BackendServers")
    if value is None:
        raise missing_parameter("BackendServers")
    if not isinstance(value, list) or not value:
        raise _backends_invalid()
    if len(value) > BACKEND_BATCH_LIMIT:
        raise ApiError(400, "TooManyBackendServers",
                       f"The total number of input real servers exceeds max supported number: {BACKEND_BATCH_LIMIT}")
    items = []
    for item in value:
        if plain_ids and isinstance(item, str):
            item = {"ServerId": item}
        if not isinstance(item, dict):
            raise _backends_invalid()
        normalised = {str(k)[:1].upper() + str(k)[1:]: v for k, v in item.items()}
        if not normalised.get("ServerId"):
            raise ApiError(400, "InvalidParameter", "The VmName is emtpy.")
        items.append(normalised)
    return items


def _weight(raw: Any) -> int:
    try:
        weight = int(str(raw))
    except ValueError:
        weight = -1
    if not 0 <= weight <= 100:
        raise ApiError(400, "InvalidWeight.Malformed", "A specified weight is not valid.")
    return weight


def _instance(call: Call, server_id: str) -> Instance:
    inst = call.state.instances.get(str(server_id))
    if inst is None or inst.region != call.params.region:
        raise ApiError(404, "InvalidServerId.NotFound", "The specified ServerId does not exist.")
    return inst


def _check_networks(call: Call, lb: LoadBalancer, new: list[Instance]) -> None:
    for inst in new:
        if lb.network_type == "vpc":
            fits = inst.network_type == "vpc" and inst.vpc_id == lb.vpc_id
        elif lb.address_type == "intranet":
            fits = inst.network_type == "classic"
        else:
            fits = True
        if not fits:
            raise ApiError(400, "InvalidParameter",
                           "The specified load balancer does not support the network type of the ECS instance.")
    attached = [call.state.instances[b.server_id] for b in lb.backends if b.server_id in call.state.instances]
    networks = {inst.vpc_id if inst.network_type == "vpc" else "classic" for inst in [*attached, *new]}
    if len(networks) > 1:
        raise ApiError(400, "InvalidBackendServers.Inconsistent",
                       "All BackendServers on one Specified LoadBalancer have to be in the same vpc or all classic")


def _backends_response(call: Call, lb: LoadBalancer) -> dict[str, Any]:
    return {"LoadBalancerId": lb.load_balancer_id,
            "BackendServers": {"BackendServer": [
                {k: v for k, v in _backend_json(call.state, b).items() if k != "VpcId"} for b in lb.backends]}}


@action(SLB_VERSION, "AddBackendServers", mutating=True)
def add_backend_servers(call: Call) -> dict[str, Any]:
    check_region(call)
    lb = _lb(call)
    items = _backend_items(call.params, plain_ids=False)
    parsed: list[BackendServer] = []
    instances: list[Instance] = []
    for item in items:
        inst = _instance(call, item["ServerId"])
        server_type = str(item.get("Type") or "ecs").lower()
        if server_type not in ("ecs", "eni"):
            raise _backends_invalid(f"Type {server_type!r} is not supported.")
        server_ip = str(item.get("ServerIp") or "")
        if server_type == "eni" and not server_ip:
            raise ApiError(400, "InvalidParameter", "The Rs IP is empty.")
        if inst.status == "Stopped":
            raise ApiError(400, "ObtainIpFail", "The specified BackendServers is invalid; some of the specified "
                                                "backend servers do not exist or are not running.")
        parsed.append(BackendServer(server_id=inst.instance_id, weight=_weight(item.get("Weight", 100)),
                                    server_type=server_type, server_ip=server_ip,
                                    description=str(item.get("Description") or "")))
        instances.append(inst)
    _check_networks(call, lb, instances)
    for backend in parsed:
        existing = lb.backend(backend.server_id)
        if existing is None:
            lb.backends.append(backend)
        else:
            existing.weight, existing.description = backend.weight, backend.description or existing.description
    return _backends_response(call, lb)


@action(SLB_VERSION, "RemoveBackendServers", mutating=True)
def remove_backend_servers(call: Call) -> dict[str, Any]:
    check_region(call)
    lb = _lb(call)
    gone = {str(item["ServerId"]) for item in _backend_items(call.params, plain_ids=True)}
    lb.backends = [b for b in lb.backends if b.server_id not in gone]
    for server_id in gone:
        lb.health_overrides.pop(server_id, None)
    return _backends_response(call, lb)


@action(SLB_VERSION, "SetBackendServers", mutating=True)
def set_backend_servers(call: Call) -> dict[str, Any]:
    check_region(call)
    lb = _lb(call)
    changes = []
    for item in _backend_items(call.params, plain_ids=False):
        changes.append((str(item["ServerId"]), _weight(item.get("Weight", 100)), item.get("Description")))
    for server_id, weight, description in changes:
        backend = lb.backend(server_id)
        if backend is None:
            continue  # only attached servers change
        backend.weight = weight
        if description is not None:
            backend.description = str(description)
    return _backends_response(call, lb)


def _health(state: CloudState, lb: LoadBalancer, listener: Listener, backend: BackendServer) -> str:
    if listener.status != "running" or listener.attributes.get("HealthCheck") != "on":
        return "unavailable"
    inst = state.instances.get(backend.server_id)
    if inst is None or inst.status != "Running":
        return "abnormal"
    return lb.health_overrides.get(backend.server_id, "normal")


@action(SLB_VERSION, "DescribeHealthStatus")
def describe_health_status(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    lb = _lb(call)
    listeners = sorted(lb.listeners, key=lambda item: (item.port, item.protocol))
    if p.get("ListenerProtocol"):
        protocol = _choice(p, "ListenerProtocol", PROTOCOLS, "")
        listeners = [item for item in listeners if item.protocol == protocol]
    if p.get("ListenerPort"):
        port = _port(p, "ListenerPort")
        listeners = [item for item in listeners if item.port == port]
        if not listeners:
            raise ApiError(404, "CheckedListenerNotFound",
                           "No health-checked Listener to the specified port of the Load Balancer.")
    servers = []
    for listener in listeners:
        for backend in lb.backends:
            inst = call.state.instances.get(backend.server_id)
            servers.append({
                "ServerId": backend.server_id,
                "ServerIp": backend.server_ip or (inst.private_ip if inst else ""),
                "Port": listener.backend_port, "ListenerPort": listener.port, "Protocol": listener.protocol,
                "ServerHealthStatus": _health(call.state, lb, listener, backend),
                "Type": backend.server_type, "EniHost": "",
            })
    return {"BackendServers": {"BackendServer": servers}}


# -- tags ------------------------------------------------------------------------------------


def _tag_param(p: Params) -> list[tuple[str, str | None]]:
    if not p.get("Tags"):
        raise missing_parameter("Tags")
    tags = _json_tags(p, "Tags")
    if not tags:
        raise invalid_parameter("Tags", "At least one tag is needed.")
    return tags


@action(SLB_VERSION, "AddTags", mutating=True)
def add_tags(call: Call) -> dict[str, Any]:
    check_region(call)
    lb = _lb(call)
    merged = dict(lb.tags)
    for key, value in _tag_param(call.params):
        merged[key] = value or ""
    if len(merged) > TAG_LIMIT:
        raise ApiError(400, "TagCountLimit", "Tags count limit exceeded.")
    lb.tags = merged
    return {}


@action(SLB_VERSION, "RemoveTags", mutating=True)
def remove_tags(call: Call) -> dict[str, Any]:
    check_region(call)
    lb = _lb(call)
    for key, value in _tag_param(call.params):
        if key in lb.tags and (value is None or lb.tags[key] == value):
            del lb.tags[key]
    return {}


@action(SLB_VERSION, "DescribeTags")
def describe_tags(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    if p.get("LoadBalancerId"):
        scope = [_lb(call)]
    else:
        scope = [lb for lb in balancers(call.state).values() if lb.region == p.region]
    wanted = _json_tags(p, "Tags")
    distinct = p.boolean("DistinctKey")
    counts: dict[tuple[str, str], int] = {}
    for lb in scope:
        for key, value in lb.tags.items():
            if wanted and not any(key == k and (v is None or value == v) for k, v in wanted):
                continue
            group = (key, "" if distinct else value)
            counts[group] = counts.get(group, 0) + 1
    rows = [{"TagKey": k, "TagValue": v, "InstanceCount": n} for (k, v), n in sorted(counts.items())]
    items, envelope = page(p, rows, default_size=10, max_size=50)
    return {**envelope, "TagSets": {"TagSet": items}}


# -- server certificates ---------------------------------------------------------------------


_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)
_CN_OID = b"\x55\x04\x03"


def _pem_blocks(text: str) -> list[tuple[str, str, bytes]]:
    """(label, headers, DER) of every PEM block; undecodable base64 raises ValueError."""
    blocks = []
    for match in _PEM.finditer(text.replace("\\n", "\n")):
        lines = [line.strip() for line in match.group(2).strip().splitlines()]
        headers = "\n".join(line for line in lines if ":" in line)
        body = "".join(line for line in lines if line and ":" not in line)
        try:
            blocks.append((match.group(1), headers, base64.b64decode(body, validate=True)))
        except (binascii.Error, ValueError):
            raise ValueError("bad base64") from None
    return blocks


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``."""
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("bad DER length")
        length = int.from_bytes(der[pos:pos + count], "big")
        pos += count
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        out.append(_tlv(der, start))
        start = out[-1][2]
    return out


def _der_time(der: bytes, element: tuple[int, int, int]) -> float:
    tag, start, end = element
    text = der[start:end].decode("ascii")
    layout = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"
    return float(calendar.timegm(time.strptime(text, layout)))


def _certificate_facts(der: bytes) -> tuple[str, float]:
    """The subject common name and the notAfter time of an X.509 certificate."""
    tag, start, end = _tlv(der, 0)
    if tag != 0x30:
        raise ValueError("not a certificate")
    tbs = _children(der, start, end)[0]
    fields = _children(der, tbs[1], tbs[2])
    if fields[0][0] == 0xA0:  # explicit version
        fields = fields[1:]
    validity, subject = fields[3], fields[4]
    not_after = _der_time(der, _children(der, validity[1], validity[2])[1])
    common_name = ""
    for rdn in _children(der, subject[1], subject[2]):
        for pair in _children(der, rdn[1], rdn[2]):
            oid, value = _children(der, pair[1], pair[2])[:2]
            if der[oid[1]:oid[2]] == _CN_OID:
                common_name = der[value[1]:value[2]].decode("utf-8", "replace")
    return common_name, not_after


def _certificate_json(cert: ServerCertificate) -> dict[str, Any]:
    return {
        "ServerCertificateId": cert.certificate_id, "ServerCertificateName": cert.name,
        "Fingerprint": cert.fingerprint, "RegionId": cert.region, "RegionIdAlias": cert.region,
        "AliCloudCertificateId": cert.alicloud_certificate_id,
        "AliCloudCertificateName": cert.alicloud_certificate_name,
        "IsAliCloudCertificate": 1 if cert.alicloud_certificate_id else 0,
        "ResourceGroupId": cert.resource_group_id, "CreateTime": iso_time(cert.created),
        "CreateTimeStamp": _stamp_ms(cert.created), "ExpireTime": iso_time(cert.expire_time),
        "ExpireTimeStamp": _stamp_ms(cert.expire_time), "CommonName": cert.common_name,
        "SubjectAlternativeNames": {"SubjectAlternativeName": []},
        "Tags": {"Tag": _tags_json(cert.tags)},
    }


@action(SLB_VERSION, "UploadServerCertificate", mutating=True)
def upload_server_certificate(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    fingerprint, common_name, expire = "", "", call.now + 365 * 86400
    if p.get("AliCloudCertificateId"):
        pass  # a certificate kept by the certificate service: nothing to parse here
    elif not p.get("ServerCertificate") or not p.get("PrivateKey"):
        raise ApiError(400, "InvalidParameter", "The specified parameter ServerCertificate or Key is empty.")
    else:
        try:
            certs = [der for label, _, der in _pem_blocks(p.get("ServerCertificate")) if label == "CERTIFICATE"]
            if not certs:
                raise ValueError("no certificate")
            common_name, expire = _certificate_facts(certs[0])
        except (ValueError, IndexError, UnicodeDecodeError):
            raise ApiError(400, "InvalidParameter",
                           "The specified parameter ServerCertificate format is error.") from None
        digest = hashlib.sha1(certs[0]).hexdigest()
        fingerprint = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
        try:
            keys = [(label, headers) for label, headers, _ in _pem_blocks(p.get("PrivateKey"))
                    if label.endswith("PRIVATE KEY")]
        except ValueError:
            keys = []
        if not keys:
            raise ApiError(400, "InvalidParameter", "The specified parameter key format is error.")
        if "ENCRYPTED" in keys[0][0] or "ENCRYPTED" in keys[0][1]:
            raise ApiError(400, "PrivateKeyEncryption", "Key has Encrypted .")
    cert = ServerCertificate(
        certificate_id=new_id("cert"), region=p.region, name=p.get("ServerCertificateName"),
        fingerprint=fingerprint, common_name=common_name, expire_time=expire, created=call.now,
        resource_group_id=p.get("ResourceGroupId") or "rg-emu",
        alicloud_certificate_id=p.get("AliCloudCertificateId"),
        alicloud_certificate_name=p.get("AliCloudCertificateName"),
        tags={k: v or "" for k, v in _repeat_tags(p)},
    )
    _certificates(call.state)[cert.certificate_id] = cert
    out = _certificate_json(cert)
    out.pop("Tags")
    return out


@action(SLB_VERSION, "DescribeServerCertificates")
def describe_server_certificates(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    ids = {v.strip() for v in p.get("ServerCertificateId").split(",") if v.strip()}
    wanted_tags = _repeat_tags(p)
    certs = [
        c for c in sorted(_certificates(call.state).values(), key=lambda c: c.created)
        if c.region == p.region and (not ids or c.certificate_id in ids)
        and (not p.get("ResourceGroupId") or c.resource_group_id == p.get("ResourceGroupId"))
        and _tags_match(c.tags, wanted_tags)
    ]
    return {"ServerCertificates": {"ServerCertificate": [_certificate_json(c) for c in certs]}}


@action(SLB_VERSION, "DeleteServerCertificate", mutating=True)
def delete_server_certificate(call: Call) -> dict[str, Any]:
    check_region(call)
    cert_id = call.params.required("ServerCertificateId")
    cert = _certificates(call.state).get(cert_id)
    if cert is None or cert.region != call.params.region:
        raise _certificate_not_found()
    for lb in balancers(call.state).values():
        if any(item.attributes.get("ServerCertificateId") == cert_id for item in lb.listeners):
            raise ApiError(400, "CertificateAndPrivateKeyIsRefered",
                           "The specified certificate is bound to listeners. You cannot delete it.")
    del _certificates(call.state)[cert_id]
    return {}


# -- access control lists --------------------------------------------------------------------


def _acl_json(acl: AccessControlList) -> dict[str, Any]:
    return {"AclId": acl.acl_id, "AclName": acl.name, "AddressIPVersion": acl.ip_version,
            "ResourceGroupId": acl.resource_group_id, "CreateTime": iso_time(acl.created),
            "Tags": {"Tag": _tags_json(acl.tags)}}


def _acl_users(call: Call, acl_id: str) -> list[tuple[LoadBalancer, Listener]]:
    return [(lb, item) for lb in balancers(call.state).values() for item in lb.listeners
            if item.attributes.get("AclId") == acl_id]


@action(SLB_VERSION, "CreateAccessControlList", mutating=True)
def create_access_control_list(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    name = p.required("AclName")
    if len(name) > 80:
        raise invalid_parameter("AclName", "At most 80 characters.")
    acl = AccessControlList(acl_id=new_id("acl"), region=p.region, name=name,
                            ip_version=_choice(p, "AddressIPVersion", ("ipv4", "ipv6"), "ipv4"),
                            created=call.now, resource_group_id=p.get("ResourceGroupId") or "rg-emu",
                            tags={k: v or "" for k, v in _repeat_tags(p)})
    _acls(call.state)[acl.acl_id] = acl
    return {"AclId": acl.acl_id}


@action(SLB_VERSION, "DeleteAccessControlList", mutating=True)
def delete_access_control_list(call: Call) -> dict[str, Any]:
    check_region(call)
    acl = _acl(call, call.params.required("AclId"))
    if _acl_users(call, acl.acl_id):
        raise ApiError(400, "AclInUse", "The specified ACL is bound to listeners. You cannot delete it.")
    del _acls(call.state)[acl.acl_id]
    return {}


def _acl_entries(p: Params, acl: AccessControlList) -> list[AclEntry]:
    """The AclEntrys JSON: ``[{"entry": "10.0.0.0/24", "comment": "..."}]``, addresses as CIDR blocks."""
    if not p.get("AclEntrys"):
        raise missing_parameter("AclEntrys")
    value = p.json_value("AclEntrys")
    if not isinstance(value, list) or not value:
        raise ApiError(400, "AclEntryIllegal", "There is illegal entry format.")
    if len(value) > ACL_ENTRY_BATCH_LIMIT:
        raise ApiError(400, "AclEntryExceedLimit", "The maximum number of ACL entries is exceeded.")
    entries = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("entry"), str):
            raise ApiError(400, "AclEntryIllegal", "There is illegal entry format.")
        try:
            net = ipaddress.ip_network(item["entry"].strip(), strict=True)
        except ValueError:
            raise ApiError(400, "AclEntryIllegal", "The specified ACL entry is invalid.") from None
        if f"ipv{net.version}" != acl.ip_version:
            raise ApiError(400, "AclEntryIllegal", "The specified ACL entry is invalid.")
        entries.append(AclEntry(entry=str(net), comment=str(item.get("comment") or "")))
    return entries


@action(SLB_VERSION, "AddAccessControlListEntry", mutating=True)
def add_access_control_list_entry(call: Call) -> dict[str, Any]:
    check_region(call)
    acl = _acl(call, call.params.required("AclId"))
    new = _acl_entries(call.params, acl)
    present = {e.entry for e in acl.entries}
    seen: set[str] = set()
    for entry in new:
        if entry.entry in present or entry.entry in seen:
            raise ApiError(400, "AclEntryIllegal", f"The ACL entry {entry.entry} already exists.")
        seen.add(entry.entry)
    if len(acl.entries) + len(new) > ACL_ENTRY_LIMIT:
        raise ApiError(400, "AclEntryExceedLimit", "The maximum number of ACL entries is exceeded.")
    acl.entries.extend(new)
    return {}


@action(SLB_VERSION, "RemoveAccessControlListEntry", mutating=True)
def remove_access_control_list_entry(call: Call) -> dict[str, Any]:
    check_region(call)
    acl = _acl(call, call.params.required("AclId"))
    gone = {e.entry for e in _acl_entries(call.params, acl)}
    if not acl.entries:
        raise ApiError(400, "AclEntryEmpty", "Acl does not have any entry.")
    acl.entries = [e for e in acl.entries if e.entry not in gone]
    return {}


@action(SLB_VERSION, "DescribeAccessControlLists")
def describe_access_control_lists(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    wanted_tags = _repeat_tags(p)
    acls = [
        a for a in sorted(_acls(call.state).values(), key=lambda a: a.created)
        if a.region == p.region
        and (not p.get("AclName") or a.name == p.get("AclName"))
        and (not p.get("AddressIPVersion") or a.ip_version == p.get("AddressIPVersion"))
        and (not p.get("ResourceGroupId") or a.resource_group_id == p.get("ResourceGroupId"))
        and _tags_match(a.tags, wanted_tags)
    ]
    items, envelope = page(p, acls, default_size=50, max_size=100)
    return {**envelope, "Count": len(items), "Acls": {"Acl": [_acl_json(a) for a in items]}}


@action(SLB_VERSION, "DescribeAccessControlListAttribute")
def describe_access_control_list_attribute(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    acl = _acl(call, p.required("AclId"))
    entries = [e for e in acl.entries if not p.get("AclEntryComment") or e.comment == p.get("AclEntryComment")]
    if p.get("Page") or p.get("PageSize"):
        number = p.integer("Page", 1, low=1)
        size = p.integer("PageSize", 50, low=1, high=100)
        entries = entries[(number - 1) * size:number * size]
    out = _acl_json(acl)
    out.pop("CreateTime")
    return {
        **out, "TotalAclEntry": len(acl.entries),
        "AclEntrys": {"AclEntry": [{"AclEntryIP": e.entry, "AclEntryComment": e.comment} for e in entries]},
        "RelatedListeners": {"RelatedListener": [
            {"LoadBalancerId": lb.load_balancer_id, "ListenerPort": item.port, "Protocol": item.protocol,
             "AclType": item.attributes.get("AclType", "")} for lb, item in _acl_users(call, acl.acl_id)]},
    }
