"""VpcClient against the emulator: typed results, pagination, batches."""

from __future__ import annotations

import pytest

from flannel_alivpc.clients.aliyun_sdk import AliyunApi
from flannel_alivpc.clients.vpc import VpcClient
from flannel_alivpc.core.cloud import BatchResult, RouteEntry, RouteSpec, RouteTable, Vpc, VSwitch
from flannel_alivpc.core.errors import NotFoundCloudError
from flannel_alivpc.core.retry import RetryPolicy
from flannel_alivpc.emulator.server import Emulator, Topology
from tests.clients.helpers import Admin, emulator_counts, make_api


@pytest.fixture
def vpc(api: AliyunApi) -> VpcClient:
    return VpcClient(api)


def specs(count: int, next_hop: str, start: int = 0) -> list[RouteSpec]:
    return [RouteSpec(destination=f"10.{(start + n) // 256}.{(start + n) % 256}.0/24", next_hop_id=next_hop,
                      name="flannel-alivpc") for n in range(count)]


def test_describe_vpc(vpc: VpcClient, topology: Topology) -> None:
    assert vpc.describe_vpc(topology.vpc_id) == Vpc(
        vpc_id=topology.vpc_id, cidr="192.168.0.0/16", vrouter_id=topology.vrouter_id,
        route_table_ids=(topology.route_table_id,), vswitch_ids=(topology.vswitch_id,))
    with pytest.raises(NotFoundCloudError):
        vpc.describe_vpc("vpc-missing")


def test_list_vswitches_and_route_tables(vpc: VpcClient, topology: Topology, admin: Admin) -> None:
    custom = admin("POST", "route-tables", {"vpc_id": topology.vpc_id, "name": "pods"})["RouteTableId"]
    second = admin("POST", "vswitches", {"vpc_id": topology.vpc_id, "cidr": "192.168.16.0/20",
                                         "zone": "cn-hangzhou-h", "route_table_id": custom})["VSwitchId"]
    assert sorted(vpc.list_vswitches(topology.vpc_id), key=lambda v: v.cidr) == [
        VSwitch(topology.vswitch_id, topology.vpc_id, "192.168.0.0/20", "cn-hangzhou-g", topology.route_table_id),
        VSwitch(second, topology.vpc_id, "192.168.16.0/20", "cn-hangzhou-h", custom),
    ]
    assert sorted(vpc.list_route_tables(topology.vpc_id), key=lambda t: t.table_type) == [
        RouteTable(custom, topology.vpc_id, topology.vrouter_id, "Custom", (second,)),
        RouteTable(topology.route_table_id, topology.vpc_id, topology.vrouter_id, "System", (topology.vswitch_id,)),
    ]


def test_list_route_tables_follows_pages(vpc: VpcClient, topology: Topology, admin: Admin) -> None:
    for n in range(55):
        admin("POST", "route-tables", {"vpc_id": topology.vpc_id, "name": f"t{n}"})
    admin("DELETE", "counters")
    assert len(vpc.list_route_tables(topology.vpc_id)) == 56
    assert emulator_counts(admin, "DescribeRouteTableList") == {"Success": 2}


def test_list_route_entries_follows_next_token(vpc: VpcClient, topology: Topology, admin: Admin) -> None:
    hop = topology.instance_ids[0]
    for spec in specs(250, hop):
        admin("POST", "route-entries", {"route_table_id": topology.route_table_id,
                                        "destination": spec.destination, "next_hop_id": hop})
    admin("DELETE", "counters")
    custom = vpc.list_route_entries(topology.route_table_id, entry_type="Custom")
    assert len(custom) == 250
    assert len({e.entry_id for e in custom}) == 250
    assert emulator_counts(admin, "DescribeRouteEntryList") == {"Success": 3}
    entry = next(e for e in custom if e.destination == "10.0.7.0/24")
    assert entry == RouteEntry(table_id=topology.route_table_id, entry_id=entry.entry_id,
                               destination="10.0.7.0/24", entry_type="Custom", status="Available",
                               next_hop_type="Instance", next_hop_id=hop)
    everything = vpc.list_route_entries(topology.route_table_id)
    system = [e for e in everything if e.entry_type == "System"]
    assert len(everything) == 252 and {e.destination for e in system} == {"192.168.0.0/20", "100.64.0.0/10"}
    picked = vpc.list_route_entries(topology.route_table_id, destinations=["10.0.1.0/24", "10.0.2.0/24"])
    assert sorted(e.destination for e in picked) == ["10.0.1.0/24", "10.0.2.0/24"]


def test_create_and_delete_in_batches(vpc: VpcClient, topology: Topology, admin: Admin) -> None:
    admin("PATCH", "settings", {"route_quota": 1000})
    hop = topology.instance_ids[1]
    wanted = specs(120, hop)
    created = vpc.create_route_entries(topology.route_table_id, wanted)
    assert created.ok and created.succeeded == 120 and len(set(created.created_ids)) == 120
    assert emulator_counts(admin, "CreateRouteEntries") == {"Success": 3}  # 50 + 50 + 20
    entries = vpc.list_route_entries(topology.route_table_id, entry_type="Custom")
    assert {e.destination for e in entries} == {s.destination for s in wanted}
    assert {e.entry_id for e in entries} == set(created.created_ids)
    assert all(e.name == "flannel-alivpc" for e in entries)

    doomed: list[RouteEntry | str] = [*entries[:60], "rte-already-gone"]
    deleted = vpc.delete_route_entries(topology.route_table_id, doomed)
    assert deleted == BatchResult(succeeded=61, created_ids=(), failures=())
    assert emulator_counts(admin, "DeleteRouteEntries") == {"Success": 2}
    assert len(vpc.list_route_entries(topology.route_table_id, entry_type="Custom")) == 60


def test_batch_reports_refused_items(vpc: VpcClient, topology: Topology) -> None:
    hop = topology.instance_ids[0]
    vpc.create_route_entries(topology.route_table_id, specs(1, hop))
    result = vpc.create_route_entries(topology.route_table_id, [
        RouteSpec("10.0.0.0/24", hop),           # duplicate
        RouteSpec("10.50.0.0/24", "i-missing"),  # no such next hop
        RouteSpec("10.51.0.0/24", hop),
    ])
    assert result.succeeded == 1 and len(result.created_ids) == 1
    failures = {f.destination: f for f in result.failures}
    assert failures["10.0.0.0/24"].code == "VPC_ROUTE_ENTRY_CIDR_BLOCK_DUPLICATE"
    assert failures["10.50.0.0/24"].code == "InvalidNextHop.NotFound"
    assert failures["10.50.0.0/24"].next_hop_id == "i-missing" and failures["10.50.0.0/24"].message


def test_busy_table_after_first_chunk_becomes_failures(emulator: Emulator, topology: Topology,
                                                       admin: Admin) -> None:
    admin("PATCH", "settings", {"route_delay": 5.0})
    vpc = VpcClient(make_api(emulator, retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01)))
    result = vpc.create_route_entries(topology.route_table_id, specs(70, topology.instance_ids[0]))
    assert result.succeeded == 50 and len(result.created_ids) == 50
    assert len(result.failures) == 20
    assert {f.code for f in result.failures} == {"IncorrectRouteEntryStatus"}
    assert {f.destination for f in result.failures} == {s.destination for s in specs(70, "x")[50:]}


def test_single_entry_create_and_idempotent_delete(vpc: VpcClient, topology: Topology) -> None:
    entry_id = vpc.create_route_entry(topology.route_table_id,
                                      RouteSpec("10.77.0.0/24", topology.instance_ids[2], description="node-3"))
    assert entry_id.startswith("rte-")
    [entry] = vpc.list_route_entries(topology.route_table_id, destinations=["10.77.0.0/24"])
    assert (entry.entry_id, entry.next_hop_id, entry.description) == (entry_id, topology.instance_ids[2], "node-3")
    assert vpc.delete_route_entry(topology.route_table_id, entry) is True
    assert vpc.delete_route_entry(topology.route_table_id, entry_id) is False  # already gone: fine
    assert vpc.list_route_entries(topology.route_table_id, destinations=["10.77.0.0/24"]) == []


def test_unknown_route_table(vpc: VpcClient, topology: Topology) -> None:
    with pytest.raises(NotFoundCloudError) as info:
        vpc.list_route_entries("vtb-missing")
    assert info.value.code == "InvalidRouteTableId.NotFound"
