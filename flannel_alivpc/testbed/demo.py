"""``flannel-alivpc demo``: the whole route daemon working on one machine.

It starts the cloud emulator (in this process), a real etcd server, writes the
flannel network config, and runs N simulated nodes, each the real daemon in
its own process pointed at its own instance's metadata. It shows the route
table converging live, then a node leaving (daemon stopped, lease gone) and
its route removed, while a user's default route to a NAT gateway is left
alone throughout. With ``--keep`` everything stays up and the commands to
inspect it are printed.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.core.network import DEFAULT_PREFIX
from flannel_alivpc.emulator.server import Emulator
from flannel_alivpc.emulator.state import Settings
from flannel_alivpc.routed.config import DaemonConfig
from flannel_alivpc.routed.inspect import TableView, collect_route_views, render_routes
from flannel_alivpc.testbed.etcd_server import EtcdServer

NETWORK_CONFIG = '{"Network": "10.244.0.0/16", "Backend": {"Type": "ali-vpc"}}'


@dataclass
class DemoNode:
    hostname: str
    instance_id: str
    private_ip: str
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "daemon.log"


class Demo:
    def __init__(self, *, nodes: int, route_delay: float, out: TextIO, workdir: Path) -> None:
        self.out = out
        self.workdir = workdir
        self.secret = secrets.token_urlsafe(16)
        self.emulator = Emulator(settings=Settings(route_delay=route_delay), access_key_id="demo-ak",
                                 access_key_secret=self.secret)
        self.etcd = EtcdServer(data_dir=workdir / "etcd")
        self.node_count = nodes
        self.nodes: list[DemoNode] = []
        self.vpc_id = ""
        self.route_table_id = ""
        self.live = out.isatty()

    # -- set-up ----------------------------------------------------------------------------

    def start(self) -> None:
        self.emulator.start()
        topology = self.emulator.bootstrap(instances=self.node_count)
        self.vpc_id = topology.vpc_id
        self.route_table_id = topology.route_table_id
        # A user's route that flannel-alivpc must never touch: the VPC's default route to a NAT gateway.
        self.emulator.state.add_custom_entry(topology.route_table_id, "0.0.0.0/0", "NatGateway", "ngw-demo")
        self._say(f"cloud emulator   {self.emulator.endpoint}  (VPC {topology.vpc_id}, "
                  f"route table {topology.route_table_id}, route delay {self.emulator.state.settings.route_delay}s)")
        self.etcd.start()
        self._say(f"etcd             {self.etcd.endpoint}")
        with EtcdClient([self.etcd.endpoint]) as etcd:
            etcd.put(f"{DEFAULT_PREFIX}/config", NETWORK_CONFIG)
        self._say(f"network config   {DEFAULT_PREFIX}/config = {NETWORK_CONFIG}")
        for instance_id in topology.instance_ids:
            inst = self.emulator.state.instances[instance_id]
            node_dir = self.workdir / inst.hostname
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(DemoNode(inst.hostname, instance_id, inst.private_ip, node_dir))
        for node in self.nodes:
            self.start_node(node)
        self._say("")

    def node_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        # Credentials travel in the environment, never on the command line.
        env.update(ACCESS_KEY_ID="demo-ak", ACCESS_KEY_SECRET=self.secret)
        return env

    def start_node(self, node: DemoNode) -> None:
        args = [
            sys.executable, "-m", "flannel_alivpc",
            "--etcd-endpoints", self.etcd.endpoint,
            "--iface", "lo", "--public-ip", node.private_ip,
            "--metadata-url", f"{self.emulator.endpoint}/meta/{node.instance_id}",
            "--api-endpoint", self.emulator.endpoint,
            "--subnet-file", str(node.workdir / "subnet.env"),
            "--writer-lock-ttl", "6", "--resync-interval", "20",
        ]
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.node_env(), start_new_session=True)
        self._say(f"node {node.hostname:<8} {node.instance_id}  {node.private_ip:<15} daemon pid {node.process.pid}")

    def stop_node(self, node: DemoNode) -> None:
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()

    def close(self) -> None:
        for node in self.nodes:
            self.stop_node(node)
        self.etcd.cleanup()
        self.emulator.stop()

    # -- observation ---------------------------------------------------------------------------

    def config(self) -> DaemonConfig:
        return DaemonConfig(etcd_endpoints=[self.etcd.endpoint], api_endpoint=self.emulator.endpoint,
                            region=self.emulator.state.settings.region,
                            metadata_url=f"{self.emulator.endpoint}/meta/{self.nodes[0].instance_id}")

    def views(self) -> list[TableView]:
        return collect_route_views(self.config(), self.vpc_id, self.node_env())

    def wait_for(self, what: str, done: Callable[[list[TableView]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        last_line = ""
        while True:
            views = self.views()
            counts: dict[str, int] = {}
            for view in views:
                for status in view.statuses:
                    counts[status.state.value] = counts.get(status.state.value, 0) + 1
            ok = counts.get("ok", 0)
            total = sum(counts.values())
            bar = "#" * ok + "." * (total - ok)
            detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no routes yet"
            line = f"  {what}: [{bar:<{max(total, 1)}}] {detail}"
            finished = done(views)
            if self.live:
                self.out.write(f"\r{line}  ({time.monotonic() - started:4.1f}s)".ljust(78))
            elif line != last_line or finished:
                # Not a terminal (piped, CI): one line per change instead of redrawing.
                self.out.write(f"{line}  ({time.monotonic() - started:4.1f}s)\n")
            last_line = line
            self.out.flush()
            if finished or time.monotonic() > deadline:
                if self.live:
                    self.out.write("\n")
                return finished
            time.sleep(0.3)

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def _all_ok(expected: int) -> Callable[[list[TableView]], bool]:
    def check(views: list[TableView]) -> bool:
        return all(v.clean and len(v.statuses) == expected for v in views)

    return check


def run_demo(*, nodes: int = 3, route_delay: float = 1.0, keep: bool = False, timeout: float = 90.0,
             out: TextIO = sys.stdout) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="flannel-alivpc-demo-"))
    demo = Demo(nodes=nodes, route_delay=route_delay, out=out, workdir=workdir)
    try:
        demo.start()
        if not demo.wait_for("converging", _all_ok(nodes), timeout):
            out.write(f"routes did not converge within {timeout:.0f}s; daemon logs are in {workdir}\n")
            return 1
        out.write("\n")
        render_routes(demo.views(), output="table", out=out)
        leaving = demo.nodes[-1]
        out.write(f"node {leaving.hostname} leaves: its daemon stops and its lease is released\n")
        demo.stop_node(leaving)
        with EtcdClient([demo.etcd.endpoint]) as etcd:
            kvs, _ = etcd.get_prefix(f"{DEFAULT_PREFIX}/subnets/")
            for kv in kvs:
                if f'"{leaving.private_ip}"' in kv.value.decode(errors="replace"):
                    etcd.delete(kv.key)
        if not demo.wait_for("removing", _all_ok(nodes - 1), timeout):
            out.write(f"the stale route was not removed within {timeout:.0f}s; logs are in {workdir}\n")
            return 1
        out.write("\n")
        render_routes(demo.views(), output="table", out=out)
        if keep:
            out.write(
                "Everything keeps running. Inspect it with:\n"
                f"  export ACCESS_KEY_ID=demo-ak ACCESS_KEY_SECRET='{demo.secret}'  # the emulator's throwaway key\n"
                f"  flannel-alivpc routes --etcd-endpoints {demo.etcd.endpoint} --api-endpoint {demo.emulator.endpoint}"
                f" --region {demo.emulator.state.settings.region} --vpc-id {demo.vpc_id}\n"
                f"  flannel-alivpc leases --etcd-endpoints {demo.etcd.endpoint}\n"
                f"Daemon logs: {workdir}/node-*/daemon.log. Press Ctrl-C to stop.\n")
            out.flush()
            try:
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
            except KeyboardInterrupt:
                pass
        table = demo.emulator.state.route_tables[demo.route_table_id]
        foreign = [e for e in table.entries.values() if e.next_hop_type != "Instance" and e.entry_type == "Custom"]
        for entry in foreign:
            out.write(f"untouched: {entry.destination} -> {entry.next_hop_id} ({entry.next_hop_type}), "
                      "a route flannel-alivpc does not own\n")
        out.write("demo finished: routes followed the leases, nothing else in the table was touched\n")
        return 0 if foreign else 1
    finally:
        demo.close()
