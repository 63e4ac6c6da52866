"""VXLAN data-plane benchmark: cold start with N remote leases, lease-change-to-kernel latency, RSS, idle CPU.

One real daemon (``Backend.Type vxlan``) runs in a node namespace of the
data-plane test bed (root needed; nothing outside the namespaces it creates is
touched). N leases of other nodes, each on its own 24 h etcd lease as real
nodes' leases are, are in etcd before it starts.

* cold start: from launching the daemon to all N peers' neighbour, FDB and
  route entries in its kernel, split into start-up (launch to subnet.env:
  imports, etcd, lease) and programming (subnet.env to the last entry:
  listing the N leases, planning, writing 3N entries). Goal: 1000 peers
  programmed in 2 s or less.
* latency: one lease change at a time (a new node, a node's new VtepMAC, a
  node leaving) from the etcd write to the kernel's last entry for it, seen
  through netlink notifications; p50 and p99. Goal: p99 100 ms or less.
* RSS and CPU of the idle daemon with N peers, over a window that includes
  a full resync. Goal: idle CPU under 1%.

Run (as root): .venv/bin/python benchmarks/vxlan_dataplane.py [--leases 1000] [--changes 200] [--idle-window 45]
Prints a table, then one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

for _name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
    os.environ.pop(_name, None)

from proc_stats import cpu_seconds, rss_mib  # noqa: E402

from flannel_alivpc.clients.netlink import Netlink, NetlinkMonitor  # noqa: E402
from flannel_alivpc.core.network import LeaseAttrs, subnet_key  # noqa: E402
from flannel_alivpc.core.vxlan import random_vtep_mac, vxlan_backend_data  # noqa: E402
from flannel_alivpc.testbed.dataplane import (  # noqa: E402
    DataplaneCluster,
    DataplaneNode,
    emergency_cleanup,
    is_root,
    network_config,
)

NETWORK = "172.16.0.0/12"


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


class Peers:
    """The fake remote nodes: subnet -> (PublicIP, VtepMAC), written to etcd as their daemons would."""

    def __init__(self, cluster: DataplaneCluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.leases: dict[IPv4Network, tuple[IPv4Address, str]] = {}
        self.taken: set[IPv4Network] = set()
        """Subnets that are not ours to write: the daemon's own lease."""
        self._free = iter(list(IPv4Network(NETWORK).subnets(new_prefix=24))[1:])
        self._address = iter(IPv4Network("10.200.0.0/16").hosts())

    def key(self, subnet: IPv4Network) -> str:
        return f"{self.cluster.prefix}/subnets/{subnet_key(subnet)}"

    def write(self, etcd: object, subnet: IPv4Network, public_ip: IPv4Address, mac: str) -> None:
        value = LeaseAttrs(public_ip, "vxlan", vxlan_backend_data(1, mac)).to_json()
        lease_id = etcd.grant(24 * 3600)  # type: ignore[attr-defined]
        etcd.put(self.key(subnet), value, lease_id=lease_id)  # type: ignore[attr-defined]
        self.leases[subnet] = (public_ip, mac)

    def next_free(self) -> IPv4Network:
        subnet = next(self._free)
        while subnet in self.taken:
            subnet = next(self._free)
        return subnet

    def new(self, etcd: object) -> IPv4Network:
        subnet = self.next_free()
        self.write(etcd, subnet, next(self._address), random_vtep_mac(self.rng))
        return subnet


def _wait_event(monitor: NetlinkMonitor, kind: str, action: str, key: str, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        event = monitor.next(left)
        if event is not None and (event.kind, event.action, event.key) == (kind, action, key):
            return time.monotonic()
    return None


def _drain(monitor: NetlinkMonitor) -> None:
    while monitor.next(0.001) is not None:
        pass


def run(leases: int, changes: int, idle_window: float, resync: float, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bench-vxlan-") as tmp, \
            DataplaneCluster(Path(tmp), resync_interval=resync, serve_cloud=False) as cluster:
        cluster.start_dataplane(classic=1, config=json.dumps(
            {**json.loads(network_config("vxlan", NETWORK)), "SubnetLen": 24}))
        node: DataplaneNode = cluster.dp_nodes[0]
        node.extra_args = os.environ.get("BENCH_DAEMON_ARGS", "").split()
        peers = Peers(cluster, rng)
        with cluster.etcd_client() as etcd:
            for _ in range(leases):
                peers.new(etcd)
        expected = {str(subnet) for subnet in peers.leases}
        with NetlinkMonitor(node.netns) as monitor:
            launched = time.monotonic()
            cluster.start_node(node)
            ready = None
            seen: set[str] = set()
            done = None
            while done is None:
                if ready is None and node.subnet_env.get("FLANNEL_SUBNET"):
                    ready = time.monotonic()
                event = monitor.next(0.005)
                if event is not None and event.kind == "route" and event.action == "new" and event.key in expected:
                    seen.add(event.key)
                    if len(seen) == len(expected):
                        done = time.monotonic()
                if time.monotonic() - launched > 60:
                    raise RuntimeError(f"only {len(seen)}/{leases} routes after 60 s:\n{node.log()[-3000:]}")
            if ready is None:
                ready = done
            peers.taken.add(cluster.subnet_of(node))
            with Netlink(netns=node.netns) as nl:
                device = nl.link("flannel.1")
                assert device is not None
                counts = (len(nl.neighbours(device.index)), len(nl.fdb(device.index)),
                          len(nl.routes(oif=device.index)))
            assert counts == (leases, leases, leases), f"kernel holds {counts}, expected {leases} of each"

            # -- latency: one change at a time --------------------------------------------------
            latencies: dict[str, list[float]] = {"add": [], "vtep-mac": [], "leave": []}
            missed = 0
            time.sleep(1.0)
            _drain(monitor)
            with cluster.etcd_client() as etcd:
                for n in range(changes):
                    kind = ("add", "vtep-mac", "leave")[n % 3]
                    if kind == "add":
                        subnet = peers.next_free()
                        started = time.monotonic()
                        peers.write(etcd, subnet, next(peers._address), random_vtep_mac(rng))
                        # the route is written last
                        at = _wait_event(monitor, "route", "new", str(subnet), 2.0)
                    elif kind == "vtep-mac":
                        subnet = rng.choice(sorted(peers.leases))
                        public_ip, old_mac = peers.leases[subnet]
                        started = time.monotonic()
                        peers.write(etcd, subnet, public_ip, random_vtep_mac(rng))
                        # new neighbour MAC and FDB entry first, the old MAC's FDB entry removed last
                        at = _wait_event(monitor, "fdb", "del", old_mac, 2.0)
                    else:
                        subnet = rng.choice(sorted(peers.leases))
                        del peers.leases[subnet]
                        started = time.monotonic()
                        etcd.delete(peers.key(subnet))
                        # route, FDB entry, then the neighbour entry last
                        at = _wait_event(monitor, "neighbour", "del", str(subnet.network_address), 2.0)
                    if at is None:
                        missed += 1
                    else:
                        latencies[kind].append(at - started)
                    time.sleep(0.02)
                    _drain(monitor)

        # -- idle ---------------------------------------------------------------------------------
        assert node.process is not None
        pid = node.process.pid
        time.sleep(2.0)
        cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
        time.sleep(idle_window)
        idle_cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before)
        rss = rss_mib(pid)
        if not node.running:
            raise RuntimeError(f"the daemon exited during the benchmark:\n{node.log()[-3000:]}")
        all_latencies = [v for values in latencies.values() for v in values]
        result: dict[str, object] = {
            "leases": leases,
            "cold_start_total_s": round(done - launched, 3),
            "cold_start_startup_s": round(ready - launched, 3),
            "cold_start_programming_s": round(done - ready, 3),
            "changes": changes,
            "changes_missed": missed,
            "latency_p50_ms": round(1000 * statistics.median(all_latencies), 1) if all_latencies else None,
            "latency_p99_ms": round(1000 * _percentile(all_latencies, 0.99), 1) if all_latencies else None,
            "latency_max_ms": round(1000 * max(all_latencies), 1) if all_latencies else None,
            "latency_by_change_p50_ms": {k: round(1000 * statistics.median(v), 1) for k, v in latencies.items() if v},
            "latency_by_change_p99_ms": {k: round(1000 * _percentile(v, 0.99), 1) for k, v in latencies.items()
                                         if v},
            "rss_mib": round(rss, 1),
            "idle_cpu_percent": round(100 * idle_cpu, 2),
            "idle_window_s": idle_window,
            "resync_interval_s": resync,
        }
        if os.environ.get("BENCH_KEEP_LOG"):
            Path(os.environ["BENCH_KEEP_LOG"]).write_text(node.log())
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leases", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--idle-window", type=float, default=45.0)
    parser.add_argument("--resync", type=float, default=30.0,
                        help="the daemon's --resync-interval (full kernel dump + plan), default 30 s")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not is_root():
        print("this benchmark builds network namespaces: run it as root", file=sys.stderr)
        return 2
    try:
        result = run(args.leases, args.changes, args.idle_window, args.resync, args.seed)
    finally:
        emergency_cleanup()
    goals = [
        ("cold start: peers programmed (s)", result["cold_start_programming_s"], "<= 2.0",
         float(result["cold_start_programming_s"]) <= 2.0),  # type: ignore[arg-type]
        ("cold start: daemon launch to all programmed (s)", result["cold_start_total_s"], "-", None),
        ("lease change -> kernel p50 (ms)", result["latency_p50_ms"], "-", None),
        ("lease change -> kernel p99 (ms)", result["latency_p99_ms"], "<= 100",
         result["latency_p99_ms"] is not None and float(result["latency_p99_ms"]) <= 100),  # type: ignore[arg-type]
        ("changes not seen within 2 s", result["changes_missed"], "0", result["changes_missed"] == 0),
        (f"RSS with {result['leases']} peers (MiB)", result["rss_mib"], "-", None),
        ("idle CPU (%)", result["idle_cpu_percent"], "< 1",
         float(result["idle_cpu_percent"]) < 1.0),  # type: ignore[arg-type]
    ]
    print(f"{'measure':<48} {'value':>10}  {'goal':>7}  met")
    for name, value, goal, met in goals:
        print(f"{name:<48} {value!s:>10}  {goal:>7}  {'' if met is None else ('yes' if met else 'NO')}")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
