"""EcsClient.describe_instances against the emulator."""

from __future__ import annotations

import pytest

from flannel_alivpc.clients.aliyun_sdk import AliyunApi
from flannel_alivpc.clients.ecs import EcsClient
from flannel_alivpc.core.cloud import Instance
from flannel_alivpc.emulator.server import Emulator, Topology
from tests.clients.helpers import Admin, emulator_counts


@pytest.fixture
def ecs(api: AliyunApi) -> EcsClient:
    return EcsClient(api)


def test_instances_of_a_vpc(ecs: EcsClient, emulator: Emulator, topology: Topology) -> None:
    found = sorted(ecs.describe_instances(vpc_id=topology.vpc_id), key=lambda i: i.hostname)
    first = emulator.state.instances[topology.instance_ids[0]]
    assert found[0] == Instance(instance_id=first.instance_id, hostname="node-1", private_ip=first.private_ip,
                                network_type="vpc", vpc_id=topology.vpc_id, vswitch_id=topology.vswitch_id,
                                zone=first.zone, status="Running")
    assert [i.hostname for i in found] == ["node-1", "node-2", "node-3"]


def test_pages_and_id_chunks(ecs: EcsClient, topology: Topology, admin: Admin) -> None:
    extra = [admin("POST", "instances", {"hostname": f"w{n}"})["instance_id"] for n in range(105)]
    all_ids = topology.instance_ids + extra
    admin("DELETE", "counters")
    assert len(ecs.describe_instances(vpc_id=topology.vpc_id)) == 108
    assert emulator_counts(admin, "DescribeInstances") == {"Success": 2}  # two pages of 100

    admin("DELETE", "counters")
    wanted = all_ids + [f"i-unknown{n}" for n in range(42)]  # 150 ids: two calls
    found = ecs.describe_instances(instance_ids=wanted)
    assert {i.instance_id for i in found} == set(all_ids)
    assert emulator_counts(admin, "DescribeInstances") == {"Success": 2}


def test_filter_by_private_ip_and_classic(ecs: EcsClient, emulator: Emulator, topology: Topology,
                                          admin: Admin) -> None:
    second = emulator.state.instances[topology.instance_ids[1]]
    [found] = ecs.describe_instances(private_ips=[second.private_ip])
    assert found.instance_id == second.instance_id
    classic = admin("POST", "instances", {"hostname": "old", "network_type": "classic"})
    [old] = ecs.describe_instances(instance_ids=[classic["instance_id"]])
    assert (old.network_type, old.private_ip, old.vpc_id) == ("classic", classic["private_ip"], "")


def test_empty_filters_match_nothing_without_a_call(ecs: EcsClient, topology: Topology, admin: Admin) -> None:
    admin("DELETE", "counters")
    assert ecs.describe_instances(instance_ids=[]) == []
    assert ecs.describe_instances(private_ips=[]) == []
    assert emulator_counts(admin, "DescribeInstances") == {}
