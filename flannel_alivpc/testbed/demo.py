"""``flannel-alivpc demo``: the whole route daemon working on one machine.

A LocalCluster (cloud emulator, real etcd, N nodes each running the real
daemon in its own process) converges its route table live; then a node
leaves (daemon stopped, lease released) and its route is removed, while a
user's default route to a NAT gateway is left alone throughout. With
``--kube`` the same story in kube mode: the kube-apiserver stand-in instead
of etcd, Nodes with podCIDRs as the leases, their NetworkUnavailable
conditions, and a Node deleted. The
temporary directory (etcd's data, the daemons' logs) is removed at the end,
unless ``--keep``: then everything stays up, and the commands to inspect it are
printed with the full path of the flannel-alivpc command.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from flannel_alivpc.routed.inspect import TableView, render_routes
from flannel_alivpc.testbed.cluster import ACCESS_KEY_ID, LocalCluster
from flannel_alivpc.testbed.kube_cluster import KubeCluster


def flannel_alivpc_command() -> str:
    """How to run this very flannel-alivpc from a shell, whether or not its directory is on PATH."""
    script = Path(sys.executable).parent / "flannel-alivpc"
    if script.exists():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m flannel_alivpc"


def remove_workdir(workdir: Path, *, keep: bool, succeeded: bool, out: TextIO) -> None:
    """A demo's temporary directory goes, unless the user asked to keep it or a failure needs its logs."""
    if succeeded and not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        out.write(f"files kept in {workdir}\n")


class _Progress:
    """Redraws one line on a terminal; prints a line per change otherwise (pipes, CI)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()

    def wait(self, cluster: LocalCluster, what: str, done: Callable[[list[TableView]], bool],
             timeout: float) -> bool:
        started = time.monotonic()
        last = ""
        while True:
            views = cluster.views()
            counts: dict[str, int] = {}
            for view in views:
                for status in view.statuses:
                    counts[status.state.value] = counts.get(status.state.value, 0) + 1
            ok = counts.get("ok", 0)
            total = sum(counts.values())
            detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no routes yet"
            line = f"  {what}: [{'#' * ok}{'.' * (total - ok)}] {detail}"
            finished = done(views)
            elapsed = f"({time.monotonic() - started:4.1f}s)"
            if self.live:
                self.out.write(f"\r{line}  {elapsed}".ljust(78))
            elif line != last or finished:
                self.out.write(f"{line}  {elapsed}\n")
            last = line
            self.out.flush()
            if finished or time.monotonic() - started > timeout:
                if self.live:
                    self.out.write("\n")
                return finished
            time.sleep(0.3)


def _all_ok(expected: int) -> Callable[[list[TableView]], bool]:
    def check(views: list[TableView]) -> bool:
        return all(v.clean and len(v.statuses) == expected for v in views)

    return check


def _show_conditions(cluster: KubeCluster, timeout: float, out: TextIO) -> None:
    """Each Node's NetworkUnavailable, which the writer sets from the real route state."""
    cluster.wait_until(lambda: all((cluster.network_unavailable(n) or {}).get("status") == "False"
                                   for n in cluster.nodes), timeout)
    for node in cluster.nodes:
        condition = cluster.network_unavailable(node) or {}
        out.write(f"node {node.hostname:<8} NetworkUnavailable={condition.get('status', '?')} "
                  f"({condition.get('reason', 'not set')})\n")
    out.write("\n")


def run_demo(*, nodes: int = 3, route_delay: float = 1.0, keep: bool = False, timeout: float = 90.0,
             kube: bool = False, out: TextIO = sys.stdout) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="flannel-alivpc-demo-"))
    cluster = KubeCluster(workdir, route_delay=route_delay) if kube else LocalCluster(workdir, route_delay=route_delay)
    progress = _Progress(out)
    succeeded = False
    try:
        topology = cluster.start(instances=nodes)
        # A user's route that flannel-alivpc must never touch: the VPC's default route to a NAT gateway.
        cluster.emulator.state.add_custom_entry(topology.route_table_id, "0.0.0.0/0", "NatGateway", "ngw-demo")
        out.write(f"cloud emulator   {cluster.emulator.endpoint}  (VPC {topology.vpc_id}, route table "
                  f"{topology.route_table_id}, route delay {route_delay}s)\n")
        for line in cluster.describe_lease_source():
            out.write(line + "\n")
        cluster.start_all()
        for node in cluster.nodes:
            pid = node.process.pid if node.process else "-"
            out.write(f"node {node.hostname:<8} {node.instance_id}  {node.private_ip:<15} daemon pid {pid}\n")
        out.write("\n")
        if not progress.wait(cluster, "converging", _all_ok(nodes), timeout):
            out.write(f"routes did not converge within {timeout:.0f}s; daemon logs are in {workdir}\n")
            return 1
        out.write("\n")
        render_routes(cluster.views(), output="table", out=out)
        if isinstance(cluster, KubeCluster):
            _show_conditions(cluster, timeout, out)
        leaving = cluster.nodes[-1]
        out.write(f"node {leaving.hostname} leaves: its daemon stops and "
                  f"{'its Node is deleted' if kube else 'its lease is released'}\n")
        cluster.leave(leaving)
        if not progress.wait(cluster, "removing", _all_ok(nodes - 1), timeout):
            out.write(f"the stale route was not removed within {timeout:.0f}s; logs are in {workdir}\n")
            return 1
        out.write("\n")
        render_routes(cluster.views(), output="table", out=out)
        foreign = {dest: hop for dest, (kind, hop, _) in cluster.table_entries().items() if kind != "Instance"}
        for destination, hop in foreign.items():
            out.write(f"untouched: {destination} -> {hop}, a route flannel-alivpc does not own\n")
        if keep:
            command = flannel_alivpc_command()
            out.write(
                "\nEverything keeps running. Inspect it with:\n"
                f"  export ACCESS_KEY_ID={ACCESS_KEY_ID} ACCESS_KEY_SECRET='{cluster.secret}'"
                "  # the emulator's throwaway key\n"
                f"  {command} routes {shlex.join(cluster.inspect_args())} --api-endpoint "
                f"{cluster.emulator.endpoint} --region {cluster.emulator.state.settings.region} "
                f"--vpc-id {topology.vpc_id} -o wide\n"
                f"  {command} leases {shlex.join(cluster.inspect_args())} -o wide\n"
                f"Daemon logs: {workdir}/node-*/daemon.log. Press Ctrl-C to stop.\n")
            out.flush()
            with contextlib.suppress(KeyboardInterrupt):
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
        if "0.0.0.0/0" not in foreign:
            out.write("the NAT gateway's default route disappeared: that is a bug\n")
            return 1
        out.write("demo finished: routes followed the leases, nothing else in the table was touched\n")
        succeeded = True
        return 0
    finally:
        cluster.close()
        remove_workdir(workdir, keep=keep, succeeded=succeeded, out=out)
