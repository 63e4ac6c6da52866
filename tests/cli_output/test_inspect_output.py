"""`routes` and `leases -o table|wide|json|yaml`: the real command against a real etcd and the emulator."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.emulator.server import Emulator, Topology
from flannel_alivpc.routed import inspect
from flannel_alivpc.routed.inspect import human_duration
from flannel_alivpc.testbed.etcd_server import EtcdServer
from tests.conftest import EMULATOR_AK, EMULATOR_SECRET

PREFIX = "/coreos.com/network"
MAC = "0a:58:0a:f4:02:01"


@pytest.mark.parametrize("seconds, shown", [
    (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"), (303, "5m3s"), (599, "9m59s"), (600, "10m"),
    (10799, "179m"), (10800, "3h"), (12000, "3h20m"), (28799, "7h59m"), (28800, "8h"), (86399, "23h"),
    (172799, "47h"), (172800, "2d"), (183600, "2d3h"), (691200, "8d"), (63072000, "2y"), (66666666, "2y41d"),
    (252288000, "8y"), (-5, "0s"),
])
def test_durations_read_as_kubectl_prints_ages(seconds: int, shown: str) -> None:
    assert human_duration(seconds) == shown


@pytest.fixture
def leases(etcd_server: EtcdServer, topology: Topology, emulator: Emulator) -> list[str]:
    """Three leases as flannel writes them (ali-vpc with a 24 h TTL, vxlan, and one without TTL) and a broken one."""
    first, second = topology.instance_ids[:2]
    with EtcdClient([etcd_server.endpoint]) as etcd:
        etcd.put(f"{PREFIX}/config", json.dumps({"Network": "10.244.0.0/16", "Backend": {"Type": "ali-vpc"}}))
        day = etcd.grant(86400)
        etcd.put(f"{PREFIX}/subnets/10.244.1.0-24", json.dumps({
            "PublicIP": "192.168.0.11", "BackendType": "ali-vpc",
            "BackendData": {"InstanceId": first, "NetworkType": "vpc"}}), lease_id=day)
        etcd.put(f"{PREFIX}/subnets/10.244.2.0-24", json.dumps({
            "PublicIP": "192.168.0.12", "BackendType": "vxlan", "BackendData": {"VNI": 1, "VtepMAC": MAC}}),
            lease_id=etcd.grant(300))
        etcd.put(f"{PREFIX}/subnets/10.244.3.0-24", json.dumps({
            "PublicIP": "192.168.0.13", "BackendType": "ali-vpc", "BackendData": {"InstanceId": second}}))
        etcd.put(f"{PREFIX}/subnets/10.244.9.0-24", "{not json")
    return [first, second]


def _run(etcd_server: EtcdServer, emulator: Emulator, topology: Topology, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("FLANNELD_")}
    env.update(ACCESS_KEY_ID=EMULATOR_AK, ACCESS_KEY_SECRET=EMULATOR_SECRET)
    command = [sys.executable, "-m", "flannel_alivpc", *args, "--etcd-endpoints", etcd_server.endpoint]
    if args[0] == "routes":
        command += ["--api-endpoint", emulator.endpoint, "--region", "cn-hangzhou", "--vpc-id", topology.vpc_id]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert EMULATOR_SECRET not in result.stdout + result.stderr
    return result.stdout


def _table(text: str) -> tuple[list[str], list[list[str]]]:
    header, *lines = [line for line in text.splitlines() if line]
    columns = [c.strip() for c in header.split("   ") if c.strip()]
    return columns, [[c.strip() for c in line.split("   ") if c.strip()] for line in lines]


def test_leases_as_a_table_wide_json_and_yaml(etcd_server: EtcdServer, emulator: Emulator, topology: Topology,
                                              leases: list[str]) -> None:
    columns, rows = _table(_run(etcd_server, emulator, topology, "leases"))
    assert columns == ["SUBNET", "PUBLIC IP", "BACKEND", "INSTANCE", "EXPIRES"]
    by_subnet = {row[0]: row for row in rows}
    assert by_subnet["10.244.1.0/24"] == ["10.244.1.0/24", "192.168.0.11", "ali-vpc", leases[0], "23h"]
    assert by_subnet["10.244.2.0/24"][2:4] == ["vxlan", "-"]
    assert re.fullmatch(r"4m5\ds|5m", by_subnet["10.244.2.0/24"][4])  # a 300 s lease, a moment ago
    assert by_subnet["10.244.3.0/24"][4] == "never"
    assert by_subnet[f"{PREFIX}/subnets/10.244.9.0-24"][2] == "MALFORMED"

    wide_columns, wide_rows = _table(_run(etcd_server, emulator, topology, "leases", "-o", "wide"))
    assert wide_columns == [*columns, "NETWORK TYPE", "VTEP MAC", "REASON"]
    wide = {row[0]: row for row in wide_rows}
    assert wide["10.244.1.0/24"][5:] == ["vpc", "-", "-"]
    assert wide["10.244.2.0/24"][6] == MAC
    assert "not JSON" in wide[f"{PREFIX}/subnets/10.244.9.0-24"][-1]

    as_json: list[dict[str, Any]] = json.loads(_run(etcd_server, emulator, topology, "leases", "-o", "json"))
    as_yaml = yaml.safe_load(_run(etcd_server, emulator, topology, "leases", "--output", "yaml"))
    for data in (as_json, as_yaml):
        first = next(r for r in data if r["subnet"] == "10.244.1.0/24")
        assert first["instance"] == leases[0] and first["network_type"] == "vpc"
        assert 86300 < first["expires_in"] <= 86400  # seconds, not "23h"
        assert next(r for r in data if r["subnet"] == "10.244.3.0/24")["expires_in"] is None
    strip = [{k: v for k, v in row.items() if k != "expires_in"} for row in as_json]
    assert strip == [{k: v for k, v in row.items() if k != "expires_in"} for row in as_yaml]


def test_routes_as_a_table_wide_json_and_yaml(etcd_server: EtcdServer, emulator: Emulator, topology: Topology,
                                              leases: list[str]) -> None:
    # A hand-made entry inside the Network, to another instance: the kind of row that needs its reason.
    emulator.state.add_custom_entry(topology.route_table_id, "10.244.3.0/24", "Instance", topology.instance_ids[2])
    text = _run(etcd_server, emulator, topology, "routes")
    summary, rest = text.split("\n", 1)
    assert summary == f"route table {topology.route_table_id}: 1 conflict, 1 missing"
    columns, rows = _table(rest.split("\n(", 1)[0])
    assert columns == ["DESTINATION", "STATE", "PATH", "LEASE INSTANCE", "NEXT HOP"]
    by_destination = {row[0]: row for row in rows}
    # Neither has a path yet: no entry of ours, and no overflow was published.
    assert by_destination["10.244.1.0/24"] == ["10.244.1.0/24", "missing", "-", leases[0], "-"]
    assert by_destination["10.244.3.0/24"] == ["10.244.3.0/24", "conflict", "-", leases[1],
                                               topology.instance_ids[2]]
    assert "(some entries need attention: -o wide shows why)" in rest

    wide_columns, wide_rows = _table(_run(etcd_server, emulator, topology, "routes", "-o", "wide").split("\n", 1)[1])
    assert wide_columns == [*columns, "ENTRY STATUS", "REASON"]
    wide = {row[0]: row for row in wide_rows}
    assert wide["10.244.1.0/24"][5:] == ["-", "-"]  # no entry yet, nothing to explain
    assert wide["10.244.3.0/24"][5] == "Available" and len(wide["10.244.3.0/24"][6]) > 10

    as_json = json.loads(_run(etcd_server, emulator, topology, "routes", "-o", "json"))
    as_yaml = yaml.safe_load(_run(etcd_server, emulator, topology, "routes", "-o", "yaml"))
    assert as_json == as_yaml
    (table,) = as_json
    assert table["route_table_id"] == topology.route_table_id and table["clean"] is False
    assert {r["destination"]: r["lease_instance"] for r in table["routes"]} == \
        {"10.244.1.0/24": leases[0], "10.244.3.0/24": leases[1]}


def test_the_command_line_offers_exactly_the_formats_the_renderer_knows() -> None:
    from flannel_alivpc import cli

    assert cli.OUTPUT_FORMATS == inspect.OUTPUT_FORMATS == ("table", "wide", "json", "yaml")
    result = subprocess.run([sys.executable, "-m", "flannel_alivpc", "leases", "-o", "xml"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid choice: 'xml'" in result.stderr and "Traceback" not in result.stderr
