"""VPC API 2016-04-28: VPCs, vRouters, vSwitches, route tables and route entries.

Route changes behave as on the real service:

* create and delete are asynchronous: a new entry is ``Pending`` and a deleted
  one ``Deleting`` for ``settings.route_delay`` seconds, then it settles;
* one change in flight per route table: while an entry is ``Pending`` another
  create or delete fails with ``IncorrectRouteEntryStatus``, while one is
  ``Deleting`` with ``TaskConflict`` (both HTTP 400);
* a batch call (``CreateRouteEntries``/``DeleteRouteEntries``, up to 50 items)
  is one change per table; items that cannot be applied are reported in
  ``FailedRouteEntries`` and the rest go through.

The same read actions are also served under the ECS version 2014-05-26, as the
legacy SDKs (and flannel's original backend) called them there.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from flannel_alivpc.emulator.errors import ApiError, invalid_parameter, missing_parameter
from flannel_alivpc.emulator.protocol import (
    ECS_VERSION,
    OWNER_ID,
    VPC_VERSION,
    Call,
    Params,
    action,
    check_region,
    page,
)
from flannel_alivpc.emulator.state import KNOWN_REGIONS, SERVICE_CIDR, RouteEntry, RouteTable, iso_time, new_id

BATCH_LIMIT = 50
NEXT_HOP_TYPES = {
    "Instance", "HaVip", "RouterInterface", "NetworkInterface", "VpnGateway", "IPv6Gateway",
    "NatGateway", "Attachment", "VpcPeer", "Ipv4Gateway", "GatewayEndpoint", "Ecr",
}


# -- rendering ---------------------------------------------------------------


def _vpc_json(call: Call, vpc_id: str) -> dict[str, Any]:
    state = call.state
    vpc = state.vpcs[vpc_id]
    tables = [t.table_id for t in state.route_tables.values() if t.vpc_id == vpc_id]
    return {
        "VpcId": vpc.vpc_id, "RegionId": vpc.region, "Status": "Available", "VpcName": vpc.name,
        "CreationTime": iso_time(vpc.created), "CidrBlock": vpc.cidr, "Ipv6CidrBlock": "",
        "VRouterId": vpc.vrouter_id, "Description": "", "IsDefault": vpc.is_default,
        "ResourceGroupId": "rg-emu", "NetworkAclNum": "0", "CenStatus": "", "OwnerId": OWNER_ID,
        "EnabledIpv6": False, "Ipv6CidrBlocks": {"Ipv6CidrBlock": []}, "DnsHostnameStatus": "DISABLED",
        "DhcpOptionsSetId": "", "DhcpOptionsSetStatus": "",
        "VSwitchIds": {"VSwitchId": [v.vswitch_id for v in state.vswitches.values() if v.vpc_id == vpc_id]},
        # The inner key really repeats the outer name for these two lists.
        "RouterTableIds": {"RouterTableIds": tables},
        "NatGatewayIds": {"NatGatewayIds": []},
        "UserCidrs": {"UserCidr": []},
        "SecondaryCidrBlocks": {"SecondaryCidrBlock": []},
        "Tags": {"Tag": []},
    }


def _table_vswitches(call: Call, table: RouteTable) -> list[str]:
    return [v.vswitch_id for v in call.state.vswitches.values() if v.route_table_id == table.table_id]


def _entry_nested_json(entry: RouteEntry, now: float) -> dict[str, Any]:
    """An entry as DescribeRouteTables nests it (the older shape)."""
    return {
        "RouteTableId": entry.table_id, "DestinationCidrBlock": entry.destination,
        "Type": entry.entry_type, "Status": entry.status(now), "InstanceId": entry.next_hop_id,
        "NextHopType": entry.next_hop_type, "RouteEntryId": entry.entry_id,
        "RouteEntryName": entry.name, "Description": entry.description,
        "NextHops": {"NextHop": []},
    }


def _entry_list_json(call: Call, entry: RouteEntry) -> dict[str, Any]:
    """An entry as DescribeRouteEntryList returns it (next hops as a list)."""
    hops = []
    if entry.next_hop_id or entry.entry_type == "Custom":
        hops.append({
            "NextHopType": entry.next_hop_type, "NextHopId": entry.next_hop_id, "Enabled": 1,
            "Weight": 100, "NextHopRegionId": call.state.route_tables[entry.table_id].region,
            "NextHopRelatedInfo": {"InstanceId": "", "InstanceType": "", "RegionId": ""},
        })
    return {
        "RouteEntryId": entry.entry_id, "RouteEntryName": entry.name, "Description": entry.description,
        "RouteTableId": entry.table_id, "DestinationCidrBlock": entry.destination, "IpVersion": "ipv4",
        "Type": entry.entry_type, "Status": entry.status(call.now), "Origin": "", "ServiceType": "",
        "GmtModified": iso_time(entry.created), "NextHops": {"NextHop": hops},
    }


# -- lookups and validation -----------------------------------------------------


def _table(call: Call, table_id: str) -> RouteTable:
    table = call.state.route_tables.get(table_id)
    if table is None or table.region != call.params.region:
        raise ApiError(404, "InvalidRouteTableId.NotFound", "Specified route table does not exist.")
    return table


def _ensure_stable(table: RouteTable, now: float) -> None:
    unstable = table.unstable(now)
    if not unstable:
        return
    if any(e.delete_at is not None for e in unstable):
        raise ApiError(400, "TaskConflict", "The operation is too frequent, please wait a moment and try again.")
    raise ApiError(400, "IncorrectRouteEntryStatus", "Some route entry status blocked this operation.")


def _parse_destination(raw: str) -> str:
    """A destination CIDR in canonical form; a bare address means /32."""
    try:
        if "/" not in raw:
            raw += "/32" if ":" not in raw else "/128"
        return str(ipaddress.ip_network(raw, strict=True))
    except ValueError:
        raise ApiError(400, "InvalidCidrBlock.Malformed", f"Specified CIDR block {raw} is not valid.") from None


def _validate_new_entry(call: Call, table: RouteTable, destination: str, hop_type: str, hop_id: str) -> None:
    """Raise the error the real API gives for an entry that cannot be added to ``table``."""
    state = call.state
    net = ipaddress.ip_network(destination)
    if net.version == 4 and net.subnet_of(SERVICE_CIDR):  # type: ignore[arg-type]
        raise ApiError(400, "InvalidCidrBlock", "Specified CIDR block overlaps the reserved 100.64.0.0/10.")
    for vsw in state.vswitches.values():
        vsw_net = ipaddress.ip_network(vsw.cidr)
        if vsw.vpc_id == table.vpc_id and net.version == vsw_net.version and net.subnet_of(vsw_net):  # type: ignore[arg-type]
            raise ApiError(400, "InvalidCidrBlock", f"Specified CIDR block is inside vSwitch {vsw.vswitch_id}.")
    if hop_type not in NEXT_HOP_TYPES:
        raise ApiError(400, "InvalidNextHopType", f"Specified NextHopType {hop_type} is not valid.")
    if not hop_id:
        raise ApiError(400, "InvalidNexthopTypeAndList.BothNull", "NextHopId must be specified.")
    if hop_type == "Instance":
        inst = state.instances.get(hop_id)
        if inst is None or inst.region != table.region:
            raise ApiError(400, "InvalidNextHop.NotFound", "Specified next hop instance does not exist.")
        if inst.network_type != "vpc" or inst.vpc_id != table.vpc_id:
            raise ApiError(400, "IllegalParam.NextHopId", "Instance not exists or not vpc vm.")
    if table.find_destination(destination) is not None:
        raise ApiError(400, "InvalidCIDRBlock.Duplicate", "Specified CIDR block is already exists.")
    if table.custom_count() >= state.settings.route_quota:
        raise ApiError(400, "QuotaExceeded", "Route entry quota exceeded in this route table.")


def _add_entry(call: Call, table: RouteTable, destination: str, hop_type: str, hop_id: str,
               name: str = "", description: str = "") -> RouteEntry:
    entry = RouteEntry(entry_id=new_id("rte"), table_id=table.table_id, destination=destination,
                       entry_type="Custom", next_hop_type=hop_type, next_hop_id=hop_id,
                       created=call.now, ready_at=call.now + call.state.settings.route_delay,
                       name=name, description=description)
    table.entries[entry.entry_id] = entry
    return entry


def _start_delete(call: Call, table: RouteTable, entry: RouteEntry) -> None:
    if entry.entry_type != "Custom":
        raise ApiError(400, "OperationDenied", "Specified operation is denied as route entry type is system.")
    delay = call.state.settings.route_delay
    if delay <= 0:
        del table.entries[entry.entry_id]
    else:
        entry.delete_at = call.now + delay


def _route_entry_not_found() -> ApiError:
    return ApiError(400, "InvalidRouteEntry.NotFound", "Route entry not exists.")


# -- read actions -----------------------------------------------------------------


def describe_vpcs(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    wanted = {v.strip() for v in p.get("VpcId").split(",") if v.strip()}
    vpcs = [
        v for v in call.state.vpcs.values()
        if v.region == p.region
        and (not wanted or v.vpc_id in wanted)
        and (not p.get("VpcName") or v.name == p.get("VpcName"))
        and (p.get("IsDefault") == "" or v.is_default == p.boolean("IsDefault"))
    ]
    items, envelope = page(p, vpcs, max_size=50)
    return {**envelope, "Vpcs": {"Vpc": [_vpc_json(call, v.vpc_id) for v in items]}}


def describe_vrouters(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    routers = [
        r for r in call.state.vrouters.values()
        if r.region == p.region and (not p.get("VRouterId") or r.vrouter_id == p.get("VRouterId"))
    ]
    items, envelope = page(p, routers, max_size=50)
    return {**envelope, "VRouters": {"VRouter": [{
        "VRouterId": r.vrouter_id, "VpcId": r.vpc_id, "RegionId": r.region, "VRouterName": "",
        "Description": "", "CreationTime": iso_time(r.created),
        "RouteTableIds": {"RouteTableId": [
            t.table_id for t in call.state.route_tables.values() if t.vrouter_id == r.vrouter_id]},
    } for r in items]}}


def describe_vswitches(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    if p.get("VpcId") and p.get("VpcId") not in call.state.vpcs:
        raise ApiError(400, "Forbidden.VpcNotFound", "Specified VPC can not found.")
    wanted = call.state.vswitches.get(p.get("VSwitchId"))
    if p.get("VSwitchId") and (wanted is None or wanted.region != p.region):
        raise ApiError(404, "InvalidVSwitchId.NotFound", "VSwitch not exist.")
    vswitches = [
        v for v in call.state.vswitches.values()
        if v.region == p.region
        and (not p.get("VpcId") or v.vpc_id == p.get("VpcId"))
        and (not p.get("VSwitchId") or v.vswitch_id == p.get("VSwitchId"))
        and (not p.get("ZoneId") or v.zone == p.get("ZoneId"))
        and (not p.get("RouteTableId") or v.route_table_id == p.get("RouteTableId"))
    ]
    items, envelope = page(p, vswitches, max_size=50)
    out = []
    for v in items:
        table = call.state.route_tables[v.route_table_id]
        out.append({
            "VSwitchId": v.vswitch_id, "VpcId": v.vpc_id, "Status": "Available", "CidrBlock": v.cidr,
            "ZoneId": v.zone, "AvailableIpAddressCount": 250, "Description": "",
            "VSwitchName": v.name, "CreationTime": iso_time(v.created), "IsDefault": False,
            "ResourceGroupId": "rg-emu", "NetworkAclId": "", "OwnerId": OWNER_ID, "ShareType": "",
            "EnabledIpv6": False, "Ipv6CidrBlock": "",
            "RouteTable": {"RouteTableId": table.table_id, "RouteTableType": table.table_type},
            "Tags": {"Tag": []},
        })
    return {**envelope, "VSwitches": {"VSwitch": out}}


def _filtered_tables(call: Call) -> list[RouteTable]:
    p = call.params
    router_type = p.get("RouterType")
    if router_type and router_type not in ("VRouter", "VBR"):
        raise invalid_parameter("RouterType")
    router_id = p.get("RouterId") or p.get("VRouterId")
    return [
        t for t in call.state.route_tables.values()
        if t.region == p.region
        and router_type in ("", "VRouter")
        and (not router_id or t.vrouter_id == router_id)
        and (not p.get("VpcId") or t.vpc_id == p.get("VpcId"))
        and (not p.get("RouteTableId") or t.table_id == p.get("RouteTableId"))
        and (not p.get("RouteTableName") or t.name == p.get("RouteTableName"))
        and (not (p.get("RouteTableType") or p.get("Type"))
             or t.table_type == (p.get("RouteTableType") or p.get("Type")))
    ]


def describe_route_tables(call: Call) -> dict[str, Any]:
    check_region(call)
    items, envelope = page(call.params, _filtered_tables(call), max_size=50)
    return {**envelope, "RouteTables": {"RouteTable": [{
        "RouteTableId": t.table_id, "VRouterId": t.vrouter_id, "RouteTableType": t.table_type,
        "CreationTime": iso_time(t.created), "ResourceGroupId": "rg-emu", "Status": "Available",
        "VSwitchIds": {"VSwitchId": _table_vswitches(call, t)},
        # Real spelling: "RouteEntrys".
        "RouteEntrys": {"RouteEntry": [_entry_nested_json(e, call.now) for e in t.entries.values()]},
    } for t in items]}}


def describe_route_table_list(call: Call) -> dict[str, Any]:
    check_region(call)
    items, envelope = page(call.params, _filtered_tables(call), max_size=50)
    return {
        "Code": "200", "Message": "successful", "Success": True, **envelope,
        "RouterTableList": {"RouterTableListType": [{
            "VpcId": t.vpc_id, "RouterType": "VRouter", "RouterId": t.vrouter_id,
            "RouteTableId": t.table_id, "RouteTableName": t.name, "RouteTableType": t.table_type,
            "Description": t.description, "CreationTime": iso_time(t.created),
            "ResourceGroupId": "rg-emu", "Status": "Available", "OwnerId": OWNER_ID,
            "AssociateType": "VSwitch", "RoutePropagationEnable": True, "GatewayIds": {"GatewayIds": []},
            "VSwitchIds": {"VSwitchId": _table_vswitches(call, t)}, "Tags": {"Tag": []},
        } for t in items]},
    }


def describe_route_entry_list(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    table = _table(call, p.required("RouteTableId"))
    # Current docs say 1..100 (default 10), older ones 20..100 (default 50): accept both.
    limit = p.integer("MaxResult", 10, low=1, high=100)
    destinations = set(p.repeat_values("DestCidrBlockList"))
    if p.get("DestinationCidrBlock"):
        destinations.add(_parse_destination(p.get("DestinationCidrBlock")))
    entries = [
        e for e in table.entries.values()
        if (not p.get("RouteEntryId") or e.entry_id == p.get("RouteEntryId"))
        and (not p.get("RouteEntryName") or e.name == p.get("RouteEntryName"))
        and (not p.get("RouteEntryType") or e.entry_type == p.get("RouteEntryType"))
        and (not destinations or e.destination in destinations)
        and (not p.get("NextHopId") or e.next_hop_id == p.get("NextHopId"))
        and (not p.get("NextHopType") or e.next_hop_type == p.get("NextHopType"))
    ]
    entries.sort(key=lambda e: e.entry_id)
    total = len(entries)
    token = p.get("NextToken")
    if token:
        # The token is the id of the last entry returned; entries are listed in id order,
        # so a page boundary stays correct while entries are added or removed.
        if not token.startswith("rte-"):
            raise invalid_parameter("NextToken")
        entries = [e for e in entries if e.entry_id > token]
    chunk = entries[:limit]
    next_token = chunk[-1].entry_id if len(entries) > limit else ""
    return {"NextToken": next_token, "TotalCount": total,
            "RouteEntrys": {"RouteEntry": [_entry_list_json(call, e) for e in chunk]}}


def describe_regions(call: Call) -> dict[str, Any]:
    host = "vpc" if call.version == VPC_VERSION else "ecs"
    regions = dict(KNOWN_REGIONS)
    # A made-up region the emulator was started with (--region) exists too.
    regions.setdefault(call.state.settings.region, call.state.settings.region)
    # Only ECS lists a Status per region.
    status = {} if call.version == VPC_VERSION else {"Status": "available"}
    return {"Regions": {"Region": [
        {"RegionId": rid, "LocalName": name, "RegionEndpoint": f"{host}.{rid}.aliyuncs.com", **status}
        for rid, name in regions.items()
    ]}}


# -- write actions ---------------------------------------------------------------


def create_route_entry(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    table = _table(call, p.required("RouteTableId"))
    destination = _parse_destination(p.required("DestinationCidrBlock"))
    hops = p.repeat_list("NextHopList")
    if hops and (p.get("NextHopId") or p.get("NextHopType")):
        raise ApiError(400, "InvalidNexthopTypeAndList.BothNotNull",
                       "NextHopType/NextHopId and NextHopList cannot both be specified.")
    if hops:
        if len(hops) != 1:
            raise ApiError(400, "InvalidParameter", "The emulator supports a single next hop per entry.")
        hop_type, hop_id = hops[0].get("NextHopType", "Instance"), hops[0].get("NextHopId", "")
    else:
        hop_type, hop_id = p.get("NextHopType") or "Instance", p.get("NextHopId")
    _ensure_stable(table, call.now)
    _validate_new_entry(call, table, destination, hop_type, hop_id)
    if p.boolean("DryRun"):
        raise ApiError(400, "DryRunOperation", "Request validation has been passed with DryRun flag set.")
    entry = _add_entry(call, table, destination, hop_type, hop_id, p.get("RouteEntryName"), p.get("Description"))
    return {"RouteEntryId": entry.entry_id}


def _batch_items(p: Params) -> list[dict[str, str]]:
    items = p.repeat_list("RouteEntries")
    if not items:
        raise missing_parameter("RouteEntries")
    if len(items) > BATCH_LIMIT:
        raise invalid_parameter("RouteEntries", f"At most {BATCH_LIMIT} entries per call.")
    return items


def _batch_failure(item: dict[str, str], error: ApiError) -> dict[str, str]:
    code = "VPC_ROUTE_ENTRY_CIDR_BLOCK_DUPLICATE" if error.code == "InvalidCIDRBlock.Duplicate" else error.code
    failed = {"DstCidrBlock": item.get("DstCidrBlock", ""), "NextHop": item.get("NextHop", ""),
              "FailedCode": code, "FailedMessage": error.message}
    if item.get("RouteEntryId"):
        failed["RouteEntryId"] = item["RouteEntryId"]
    return failed


def _batch_tables(call: Call, items: list[dict[str, str]]) -> dict[str, RouteTable]:
    """Every table the batch names, each checked to have no change in flight."""
    tables: dict[str, RouteTable] = {}
    for item in items:
        table_id = item.get("RouteTableId", "")
        if not table_id:
            continue
        if table_id not in tables:
            tables[table_id] = _table(call, table_id)
            _ensure_stable(tables[table_id], call.now)
    return tables


def create_route_entries(call: Call) -> dict[str, Any]:
    check_region(call)
    items = _batch_items(call.params)
    tables = _batch_tables(call, items)
    created: list[str] = []
    failed: list[dict[str, str]] = []
    for item in items:
        try:
            if not item.get("RouteTableId"):
                raise ApiError(400, "MissingParameter", "RouteTableId is mandatory for each entry.")
            if not item.get("DstCidrBlock"):
                raise ApiError(400, "MissingParameter", "DstCidrBlock is mandatory for each entry.")
            table = tables[item["RouteTableId"]]
            destination = _parse_destination(item["DstCidrBlock"])
            hop_type = item.get("NextHopType") or "Instance"
            _validate_new_entry(call, table, destination, hop_type, item.get("NextHop", ""))
        except ApiError as error:
            failed.append(_batch_failure(item, error))
            continue
        if not call.params.boolean("DryRun"):
            entry = _add_entry(call, table, destination, hop_type, item.get("NextHop", ""),
                               item.get("Name", ""), item.get("Description", ""))
            created.append(entry.entry_id)
    return {"SuccessCount": len(items) - len(failed), "FailedCount": len(failed),
            "RouteEntryIds": created, "FailedRouteEntries": failed}


def _find_entry(table: RouteTable | None, tables: list[RouteTable], entry_id: str, destination: str,
                next_hop: str) -> RouteEntry | None:
    candidates = [table] if table is not None else tables
    for t in candidates:
        for entry in t.entries.values():
            if entry.delete_at is not None:
                continue
            if entry_id and entry.entry_id != entry_id:
                continue
            if destination and entry.destination != destination:
                continue
            if next_hop and entry.next_hop_id != next_hop:
                continue
            if entry_id or destination:
                return entry
    return None


def _addressed_entry(call: Call, next_hop: str = "") -> RouteEntry:
    """The entry a single-entry action names: by RouteEntryId, or by RouteTableId and DestinationCidrBlock."""
    p = call.params
    entry_id = p.get("RouteEntryId")
    table_id = p.get("RouteTableId")
    destination = _parse_destination(p.get("DestinationCidrBlock")) if p.get("DestinationCidrBlock") else ""
    if not entry_id and not (table_id and destination):
        raise ApiError(400, "MissingParameter",
                       "Either RouteEntryId or RouteTableId and DestinationCidrBlock must be specified.")
    table = _table(call, table_id) if table_id else None
    regional = [t for t in call.state.route_tables.values() if t.region == p.region]
    entry = _find_entry(table, regional, entry_id, destination, next_hop)
    if entry is None:
        raise _route_entry_not_found()
    return entry


def delete_route_entry(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    hops = p.repeat_list("NextHopList")
    entry = _addressed_entry(call, p.get("NextHopId") or (hops[0].get("NextHopId", "") if hops else ""))
    owner = call.state.route_tables[entry.table_id]
    _ensure_stable(owner, call.now)
    if p.boolean("DryRun"):
        raise ApiError(400, "DryRunOperation", "Request validation has been passed with DryRun flag set.")
    _start_delete(call, owner, entry)
    return {}


_ENTRY_NAME_MAX = 128
_ENTRY_DESCRIPTION_MAX = 256


def _check_label(value: str, field_name: str, limit: int) -> None:
    """The API's rule for RouteEntryName and Description: starts with a letter, no URL, bounded length."""
    if not value:
        return
    if len(value) > limit or not value[0].isalpha() or value.lower().startswith(("http://", "https://")):
        raise ApiError(400, f"IllegalParam.{field_name}",
                       f"The {field_name} must be 1 to {limit} characters long, start with a letter and "
                       f"cannot start with http:// or https://.")


def modify_route_entry(call: Call) -> dict[str, Any]:
    """Renames an entry and sets its description in place; its next hop and status are unchanged."""
    check_region(call)
    p = call.params
    if p.get("NewNextHopId") or p.get("NewNextHopType"):
        raise ApiError(400, "UnsupportedOperation", "The emulator changes RouteEntryName and Description only.")
    entry = _addressed_entry(call)
    if entry.entry_type != "Custom":
        raise ApiError(400, "OperationDenied", "Specified operation is denied as route entry type is system.")
    if entry.status(call.now) != "Available":
        raise ApiError(400, "IncorrectRouteEntryStatus", "Some route entry status blocked this operation.")
    name, description = p.get("RouteEntryName"), p.get("Description")
    _check_label(name, "RouteEntryName", _ENTRY_NAME_MAX)
    _check_label(description, "Description", _ENTRY_DESCRIPTION_MAX)
    if p.boolean("DryRun"):
        raise ApiError(400, "DryRunOperation", "Request validation has been passed with DryRun flag set.")
    if name:
        entry.name = name
    if description:
        entry.description = description
    return {}


def delete_route_entries(call: Call) -> dict[str, Any]:
    check_region(call)
    items = _batch_items(call.params)
    tables = _batch_tables(call, items)
    regional = [t for t in call.state.route_tables.values() if t.region == call.params.region]
    failed: list[dict[str, str]] = []
    for item in items:
        try:
            destination = _parse_destination(item["DstCidrBlock"]) if item.get("DstCidrBlock") else ""
            entry_id = item.get("RouteEntryId", "")
            if not entry_id and not (item.get("RouteTableId") and destination):
                raise ApiError(400, "MissingParameter",
                               "Each entry needs RouteEntryId, or RouteTableId and DstCidrBlock.")
            table = tables.get(item.get("RouteTableId", ""))
            entry = _find_entry(table, regional, entry_id, destination, item.get("NextHop", ""))
            if entry is None:
                raise _route_entry_not_found()
            owner = call.state.route_tables[entry.table_id]
            if owner.table_id not in tables:
                _ensure_stable(owner, call.now)
                tables[owner.table_id] = owner
            if entry.entry_type != "Custom":
                raise ApiError(400, "OperationDenied", "Specified operation is denied as route entry type is system.")
        except ApiError as error:
            failed.append(_batch_failure(item, error))
            continue
        if not call.params.boolean("DryRun"):
            _start_delete(call, owner, entry)
    return {"SuccessCount": len(items) - len(failed), "FailedCount": len(failed), "FailedRouteEntries": failed}


for _version in (VPC_VERSION, ECS_VERSION):
    action(_version, "DescribeVpcs")(describe_vpcs)
    action(_version, "DescribeVRouters")(describe_vrouters)
    action(_version, "DescribeVSwitches")(describe_vswitches)
    action(_version, "DescribeRouteTables")(describe_route_tables)
    action(_version, "CreateRouteEntry", mutating=True)(create_route_entry)
    action(_version, "DeleteRouteEntry", mutating=True)(delete_route_entry)
action(VPC_VERSION, "DescribeRouteTableList")(describe_route_table_list)
action(VPC_VERSION, "DescribeRouteEntryList")(describe_route_entry_list)
action(VPC_VERSION, "CreateRouteEntries", mutating=True)(create_route_entries)
action(VPC_VERSION, "DeleteRouteEntries", mutating=True)(delete_route_entries)
action(VPC_VERSION, "ModifyRouteEntry", mutating=True)(modify_route_entry)
action(VPC_VERSION, "DescribeRegions")(describe_regions)
action(ECS_VERSION, "DescribeRegions")(describe_regions)
