"""ECS API 2014-05-26 and fault injection through the V2 SDKs (alibabacloud_ecs20140526, and the VPC
client for faults): instance filters with JSON-encoded lists, paging, the legacy ECS route actions,
and injected errors, throttling and dropped connections as the SDK reports them."""

from __future__ import annotations

import json

import pytest
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException

from flannel_alivpc.emulator.server import Emulator, Topology
from tests.emulator.sdk import Cloud
from tests.emulator.sdk_v2 import CloudV2


@pytest.fixture
def sdk(emulator: Emulator) -> CloudV2:
    return CloudV2(emulator)


def _ids(sdk: CloudV2, **filters: object) -> list[str]:
    return [i.instance_id for i in sdk.ecs("DescribeInstances", **filters).model.instances.instance]


def test_vpc_and_classic_instances(sdk: CloudV2, cloud: Cloud, topology: Topology) -> None:
    classic = cloud.admin("POST", "instances", {"hostname": "old", "network_type": "classic"})
    [inst] = sdk.ecs("DescribeInstances", InstanceIds=json.dumps([topology.instance_ids[0]])).model.instances.instance
    state = cloud.emulator.state.instances[topology.instance_ids[0]]
    assert (inst.instance_name, inst.status, inst.instance_network_type) == ("node-1", "Running", "vpc")
    assert inst.vpc_attributes.private_ip_address.ip_address == [state.private_ip]
    [nic] = inst.network_interfaces.network_interface
    assert (nic.mac_address, nic.primary_ip_address) == (state.mac, state.private_ip)
    assert (inst.cpu, inst.memory, inst.cpu_options.threads_per_core) == (2, 8192, 2)
    [old] = sdk.ecs("DescribeInstances", InstanceIds=json.dumps([classic["instance_id"]])).model.instances.instance
    assert old.inner_ip_address.ip_address == [classic["private_ip"]]
    assert old.network_interfaces.network_interface == []


def test_filters(sdk: CloudV2, cloud: Cloud, topology: Topology) -> None:
    classic = cloud.admin("POST", "instances", {"hostname": "old", "network_type": "classic"})
    assert set(_ids(sdk, VpcId=topology.vpc_id)) == set(topology.instance_ids)
    assert _ids(sdk, InstanceNetworkType="classic") == [classic["instance_id"]]
    assert _ids(sdk, InstanceName="node-2") == [topology.instance_ids[1]]
    assert len(_ids(sdk, InstanceName="node-*")) == 3
    first_ip = cloud.emulator.state.instances[topology.instance_ids[0]].private_ip
    assert _ids(sdk, PrivateIpAddresses=json.dumps([first_ip])) == [topology.instance_ids[0]]
    assert _ids(sdk, InnerIpAddresses=json.dumps([classic["private_ip"]])) == [classic["instance_id"]]
    cloud.admin("PATCH", f"instances/{topology.instance_ids[2]}", {"status": "Stopped"})
    assert _ids(sdk, Status="Stopped") == [topology.instance_ids[2]]
    assert _ids(sdk, InstanceIds="[]") == []
    error = sdk.fail("ecs", "DescribeInstances", InstanceNetworkType="hybrid")
    assert (error.status_code, error.code) == (404, "InvalidNetworkType.NotFound")
    error = sdk.fail("ecs", "DescribeInstances", Status="Sleeping")
    assert (error.status_code, error.code) == (404, "InvalidStatus.NotFound")
    assert sdk.fail("ecs", "DescribeInstances", InstanceIds="not json").code == "InvalidParameter"


def test_paging(sdk: CloudV2, cloud: Cloud, topology: Topology) -> None:
    for n in range(12):
        cloud.admin("POST", "instances", {"hostname": f"extra-{n}"})
    body = sdk.ecs("DescribeInstances").model
    assert (body.total_count, body.page_size, len(body.instances.instance)) == (15, 10, 10)
    second = sdk.ecs("DescribeInstances", PageNumber=2).model
    assert len(second.instances.instance) == 5
    assert not {i.instance_id for i in body.instances.instance} & {i.instance_id for i in second.instances.instance}
    assert sdk.fail("ecs", "DescribeInstances", PageSize=101).code == "InvalidParameter"


def test_regions(sdk: CloudV2) -> None:
    regions = {r.region_id: r for r in sdk.ecs("DescribeRegions").model.regions.region}
    assert (regions["cn-hangzhou"].status, regions["cn-hangzhou"].region_endpoint) == (
        "available", "ecs.cn-hangzhou.aliyuncs.com")


def test_legacy_ecs_route_actions(sdk: CloudV2, topology: Topology) -> None:
    """flannel's original backend called the route actions under ECS 2014-05-26; the V2 ECS SDK still has them."""
    body = sdk.ecs("CreateRouteEntry", RouteTableId=topology.route_table_id, DestinationCidrBlock="10.8.0.0/24",
                   NextHopId=topology.instance_ids[0], NextHopType="Instance")
    assert body.model.request_id
    [table] = sdk.ecs("DescribeRouteTables", VRouterId=topology.vrouter_id).model.route_tables.route_table
    assert "10.8.0.0/24" in {e.destination_cidr_block for e in table.route_entrys.route_entry}
    [vpc] = sdk.ecs("DescribeVpcs").model.vpcs.vpc
    assert vpc.vpc_id == topology.vpc_id
    sdk.ecs("DeleteRouteEntry", RouteTableId=topology.route_table_id, DestinationCidrBlock="10.8.0.0/24",
            NextHopId=topology.instance_ids[0])
    error = sdk.fail("ecs", "DeleteRouteEntry", RouteTableId=topology.route_table_id,
                     DestinationCidrBlock="10.8.0.0/24")
    assert error.code == "InvalidRouteEntry.NotFound"
    assert error.data is not None and error.data["HostId"] == "ecs.aliyuncs.com"


# -- fault injection ---------------------------------------------------------------------------


def test_injected_error_is_a_server_exception(sdk: CloudV2, cloud: Cloud, topology: Topology) -> None:
    cloud.admin("PUT", "faults", {"DescribeVpcs": {"error": {"count": 2}}})
    for _ in range(2):
        error = sdk.fail("vpc", "DescribeVpcs")
        assert isinstance(error, ServerException)
        assert (error.status_code, error.code) == (503, "ServiceUnavailable")
    assert sdk.vpc("DescribeVpcs").model.total_count == 1
    cloud.admin("PUT", "faults", {"*": {"error": {"code": "InternalError", "status": 500, "count": 1}}})
    error = sdk.fail("ecs", "DescribeInstances")
    assert (error.status_code, error.code) == (500, "InternalError")
    assert cloud.admin("GET", "counters")["DescribeVpcs"] == {"ServiceUnavailable": 2, "Success": 1}


def test_throttling_is_a_client_exception(sdk: CloudV2, cloud: Cloud, topology: Topology) -> None:
    cloud.admin("PUT", "faults", {"CreateRouteEntry": {"throttle": {"rate": 0.001, "burst": 1}}})
    sdk.vpc("CreateRouteEntry", RouteTableId=topology.route_table_id, DestinationCidrBlock="10.1.0.0/24",
            NextHopId=topology.instance_ids[0], NextHopType="Instance")
    error = sdk.fail("vpc", "CreateRouteEntry", RouteTableId=topology.route_table_id,
                     DestinationCidrBlock="10.2.0.0/24", NextHopId=topology.instance_ids[0], NextHopType="Instance")
    assert isinstance(error, ClientException)
    assert (error.status_code, error.code) == (400, "Throttling.User")
    assert "flow control" in error.message


def test_dropped_connection(sdk: CloudV2, cloud: Cloud, topology: Topology) -> None:
    cloud.admin("PUT", "faults", {"DescribeVpcs": {"drop": {"count": 1}}})
    with pytest.raises(Exception) as caught:
        sdk.vpc("DescribeVpcs")
    # A network failure, not an answer: the SDK has no status code to report.
    assert getattr(caught.value, "status_code", None) is None
    assert sdk.vpc("DescribeVpcs").model.total_count == 1
    assert cloud.admin("GET", "counters")["DescribeVpcs"] == {"Dropped": 1, "Success": 1}
