"""``flannel-alivpc demo --dataplane``: real packets between pods of a mixed VPC/classic cluster.

Needs root: it builds the data-plane test bed (``testbed.dataplane``) in
network namespaces it creates and removes, never touching the host's own
network. VPC nodes reach each other through the route table (the router
namespace forwards by its Available entries), every pair involving a
classic node goes over flannel.1 VXLAN. It shows the TCP matrix between the
pods, what each kernel carries, then a classic node leaving and its entries
disappearing everywhere. Its temporary directory (the daemons' logs, etcd's
data) is removed at the end, unless ``--keep`` or a failure needs the logs.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from flannel_alivpc.testbed.dataplane import (
    SERVICE_IP,
    DataplaneCluster,
    DataplaneNode,
    emergency_cleanup,
    is_root,
    network_config,
)
from flannel_alivpc.testbed.demo import remove_workdir


def _matrix(cluster: DataplaneCluster, out: TextIO) -> bool:
    pods = cluster.pods()
    result = cluster.wait_connected(pods, timeout=20.0)
    kinds = {node.hostname: node.network_type for node in cluster.dp_nodes}
    first = max(len("TCP from \\ to"), *(len(f"{p.name} {p.ip}") for p in pods)) + 2
    cell = max(len("FAIL (table)"), *(len(p.name) for p in pods)) + 2
    out.write("  " + "TCP from \\ to".ljust(first) + "".join(p.name.ljust(cell) for p in pods) + "\n")
    for src in pods:
        cells = []
        for dst in pods:
            if src.node == dst.node:
                cells.append("-".ljust(cell))
                continue
            path = "table" if kinds[src.node] == kinds[dst.node] == "vpc" else "vxlan"
            cells.append(f"{'ok' if result[(src.name, dst.name)] else 'FAIL'} ({path})".ljust(cell))
        out.write("  " + f"{src.name} {src.ip}".ljust(first) + "".join(cells).rstrip() + "\n")
    return bool(result) and all(result.values())


def _kernels(cluster: DataplaneCluster, out: TextIO) -> None:
    routes = ", ".join(f"{dst} via {via}" for dst, via in sorted(cluster.router_routes().items())) or "none"
    out.write(f"  router (follows route table {cluster.route_table_id}): {routes}\n")
    for node in cluster.dp_nodes:
        entries = cluster.vxlan_entries(node)
        if entries.device is None:
            out.write(f"  {node.hostname:<6} no flannel.1 (nothing to reach over VXLAN: kernel untouched)\n")
            continue
        peers = []
        for subnet in sorted(entries.routes):
            mac, dsts, _ = entries.peer(subnet)
            peers.append(f"{subnet} -> {mac} @ {','.join(sorted(map(str, dsts)))}")
        out.write(f"  {node.hostname:<6} flannel.1 {entries.device.mac} MTU {entries.device.mtu}: "
                  f"{'; '.join(peers) or 'no peers'}\n")


def run_dataplane_demo(*, nodes: int = 3, keep: bool = False, timeout: float = 60.0,
                       out: TextIO = sys.stdout) -> int:
    if not is_root():
        out.write("demo --dataplane needs root: it builds network namespaces (run it with sudo)\n")
        return 2
    classic = max(1, nodes // 2)
    vpc = max(1, nodes - classic)
    workdir = Path(tempfile.mkdtemp(prefix="flannel-alivpc-dataplane-"))
    cluster = DataplaneCluster(workdir, route_delay=0.5, resync_interval=10.0)
    succeeded = False
    try:
        started = time.monotonic()
        cluster.start_dataplane(vpc=vpc, classic=classic, config=network_config("ali-vpc"))
        out.write(f"network namespaces {cluster.tag}-*: underlay bridge, router/services at {SERVICE_IP}, "
                  f"{vpc} VPC + {classic} classic nodes\n")
        cluster.start_all()
        cluster.wait_for_subnets(cluster.dp_nodes, timeout=timeout)
        for node in cluster.dp_nodes:
            env = node.subnet_env
            out.write(f"  {node.hostname:<6} {node.network_type:<8} eth0 {node.address!s:<16} "
                      f"subnet {env['FLANNEL_SUBNET']:<15} MTU {env['FLANNEL_MTU']}  pod {node.pods[0].ip}\n")
        out.write(f"daemons up, pods attached ({time.monotonic() - started:.1f}s)\n\n")
        ok = _matrix(cluster, out)
        out.write("\n")
        _kernels(cluster, out)
        leaving: DataplaneNode = [n for n in cluster.dp_nodes if n.network_type == "classic"][-1]
        gone = cluster.subnet_of(leaving)
        out.write(f"\nnode {leaving.hostname} leaves (daemon stopped, lease released, namespace removed)\n")
        cluster.remove_node(leaving)
        if not cluster.wait_until(lambda: all(gone not in cluster.vxlan_entries(n).routes
                                              for n in cluster.dp_nodes), timeout):
            out.write(f"entries for {gone} were not removed within {timeout:.0f}s; logs in {workdir}\n")
            return 1
        out.write(f"its entries ({gone}) are gone from every node\n\n")
        _kernels(cluster, out)
        out.write("\n")
        ok = _matrix(cluster, out) and ok
        if keep:
            out.write(f"\nEverything keeps running. Look inside, e.g.:\n"
                      f"  ip netns exec {cluster.dp_nodes[0].netns} ip route\n"
                      f"  ip netns exec {cluster.dp_nodes[-1].netns} bridge fdb show dev flannel.1\n"
                      f"Daemon logs: {workdir}/*/daemon.log. Press Ctrl-C to stop and remove the namespaces.\n")
            out.flush()
            with contextlib.suppress(KeyboardInterrupt):
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
        out.write("demo finished: every pair of pods talked over TCP\n" if ok
                  else f"some pods could not talk; logs in {workdir}\n")
        succeeded = ok
        return 0 if ok else 1
    finally:
        cluster.close()
        emergency_cleanup()
        remove_workdir(workdir, keep=keep, succeeded=succeeded, out=out)
