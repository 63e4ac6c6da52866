"""The admin API under /_emulator/: build topology, seed entries, faults, counters, state.

Every request and answer body is JSON. Errors answer 400 (bad input) or 404
(unknown resource) with ``{"error": "..."}``.

=======  ==============================  ===============================================
method   path                            what
=======  ==============================  ===============================================
GET      /_emulator/state                the whole state (secrets masked)
GET      /_emulator/settings             settings
PATCH    /_emulator/settings             change route_delay, route_quota, sts_ttl, ...
POST     /_emulator/vpcs                 {cidr, name, region} -> VPC, vRouter, System table
POST     /_emulator/vswitches            {vpc_id, cidr, zone, route_table_id, name}
POST     /_emulator/route-tables         {vpc_id, name} -> a Custom route table
POST     /_emulator/instances            {hostname, private_ip, network_type, vswitch_id,
                                         ram_role, public_ip, region}
PATCH    /_emulator/instances/<id>       {status}
DELETE   /_emulator/instances/<id>       release an instance
POST     /_emulator/route-entries        {route_table_id, destination, next_hop_type,
                                         next_hop_id}: an Available entry, no API rules
POST     /_emulator/access-keys          {access_key_id, access_key_secret}
GET      /_emulator/faults               the fault rules
PUT      /_emulator/faults               {action: rule}: replace all rules
PATCH    /_emulator/faults               {action: rule}: add or replace some rules
DELETE   /_emulator/faults               remove every rule
GET      /_emulator/counters             {action: {outcome: count}}
DELETE   /_emulator/counters             reset the counters
PATCH    /_emulator/load-balancers/      {server_id: "normal" | "abnormal" | null}: force
         <id>/health                     (null: clear) a backend's SLB health status
=======  ==============================  ===============================================
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Set
from typing import TYPE_CHECKING, Any

from flannel_alivpc.emulator import slb_api
from flannel_alivpc.emulator.state import Settings, UnknownResource

if TYPE_CHECKING:
    from flannel_alivpc.emulator.server import Emulator

INSTANCE_STATUSES = {"Pending", "Running", "Starting", "Stopping", "Stopped"}


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _fields(body: dict[str, Any], allowed: Set[str], required: Set[str] = frozenset(), *,
            strings: bool = True) -> dict[str, Any]:
    unknown = set(body) - allowed
    if unknown:
        raise AdminError(400, f"unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = required - set(body)
    if missing:
        raise AdminError(400, f"missing fields {sorted(missing)}")
    if strings:
        for name, value in body.items():
            if not isinstance(value, str):
                raise AdminError(400, f"{name}: expected a string, got {value!r}")
    return body


def _settings_update(settings: Settings, body: dict[str, Any]) -> None:
    """Apply ``body`` to ``settings``, all or nothing; numbers must not be negative."""
    _fields(body, {f.name for f in dataclasses.fields(Settings)}, strings=False)
    updates = {}
    for name, value in body.items():
        kind = type(getattr(settings, name))
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise AdminError(400, f"{name}: expected {kind.__name__}, got {value!r}")
        try:
            converted = kind(value)
        except ValueError:
            raise AdminError(400, f"{name}: expected {kind.__name__}, got {value!r}") from None
        if isinstance(converted, (int, float)) and converted < 0:
            raise AdminError(400, f"{name}: must not be negative")
        updates[name] = converted
    for name, value in updates.items():
        setattr(settings, name, value)


def handle(emulator: Emulator, method: str, path: str, raw_body: bytes) -> tuple[int, Any]:
    try:
        body = json.loads(raw_body) if raw_body else {}
        if not isinstance(body, dict):
            raise AdminError(400, "the request body must be a JSON object")
        result = _route(emulator, method, path.rstrip("/"), body)
    except AdminError as error:
        return error.status, {"error": str(error)}
    except UnknownResource as error:
        return 404, {"error": str(error)}
    except (KeyError, ValueError, TypeError) as error:
        return 400, {"error": f"{type(error).__name__}: {error}"}
    if method != "GET":
        emulator.state.save()
    return 200, result


def _route(emulator: Emulator, method: str, path: str, body: dict[str, Any]) -> Any:
    state = emulator.state
    parts = path.split("/")[2:]  # after "/_emulator"
    head = parts[0] if parts else ""
    tail = parts[1] if len(parts) > 1 else ""
    key = (method, head, bool(tail))
    if key == ("GET", "state", False):
        return state.to_json()
    if key == ("GET", "settings", False):
        return dataclasses.asdict(state.settings)
    if key == ("PATCH", "settings", False):
        with state.lock:
            _settings_update(state.settings, body)
        return dataclasses.asdict(state.settings)
    if key == ("POST", "vpcs", False):
        _fields(body, {"cidr", "name", "region"})
        vpc = state.create_vpc(**body)
        return {"VpcId": vpc.vpc_id, "VRouterId": vpc.vrouter_id,
                "RouteTableId": state.system_table(vpc.vpc_id).table_id}
    if key == ("POST", "vswitches", False):
        _fields(body, {"vpc_id", "cidr", "zone", "route_table_id", "name"}, {"vpc_id", "cidr"})
        return {"VSwitchId": state.create_vswitch(**body).vswitch_id}
    if key == ("POST", "route-tables", False):
        _fields(body, {"vpc_id", "name"}, {"vpc_id"})
        return {"RouteTableId": state.create_route_table(**body).table_id}
    if key == ("POST", "instances", False):
        _fields(body, {"hostname", "private_ip", "network_type", "vswitch_id", "ram_role", "public_ip", "region"},
                {"hostname"})
        inst = state.create_instance(**body)
        return dataclasses.asdict(inst)
    if head == "instances" and tail:
        with state.lock:
            found = state.instances.get(tail)
            if found is None:
                raise AdminError(404, f"no instance {tail}")
            if method == "DELETE":
                del state.instances[tail]
                return {"deleted": tail}
            if method == "PATCH":
                _fields(body, {"status"}, {"status"})
                if body["status"] not in INSTANCE_STATUSES:
                    raise AdminError(400, f"status: must be one of {sorted(INSTANCE_STATUSES)}")
                found.status = body["status"]
                return dataclasses.asdict(found)
    if key == ("POST", "route-entries", False):
        _fields(body, {"route_table_id", "destination", "next_hop_type", "next_hop_id", "name"},
                {"route_table_id", "destination", "next_hop_id"})
        if body["route_table_id"] not in state.route_tables:
            raise AdminError(404, f"route_table_id: no route table {body['route_table_id']}")
        try:
            entry = state.add_custom_entry(body["route_table_id"], body["destination"],
                                           body.get("next_hop_type", "Instance"), body["next_hop_id"],
                                           body.get("name", ""))
        except ValueError as error:
            raise AdminError(400, f"destination: {error}") from None
        return {"RouteEntryId": entry.entry_id}
    if key == ("POST", "access-keys", False):
        _fields(body, {"access_key_id", "access_key_secret"}, {"access_key_id", "access_key_secret"})
        state.add_access_key(body["access_key_id"], body["access_key_secret"])
        return {"AccessKeyId": body["access_key_id"]}
    if head == "faults" and not tail:
        if method == "GET":
            return emulator.faults.rules()
        if method in ("PUT", "PATCH"):
            emulator.faults.set_rules(body, replace=method == "PUT")
            return emulator.faults.rules()
        if method == "DELETE":
            emulator.faults.clear()
            return {}
    if head == "counters" and not tail:
        if method == "GET":
            return emulator.faults.counters()
        if method == "DELETE":
            emulator.faults.reset_counters()
            return {}
    if (method, head, parts[2:]) == ("PATCH", "load-balancers", ["health"]) and tail:
        with state.lock:
            lb = slb_api.balancers(state).get(tail)
            if lb is None:
                raise AdminError(404, f"no load balancer {tail}")
            try:
                return {"health_overrides": slb_api.force_health(lb, body)}
            except ValueError as error:
                raise AdminError(400, str(error)) from None
    raise AdminError(404, f"no admin route {method} /_emulator/{'/'.join(parts)}")
