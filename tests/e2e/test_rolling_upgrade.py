"""A rolling upgrade from flannel's own ali-vpc backend (v0.8-v0.19) to flannel-alivpc.

The cluster starts as that backend left it: bare leases (no InstanceId) and
unmarked route entries made through the ECS API. Our daemons then replace the
old nodes one at a time. Throughout, the route table is polled: not one old
node's entry may disappear or point anywhere else, at any moment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_alivpc.core.routes import ROUTE_NAME, entry_cluster
from flannel_alivpc.testbed.cluster import ACCESS_KEY_ID, LocalCluster, join_as_old_flanneld

pytestmark = pytest.mark.slow

CONVERGE = 30.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path, route_delay=0.2, writer_lock_ttl=3, resync_interval=5.0) as c:
        yield c


class TableWatch:
    """Polls the emulator's table every few milliseconds and records every moment an expected route was wrong."""

    def __init__(self, cluster: LocalCluster, expected: dict[str, str]) -> None:
        self.cluster = cluster
        self.expected = expected
        self.violations: list[str] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            entries = self.cluster.table_entries()
            self.polls += 1
            for destination, instance in self.expected.items():
                seen = entries.get(destination)
                if seen is None or seen[1] != instance or seen[2] != "Available":
                    self.violations.append(f"{destination}: expected -> {instance}, saw {seen}")

    def __enter__(self) -> TableWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _entry(cluster: LocalCluster, destination: str):  # type: ignore[no-untyped-def]
    state = cluster.emulator.state
    with state.locked():
        table = state.route_tables[cluster.route_table_id]
        return next(e for e in table.entries.values() if e.destination == destination)


def _lease_value(cluster: LocalCluster, destination: str) -> dict[str, object]:
    address, _, length = destination.partition("/")
    with cluster.etcd_client() as etcd:
        kv = etcd.get(f"{cluster.prefix}/subnets/{address}-{length}")
    assert kv is not None
    value: dict[str, object] = json.loads(kv.value)
    return value


def test_rolling_upgrade_from_the_old_backend_never_drops_a_route(cluster: LocalCluster) -> None:
    cluster.start(instances=4)
    subnets = {node.instance_id: f"10.244.{10 + n}.0/24" for n, node in enumerate(cluster.nodes)}
    for node in cluster.nodes:
        join_as_old_flanneld(cluster, node, subnets[node.instance_id])
        assert cluster.wait_until(lambda: all(s == "Available" for _, _, s in cluster.table_entries().values()), 5)
    # A hand-made entry inside the Network, with no lease: never ours to delete.
    outsider = cluster.emulator.state.create_instance(hostname="tooling", vswitch_id=cluster.topology.vswitch_id)  # type: ignore[union-attr]
    cluster.emulator.state.add_custom_entry(cluster.route_table_id, "10.244.200.0/24", "Instance",
                                            outsider.instance_id)
    expected = {subnet: instance for instance, subnet in subnets.items()}
    expected["10.244.200.0/24"] = outsider.instance_id
    with TableWatch(cluster, expected) as watch:
        for node in cluster.nodes:
            cluster.start_node(node)
            subnet = subnets[node.instance_id]

            def upgraded(subnet: str = subnet, instance: str = node.instance_id) -> bool:
                data = _lease_value(cluster, subnet).get("BackendData")
                return isinstance(data, dict) and data.get("InstanceId") == instance

            # The node keeps its subnet (flannel reuses the lease with its PublicIP) and publishes its instance.
            assert cluster.wait_until(upgraded, CONVERGE), node.log()
        # Every old entry was adopted in place: marked as this cluster's, same id, same next hop.
        def all_adopted() -> bool:
            return all(entry_cluster(_entry(cluster, s)) is not None for s in subnets.values())

        assert cluster.wait_until(all_adopted, CONVERGE), "\n".join(n.log()[-2000:] for n in cluster.nodes)
    assert watch.polls > 50
    assert watch.violations == []
    adopted = _entry(cluster, subnets[cluster.nodes[0].instance_id])
    assert adopted.name == ROUTE_NAME
    assert any("adopted" in n.log() for n in cluster.nodes)
    # The hand-made entry is still there, unmarked, and `routes` reports it instead of calling it drift.
    handmade = _entry(cluster, "10.244.200.0/24")
    assert entry_cluster(handmade) is None and handmade.name == ""
    args = [sys.executable, "-m", "flannel_alivpc", "routes", "--etcd-endpoints", cluster.etcd.endpoint,
            "--api-endpoint", cluster.emulator.endpoint, "--region", "cn-hangzhou", "--vpc-id", cluster.vpc_id,
            "--output", "json", "--check"]
    result = subprocess.run(args, env=cluster.node_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    states = {r["destination"]: r["state"] for r in json.loads(result.stdout)[0]["routes"]}
    assert states["10.244.200.0/24"] == "unmanaged"
    assert {states[s] for s in subnets.values()} == {"ok"}
    # Adoption made the entries ours: a node that now leaves has its entry removed.
    leaving = cluster.nodes[-1]
    cluster.stop_node(leaving)
    cluster.release_lease(leaving)
    gone = subnets[leaving.instance_id]
    assert cluster.wait_until(lambda: gone not in cluster.table_entries(), CONVERGE), "\n".join(
        n.log()[-2000:] for n in cluster.nodes)
    assert "10.244.200.0/24" in cluster.table_entries()


def test_old_nodes_stay_routed_while_mixed_with_upgraded_ones(cluster: LocalCluster) -> None:
    """Half upgraded: the old nodes' bare leases are resolved by address and their entries kept."""
    cluster.start(instances=3)
    old = cluster.nodes[1:]
    for n, node in enumerate(old):
        join_as_old_flanneld(cluster, node, f"10.244.{20 + n}.0/24")
        assert cluster.wait_until(lambda: all(s == "Available" for _, _, s in cluster.table_entries().values()), 5)
    expected = {f"10.244.{20 + n}.0/24": node.instance_id for n, node in enumerate(old)}
    with TableWatch(cluster, expected) as watch:
        cluster.start_node(cluster.nodes[0])
        assert cluster.wait_until(lambda: len(cluster.instance_routes()) == 3, CONVERGE), cluster.nodes[0].log()
        assert cluster.wait_until(
            lambda: all(entry_cluster(_entry(cluster, s)) is not None for s in expected), CONVERGE)
        # A few resync passes later nothing has changed for the old nodes.
        cluster.wait_until(lambda: False, 6.0)
    assert watch.violations == []
    ecs_calls = cluster.emulator.faults.counters().get("DescribeInstances", {})
    assert sum(ecs_calls.values()) <= 2, ecs_calls  # one batched lookup, cached across passes
    # The old nodes' leases are untouched: still bare.
    for destination in expected:
        value = _lease_value(cluster, destination)
        assert list(value) == ["PublicIP", "PublicIPv6"] and value["PublicIPv6"] is None


def test_the_old_backends_keys_in_the_network_config_are_honoured_and_never_shown(cluster: LocalCluster) -> None:
    """flannel's ali-vpc read AccessKeyID/AccessKeySecret from the Backend object (and logged them): we use
    them, with a warning pointing to the RAM role, and the secret appears in no log line."""
    config = json.dumps({"Network": "10.244.0.0/16", "Backend": {
        "Type": "ali-vpc", "AccessKeyID": ACCESS_KEY_ID, "AccessKeySecret": cluster.secret}})
    cluster.start(instances=2, network_config=config)
    for node in cluster.nodes:
        # The environment's key is wrong: only the config's can make the API calls work.
        node.env.update(ACCESS_KEY_ID="LTAI-wrong", ACCESS_KEY_SECRET="wrong-secret")
    cluster.start_all()
    assert cluster.wait_until(cluster.converged, CONVERGE), "\n".join(n.log()[-2000:] for n in cluster.nodes)
    for node in cluster.nodes:
        assert "attach a RAM role" in node.log()
        assert cluster.secret not in node.log()
