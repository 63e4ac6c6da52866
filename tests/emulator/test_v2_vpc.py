"""VPC API 2016-04-28 through the V2 SDK (alibabacloud_vpc20160428): the legacy-SDK scenarios, read
back through the SDK's own models. Every answer is also checked field by field against its model
(``CloudV2.call``)."""

from __future__ import annotations

import pytest

from flannel_alivpc.emulator.server import Emulator, Topology
from tests.emulator.sdk import Cloud, wait_for
from tests.emulator.sdk_v2 import CloudV2

DELAY = 0.3


@pytest.fixture
def sdk(emulator: Emulator) -> CloudV2:
    return CloudV2(emulator)


def _route(sdk: CloudV2, table_id: str, destination: str, next_hop: str) -> str:
    answer = sdk.vpc("CreateRouteEntry", RouteTableId=table_id, DestinationCidrBlock=destination,
                     NextHopId=next_hop, NextHopType="Instance")
    entry_id: str = answer.model.route_entry_id
    return entry_id


def _status(sdk: CloudV2, table_id: str, destination: str) -> str | None:
    entries = sdk.vpc("DescribeRouteEntryList", RouteTableId=table_id, DestinationCidrBlock=destination,
                      MaxResult=100).model.route_entrys.route_entry
    return entries[0].status if entries else None


def test_vpcs_vrouters_and_vswitches(sdk: CloudV2, topology: Topology) -> None:
    body = sdk.vpc("DescribeVpcs").model
    assert (body.total_count, body.page_number, body.page_size) == (1, 1, 10)
    [vpc] = body.vpcs.vpc
    assert (vpc.vpc_id, vpc.vrouter_id, vpc.cidr_block, vpc.is_default) == (
        topology.vpc_id, topology.vrouter_id, "192.168.0.0/16", False)
    assert vpc.router_table_ids.router_table_ids == [topology.route_table_id]
    assert vpc.v_switch_ids.v_switch_id == [topology.vswitch_id]
    assert vpc.owner_id == 1234567890123456 and vpc.enabled_ipv_6 is False
    [router] = sdk.vpc("DescribeVRouters", VRouterId=topology.vrouter_id).model.vrouters.vrouter
    assert router.route_table_ids.route_table_id == [topology.route_table_id]
    [vsw] = sdk.vpc("DescribeVSwitches", VpcId=topology.vpc_id).model.v_switches.v_switch
    assert (vsw.v_switch_id, vsw.zone_id, vsw.route_table.route_table_type) == (
        topology.vswitch_id, "cn-hangzhou-g", "System")
    error = sdk.fail("vpc", "DescribeVSwitches", VpcId="vpc-missing")
    assert (error.status_code, error.code) == (400, "Forbidden.VpcNotFound")
    error = sdk.fail("vpc", "DescribeVSwitches", VSwitchId="vsw-missing")
    assert (error.status_code, error.code) == (404, "InvalidVSwitchId.NotFound")


def test_route_tables_both_actions(sdk: CloudV2, topology: Topology) -> None:
    _route(sdk, topology.route_table_id, "172.20.1.0/24", topology.instance_ids[1])
    [table] = sdk.vpc("DescribeRouteTables", VRouterId=topology.vrouter_id).model.route_tables.route_table
    entries = {e.destination_cidr_block: e for e in table.route_entrys.route_entry}
    assert set(entries) == {"192.168.0.0/20", "100.64.0.0/10", "172.20.1.0/24"}
    assert (entries["172.20.1.0/24"].instance_id, entries["172.20.1.0/24"].type) == (
        topology.instance_ids[1], "Custom")
    listed = sdk.vpc("DescribeRouteTableList", VpcId=topology.vpc_id).model
    [row] = listed.router_table_list.router_table_list_type
    assert (row.route_table_id, row.router_id, row.router_type) == (
        topology.route_table_id, topology.vrouter_id, "VRouter")
    assert sdk.vpc("DescribeRouteTableList", RouterType="VBR").model.total_count == 0
    assert sdk.fail("vpc", "DescribeRouteTableList", RouterType="Bogus").code == "InvalidParameter"


def test_single_entry_is_asynchronous_and_one_change_is_in_flight(sdk: CloudV2, cloud: Cloud,
                                                                  topology: Topology) -> None:
    cloud.settings(route_delay=DELAY)
    table, hop = topology.route_table_id, topology.instance_ids[0]
    entry_id = _route(sdk, table, "10.1.0.0/24", hop)
    assert entry_id.startswith("rte-")
    assert _status(sdk, table, "10.1.0.0/24") == "Pending"
    error = sdk.fail("vpc", "CreateRouteEntry", RouteTableId=table, DestinationCidrBlock="10.2.0.0/24",
                     NextHopId=hop, NextHopType="Instance")
    assert (error.status_code, error.code) == (400, "IncorrectRouteEntryStatus")
    wait_for(lambda: _status(sdk, table, "10.1.0.0/24") == "Available", timeout=DELAY * 10)
    sdk.vpc("DeleteRouteEntry", RouteEntryId=entry_id)
    assert _status(sdk, table, "10.1.0.0/24") == "Deleting"
    error = sdk.fail("vpc", "CreateRouteEntry", RouteTableId=table, DestinationCidrBlock="10.2.0.0/24",
                     NextHopId=hop, NextHopType="Instance")
    assert error.code == "TaskConflict"
    wait_for(lambda: _status(sdk, table, "10.1.0.0/24") is None, timeout=DELAY * 10)


def test_validation_errors(sdk: CloudV2, topology: Topology) -> None:
    table, hop = topology.route_table_id, topology.instance_ids[0]
    cases = [
        ({"RouteTableId": "vtb-missing", "DestinationCidrBlock": "10.0.0.0/24"}, 404, "InvalidRouteTableId.NotFound"),
        ({"DestinationCidrBlock": "10.0.0.1/24"}, 400, "InvalidCidrBlock.Malformed"),
        ({"DestinationCidrBlock": "100.64.1.0/24"}, 400, "InvalidCidrBlock"),
        ({"DestinationCidrBlock": "10.0.0.0/24", "NextHopId": "i-missing"}, 400, "InvalidNextHop.NotFound"),
        ({"DestinationCidrBlock": "10.0.0.0/24", "NextHopType": "Bogus"}, 400, "InvalidNextHopType"),
        ({"DestinationCidrBlock": "10.0.0.0/24", "DryRun": True}, 400, "DryRunOperation"),
    ]
    for params, status, code in cases:
        full = {"RouteTableId": table, "NextHopId": hop, "NextHopType": "Instance", **params}
        error = sdk.fail("vpc", "CreateRouteEntry", **full)
        assert (error.status_code, error.code) == (status, code), params
    _route(sdk, table, "10.0.0.0/24", hop)
    error = sdk.fail("vpc", "CreateRouteEntry", RouteTableId=table, DestinationCidrBlock="10.0.0.0/24",
                     NextHopId=hop, NextHopType="Instance")
    assert error.code == "InvalidCIDRBlock.Duplicate"
    system = next(e.route_entry_id for e in sdk.vpc("DescribeRouteEntryList", RouteTableId=table,
                                                    RouteEntryType="System").model.route_entrys.route_entry)
    assert sdk.fail("vpc", "DeleteRouteEntry", RouteEntryId=system).code == "OperationDenied"
    assert sdk.fail("vpc", "DeleteRouteEntry", RouteEntryId="rte-missing").code == "InvalidRouteEntry.NotFound"


def test_quota(sdk: CloudV2, cloud: Cloud, topology: Topology) -> None:
    cloud.settings(route_quota=2)
    for n in range(2):
        _route(sdk, topology.route_table_id, f"10.{n}.0.0/24", topology.instance_ids[0])
    error = sdk.fail("vpc", "CreateRouteEntry", RouteTableId=topology.route_table_id,
                     DestinationCidrBlock="10.9.0.0/24", NextHopId=topology.instance_ids[0], NextHopType="Instance")
    assert (error.status_code, error.code) == (400, "QuotaExceeded")
    assert "quota" in error.message


def test_batches_with_the_v2_flattened_lists(sdk: CloudV2, cloud: Cloud, topology: Topology) -> None:
    """``RouteEntries=[{...}]`` goes on the wire as ``RouteEntries.1.DstCidrBlock=...`` and so on."""
    table, hops = topology.route_table_id, topology.instance_ids
    _route(sdk, table, "10.0.0.0/24", hops[0])
    items = [{"RouteTableId": table, "DstCidrBlock": f"10.{n}.0.0/24", "NextHop": hops[n % 3],
              "NextHopType": "Instance", "Name": f"pod-{n}"} for n in range(4)]
    body = sdk.vpc("CreateRouteEntries", RouteEntries=items).model
    assert (body.success_count, body.failed_count) == (3, 1)
    assert len(body.route_entry_ids) == 3
    [failed] = body.failed_route_entries
    assert (failed.dst_cidr_block, failed.failed_code) == ("10.0.0.0/24", "VPC_ROUTE_ENTRY_CIDR_BLOCK_DUPLICATE")
    names = {e.destination_cidr_block: e.route_entry_name for e in sdk.vpc(
        "DescribeRouteEntryList", RouteTableId=table, RouteEntryType="Custom", MaxResult=100).model.route_entrys
        .route_entry}
    assert names["10.3.0.0/24"] == "pod-3"
    gone = [{"RouteTableId": table, "DstCidrBlock": f"10.{n}.0.0/24", "NextHop": hops[n % 3]} for n in (1, 2)]
    body = sdk.vpc("DeleteRouteEntries", RouteEntries=gone).model
    assert (body.success_count, body.failed_count) == (2, 0)
    assert sdk.fail("vpc", "CreateRouteEntries", RouteEntries=[]).code == "MissingParameter"
    too_many = [{"RouteTableId": table, "DstCidrBlock": f"10.1.{n}.0/24", "NextHop": hops[0]} for n in range(51)]
    assert sdk.fail("vpc", "CreateRouteEntries", RouteEntries=too_many).code == "InvalidParameter"


def test_batch_is_one_change_per_table(sdk: CloudV2, cloud: Cloud, topology: Topology) -> None:
    cloud.settings(route_delay=DELAY)
    table = topology.route_table_id
    items = [{"RouteTableId": table, "DstCidrBlock": f"10.{n}.0.0/24", "NextHop": topology.instance_ids[0]}
             for n in range(3)]
    assert sdk.vpc("CreateRouteEntries", RouteEntries=items).model.success_count == 3
    statuses = {_status(sdk, table, f"10.{n}.0.0/24") for n in range(3)}
    assert statuses == {"Pending"}
    assert sdk.fail("vpc", "DeleteRouteEntries", RouteEntries=items[:1]).code == "IncorrectRouteEntryStatus"


def test_route_entry_list_pagination_and_list_filter(sdk: CloudV2, cloud: Cloud, topology: Topology) -> None:
    table = topology.route_table_id
    for n in range(25):
        cloud.admin("POST", "route-entries", {"route_table_id": table, "destination": f"10.{n}.0.0/24",
                                               "next_hop_id": topology.instance_ids[0]})
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        params = {"RouteTableId": table, "RouteEntryType": "Custom", "MaxResult": 10}
        if token:
            params["NextToken"] = token
        body = sdk.vpc("DescribeRouteEntryList", **params).model
        seen.extend(e.route_entry_id for e in body.route_entrys.route_entry)
        assert body.total_count == 25
        pages += 1
        token = body.next_token
        if not token:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 25
    picked = sdk.vpc("DescribeRouteEntryList", RouteTableId=table,
                     DestCidrBlockList=["10.3.0.0/24", "10.7.0.0/24"]).model.route_entrys.route_entry
    assert sorted(e.destination_cidr_block for e in picked) == ["10.3.0.0/24", "10.7.0.0/24"]
    assert sdk.fail("vpc", "DescribeRouteEntryList", RouteTableId=table, MaxResult=101).code == "InvalidParameter"
    assert sdk.fail("vpc", "DescribeRouteEntryList", RouteTableId=table, NextToken="bogus").code == \
        "InvalidParameter"


def test_regions(sdk: CloudV2) -> None:
    regions = {r.region_id: r for r in sdk.vpc("DescribeRegions").model.regions.region}
    assert regions["cn-hangzhou"].region_endpoint == "vpc.cn-hangzhou.aliyuncs.com"
    assert regions["cn-hangzhou"].local_name == "China (Hangzhou)"


def test_unknown_region(sdk: CloudV2) -> None:
    error = sdk.fail("vpc", "DescribeVpcs", RegionId="xx-nowhere-1")
    assert (error.status_code, error.code) == (404, "InvalidRegionId.NotFound")


def test_modify_route_entry_name_and_description(sdk: CloudV2, topology: Topology) -> None:
    entry_id = _route(sdk, topology.route_table_id, "10.5.0.0/24", topology.instance_ids[0])
    sdk.vpc("ModifyRouteEntry", RouteEntryId=entry_id, RouteEntryName="pods-node-1", Description="flannel")
    [entry] = sdk.vpc("DescribeRouteEntryList", RouteTableId=topology.route_table_id,
                      RouteEntryId=entry_id).model.route_entrys.route_entry
    assert (entry.route_entry_name, entry.description) == ("pods-node-1", "flannel")
    assert sdk.fail("vpc", "ModifyRouteEntry", RouteEntryId=entry_id, RouteEntryName="1bad").code == \
        "IllegalParam.RouteEntryName"
