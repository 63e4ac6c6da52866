"""ECS API 2014-05-26 through the official SDK: DescribeInstances and DescribeRegions."""

from __future__ import annotations

import json
from typing import Any

from aliyunsdkcore.client import AcsClient

from flannel_alivpc.emulator.server import Topology
from tests.conftest import EMULATOR_AK, EMULATOR_SECRET
from tests.emulator.sdk import ECS_PACKAGE, Cloud, raw_call, sdk_request, signed_params


def _ids(body: dict[str, Any]) -> list[str]:
    return [i["InstanceId"] for i in body["Instances"]["Instance"]]


def test_vpc_instance_shape(cloud: Cloud, topology: Topology) -> None:
    body = cloud.ecs("DescribeInstances", InstanceIds=json.dumps(topology.instance_ids[:1]))
    assert (body["TotalCount"], body["PageNumber"], body["PageSize"], body["NextToken"]) == (1, 1, 10, "")
    [inst] = body["Instances"]["Instance"]
    state = cloud.emulator.state.instances[topology.instance_ids[0]]
    assert inst["InstanceId"] == topology.instance_ids[0]
    assert (inst["InstanceName"], inst["HostName"]) == ("node-1", "node-1")
    assert (inst["RegionId"], inst["ZoneId"], inst["Status"]) == ("cn-hangzhou", "cn-hangzhou-g", "Running")
    assert inst["InstanceNetworkType"] == "vpc"
    assert inst["VpcAttributes"] == {
        "VpcId": topology.vpc_id, "VSwitchId": topology.vswitch_id, "NatIpAddress": "",
        "PrivateIpAddress": {"IpAddress": [state.private_ip]},
    }
    assert inst["InnerIpAddress"] == {"IpAddress": []}
    assert inst["PublicIpAddress"] == {"IpAddress": []}
    [nic] = inst["NetworkInterfaces"]["NetworkInterface"]
    assert (nic["MacAddress"], nic["PrimaryIpAddress"], nic["Type"]) == (state.mac, state.private_ip, "Primary")
    assert nic["PrivateIpSets"]["PrivateIpSet"] == [{"PrivateIpAddress": state.private_ip, "Primary": True}]
    assert inst["SecurityGroupIds"] == {"SecurityGroupId": ["sg-emu0001"]}
    assert inst["OperationLocks"] == {"LockReason": []}
    assert inst["Tags"] == {"Tag": []}
    # Minute-precision times, as the real API writes them.
    assert len(inst["CreationTime"]) == len("2024-01-01T00:00Z")


def test_classic_instance_shape(cloud: Cloud, topology: Topology) -> None:
    classic = cloud.admin("POST", "instances", {"hostname": "old-1", "network_type": "classic",
                                                "public_ip": "47.0.0.1"})
    [inst] = cloud.ecs("DescribeInstances", InstanceIds=json.dumps([classic["instance_id"]]))["Instances"]["Instance"]
    assert inst["InstanceNetworkType"] == "classic"
    assert inst["InnerIpAddress"] == {"IpAddress": [classic["private_ip"]]}
    assert inst["PublicIpAddress"] == {"IpAddress": ["47.0.0.1"]}
    assert inst["VpcAttributes"] == {"VpcId": "", "VSwitchId": "", "NatIpAddress": "",
                                     "PrivateIpAddress": {"IpAddress": []}}
    assert inst["ZoneId"] == "cn-hangzhou-b"


def test_instance_ids_filter(cloud: Cloud, topology: Topology) -> None:
    wanted = [topology.instance_ids[2], "i-unknown", topology.instance_ids[0]]
    body = cloud.ecs("DescribeInstances", InstanceIds=json.dumps(wanted))
    # Unknown ids are left out silently; the count reflects the matches.
    assert body["TotalCount"] == 2
    assert set(_ids(body)) == {topology.instance_ids[0], topology.instance_ids[2]}
    assert cloud.ecs("DescribeInstances", InstanceIds="[]")["TotalCount"] == 0
    assert cloud.ecs("DescribeInstances")["TotalCount"] == 3
    for bad in ("i-1,i-2", json.dumps({"i": 1}), json.dumps([f"i-{n}" for n in range(101)])):
        error = cloud.ecs_error("DescribeInstances", InstanceIds=bad)
        assert (error.get_http_status(), error.get_error_code()) == (400, "InvalidParameter")


def test_network_filters(cloud: Cloud, topology: Topology) -> None:
    classic = cloud.admin("POST", "instances", {"hostname": "old-1", "network_type": "classic"})
    other_vpc = cloud.admin("POST", "vpcs", {"cidr": "10.0.0.0/16"})["VpcId"]
    vsw = cloud.admin("POST", "vswitches", {"vpc_id": other_vpc, "cidr": "10.0.1.0/24", "zone": "cn-hangzhou-h"})
    other = cloud.admin("POST", "instances", {"hostname": "web-1", "vswitch_id": vsw["VSwitchId"],
                                              "private_ip": "10.0.1.20"})

    assert set(_ids(cloud.ecs("DescribeInstances", VpcId=topology.vpc_id))) == set(topology.instance_ids)
    assert _ids(cloud.ecs("DescribeInstances", VpcId=other_vpc)) == [other["instance_id"]]
    assert _ids(cloud.ecs("DescribeInstances", VSwitchId=vsw["VSwitchId"])) == [other["instance_id"]]
    assert _ids(cloud.ecs("DescribeInstances", ZoneId="cn-hangzhou-h")) == [other["instance_id"]]
    assert _ids(cloud.ecs("DescribeInstances", InstanceNetworkType="classic")) == [classic["instance_id"]]
    assert cloud.ecs("DescribeInstances", InstanceNetworkType="vpc")["TotalCount"] == 4
    # PrivateIpAddresses matches VPC addresses, InnerIpAddresses classic ones.
    body = cloud.ecs("DescribeInstances", PrivateIpAddresses=json.dumps(["10.0.1.20", classic["private_ip"]]))
    assert _ids(body) == [other["instance_id"]]
    body = cloud.ecs("DescribeInstances", InnerIpAddresses=json.dumps([classic["private_ip"], "10.0.1.20"]))
    assert _ids(body) == [classic["instance_id"]]
    # Filters are ANDed.
    assert cloud.ecs("DescribeInstances", VpcId=topology.vpc_id,
                     PrivateIpAddresses=json.dumps(["10.0.1.20"]))["TotalCount"] == 0
    error = cloud.ecs_error("DescribeInstances", InstanceNetworkType="hybrid")
    assert (error.get_http_status(), error.get_error_code()) == (404, "InvalidNetworkType.NotFound")


def test_name_and_status_filters(cloud: Cloud, topology: Topology) -> None:
    cloud.admin("POST", "instances", {"hostname": "web-1"})
    assert cloud.ecs("DescribeInstances", InstanceName="node-*")["TotalCount"] == 3
    assert cloud.ecs("DescribeInstances", InstanceName="*-1")["TotalCount"] == 2
    assert _ids(cloud.ecs("DescribeInstances", InstanceName="node-2")) == [topology.instance_ids[1]]
    assert cloud.ecs("DescribeInstances", InstanceName="Node-*")["TotalCount"] == 0

    cloud.admin("PATCH", f"instances/{topology.instance_ids[1]}", {"status": "Stopped"})
    assert _ids(cloud.ecs("DescribeInstances", Status="Stopped")) == [topology.instance_ids[1]]
    assert cloud.ecs("DescribeInstances", Status="Running")["TotalCount"] == 3
    [inst] = cloud.ecs("DescribeInstances", Status="Stopped")["Instances"]["Instance"]
    assert inst["Status"] == "Stopped"
    error = cloud.ecs_error("DescribeInstances", Status="Sleeping")
    assert (error.get_http_status(), error.get_error_code()) == (404, "InvalidStatus.NotFound")


def test_released_instance_disappears(cloud: Cloud, topology: Topology) -> None:
    cloud.admin("DELETE", f"instances/{topology.instance_ids[0]}")
    assert set(_ids(cloud.ecs("DescribeInstances"))) == set(topology.instance_ids[1:])


def test_paging(cloud: Cloud, topology: Topology) -> None:
    for n in range(102):
        cloud.admin("POST", "instances", {"hostname": f"pool-{n:03d}"})
    body = cloud.ecs("DescribeInstances")
    assert (body["TotalCount"], body["PageSize"], len(_ids(body))) == (105, 10, 10)
    first = cloud.ecs("DescribeInstances", PageSize=100)
    second = cloud.ecs("DescribeInstances", PageSize=100, PageNumber=2)
    assert (len(_ids(first)), len(_ids(second))) == (100, 5)
    assert (second["PageNumber"], second["TotalCount"]) == (2, 105)
    assert len(set(_ids(first)) | set(_ids(second))) == 105
    error = cloud.ecs_error("DescribeInstances", PageSize=101)
    assert (error.get_http_status(), error.get_error_code()) == (400, "InvalidParameter")


def test_other_region(cloud: Cloud, topology: Topology) -> None:
    remote = cloud.admin("POST", "instances", {"hostname": "bj-1", "network_type": "classic", "region": "cn-beijing"})
    assert remote["instance_id"] not in _ids(cloud.ecs("DescribeInstances"))
    beijing = AcsClient(EMULATOR_AK, EMULATOR_SECRET, "cn-beijing")
    body = cloud.call(sdk_request(ECS_PACKAGE, "DescribeInstances"), beijing)
    assert _ids(body) == [remote["instance_id"]]
    assert body["Instances"]["Instance"][0]["ZoneId"] == "cn-beijing-b"
    error = cloud.fail(sdk_request(ECS_PACKAGE, "DescribeInstances"),
                       AcsClient(EMULATOR_AK, EMULATOR_SECRET, "xx-nowhere-1"))
    assert (error.get_http_status(), error.get_error_code()) == (404, "InvalidRegionId.NotFound")


def test_describe_regions(cloud: Cloud) -> None:
    regions = {r["RegionId"]: r for r in cloud.ecs("DescribeRegions")["Regions"]["Region"]}
    assert {"cn-hangzhou", "cn-beijing", "eu-central-1"} <= set(regions)
    assert regions["cn-hangzhou"]["LocalName"] == "China (Hangzhou)"
    assert regions["cn-hangzhou"]["Status"] == "available"
    assert regions["cn-hangzhou"]["RegionEndpoint"].startswith("ecs.")


def test_describe_regions_lists_a_made_up_region(cloud: Cloud) -> None:
    cloud.settings(region="cn-emulator")
    regions = [r["RegionId"] for r in cloud.ecs("DescribeRegions")["Regions"]["Region"]]
    assert "cn-emulator" in regions


def test_ecs_error_body_names_the_ecs_host(cloud: Cloud, topology: Topology) -> None:
    params = signed_params("DescribeInstances", {"Status": "Sleeping"}, version="2014-05-26")
    body = raw_call(cloud.base, params).json()
    assert (body["HostId"], body["Code"]) == ("ecs.aliyuncs.com", "InvalidStatus.NotFound")
    assert "product=Ecs" in body["Recommend"]
