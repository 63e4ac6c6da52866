"""Route daemon benchmark: convergence, write calls, steady-state API load, RSS and CPU.

For each N and each lease source (``--modes etcd,kube``), a cluster (cloud
emulator, ``--nodes`` real daemon processes, and a real etcd or the
kube-apiserver stand-in) first converges on its own nodes' leases; then N
more leases (for N more emulated instances) appear at once and the clock
starts: N lease keys written to etcd, or N Nodes created with a podCIDR and
the flannel annotations a daemon writes. It stops when every lease has its
Available entry.

Measured against the goals of the route-daemon issue:

* convergence time vs. the floor ceil(N/50) x D (50 entries per batch call,
  one change in flight per table, each settling after the route delay D);
  goal: within 1.25x;
* write calls (CreateRouteEntries) vs. the minimum ceil(N/50); goal: 1.1x;
* steady-state API calls of the whole cluster per resync vs. the table's
  page count (DescribeRouteEntryList pages of 100); goal: no more;
* RSS and CPU of the daemons while idle with N leases; goal: <= 50 MB, <= 0.3 %;
* kube mode: the time until every Node's NetworkUnavailable is False, and the
  Kubernetes requests while idle: no Node list at all (the one list per daemon
  happens at start; watches are resumed, never re-listed).

Run: .venv/bin/python benchmarks/route_convergence.py [--leases 100,1000] [--modes etcd,kube] [--route-delay 1]
Prints a table, then one JSON document.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

for _name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
    os.environ.pop(_name, None)

from proc_stats import cpu_seconds, rss_mib  # noqa: E402

from flannel_alivpc.core.kube_subnets import DEFAULT_ANNOTATION_PREFIX  # noqa: E402
from flannel_alivpc.core.network import LeaseAttrs, subnet_key  # noqa: E402
from flannel_alivpc.emulator.state import Instance  # noqa: E402
from flannel_alivpc.testbed.cluster import LocalCluster  # noqa: E402
from flannel_alivpc.testbed.kube_cluster import KubeCluster  # noqa: E402

NETWORK_CONFIG = '{"Network": "10.0.0.0/8", "SubnetLen": 24, "Backend": {"Type": "ali-vpc"}}'


def _calls(cluster: LocalCluster, action: str) -> int:
    return sum(cluster.emulator.faults.counters().get(action, {}).values())


def _writer_passes(cluster: LocalCluster) -> int:
    """Reconcile passes of the route table so far, summed over the nodes (only the writer makes any)."""
    pattern = re.compile(r'^flannel_alivpc_reconcile_duration_seconds_count\{table="([^"]+)"\} (\S+)$', re.M)
    total = 0.0
    for node in cluster.nodes:
        _, text = node.healthz("/metrics")
        total += sum(float(count) for table, count in pattern.findall(text) if table == cluster.route_table_id)
    return int(total)


def _write_etcd_leases(cluster: LocalCluster, leases: list[tuple[Instance, IPv4Network]], vpc_id: str) -> None:
    with cluster.etcd_client() as etcd:
        for inst, subnet in leases:
            attrs = LeaseAttrs(public_ip=IPv4Address(inst.private_ip), backend_type="ali-vpc",
                               backend_data={"InstanceId": inst.instance_id, "NetworkType": "vpc", "VpcId": vpc_id})
            etcd.put(f"{cluster.prefix}/subnets/{subnet_key(subnet)}", attrs.to_json())


def _create_nodes(cluster: KubeCluster, leases: list[tuple[Instance, IPv4Network]], vpc_id: str) -> None:
    """N Nodes as N running daemons would leave them: podCIDR assigned, flannel annotations published."""
    nodes = cluster.kube.resource("v1", "nodes")
    for inst, subnet in leases:
        data = {"InstanceId": inst.instance_id, "NetworkType": "vpc", "VpcId": vpc_id}
        cluster.kube.create(nodes, "", {
            "metadata": {"name": inst.hostname, "annotations": {
                f"{DEFAULT_ANNOTATION_PREFIX}/kube-subnet-manager": "true",
                f"{DEFAULT_ANNOTATION_PREFIX}/backend-type": "ali-vpc",
                f"{DEFAULT_ANNOTATION_PREFIX}/backend-data": json.dumps(data, separators=(",", ":")),
                f"{DEFAULT_ANNOTATION_PREFIX}/public-ip": inst.private_ip}},
            "spec": {"podCIDR": str(subnet), "podCIDRs": [str(subnet)]},
        })


def _kube_requests(cluster: LocalCluster) -> dict[str, int]:
    if not isinstance(cluster, KubeCluster):
        return {}
    counts = {"total": 0, "node_lists": 0, "node_watches": 0}
    for record in cluster.kube.requests:
        counts["total"] += 1
        if record.method == "GET" and record.path == "/api/v1/nodes":
            counts["node_watches" if "watch=true" in record.query else "node_lists"] += 1
    return counts


def _all_nodes_available(cluster: KubeCluster) -> bool:
    for obj in cluster.kube.objects("v1", "nodes"):
        conditions = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or ()}
        if (conditions.get("NetworkUnavailable") or {}).get("status") != "False":
            return False
    return True


def run_one(n: int, *, mode: str, nodes: int, route_delay: float, resync: float,
            idle_window: float) -> dict[str, float | str]:
    kind = KubeCluster if mode == "kube" else LocalCluster
    with tempfile.TemporaryDirectory(prefix="bench-routes-") as tmp, \
            kind(Path(tmp), route_delay=route_delay, resync_interval=resync) as cluster:
        topo = cluster.start(instances=nodes, network_config=NETWORK_CONFIG)
        state = cluster.emulator.state
        state.settings.route_quota = n + nodes + 10
        cluster.start_all()
        if not cluster.wait_until(cluster.converged, 120):
            raise RuntimeError("the cluster's own nodes did not converge")
        extra = [state.create_instance(hostname=f"bench-{i}", vswitch_id=topo.vswitch_id) for i in range(n)]
        taken = set(cluster.expected_routes())
        subnets = (s for s in IPv4Network("10.0.0.0/8").subnets(new_prefix=24) if str(s) not in taken)
        creates_before = _calls(cluster, "CreateRouteEntries")
        leases = list(zip(extra, subnets, strict=False))
        started = time.monotonic()
        if isinstance(cluster, KubeCluster):
            _create_nodes(cluster, leases, topo.vpc_id)
        else:
            _write_etcd_leases(cluster, leases, topo.vpc_id)
        written = time.monotonic() - started
        if not cluster.wait_until(cluster.converged, 60 + 5 * math.ceil(n / 50) * max(route_delay, 0.2),
                                  interval=0.05):
            raise RuntimeError(f"N={n}: did not converge")
        converged = time.monotonic() - started
        conditions: dict[str, float | str] = {}
        if isinstance(cluster, KubeCluster):
            # The writer tells every Node (NetworkUnavailable=False) off its reconcile thread; idle starts after.
            if not cluster.wait_until(lambda: _all_nodes_available(cluster), 300, interval=0.5):
                raise RuntimeError(f"N={n}: Node conditions did not settle")
            conditions["conditions_settled_s"] = round(time.monotonic() - started, 3)
        writes = _calls(cluster, "CreateRouteEntries") - creates_before
        # Idle: count every API call of the whole cluster over a few resync periods.
        passes_before = _writer_passes(cluster)
        kube_before = _kube_requests(cluster)
        cluster.emulator.faults.reset_counters()
        pids = [node.process.pid for node in cluster.nodes if node.process is not None]
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(idle_window)
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        idle_calls = sum(sum(v.values()) for v in cluster.emulator.faults.counters().values())
        kube_after = _kube_requests(cluster)
        resyncs = max(1, _writer_passes(cluster) - passes_before)
        entries = len(cluster.table_entries()) + 2  # + the System entries
        floor = math.ceil(n / 50) * route_delay
        kube: dict[str, float | str] = {}
        if kube_after:
            kube = {
                "kube_node_lists_per_daemon": round(kube_after["node_lists"] / nodes, 2),
                "kube_node_watches_per_daemon": round(kube_after["node_watches"] / nodes, 2),
                "kube_idle_node_lists": kube_after["node_lists"] - kube_before["node_lists"],
                "kube_idle_requests_per_minute": round(
                    (kube_after["total"] - kube_before["total"]) * 60 / idle_window, 1),
            }
        return {
            **conditions,
            "mode": mode,
            "leases": n,
            "route_delay_s": route_delay,
            "lease_write_s": round(written, 3),
            "convergence_s": round(converged, 3),
            "floor_s": floor,
            "convergence_vs_floor": round(converged / floor, 3) if floor else 0.0,
            "write_calls": writes,
            "min_write_calls": math.ceil(n / 50),
            "write_calls_vs_min": round(writes / math.ceil(n / 50), 3),
            "idle_resyncs": resyncs,
            "idle_calls_per_resync": round(idle_calls / resyncs, 2),
            "table_pages": math.ceil(entries / 100),
            "idle_calls_per_minute": round(idle_calls * 60 / idle_window, 1),
            "daemon_rss_mib_max": round(max(rss_mib(pid) for pid in pids), 1),
            "daemon_cpu_percent_idle": round(100 * cpu / idle_window / len(pids), 2),
            **kube,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leases", default="100,1000", help="comma-separated N values")
    parser.add_argument("--modes", default="etcd,kube", help="lease sources to measure: etcd, kube or both")
    parser.add_argument("--nodes", type=int, default=3, help="real daemon processes")
    parser.add_argument("--route-delay", type=float, default=1.0, help="emulator route delay D (s)")
    parser.add_argument("--resync", type=float, default=10.0, help="daemon resync interval (s)")
    parser.add_argument("--idle-window", type=float, default=30.0, help="seconds of idle measurement")
    args = parser.parse_args()
    results = [run_one(int(n), mode=mode, nodes=args.nodes, route_delay=args.route_delay, resync=args.resync,
                       idle_window=args.idle_window)
               for mode in args.modes.split(",") for n in args.leases.split(",")]
    columns = ["mode", "leases", "convergence_s", "floor_s", "convergence_vs_floor", "write_calls", "min_write_calls",
               "idle_calls_per_resync", "table_pages", "daemon_rss_mib_max", "daemon_cpu_percent_idle"]
    columns += ["conditions_settled_s", "kube_node_watches_per_daemon", "kube_idle_node_lists",
                "kube_idle_requests_per_minute"]
    print("  ".join(f"{c:>22}" for c in columns))
    for row in results:
        print("  ".join(f"{row.get(c, '-')!s:>22}" for c in columns))
    print(json.dumps({"benchmark": "route_convergence", "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
