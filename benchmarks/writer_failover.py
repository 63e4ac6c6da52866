"""Writer failover benchmark: SIGKILL the route table's writer, time until another daemon writes.

For each lease source (etcd lock, Kubernetes Lease), a cluster of ``--nodes``
real daemons with ``--writer-lock-ttl T``; the writer (as its /healthz says)
is SIGKILLed ``--rounds`` times, each time restarted afterwards, and the time
from the kill until another daemon's /healthz reports itself the writer is
measured. Goal: within the lock's ttl / the Lease's duration T.

Run: .venv/bin/python benchmarks/writer_failover.py [--ttl 6] [--rounds 5] [--modes etcd,kube]
Prints a table, then one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

for _name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
    os.environ.pop(_name, None)

from flannel_alivpc.testbed.cluster import LocalCluster, Node  # noqa: E402
from flannel_alivpc.testbed.kube_cluster import KubeCluster  # noqa: E402


def _writer(cluster: LocalCluster) -> Node | None:
    for node in cluster.nodes:
        if node.running:
            status, body = node.healthz()
            if status and json.loads(body)["tables"].get(cluster.route_table_id, {}).get("writer"):
                return node
    return None


def run(mode: str, *, nodes: int, ttl: int, rounds: int) -> dict[str, object]:
    kind = KubeCluster if mode == "kube" else LocalCluster
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp, \
            kind(Path(tmp), route_delay=0.2, writer_lock_ttl=ttl) as cluster:
        cluster.start(instances=nodes)
        cluster.start_all()
        if not cluster.wait_until(cluster.converged, 60):
            raise RuntimeError("the cluster did not converge")
        times = []
        for _ in range(rounds):
            if not cluster.wait_until(lambda: _writer(cluster) is not None, 3 * ttl):
                raise RuntimeError("no writer")
            writer = _writer(cluster)
            assert writer is not None
            killed = time.monotonic()
            cluster.stop_node(writer, kill=True)
            if not cluster.wait_until(lambda: _writer(cluster) is not None, 5 * ttl, interval=0.05):
                raise RuntimeError("nobody took over")
            times.append(time.monotonic() - killed)
            cluster.start_node(writer)
            time.sleep(ttl / 2)
        return {"mode": mode, "ttl_s": ttl, "rounds": rounds, "failover_s_max": round(max(times), 2),
                "failover_s_median": round(statistics.median(times), 2),
                "within_ttl": max(times) <= ttl, "failover_s": [round(t, 2) for t in times]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="etcd,kube")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--ttl", type=int, default=6, help="--writer-lock-ttl (s)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = [run(mode, nodes=args.nodes, ttl=args.ttl, rounds=args.rounds) for mode in args.modes.split(",")]
    columns = ["mode", "ttl_s", "rounds", "failover_s_median", "failover_s_max", "within_ttl"]
    print("  ".join(f"{c:>18}" for c in columns))
    for row in results:
        print("  ".join(f"{row[c]!s:>18}" for c in columns))
    print(json.dumps({"benchmark": "writer_failover", "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
