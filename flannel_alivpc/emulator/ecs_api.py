"""ECS API 2014-05-26: DescribeInstances (DescribeRegions is served by vpc_api)."""

from __future__ import annotations

import fnmatch
from typing import Any

from flannel_alivpc.emulator.errors import ApiError, invalid_parameter
from flannel_alivpc.emulator.protocol import ECS_VERSION, Call, action, check_region, page
from flannel_alivpc.emulator.state import Instance, iso_time


def _instance_json(inst: Instance) -> dict[str, Any]:
    vpc = inst.network_type == "vpc"
    return {
        "InstanceId": inst.instance_id, "InstanceName": inst.hostname, "HostName": inst.hostname,
        "RegionId": inst.region, "ZoneId": inst.zone, "Status": inst.status,
        "InstanceNetworkType": inst.network_type, "InstanceType": inst.instance_type,
        "ImageId": "ubuntu_22_04_x64", "Cpu": 2, "Memory": 8192, "OSType": "linux",
        "OSName": "Ubuntu 22.04 64 bit", "CreationTime": iso_time(inst.created)[:-4] + "Z",
        "StartTime": iso_time(inst.created)[:-4] + "Z", "ExpiredTime": "2099-12-31T15:59Z",
        "InstanceChargeType": "PostPaid", "InternetChargeType": "PayByTraffic",
        "InternetMaxBandwidthIn": -1, "InternetMaxBandwidthOut": 0, "IoOptimized": True,
        "SerialNumber": inst.instance_id.replace("i-", "sn-"), "Description": "",
        "DeletionProtection": False,
        # Classic instances carry their private address here; VPC ones in VpcAttributes.
        "InnerIpAddress": {"IpAddress": [] if vpc else [inst.private_ip]},
        "PublicIpAddress": {"IpAddress": [inst.public_ip] if inst.public_ip else []},
        "EipAddress": {"AllocationId": "", "IpAddress": "", "InternetChargeType": "", "Bandwidth": 0,
                       "IsSupportUnassociate": False},
        "VpcAttributes": {
            "VpcId": inst.vpc_id, "VSwitchId": inst.vswitch_id, "NatIpAddress": "",
            "PrivateIpAddress": {"IpAddress": [inst.private_ip] if vpc else []},
        },
        "SecurityGroupIds": {"SecurityGroupId": ["sg-emu0001"]},
        "NetworkInterfaces": {"NetworkInterface": [{
            "NetworkInterfaceId": inst.instance_id.replace("i-", "eni-"), "MacAddress": inst.mac,
            "PrimaryIpAddress": inst.private_ip, "Type": "Primary",
            "PrivateIpSets": {"PrivateIpSet": [{"PrivateIpAddress": inst.private_ip, "Primary": True}]},
            "Ipv6Sets": {"Ipv6Set": []}, "Ipv4PrefixSets": {"Ipv4PrefixSet": []},
            "Ipv6PrefixSets": {"Ipv6PrefixSet": []},
        }]} if vpc else {"NetworkInterface": []},
        "OperationLocks": {"LockReason": []},
        "Tags": {"Tag": []},
        "VlanId": "", "StoppedMode": "Not-applicable",
        # What a plain pay-as-you-go instance reports for the rest of the model.
        "ResourceGroupId": "rg-emu", "InstanceTypeFamily": inst.instance_type.rsplit(".", 1)[0],
        "OSNameEn": "Ubuntu  22.04 64 bit", "KeyPairName": "", "AutoReleaseTime": "", "SaleCycle": "",
        "ClusterId": "", "HpcClusterId": "", "DeploymentSetId": "", "DeploymentSetGroupNo": 0,
        "CreditSpecification": "", "ISP": "", "GPUAmount": 0, "GPUSpec": "", "LocalStorageAmount": 0,
        "LocalStorageCapacity": 0, "DeviceAvailable": True, "Recyclable": False, "EnableNVS": False,
        "SpotStrategy": "NoSpot", "SpotPriceLimit": 0.0, "SpotDuration": 0, "SpotInterruptionBehavior": "Terminate",
        "RdmaIpAddress": {"IpAddress": []},
        "CpuOptions": {"CoreCount": 1, "ThreadsPerCore": 2, "Numa": "", "TopologyType": "",
                       "NestedVirtualization": "", "TurboMode": "", "EnableVISST": False, "EnableVRDT": False},
        "MetadataOptions": {"HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1, "HttpTokens": "optional",
                            "InstanceMetadataTags": "disabled"},
        "HibernationOptions": {"Configured": False},
        "SecurityOptions": {"EnableSecureBoot": False},
        "ImageOptions": {"CurrentOSNVMeSupported": False, "LoginAsNonRoot": False},
        "ClockOptions": {"PtpStatus": "disabled"},
        "AdditionalInfo": {"EnableHighDensityMode": False, "ManagedHostId": "", "NodeSerialNumber": ""},
        "DedicatedHostAttribute": {"DedicatedHostId": "", "DedicatedHostName": "", "DedicatedHostClusterId": ""},
        "DedicatedInstanceAttribute": {"Affinity": "", "Tenancy": ""},
        "EcsCapacityReservationAttr": {"CapacityReservationId": "", "CapacityReservationPreference": ""},
        "PrivateDnsNameOptions": {"HostnameType": "Custom", "EnableInstanceIdDnsARecord": False,
                                  "EnableInstanceIdDnsAAAARecord": False, "EnableIpDnsARecord": False,
                                  "EnableIpDnsPtrRecord": False},
    }


def _json_list(call: Call, name: str) -> list[str] | None:
    value = call.params.json_value(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid_parameter(name, "It must be a JSON array of strings.")
    if len(value) > 100:
        raise invalid_parameter(name, "At most 100 values.")
    return value


@action(ECS_VERSION, "DescribeInstances")
def describe_instances(call: Call) -> dict[str, Any]:
    check_region(call)
    p = call.params
    ids = _json_list(call, "InstanceIds")
    private_ips = _json_list(call, "PrivateIpAddresses")
    inner_ips = _json_list(call, "InnerIpAddresses")
    network_type = p.get("InstanceNetworkType")
    if network_type and network_type not in ("vpc", "classic"):
        raise ApiError(404, "InvalidNetworkType.NotFound", "The specified InstanceNetworkType is not found.")
    status = p.get("Status")
    if status and status not in ("Pending", "Running", "Starting", "Stopping", "Stopped"):
        raise ApiError(404, "InvalidStatus.NotFound", "The specified Status is not found.")
    name = p.get("InstanceName")
    # Unknown ids in InstanceIds are left out silently; filters are ANDed.
    matches = [
        i for i in call.state.instances.values()
        if i.region == p.region
        and (ids is None or i.instance_id in ids)
        and (private_ips is None or (i.network_type == "vpc" and i.private_ip in private_ips))
        and (inner_ips is None or (i.network_type == "classic" and i.private_ip in inner_ips))
        and (not p.get("VpcId") or i.vpc_id == p.get("VpcId"))
        and (not p.get("VSwitchId") or i.vswitch_id == p.get("VSwitchId"))
        and (not p.get("ZoneId") or i.zone == p.get("ZoneId"))
        and (not network_type or i.network_type == network_type)
        and (not status or i.status == status)
        and (not name or fnmatch.fnmatchcase(i.hostname, name))
    ]
    items, envelope = page(p, matches, default_size=10, max_size=100)
    return {**envelope, "NextToken": "", "Instances": {"Instance": [_instance_json(i) for i in items]}}
