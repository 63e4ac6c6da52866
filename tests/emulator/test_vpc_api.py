"""VPC API 2016-04-28 through the official SDK: shapes, route semantics, batches, paging."""

from __future__ import annotations

import time
from typing import Any

import pytest

from flannel_alivpc.emulator.server import Topology
from tests.emulator.sdk import Cloud, wait_for

DELAY = 0.3


def _status(cloud: Cloud, table_id: str, destination: str) -> str | None:
    entry = cloud.custom_entries(table_id).get(destination)
    return None if entry is None else str(entry["Status"])


def _second_table(cloud: Cloud, topology: Topology) -> tuple[str, str]:
    """A Custom route table bound to a second vSwitch; returns (table id, vSwitch id)."""
    table = cloud.admin("POST", "route-tables", {"vpc_id": topology.vpc_id, "name": "workers"})["RouteTableId"]
    vsw = cloud.admin("POST", "vswitches", {"vpc_id": topology.vpc_id, "cidr": "192.168.16.0/24",
                                            "zone": "cn-hangzhou-h", "route_table_id": table})["VSwitchId"]
    return table, vsw


# -- shapes and spellings ------------------------------------------------------------------


def test_describe_vpcs_shape(cloud: Cloud, topology: Topology) -> None:
    body = cloud.vpc("DescribeVpcs")
    assert (body["TotalCount"], body["PageNumber"], body["PageSize"]) == (1, 1, 10)
    [vpc] = body["Vpcs"]["Vpc"]
    assert vpc["VpcId"] == topology.vpc_id
    assert vpc["VRouterId"] == topology.vrouter_id
    assert vpc["CidrBlock"] == "192.168.0.0/16"
    assert (vpc["RegionId"], vpc["Status"], vpc["VpcName"], vpc["IsDefault"]) == ("cn-hangzhou", "Available", "k8s",
                                                                                   False)
    assert vpc["VSwitchIds"] == {"VSwitchId": [topology.vswitch_id]}
    # The inner keys really repeat the outer names here.
    assert vpc["RouterTableIds"] == {"RouterTableIds": [topology.route_table_id]}
    assert vpc["NatGatewayIds"] == {"NatGatewayIds": []}
    assert vpc["UserCidrs"] == {"UserCidr": []}
    assert vpc["SecondaryCidrBlocks"] == {"SecondaryCidrBlock": []}
    assert vpc["Tags"] == {"Tag": []}
    assert vpc["CreationTime"].endswith("Z")


def test_describe_vpcs_filters(cloud: Cloud, topology: Topology) -> None:
    other = cloud.admin("POST", "vpcs", {"cidr": "10.0.0.0/8", "name": "other"})["VpcId"]
    assert cloud.vpc("DescribeVpcs")["TotalCount"] == 2
    assert [v["VpcId"] for v in cloud.vpc("DescribeVpcs", VpcId=other)["Vpcs"]["Vpc"]] == [other]
    assert cloud.vpc("DescribeVpcs", VpcId=f"{other},{topology.vpc_id}")["TotalCount"] == 2
    assert [v["VpcId"] for v in cloud.vpc("DescribeVpcs", VpcName="k8s")["Vpcs"]["Vpc"]] == [topology.vpc_id]
    assert cloud.vpc("DescribeVpcs", IsDefault=True)["TotalCount"] == 0
    assert cloud.vpc("DescribeVpcs", IsDefault=False)["TotalCount"] == 2


def test_describe_vrouters_shape(cloud: Cloud, topology: Topology) -> None:
    body = cloud.vpc("DescribeVRouters", VRouterId=topology.vrouter_id)
    [router] = body["VRouters"]["VRouter"]
    assert router["VRouterId"] == topology.vrouter_id
    assert router["VpcId"] == topology.vpc_id
    assert router["RouteTableIds"] == {"RouteTableId": [topology.route_table_id]}
    assert cloud.vpc("DescribeVRouters", VRouterId="vrt-missing")["TotalCount"] == 0


def test_describe_vswitches_shape_and_errors(cloud: Cloud, topology: Topology) -> None:
    body = cloud.vpc("DescribeVSwitches", VpcId=topology.vpc_id)
    [vsw] = body["VSwitches"]["VSwitch"]
    assert vsw["VSwitchId"] == topology.vswitch_id
    assert (vsw["CidrBlock"], vsw["Status"], vsw["ZoneId"]) == ("192.168.0.0/20", "Available", "cn-hangzhou-g")
    assert vsw["RouteTable"] == {"RouteTableId": topology.route_table_id, "RouteTableType": "System"}
    assert vsw["Tags"] == {"Tag": []}
    assert cloud.vpc("DescribeVSwitches", VSwitchId=topology.vswitch_id)["TotalCount"] == 1
    error = cloud.vpc_error("DescribeVSwitches", VpcId="vpc-missing")
    assert (error.get_http_status(), error.get_error_code()) == (400, "Forbidden.VpcNotFound")
    error = cloud.vpc_error("DescribeVSwitches", VSwitchId="vsw-missing")
    assert (error.get_http_status(), error.get_error_code()) == (404, "InvalidVSwitchId.NotFound")


def test_describe_route_tables_nests_entries(cloud: Cloud, topology: Topology) -> None:
    cloud.add_route(topology.route_table_id, "172.20.1.0/24", topology.instance_ids[1])
    body = cloud.vpc("DescribeRouteTables", VRouterId=topology.vrouter_id)
    [table] = body["RouteTables"]["RouteTable"]
    assert table["RouteTableId"] == topology.route_table_id
    assert (table["VRouterId"], table["RouteTableType"], table["Status"]) == (topology.vrouter_id, "System",
                                                                              "Available")
    assert table["VSwitchIds"] == {"VSwitchId": [topology.vswitch_id]}
    # Real spelling: "RouteEntrys".
    entries = {e["DestinationCidrBlock"]: e for e in table["RouteEntrys"]["RouteEntry"]}
    assert set(entries) == {"192.168.0.0/20", "100.64.0.0/10", "172.20.1.0/24"}
    assert (entries["100.64.0.0/10"]["Type"], entries["100.64.0.0/10"]["NextHopType"]) == ("System", "service")
    assert (entries["192.168.0.0/20"]["Type"], entries["192.168.0.0/20"]["NextHopType"]) == ("System", "local")
    custom = entries["172.20.1.0/24"]
    assert custom["Type"] == "Custom"
    assert custom["InstanceId"] == topology.instance_ids[1]
    assert custom["NextHopType"] == "Instance"
    assert custom["Status"] == "Available"
    assert custom["RouteEntryId"].startswith("rte-")
    assert custom["NextHops"] == {"NextHop": []}


def test_describe_route_table_list_shape(cloud: Cloud, topology: Topology) -> None:
    body = cloud.vpc("DescribeRouteTableList", VpcId=topology.vpc_id)
    assert (body["Code"], body["Message"], body["Success"]) == ("200", "successful", True)
    [table] = body["RouterTableList"]["RouterTableListType"]
    assert table["RouteTableId"] == topology.route_table_id
    assert (table["VpcId"], table["RouterType"], table["RouterId"]) == (topology.vpc_id, "VRouter",
                                                                        topology.vrouter_id)
    assert table["RouteTableType"] == "System"
    assert table["VSwitchIds"] == {"VSwitchId": [topology.vswitch_id]}
    assert cloud.vpc("DescribeRouteTableList", RouterType="VBR")["TotalCount"] == 0
    assert cloud.vpc_error("DescribeRouteTableList", RouterType="Bogus").get_error_code() == "InvalidParameter"


def test_describe_route_entry_list_shape(cloud: Cloud, topology: Topology) -> None:
    entry_id = cloud.add_route(topology.route_table_id, "172.20.1.0/24", topology.instance_ids[1])
    body = cloud.vpc("DescribeRouteEntryList", RouteTableId=topology.route_table_id, RouteEntryType="Custom")
    assert body["NextToken"] == ""
    [entry] = body["RouteEntrys"]["RouteEntry"]
    assert entry["RouteEntryId"] == entry_id
    assert (entry["RouteTableId"], entry["DestinationCidrBlock"]) == (topology.route_table_id, "172.20.1.0/24")
    assert (entry["Type"], entry["Status"], entry["IpVersion"]) == ("Custom", "Available", "ipv4")
    [hop] = entry["NextHops"]["NextHop"]
    assert hop["NextHopType"] == "Instance"
    assert hop["NextHopId"] == topology.instance_ids[1]
    assert (hop["Enabled"], hop["Weight"], hop["NextHopRegionId"]) == (1, 100, "cn-hangzhou")
    assert set(hop["NextHopRelatedInfo"]) == {"InstanceId", "InstanceType", "RegionId"}
    system = cloud.vpc("DescribeRouteEntryList", RouteTableId=topology.route_table_id, RouteEntryType="System")
    assert {e["DestinationCidrBlock"] for e in system["RouteEntrys"]["RouteEntry"]} == {"192.168.0.0/20",
                                                                                       "100.64.0.0/10"}


def test_describe_route_entry_list_filters(cloud: Cloud, topology: Topology) -> None:
    table = topology.route_table_id
    first = cloud.add_route(table, "172.20.1.0/24", topology.instance_ids[0])
    cloud.add_route(table, "172.20.2.0/24", topology.instance_ids[1])

    def ids(**filters: Any) -> list[str]:
        body = cloud.vpc("DescribeRouteEntryList", RouteTableId=table, **filters)
        return [e["RouteEntryId"] for e in body["RouteEntrys"]["RouteEntry"]]

    assert ids(RouteEntryId=first) == [first]
    assert ids(DestinationCidrBlock="172.20.1.0/24") == [first]
    assert ids(NextHopId=topology.instance_ids[0]) == [first]
    assert len(ids(DestCidrBlockLists=["172.20.1.0/24", "172.20.2.0/24"])) == 2
    assert len(ids(RouteEntryType="Custom", NextHopType="Instance")) == 2
    error = cloud.vpc_error("DescribeRouteEntryList", RouteTableId="vtb-missing")
    assert (error.get_http_status(), error.get_error_code()) == (404, "InvalidRouteTableId.NotFound")


def test_describe_regions(cloud: Cloud) -> None:
    regions = {r["RegionId"]: r for r in cloud.vpc("DescribeRegions")["Regions"]["Region"]}
    assert regions["cn-hangzhou"]["LocalName"] == "China (Hangzhou)"
    assert "cn-beijing" in regions


# -- creating and deleting entries ----------------------------------------------------------------


def test_create_and_delete_without_delay(cloud: Cloud, topology: Topology) -> None:
    table = topology.route_table_id
    entry_id = cloud.add_route(table, "172.20.1.0/24", topology.instance_ids[0])
    assert _status(cloud, table, "172.20.1.0/24") == "Available"
    body = cloud.vpc("DeleteRouteEntry", RouteEntryId=entry_id)
    assert set(body) == {"RequestId"}
    assert _status(cloud, table, "172.20.1.0/24") is None
    # Delete by table and destination (and next hop), the other documented form.
    cloud.add_route(table, "172.20.2.0/24", topology.instance_ids[1])
    cloud.vpc("DeleteRouteEntry", RouteTableId=table, DestinationCidrBlock="172.20.2.0/24",
              NextHopId=topology.instance_ids[1])
    assert cloud.custom_entries(table) == {}


def test_modify_route_entry_renames_in_place(cloud: Cloud, topology: Topology) -> None:
    """ModifyRouteEntry sets the name and description; the entry keeps its id, next hop and status."""
    table = topology.route_table_id
    entry_id = cloud.add_route(table, "172.20.5.0/24", topology.instance_ids[0])
    body = cloud.vpc("ModifyRouteEntry", RouteEntryId=entry_id, RouteEntryName="flannel-alivpc",
                     Description="flannel-alivpc cluster c1; managed by flannel-alivpc")
    assert set(body) == {"RequestId"}
    entry = cloud.custom_entries(table)["172.20.5.0/24"]
    assert (entry["RouteEntryId"], entry["RouteEntryName"], entry["Status"]) == (entry_id, "flannel-alivpc",
                                                                                 "Available")
    assert entry["Description"].startswith("flannel-alivpc cluster c1")
    assert entry["NextHops"]["NextHop"][0]["NextHopId"] == topology.instance_ids[0]
    bad = cloud.vpc_error("ModifyRouteEntry", RouteEntryId=entry_id, Description="http://not-a-description")
    assert bad.get_error_code() == "IllegalParam.Description"
    gone = cloud.vpc_error("ModifyRouteEntry", RouteEntryId="rte-nope", RouteEntryName="x")
    assert gone.get_error_code() == "InvalidRouteEntry.NotFound"
    cloud.settings(route_delay=DELAY)
    pending = cloud.add_route(table, "172.20.6.0/24", topology.instance_ids[1])
    busy = cloud.vpc_error("ModifyRouteEntry", RouteEntryId=pending, RouteEntryName="x")
    assert busy.get_error_code() == "IncorrectRouteEntryStatus"


def test_bare_address_means_host_route(cloud: Cloud, topology: Topology) -> None:
    cloud.add_route(topology.route_table_id, "172.20.9.9", topology.instance_ids[0])
    assert set(cloud.custom_entries(topology.route_table_id)) == {"172.20.9.9/32"}
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=topology.route_table_id,
                            DestinationCidrBlock="172.20.9.9/32", NextHopId=topology.instance_ids[1])
    assert error.get_error_code() == "InvalidCIDRBlock.Duplicate"


def test_next_hop_list_with_one_hop(cloud: Cloud, topology: Topology) -> None:
    cloud.vpc("CreateRouteEntry", RouteTableId=topology.route_table_id, DestinationCidrBlock="172.20.3.0/24",
              NextHopLists=[{"NextHopType": "Instance", "NextHopId": topology.instance_ids[2]}])
    entry = cloud.custom_entries(topology.route_table_id)["172.20.3.0/24"]
    assert entry["NextHops"]["NextHop"][0]["NextHopId"] == topology.instance_ids[2]
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=topology.route_table_id,
                            DestinationCidrBlock="172.20.4.0/24", NextHopId=topology.instance_ids[2],
                            NextHopLists=[{"NextHopType": "Instance", "NextHopId": topology.instance_ids[2]}])
    assert error.get_error_code() == "InvalidNexthopTypeAndList.BothNotNull"


def test_dry_run_changes_nothing(cloud: Cloud, topology: Topology) -> None:
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=topology.route_table_id,
                            DestinationCidrBlock="172.20.1.0/24", NextHopId=topology.instance_ids[0], DryRun=True)
    assert (error.get_http_status(), error.get_error_code()) == (400, "DryRunOperation")
    assert cloud.custom_entries(topology.route_table_id) == {}


def test_async_create_pending_then_available(cloud: Cloud, topology: Topology) -> None:
    cloud.settings(route_delay=DELAY)
    table = topology.route_table_id
    started = time.monotonic()
    cloud.add_route(table, "172.20.1.0/24", topology.instance_ids[0])
    assert _status(cloud, table, "172.20.1.0/24") == "Pending"
    nested = cloud.vpc("DescribeRouteTables", RouteTableId=table)["RouteTables"]["RouteTable"][0]
    assert {e["DestinationCidrBlock"]: e["Status"] for e in nested["RouteEntrys"]["RouteEntry"]}[
        "172.20.1.0/24"] == "Pending"
    wait_for(lambda: _status(cloud, table, "172.20.1.0/24") == "Available")
    assert time.monotonic() - started >= DELAY


def test_async_delete_deleting_then_gone(cloud: Cloud, topology: Topology) -> None:
    table = topology.route_table_id
    entry_id = cloud.add_route(table, "172.20.1.0/24", topology.instance_ids[0])
    cloud.settings(route_delay=DELAY)
    started = time.monotonic()
    cloud.vpc("DeleteRouteEntry", RouteEntryId=entry_id)
    assert _status(cloud, table, "172.20.1.0/24") == "Deleting"
    wait_for(lambda: _status(cloud, table, "172.20.1.0/24") is None)
    assert time.monotonic() - started >= DELAY
    # Gone for good: deleting it again reports it missing.
    assert cloud.vpc_error("DeleteRouteEntry", RouteEntryId=entry_id).get_error_code() == "InvalidRouteEntry.NotFound"


def test_one_change_in_flight_per_table(cloud: Cloud, topology: Topology) -> None:
    table = topology.route_table_id
    other_table, _ = _second_table(cloud, topology)
    existing = cloud.add_route(table, "172.20.9.0/24", topology.instance_ids[2])
    cloud.settings(route_delay=DELAY)
    cloud.add_route(table, "172.20.1.0/24", topology.instance_ids[0])

    # While an entry is Pending: IncorrectRouteEntryStatus for creates and deletes.
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=table, DestinationCidrBlock="172.20.2.0/24",
                            NextHopId=topology.instance_ids[1])
    assert (error.get_http_status(), error.get_error_code()) == (400, "IncorrectRouteEntryStatus")
    error = cloud.vpc_error("DeleteRouteEntry", RouteEntryId=existing)
    assert error.get_error_code() == "IncorrectRouteEntryStatus"
    # Another table of the same VPC is not affected.
    cloud.add_route(other_table, "172.20.2.0/24", topology.instance_ids[1])

    wait_for(lambda: _status(cloud, table, "172.20.1.0/24") == "Available")
    cloud.vpc("DeleteRouteEntry", RouteEntryId=existing)
    # While an entry is Deleting: TaskConflict.
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=table, DestinationCidrBlock="172.20.3.0/24",
                            NextHopId=topology.instance_ids[1])
    assert (error.get_http_status(), error.get_error_code()) == (400, "TaskConflict")
    assert error.get_error_msg() == "The operation is too frequent, please wait a moment and try again."
    wait_for(lambda: _status(cloud, table, "172.20.9.0/24") is None)
    cloud.add_route(table, "172.20.3.0/24", topology.instance_ids[1])


# -- validation errors --------------------------------------------------------------------------


def test_duplicate_destination(cloud: Cloud, topology: Topology) -> None:
    cloud.add_route(topology.route_table_id, "172.20.1.0/24", topology.instance_ids[0])
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=topology.route_table_id,
                            DestinationCidrBlock="172.20.1.0/24", NextHopId=topology.instance_ids[1])
    assert (error.get_http_status(), error.get_error_code()) == (400, "InvalidCIDRBlock.Duplicate")
    assert error.get_error_msg() == "Specified CIDR block is already exists."


def test_delete_missing_entry(cloud: Cloud, topology: Topology) -> None:
    error = cloud.vpc_error("DeleteRouteEntry", RouteEntryId="rte-missing")
    assert (error.get_http_status(), error.get_error_code()) == (400, "InvalidRouteEntry.NotFound")
    assert error.get_error_msg() == "Route entry not exists."
    error = cloud.vpc_error("DeleteRouteEntry", RouteTableId=topology.route_table_id,
                            DestinationCidrBlock="172.20.7.0/24")
    assert error.get_error_code() == "InvalidRouteEntry.NotFound"
    error = cloud.vpc_error("DeleteRouteEntry", RouteTableId="vtb-missing", DestinationCidrBlock="172.20.7.0/24")
    assert (error.get_http_status(), error.get_error_code()) == (404, "InvalidRouteTableId.NotFound")
    assert cloud.vpc_error("DeleteRouteEntry", RouteTableId=topology.route_table_id).get_error_code() == (
        "MissingParameter")


def test_system_entries_cannot_be_deleted(cloud: Cloud, topology: Topology) -> None:
    system = cloud.entries(topology.route_table_id, RouteEntryType="System")
    assert len(system) == 2
    for entry in system:
        error = cloud.vpc_error("DeleteRouteEntry", RouteEntryId=entry["RouteEntryId"])
        assert (error.get_http_status(), error.get_error_code()) == (400, "OperationDenied")
        assert error.get_error_msg() == "Specified operation is denied as route entry type is system."
    assert len(cloud.entries(topology.route_table_id, RouteEntryType="System")) == 2


def test_quota(cloud: Cloud, topology: Topology) -> None:
    cloud.settings(route_quota=3)
    table = topology.route_table_id
    for n in range(3):
        cloud.add_route(table, f"172.20.{n}.0/24", topology.instance_ids[0])
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=table, DestinationCidrBlock="172.20.3.0/24",
                            NextHopId=topology.instance_ids[0])
    assert (error.get_http_status(), error.get_error_code()) == (400, "QuotaExceeded")
    assert error.get_error_msg() == "Route entry quota exceeded in this route table."
    # Deleting one frees a slot; in a batch, items beyond the quota fail one by one.
    cloud.vpc("DeleteRouteEntry", RouteTableId=table, DestinationCidrBlock="172.20.0.0/24")
    body = cloud.vpc("CreateRouteEntries", RouteEntriess=[
        {"RouteTableId": table, "DstCidrBlock": "172.20.4.0/24", "NextHop": topology.instance_ids[1]},
        {"RouteTableId": table, "DstCidrBlock": "172.20.5.0/24", "NextHop": topology.instance_ids[1]},
    ])
    assert (body["SuccessCount"], body["FailedCount"]) == (1, 1)
    assert body["FailedRouteEntries"][0]["DstCidrBlock"] == "172.20.5.0/24"
    assert body["FailedRouteEntries"][0]["FailedCode"] == "QuotaExceeded"
    assert len(cloud.custom_entries(table)) == 3


@pytest.mark.parametrize(("destination", "code"), [
    ("192.168.1.0/24", "InvalidCidrBlock"),      # inside the vSwitch 192.168.0.0/20
    ("192.168.0.0/20", "InvalidCidrBlock"),      # equal to the vSwitch
    ("192.168.0.5", "InvalidCidrBlock"),         # one address of the vSwitch
    ("100.64.0.0/10", "InvalidCidrBlock"),       # the service range itself
    ("100.100.100.0/24", "InvalidCidrBlock"),    # inside the service range
    ("172.20.1.0/33", "InvalidCidrBlock.Malformed"),
    ("172.20.1.1/24", "InvalidCidrBlock.Malformed"),
    ("not-a-cidr", "InvalidCidrBlock.Malformed"),
])
def test_invalid_destinations(cloud: Cloud, topology: Topology, destination: str, code: str) -> None:
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=topology.route_table_id,
                            DestinationCidrBlock=destination, NextHopId=topology.instance_ids[0])
    assert (error.get_http_status(), error.get_error_code()) == (400, code)


def test_destination_containing_a_vswitch_is_allowed(cloud: Cloud, topology: Topology) -> None:
    cloud.add_route(topology.route_table_id, "192.168.0.0/16", topology.instance_ids[0])


def test_next_hop_errors(cloud: Cloud, topology: Topology) -> None:
    classic = cloud.admin("POST", "instances", {"hostname": "old", "network_type": "classic"})["instance_id"]
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=topology.route_table_id,
                            DestinationCidrBlock="172.20.1.0/24", NextHopId=classic)
    assert (error.get_http_status(), error.get_error_code()) == (400, "IllegalParam.NextHopId")
    assert error.get_error_msg() == "Instance not exists or not vpc vm."
    # An instance of another VPC is no valid next hop either.
    other_vpc = cloud.admin("POST", "vpcs", {"cidr": "10.0.0.0/16"})["VpcId"]
    vsw = cloud.admin("POST", "vswitches", {"vpc_id": other_vpc, "cidr": "10.0.1.0/24"})["VSwitchId"]
    foreign = cloud.admin("POST", "instances", {"hostname": "foreign", "vswitch_id": vsw})["instance_id"]
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=topology.route_table_id,
                            DestinationCidrBlock="172.20.1.0/24", NextHopId=foreign)
    assert error.get_error_code() == "IllegalParam.NextHopId"
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=topology.route_table_id,
                            DestinationCidrBlock="172.20.1.0/24", NextHopId="i-missing")
    assert error.get_error_code() == "InvalidNextHop.NotFound"
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=topology.route_table_id,
                            DestinationCidrBlock="172.20.1.0/24", NextHopId=topology.instance_ids[0],
                            NextHopType="Teleporter")
    assert error.get_error_code() == "InvalidNextHopType"
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=topology.route_table_id,
                            DestinationCidrBlock="172.20.1.0/24")
    assert error.get_error_code() == "InvalidNexthopTypeAndList.BothNull"


def test_unknown_route_table(cloud: Cloud, topology: Topology) -> None:
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId="vtb-missing", DestinationCidrBlock="172.20.1.0/24",
                            NextHopId=topology.instance_ids[0])
    assert (error.get_http_status(), error.get_error_code()) == (404, "InvalidRouteTableId.NotFound")


# -- batch calls ---------------------------------------------------------------------------------------


def test_create_route_entries_partial_failure(cloud: Cloud, topology: Topology) -> None:
    table = topology.route_table_id
    cloud.add_route(table, "172.20.2.0/24", topology.instance_ids[2])
    body = cloud.vpc("CreateRouteEntries", RouteEntriess=[
        {"RouteTableId": table, "DstCidrBlock": "172.20.1.0/24", "NextHop": topology.instance_ids[0],
         "NextHopType": "Instance", "Name": "node-1"},
        {"RouteTableId": table, "DstCidrBlock": "172.20.2.0/24", "NextHop": topology.instance_ids[1],
         "NextHopType": "Instance"},
        {"RouteTableId": table, "DstCidrBlock": "192.168.1.0/24", "NextHop": topology.instance_ids[1],
         "NextHopType": "Instance"},
    ])
    assert (body["SuccessCount"], body["FailedCount"]) == (1, 2)
    assert isinstance(body["RouteEntryIds"], list)
    assert isinstance(body["FailedRouteEntries"], list)
    [created] = body["RouteEntryIds"]
    duplicate, inside = body["FailedRouteEntries"]
    assert duplicate == {
        "DstCidrBlock": "172.20.2.0/24", "NextHop": topology.instance_ids[1],
        "FailedCode": "VPC_ROUTE_ENTRY_CIDR_BLOCK_DUPLICATE",
        "FailedMessage": "Specified CIDR block is already exists.",
    }
    assert inside["FailedCode"] == "InvalidCidrBlock"
    entries = cloud.custom_entries(table)
    assert entries["172.20.1.0/24"]["RouteEntryId"] == created
    assert entries["172.20.1.0/24"]["RouteEntryName"] == "node-1"
    assert entries["172.20.2.0/24"]["NextHops"]["NextHop"][0]["NextHopId"] == topology.instance_ids[2]


def test_batch_is_one_change_per_table(cloud: Cloud, topology: Topology) -> None:
    cloud.settings(route_delay=DELAY)
    table = topology.route_table_id
    body = cloud.vpc("CreateRouteEntries", RouteEntriess=[
        {"RouteTableId": table, "DstCidrBlock": f"172.20.{n}.0/24", "NextHop": topology.instance_ids[n]}
        for n in range(3)
    ])
    assert body["SuccessCount"] == 3
    assert {e["Status"] for e in cloud.custom_entries(table).values()} == {"Pending"}
    # The table is busy now: a single create and a whole batch are refused.
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=table, DestinationCidrBlock="172.20.5.0/24",
                            NextHopId=topology.instance_ids[0])
    assert error.get_error_code() == "IncorrectRouteEntryStatus"
    error = cloud.vpc_error("CreateRouteEntries", RouteEntriess=[
        {"RouteTableId": table, "DstCidrBlock": "172.20.6.0/24", "NextHop": topology.instance_ids[0]}])
    assert error.get_error_code() == "IncorrectRouteEntryStatus"
    wait_for(lambda: {e["Status"] for e in cloud.custom_entries(table).values()} == {"Available"})


def test_batch_limit_is_fifty(cloud: Cloud, topology: Topology) -> None:
    table = topology.route_table_id

    def items(count: int) -> list[dict[str, str]]:
        return [{"RouteTableId": table, "DstCidrBlock": f"172.21.{n}.0/24", "NextHop": topology.instance_ids[0]}
                for n in range(count)]

    error = cloud.vpc_error("CreateRouteEntries", RouteEntriess=items(51))
    assert (error.get_http_status(), error.get_error_code()) == (400, "InvalidParameter")
    assert cloud.custom_entries(table) == {}
    assert cloud.vpc("CreateRouteEntries", RouteEntriess=items(50))["SuccessCount"] == 50
    ids = [{"RouteEntryId": e["RouteEntryId"]} for e in cloud.custom_entries(table).values()]
    assert cloud.vpc_error("DeleteRouteEntries", RouteEntriess=[*ids, {"RouteEntryId": "rte-x"}]).get_error_code() == (
        "InvalidParameter")
    assert cloud.vpc("DeleteRouteEntries", RouteEntriess=ids)["SuccessCount"] == 50
    assert cloud.custom_entries(table) == {}
    assert cloud.vpc_error("CreateRouteEntries").get_error_code() == "MissingParameter"


def test_delete_route_entries_partial_failure(cloud: Cloud, topology: Topology) -> None:
    table = topology.route_table_id
    first = cloud.add_route(table, "172.20.1.0/24", topology.instance_ids[0])
    cloud.add_route(table, "172.20.2.0/24", topology.instance_ids[1])
    system = cloud.entries(table, RouteEntryType="System")[0]["RouteEntryId"]
    body = cloud.vpc("DeleteRouteEntries", RouteEntriess=[
        {"RouteEntryId": first},
        {"RouteTableId": table, "DstCidrBlock": "172.20.2.0/24", "NextHop": topology.instance_ids[1]},
        {"RouteEntryId": "rte-missing"},
        {"RouteEntryId": system},
    ])
    assert (body["SuccessCount"], body["FailedCount"]) == (2, 2)
    assert "RouteEntryIds" not in body
    missing, denied = body["FailedRouteEntries"]
    assert (missing["RouteEntryId"], missing["FailedCode"]) == ("rte-missing", "InvalidRouteEntry.NotFound")
    assert (denied["RouteEntryId"], denied["FailedCode"]) == (system, "OperationDenied")
    assert cloud.custom_entries(table) == {}


def test_delete_route_entries_async(cloud: Cloud, topology: Topology) -> None:
    table = topology.route_table_id
    ids = [cloud.add_route(table, f"172.20.{n}.0/24", topology.instance_ids[n]) for n in range(2)]
    cloud.settings(route_delay=DELAY)
    cloud.vpc("DeleteRouteEntries", RouteEntriess=[{"RouteEntryId": i, "RouteTableId": table} for i in ids])
    assert {e["Status"] for e in cloud.custom_entries(table).values()} == {"Deleting"}
    assert cloud.vpc_error("CreateRouteEntry", RouteTableId=table, DestinationCidrBlock="172.20.7.0/24",
                           NextHopId=topology.instance_ids[0]).get_error_code() == "TaskConflict"
    wait_for(lambda: cloud.custom_entries(table) == {})


def test_batch_dry_run(cloud: Cloud, topology: Topology) -> None:
    body = cloud.vpc("CreateRouteEntries", DryRun=True, RouteEntriess=[
        {"RouteTableId": topology.route_table_id, "DstCidrBlock": "172.20.1.0/24",
         "NextHop": topology.instance_ids[0]}])
    assert body["SuccessCount"] == 1
    assert cloud.custom_entries(topology.route_table_id) == {}


# -- pagination -------------------------------------------------------------------------------------------


def test_route_entry_list_token_pages_while_entries_change(cloud: Cloud, topology: Topology) -> None:
    table = topology.route_table_id
    for start in (0, 50, 100):
        cloud.vpc("CreateRouteEntries", RouteEntriess=[
            {"RouteTableId": table, "DstCidrBlock": f"10.{n // 250}.{n % 250}.0/24",
             "NextHop": topology.instance_ids[n % 3]} for n in range(start, start + 50)])
    before = {e["RouteEntryId"] for e in cloud.entries(table)}
    assert len(before) == 152  # 150 custom + 2 system

    seen: list[str] = []
    token = ""
    added = 0
    while True:
        params: dict[str, Any] = {"RouteTableId": table, "MaxResult": 20}
        if token:
            params["NextToken"] = token
        page = cloud.vpc("DescribeRouteEntryList", **params)
        chunk = [e["RouteEntryId"] for e in page["RouteEntrys"]["RouteEntry"]]
        assert len(chunk) <= 20
        seen.extend(chunk)
        token = page["NextToken"]
        if not token:
            break
        # The table changes between pages.
        cloud.add_route(table, f"172.30.{added}.0/24", topology.instance_ids[0])
        added += 1
    assert len(seen) == len(set(seen)), "an entry was listed twice"
    assert before <= set(seen), "an entry was skipped"
    assert added >= 7


def test_route_entry_list_page_limits(cloud: Cloud, topology: Topology) -> None:
    table = topology.route_table_id
    page = cloud.vpc("DescribeRouteEntryList", RouteTableId=table, MaxResult=1)
    assert len(page["RouteEntrys"]["RouteEntry"]) == 1
    assert page["NextToken"]
    rest = cloud.vpc("DescribeRouteEntryList", RouteTableId=table, MaxResult=100, NextToken=page["NextToken"])
    assert len(rest["RouteEntrys"]["RouteEntry"]) == 1
    assert rest["NextToken"] == ""
    # Default page size is 10.
    cloud.vpc("CreateRouteEntries", RouteEntriess=[
        {"RouteTableId": table, "DstCidrBlock": f"172.20.{n}.0/24", "NextHop": topology.instance_ids[0]}
        for n in range(12)])
    assert len(cloud.vpc("DescribeRouteEntryList", RouteTableId=table)["RouteEntrys"]["RouteEntry"]) == 10
    for bad in ({"MaxResult": 101}, {"MaxResult": 0}, {"NextToken": "garbage"}):
        error = cloud.vpc_error("DescribeRouteEntryList", RouteTableId=table, **bad)
        assert (error.get_http_status(), error.get_error_code()) == (400, "InvalidParameter")


def test_page_number_and_size(cloud: Cloud, topology: Topology) -> None:
    for n in range(4):
        vpc = cloud.admin("POST", "vpcs", {"cidr": f"10.{n}.0.0/16", "name": f"vpc-{n}"})["VpcId"]
        cloud.admin("POST", "vswitches", {"vpc_id": topology.vpc_id, "cidr": f"192.168.{16 + n}.0/24"})
        cloud.admin("POST", "vswitches", {"vpc_id": vpc, "cidr": f"10.{n}.0.0/24"})

    def pages(action: str, key: str, item: str, **filters: Any) -> list[list[str]]:
        out = []
        for number in (1, 2, 3):
            body = cloud.vpc(action, PageNumber=number, PageSize=2, **filters)
            assert (body["PageNumber"], body["PageSize"], body["TotalCount"]) == (number, 2, 5)
            out.append([x[key] for x in body[item.split(".")[0]][item.split(".")[1]]])
        return out

    vpcs = pages("DescribeVpcs", "VpcId", "Vpcs.Vpc")
    assert [len(p) for p in vpcs] == [2, 2, 1]
    assert len({v for p in vpcs for v in p}) == 5
    vswitches = pages("DescribeVSwitches", "VSwitchId", "VSwitches.VSwitch", VpcId=topology.vpc_id)
    assert [len(p) for p in vswitches] == [2, 2, 1]
    tables = pages("DescribeRouteTables", "RouteTableId", "RouteTables.RouteTable")
    assert [len(p) for p in tables] == [2, 2, 1]
    tables = pages("DescribeRouteTableList", "RouteTableId", "RouterTableList.RouterTableListType")
    assert [len(p) for p in tables] == [2, 2, 1]
    assert cloud.vpc("DescribeVpcs", PageNumber=4, PageSize=2)["Vpcs"]["Vpc"] == []
    assert cloud.vpc("DescribeVpcs", PageSize=50)["PageSize"] == 50
    for bad in ({"PageSize": 51}, {"PageSize": 0}, {"PageNumber": 0}, {"PageNumber": "x"}):
        error = cloud.vpc_error("DescribeVpcs", **bad)
        assert (error.get_http_status(), error.get_error_code()) == (400, "InvalidParameter")


# -- several route tables ---------------------------------------------------------------------------------


def test_custom_route_table_bound_to_a_vswitch(cloud: Cloud, topology: Topology) -> None:
    table, vsw = _second_table(cloud, topology)
    listed = cloud.vpc("DescribeRouteTableList", VpcId=topology.vpc_id)["RouterTableList"]["RouterTableListType"]
    by_id = {t["RouteTableId"]: t for t in listed}
    assert by_id[table]["RouteTableType"] == "Custom"
    assert by_id[table]["RouteTableName"] == "workers"
    assert by_id[table]["VSwitchIds"] == {"VSwitchId": [vsw]}
    assert by_id[topology.route_table_id]["VSwitchIds"] == {"VSwitchId": [topology.vswitch_id]}
    assert cloud.vpc("DescribeRouteTableList", RouteTableType="Custom")["TotalCount"] == 1

    [sw] = cloud.vpc("DescribeVSwitches", VSwitchId=vsw)["VSwitches"]["VSwitch"]
    assert sw["RouteTable"] == {"RouteTableId": table, "RouteTableType": "Custom"}
    assert [s["VSwitchId"] for s in cloud.vpc("DescribeVSwitches", RouteTableId=table)["VSwitches"]["VSwitch"]] == [vsw]
    [vpc] = cloud.vpc("DescribeVpcs")["Vpcs"]["Vpc"]
    assert set(vpc["RouterTableIds"]["RouterTableIds"]) == {topology.route_table_id, table}
    [router] = cloud.vpc("DescribeVRouters")["VRouters"]["VRouter"]
    assert set(router["RouteTableIds"]["RouteTableId"]) == {topology.route_table_id, table}

    # Every table of the VPC has System entries for every vSwitch and for 100.64.0.0/10.
    for table_id in (table, topology.route_table_id):
        system = {e["DestinationCidrBlock"] for e in cloud.entries(table_id, RouteEntryType="System")}
        assert system == {"192.168.0.0/20", "192.168.16.0/24", "100.64.0.0/10"}

    # Entries are per table: the same destination in both is no duplicate.
    cloud.add_route(table, "172.20.1.0/24", topology.instance_ids[0])
    cloud.add_route(topology.route_table_id, "172.20.1.0/24", topology.instance_ids[1])
    assert cloud.custom_entries(table)["172.20.1.0/24"]["NextHops"]["NextHop"][0]["NextHopId"] == (
        topology.instance_ids[0])


# -- legacy actions under ECS 2014-05-26 --------------------------------------------------------------------


def test_legacy_ecs_route_actions_share_the_state(cloud: Cloud, topology: Topology) -> None:
    table = topology.route_table_id
    body = cloud.ecs("CreateRouteEntry", RouteTableId=table, DestinationCidrBlock="172.20.1.0/24",
                     NextHopId=topology.instance_ids[0], NextHopType="Instance")
    assert body["RouteEntryId"] in {e["RouteEntryId"] for e in cloud.entries(table)}
    cloud.add_route(table, "172.20.2.0/24", topology.instance_ids[1])

    [legacy] = cloud.ecs("DescribeRouteTables", VRouterId=topology.vrouter_id)["RouteTables"]["RouteTable"]
    destinations = {e["DestinationCidrBlock"]: e["InstanceId"] for e in legacy["RouteEntrys"]["RouteEntry"]}
    assert destinations["172.20.1.0/24"] == topology.instance_ids[0]
    assert destinations["172.20.2.0/24"] == topology.instance_ids[1]
    [router] = cloud.ecs("DescribeVRouters")["VRouters"]["VRouter"]
    assert router["RouteTableIds"] == {"RouteTableId": [table]}
    assert cloud.ecs("DescribeVpcs")["Vpcs"]["Vpc"][0]["VpcId"] == topology.vpc_id
    assert cloud.ecs("DescribeVSwitches", VpcId=topology.vpc_id)["TotalCount"] == 1

    error = cloud.ecs_error("CreateRouteEntry", RouteTableId=table, DestinationCidrBlock="172.20.2.0/24",
                            NextHopId=topology.instance_ids[2])
    assert error.get_error_code() == "InvalidCIDRBlock.Duplicate"
    cloud.ecs("DeleteRouteEntry", RouteTableId=table, DestinationCidrBlock="172.20.1.0/24",
              NextHopId=topology.instance_ids[0])
    assert set(cloud.custom_entries(table)) == {"172.20.2.0/24"}
