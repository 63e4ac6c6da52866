"""The route daemon end to end: real daemon processes, a real etcd, the cloud emulator.

Every scenario is one a cluster operator lives through: nodes joining and
leaving, a node replaced, the writer killed, etcd restarted, the cloud API
misbehaving, garbage in etcd, a full route table, routes that belong to
someone else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_alivpc.core.network import LeaseAttrs, parse_lease_value
from flannel_alivpc.testbed.cluster import LocalCluster, Node

pytestmark = pytest.mark.slow

CONVERGE = 30.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path, route_delay=0.2, writer_lock_ttl=3, resync_interval=5.0) as c:
        yield c


def _diagnose(cluster: LocalCluster) -> str:
    logs = "\n".join(f"--- {n.hostname}\n{n.log()[-3000:]}" for n in cluster.nodes)
    return f"table: {cluster.table_entries()}\nleases: {cluster.expected_routes()}\n{logs}"


def _converge(cluster: LocalCluster, timeout: float = CONVERGE) -> None:
    assert cluster.wait_until(cluster.converged, timeout), _diagnose(cluster)


def _writer(cluster: LocalCluster) -> Node:
    """The node whose /healthz says it writes the route table."""
    for node in cluster.nodes:
        if not node.running:
            continue
        status, body = node.healthz()
        if status and json.loads(body)["tables"][cluster.route_table_id]["writer"]:
            return node
    raise AssertionError("no node is the route table's writer\n" + _diagnose(cluster))


def test_nodes_converge_and_foreign_routes_are_left_alone(cluster: LocalCluster) -> None:
    topo = cluster.start(instances=3)
    state = cluster.emulator.state
    outsider = state.create_instance(hostname="vpn-gw", vswitch_id=topo.vswitch_id)
    # Routes flannel-alivpc does not own: the NAT default route, a VPN route pointing at an
    # instance but outside the flannel Network, and a route inside the Network to a NAT gateway.
    state.add_custom_entry(topo.route_table_id, "0.0.0.0/0", "NatGateway", "ngw-1")
    state.add_custom_entry(topo.route_table_id, "172.16.0.0/24", "Instance", outsider.instance_id)
    state.add_custom_entry(topo.route_table_id, "10.244.250.0/24", "NatGateway", "ngw-1")
    cluster.start_all()
    _converge(cluster)
    entries = cluster.table_entries()
    assert entries["0.0.0.0/0"] == ("NatGateway", "ngw-1", "Available")
    assert entries["172.16.0.0/24"] == ("Instance", outsider.instance_id, "Available")
    assert entries["10.244.250.0/24"] == ("NatGateway", "ngw-1", "Available")
    # One entry per node, each pointing at that node's instance.
    assert sorted(cluster.instance_routes().values()) == sorted(
        [n.instance_id for n in cluster.nodes] + [outsider.instance_id])
    # Leases in flannel's format, with what peers need.
    with cluster.etcd_client() as etcd:
        kvs, _ = etcd.get_prefix(f"{cluster.prefix}/subnets/")
    assert len(kvs) == 3
    for kv in kvs:
        raw = json.loads(kv.value)
        assert list(raw) == ["PublicIP", "PublicIPv6", "BackendType", "BackendData"]
        assert raw["PublicIPv6"] is None and raw["BackendType"] == "ali-vpc"
        assert raw["BackendData"]["NetworkType"] == "vpc"
        assert raw["BackendData"]["VpcId"] == topo.vpc_id
    # subnet.env for the CNI plugin.
    env = dict(line.split("=", 1) for line in cluster.nodes[0].subnet_file.read_text().splitlines())
    assert env["FLANNEL_NETWORK"] == "10.244.0.0/16"
    assert re.fullmatch(r"10\.244\.\d+\.1/24", env["FLANNEL_SUBNET"])
    assert env["FLANNEL_IPMASQ"] == "false"
    # `routes --check` agrees: clean, exit 0.
    views = cluster.views()
    assert all(v.clean for v in views)
    # The simulated nodes share this machine's network namespace: its firewall is left alone.
    if shutil.which("iptables") and os.geteuid() == 0:
        rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
        assert "FLANNEL" not in rules, rules


def test_node_joins_and_leaves(cluster: LocalCluster) -> None:
    cluster.start(instances=2)
    cluster.start_all()
    _converge(cluster)
    newcomer = cluster.new_instance("node-new")
    cluster.start_node(newcomer)
    assert cluster.wait_until(lambda: newcomer.instance_id in cluster.instance_routes().values(), CONVERGE), \
        _diagnose(cluster)
    _converge(cluster)
    leaving = cluster.nodes[0]
    cluster.stop_node(leaving)
    # A stopped daemon keeps its lease (as flannel does): its route stays.
    time.sleep(1.0)
    assert leaving.instance_id in cluster.instance_routes().values()
    cluster.release_lease(leaving)
    assert cluster.wait_until(lambda: leaving.instance_id not in cluster.instance_routes().values(), CONVERGE), \
        _diagnose(cluster)
    _converge(cluster)


def test_lease_expiry_removes_the_route(cluster: LocalCluster) -> None:
    cluster.start(instances=2)
    spare = cluster.emulator.state.create_instance(hostname="short-lived", vswitch_id=cluster.topology.vswitch_id)  # type: ignore[union-attr]
    cluster.start_all()
    _converge(cluster)
    attrs = LeaseAttrs(public_ip=parse_lease_value(json.dumps({"PublicIP": spare.private_ip})).public_ip,
                       backend_type="ali-vpc", backend_data={"InstanceId": spare.instance_id, "NetworkType": "vpc"})
    with cluster.etcd_client() as etcd:
        lease_id = etcd.grant(2)
        etcd.put(f"{cluster.prefix}/subnets/10.244.200.0-24", attrs.to_json(), lease_id=lease_id)
    assert cluster.wait_until(lambda: cluster.instance_routes().get("10.244.200.0/24") == spare.instance_id,
                              CONVERGE), _diagnose(cluster)
    # The etcd lease runs out after 2 s: the key disappears and so must the route.
    assert cluster.wait_until(lambda: "10.244.200.0/24" not in cluster.table_entries(), CONVERGE), \
        _diagnose(cluster)


def test_replaced_node_gets_its_route_repointed(cluster: LocalCluster) -> None:
    cluster.start(instances=2)
    cluster.start_all()
    _converge(cluster)
    old = cluster.nodes[1]
    subnet = next(dest for dest, hop in cluster.instance_routes().items() if hop == old.instance_id)
    cluster.stop_node(old)
    # The instance is released and a new one takes its address; the new daemon finds the
    # lease by PublicIP (and the old subnet.env), keeps the subnet and publishes its own instance.
    del cluster.emulator.state.instances[old.instance_id]
    state = cluster.emulator.state
    replacement = state.create_instance(hostname="node-2b", private_ip=old.private_ip,
                                        vswitch_id=cluster.topology.vswitch_id)  # type: ignore[union-attr]
    node = cluster.add_node(replacement.instance_id)
    node.workdir = old.workdir
    cluster.start_node(node)
    assert cluster.wait_until(lambda: cluster.instance_routes().get(subnet) == replacement.instance_id,
                              CONVERGE), _diagnose(cluster)
    _converge(cluster)


def test_writer_killed_another_node_takes_over(cluster: LocalCluster) -> None:
    cluster.start(instances=3)
    cluster.start_all()
    _converge(cluster)
    writer = _writer(cluster)
    cluster.stop_node(writer, kill=True)
    # The dead writer's lease stays; a change now needs a new writer to be applied.
    newcomer = cluster.new_instance("node-after-failover")
    cluster.start_node(newcomer)
    assert cluster.wait_until(lambda: newcomer.instance_id in cluster.instance_routes().values(),
                              CONVERGE), _diagnose(cluster)
    successor = _writer(cluster)
    assert successor is not writer
    # Non-writers make no cloud calls after start-up: their /metrics show no route reads or writes.
    for node in cluster.nodes:
        if node.running and node is not successor:
            _, metrics = node.healthz("/metrics")
            assert 'action="CreateRouteEntries"' not in metrics
            assert 'action="DescribeRouteEntryList"' not in metrics


def test_etcd_restart_changes_nothing_and_is_survived(cluster: LocalCluster) -> None:
    cluster.start(instances=2)
    cluster.start_all()
    _converge(cluster)
    before = cluster.table_entries()
    cluster.etcd.stop()
    time.sleep(2.0)
    assert cluster.table_entries() == before
    assert all(n.running for n in cluster.nodes), _diagnose(cluster)
    cluster.etcd.start()
    newcomer = cluster.new_instance("node-after-outage")
    cluster.start_node(newcomer)
    assert cluster.wait_until(lambda: newcomer.instance_id in cluster.instance_routes().values(),
                              CONVERGE), _diagnose(cluster)
    _converge(cluster)
    assert all(n.running for n in cluster.nodes), _diagnose(cluster)


def test_api_faults_are_retried_until_converged(cluster: LocalCluster) -> None:
    cluster.start(instances=3)
    faults = cluster.emulator.faults
    faults.set_rules({
        "CreateRouteEntries": {"error": {"code": "TaskConflict", "status": 400, "count": 3}},
        "DescribeRouteEntryList": {"error": {"code": "ServiceUnavailable", "status": 503, "count": 2}},
        "DeleteRouteEntries": {"throttle": {"rate": 1, "burst": 1}},
    })
    cluster.start_all()
    _converge(cluster)
    counters = faults.counters()
    assert counters["CreateRouteEntries"]["TaskConflict"] == 3
    assert counters["DescribeRouteEntryList"]["ServiceUnavailable"] == 2


def test_malformed_leases_never_delete_routes(cluster: LocalCluster) -> None:
    cluster.start(instances=2)
    cluster.start_all()
    _converge(cluster)
    victim = cluster.nodes[0]
    key = cluster.lease_key_of(victim)
    assert key is not None
    routes_before = cluster.instance_routes()
    with cluster.etcd_client() as etcd:
        kv = etcd.get(key)
        assert kv is not None
        # Garbage where a live lease was (same etcd lease), and garbage keys beside it.
        etcd.put(key, b"{not json", lease_id=kv.lease_id)
        etcd.put(f"{cluster.prefix}/subnets/garbage", b"{}")
        etcd.put(f"{cluster.prefix}/subnets/10.244.77.0-24", b'{"PublicIP": "not-an-ip"}')
    time.sleep(3.0)
    assert cluster.instance_routes() == routes_before
    assert all(n.running for n in cluster.nodes if n is not victim)
    other = cluster.nodes[1]
    status, body = other.healthz("/metrics")
    assert status == 200
    assert "flannel_alivpc_malformed_leases 3.0" in body
    writer_metrics = _writer(cluster).healthz("/metrics")[1]
    assert f'flannel_alivpc_reconcile_duration_seconds_count{{table="{cluster.route_table_id}"}}' in writer_metrics


def test_bad_network_config_is_refused_clearly_and_nothing_is_written(cluster: LocalCluster) -> None:
    cluster.start(instances=1, network_config='{"Network": "10.244.0.0/30"}')
    node = cluster.nodes[0]
    cluster.start_node(node)
    assert cluster.wait_until(lambda: "too small" in node.log(), 15), node.log()
    assert node.running  # it waits for a fixed config instead of crash-looping
    with cluster.etcd_client() as etcd:
        kvs, _ = etcd.get_prefix(f"{cluster.prefix}/subnets/")
    assert kvs == []
    assert cluster.table_entries() == {}
    assert not node.subnet_file.exists()


def test_quota_exhaustion_is_reported(cluster: LocalCluster) -> None:
    cluster.start(instances=3)
    cluster.emulator.state.settings.route_quota = 2
    cluster.start_all()
    assert cluster.wait_until(lambda: len(cluster.instance_routes()) == 2, CONVERGE), _diagnose(cluster)

    def quota_reported() -> bool:
        writer = _writer(cluster)
        _, body = writer.healthz()
        return "quota" in json.loads(body)["tables"][cluster.route_table_id].get("quota_error", "")

    assert cluster.wait_until(quota_reported, CONVERGE), _diagnose(cluster)
    assert any("is full" in n.log() for n in cluster.nodes)


def test_routes_command_reports_drift_with_exit_code(cluster: LocalCluster) -> None:
    cluster.start(instances=2)
    cluster.start_all()
    _converge(cluster)
    for node in cluster.nodes:
        cluster.stop_node(node)
    # Drift: a lease without its route (entry removed behind our back).
    state = cluster.emulator.state
    with state.locked():
        table = state.route_tables[cluster.route_table_id]
        victim = next(e for e in table.entries.values() if e.next_hop_type == "Instance")
        del table.entries[victim.entry_id]
    args = [sys.executable, "-m", "flannel_alivpc", "routes", "--etcd-endpoints", cluster.etcd.endpoint,
            "--api-endpoint", cluster.emulator.endpoint, "--region", "cn-hangzhou", "--vpc-id", cluster.vpc_id,
            "--output", "json", "--check"]
    result = subprocess.run(args, env=cluster.node_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    states = {r["destination"]: r["state"] for r in report[0]["routes"]}
    assert states[victim.destination] == "missing"
    assert cluster.secret not in result.stdout + result.stderr


def test_revoked_own_lease_ends_the_daemon_clearly(cluster: LocalCluster) -> None:
    cluster.start(instances=2)
    cluster.start_all()
    _converge(cluster)
    victim = cluster.nodes[0]
    cluster.release_lease(victim)
    assert cluster.wait_until(lambda: not victim.running, 15), victim.log()
    assert victim.process is not None and victim.process.returncode == 1
    assert "Lease has been revoked. Shutting down daemon." in victim.log()
    assert cluster.nodes[1].running


def test_every_route_table_of_the_vpc_is_kept_in_line(cluster: LocalCluster) -> None:
    topo = cluster.start(instances=2)
    state = cluster.emulator.state
    custom = state.create_route_table(vpc_id=topo.vpc_id, name="zone-b")
    state.create_vswitch(vpc_id=topo.vpc_id, cidr="192.168.16.0/20", route_table_id=custom.table_id)
    cluster.start_all()
    _converge(cluster)

    def custom_table_matches() -> bool:
        entries = cluster.table_entries(custom.table_id)
        routes = {d: hop for d, (kind, hop, status) in entries.items() if kind == "Instance" and status == "Available"}
        return routes == cluster.expected_routes()

    assert cluster.wait_until(custom_table_matches, CONVERGE), _diagnose(cluster)


def test_wrong_credentials_are_refused_with_a_clear_error(cluster: LocalCluster) -> None:
    cluster.start(instances=1)
    node = cluster.nodes[0]
    node.env = {"ACCESS_KEY_SECRET": "not-the-secret-xyz"}
    cluster.start_node(node)
    assert cluster.wait_until(lambda: not node.running, 20), node.log()
    log = node.log()
    assert node.process is not None and node.process.returncode == 2, log
    assert "AccessKeySecret" in log or "secret" in log.lower(), log
    assert "not-the-secret-xyz" not in log
    # Nothing was taken: no lease, no route.
    assert cluster.lease_key_of(node) is None
    assert cluster.table_entries() == {}


def test_json_logs_carry_each_route_change_as_fields(cluster: LocalCluster) -> None:
    cluster.start(instances=2)
    for node in cluster.nodes:
        node.extra_args = ["--log-format", "json"]
    cluster.start_all()
    _converge(cluster)
    lines = [json.loads(line) for node in cluster.nodes for line in node.log().splitlines() if line.strip()]
    created = [line for line in lines if " created " in line["message"]]
    assert {(c["table_id"], c["destination"], c["instance"]) for c in created} == {
        (cluster.route_table_id, dest, hop) for dest, hop in cluster.instance_routes().items()}
    assert all({"time", "level", "logger"} <= set(line) for line in lines)
