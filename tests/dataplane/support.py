"""Helpers shared by the data-plane tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import IPv4Network
from typing import TypeVar

import pytest

from flannel_alivpc.testbed.dataplane import DataplaneCluster, DataplaneNode, is_root

needs_root = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(not is_root(), reason="needs root to create network namespaces"),
]

CONVERGE = 20.0

F = TypeVar("F", bound=Callable[..., object])


def root_test(function: F) -> F:
    """Mark one test as needing root (it then runs only as root, as in CI)."""
    marked: F = pytest.mark.root(pytest.mark.skipif(not is_root(), reason="needs root")(function))
    return marked


def wait(cluster: DataplaneCluster, condition: Callable[[], bool], what: str, timeout: float = CONVERGE) -> None:
    assert cluster.wait_until(condition, timeout, interval=0.1), f"{what}\n{cluster.diagnose()}"


def all_connected(cluster: DataplaneCluster, *, size: int = 64) -> None:
    result = cluster.wait_connected(size=size)
    broken = [pair for pair, ok in result.items() if not ok]
    assert result and not broken, f"no TCP between {broken}\n{cluster.diagnose()}"


def vxlan_peers_of(cluster: DataplaneCluster, node: DataplaneNode) -> dict[IPv4Network, tuple[str | None, set[str]]]:
    """Remote subnet -> (neighbour MAC, FDB destinations) for every subnet with an onlink route on flannel.1."""
    entries = cluster.vxlan_entries(node)
    result = {}
    for subnet in entries.routes:
        mac, dsts, _ = entries.peer(subnet)
        result[subnet] = (mac, {str(d) for d in dsts})
    return result


def lease_data(cluster: DataplaneCluster) -> dict[IPv4Network, dict[str, object]]:
    with cluster.etcd_client() as etcd:
        kvs, _ = etcd.get_prefix(f"{cluster.prefix}/subnets/")
    return {IPv4Network(kv.key.rsplit("/", 1)[1].replace("-", "/")): json.loads(kv.value) for kv in kvs}


def expected_vxlan(cluster: DataplaneCluster, node: DataplaneNode,
                   peers: list[DataplaneNode]) -> dict[IPv4Network, tuple[str | None, set[str]]]:
    """What ``node``'s flannel.1 must carry for ``peers``, from their published leases."""
    leases = lease_data(cluster)
    expected = {}
    for other in peers:
        subnet = cluster.subnet_of(other)
        data = leases[subnet]
        backend = data["BackendData"]
        assert isinstance(backend, dict)
        expected[subnet] = (str(backend["VtepMAC"]), {str(data["PublicIP"])})
    return expected
