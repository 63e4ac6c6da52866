"""A whole flannel-alivpc cluster on one machine: the cloud emulator, a real etcd
server and simulated nodes, each the real route daemon in its own process.

Each node is an emulated ECS instance; its daemon reads that instance's
metadata (``/meta/<instance-id>``), uses ``lo`` as its interface with the
instance's private IP as PublicIP, and writes its own subnet.env. All of them
share the host's network namespace, so they never write iptables rules
(``--iptables-forward-rules=false``; a VXLAN device on ``lo`` is refused by
the daemon itself): the host is left as it was. Used by
``flannel-alivpc demo``, the end-to-end tests and the benchmarks.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flannel_alivpc.clients.aliyun_sdk import AliyunApi
from flannel_alivpc.clients.credentials import StaticCredentials
from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.core.network import DEFAULT_PREFIX, LEASE_TTL, LeaseAttrs, parse_lease_value
from flannel_alivpc.emulator.server import Emulator, Topology
from flannel_alivpc.emulator.state import Settings
from flannel_alivpc.routed.config import DaemonConfig
from flannel_alivpc.routed.inspect import TableView, collect_route_views
from flannel_alivpc.testbed.etcd_server import EtcdServer, free_port

DEFAULT_NETWORK_CONFIG = '{"Network": "10.244.0.0/16", "Backend": {"Type": "ali-vpc"}}'
ACCESS_KEY_ID = "testbed-ak"


@dataclass
class Node:
    hostname: str
    instance_id: str
    private_ip: str
    workdir: Path
    healthz_port: int = 0
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "daemon.log"

    @property
    def subnet_file(self) -> Path:
        return self.workdir / "subnet.env"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthz(self, path: str = "/healthz") -> tuple[int, str]:
        """GET one of the daemon's health endpoints: (status, body); (0, "") when it does not answer."""
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    f"http://127.0.0.1:{self.healthz_port}{path}", timeout=2) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode()
        except OSError:
            return 0, ""

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class LocalCluster:
    def __init__(self, workdir: Path, *, route_delay: float = 1.0, writer_lock_ttl: int = 6,
                 resync_interval: float = 20.0, prefix: str = DEFAULT_PREFIX) -> None:
        self.workdir = workdir
        self.prefix = prefix
        self.secret = secrets.token_urlsafe(16)
        self.emulator = Emulator(settings=Settings(route_delay=route_delay), access_key_id=ACCESS_KEY_ID,
                                 access_key_secret=self.secret)
        self.etcd = EtcdServer(data_dir=workdir / "etcd")
        self.writer_lock_ttl = writer_lock_ttl
        self.resync_interval = resync_interval
        self.nodes: list[Node] = []
        self.topology: Topology | None = None
        self.network_config: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, instances: int, network_config: str | None = DEFAULT_NETWORK_CONFIG) -> Topology:
        self.emulator.start()
        self.topology = self.emulator.bootstrap(instances=instances)
        self.etcd.start()
        self.network_config = network_config
        if network_config is not None:
            with self.etcd_client() as etcd:
                etcd.put(f"{self.prefix}/config", network_config)
        for instance_id in self.topology.instance_ids:
            self.add_node(instance_id)
        return self.topology

    def close(self) -> None:
        # Signal every daemon first, then wait: they shut down in parallel.
        for node in self.nodes:
            if node.running and node.process is not None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            self.stop_node(node)
        self.etcd.cleanup()
        self.emulator.stop()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def route_table_id(self) -> str:
        assert self.topology is not None
        return self.topology.route_table_id

    @property
    def vpc_id(self) -> str:
        assert self.topology is not None
        return self.topology.vpc_id

    def etcd_client(self) -> EtcdClient:
        return EtcdClient([self.etcd.endpoint])

    def add_node(self, instance_id: str) -> Node:
        inst = self.emulator.state.instances[instance_id]
        node_dir = self.workdir / inst.hostname
        node_dir.mkdir(parents=True, exist_ok=True)
        node = Node(inst.hostname, instance_id, inst.private_ip, node_dir, healthz_port=free_port())
        self.nodes.append(node)
        return node

    def new_instance(self, hostname: str) -> Node:
        """A new running instance in the VPC, ready to get a daemon."""
        assert self.topology is not None
        inst = self.emulator.state.create_instance(hostname=hostname, vswitch_id=self.topology.vswitch_id)
        return self.add_node(inst.instance_id)

    def node_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        # Credentials travel in the environment, never on the command line.
        env.update(ACCESS_KEY_ID=ACCESS_KEY_ID, ACCESS_KEY_SECRET=self.secret)
        return env

    def daemon_args(self, node: Node) -> list[str]:
        return [
            sys.executable, "-m", "flannel_alivpc",
            *self.lease_source_args(),
            # Simulated nodes share the host's network namespace: they must not touch its firewall.
            "--iptables-forward-rules=false",
            "--iface", "lo", "--public-ip", node.private_ip,
            "--metadata-url", f"{self.emulator.endpoint}/meta/{node.instance_id}",
            "--api-endpoint", self.emulator.endpoint,
            "--subnet-file", str(node.subnet_file),
            "--writer-lock-ttl", str(self.writer_lock_ttl),
            "--resync-interval", str(self.resync_interval),
            "--healthz-ip", "127.0.0.1", "--healthz-port", str(node.healthz_port),
            *node.extra_args,
        ]

    def start_node(self, node: Node) -> None:
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(self.daemon_args(node), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env={**self.node_env(), **node.env},
                                            start_new_session=True)

    def start_all(self) -> None:
        for node in self.nodes:
            if not node.running:
                self.start_node(node)

    def stop_node(self, node: Node, *, kill: bool = False) -> int | None:
        """SIGTERM (or SIGKILL) the node's daemon; returns its exit code."""
        process = node.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    # -- leases ---------------------------------------------------------------------------------

    def lease_key_of(self, node: Node) -> str | None:
        """The etcd key of the lease whose PublicIP is the node's address."""
        with self.etcd_client() as etcd:
            kvs, _ = etcd.get_prefix(f"{self.prefix}/subnets/")
        for kv in kvs:
            try:
                if str(parse_lease_value(kv.value).public_ip) == node.private_ip:
                    return kv.key
            except ValueError:
                continue
        return None

    def release_lease(self, node: Node) -> None:
        """Delete the node's lease, as its expiry or a decommissioning would."""
        key = self.lease_key_of(node)
        if key is not None:
            with self.etcd_client() as etcd:
                etcd.delete(key)

    def leave(self, node: Node) -> None:
        """The node leaves the cluster: its daemon stops and its lease goes (as decommissioning does)."""
        self.stop_node(node)
        self.release_lease(node)

    def describe_lease_source(self) -> list[str]:
        """What the demo prints about where the leases live."""
        return [f"etcd             {self.etcd.endpoint}",
                f"network config   {self.prefix}/config = {self.network_config}"]

    def lease_source_args(self) -> list[str]:
        """The daemon's flags that say where the leases live."""
        return ["--etcd-endpoints", self.etcd.endpoint, "--etcd-prefix", self.prefix]

    def inspect_args(self) -> list[str]:
        """The flags ``routes``/``leases`` need to look at this cluster's leases."""
        return ["--etcd-endpoints", self.etcd.endpoint]

    # -- observation ------------------------------------------------------------------------------

    def inspect_config(self) -> DaemonConfig:
        return DaemonConfig(etcd_endpoints=[self.etcd.endpoint], etcd_prefix=self.prefix,
                            api_endpoint=self.emulator.endpoint, region=self.emulator.state.settings.region,
                            metadata_url=f"{self.emulator.endpoint}/meta/{self.nodes[0].instance_id}")

    def views(self) -> list[TableView]:
        """What ``flannel-alivpc routes`` shows, through the real clients."""
        return collect_route_views(self.inspect_config(), self.vpc_id, self.node_env())

    def table_entries(self, table_id: str | None = None) -> dict[str, tuple[str, str, str]]:
        """The emulator's view of a table: destination -> (next hop type, next hop id, status)."""
        state = self.emulator.state
        with state.locked() as now:
            table = state.route_tables[table_id or self.route_table_id]
            return {e.destination: (e.next_hop_type, e.next_hop_id, e.status(now))
                    for e in table.entries.values() if e.entry_type == "Custom"}

    def wait_until(self, condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(interval)
        return condition()

    def instance_routes(self) -> dict[str, str]:
        """Available Custom entries whose next hop is an instance: destination -> instance id."""
        return {dest: hop for dest, (kind, hop, status) in self.table_entries().items()
                if kind == "Instance" and status == "Available"}

    def expected_routes(self) -> dict[str, str]:
        """destination -> instance id for every lease in etcd that names an instance."""
        with self.etcd_client() as etcd:
            kvs, _ = etcd.get_prefix(f"{self.prefix}/subnets/")
        expected = {}
        for kv in kvs:
            try:
                attrs = parse_lease_value(kv.value)
            except ValueError:
                continue
            subnet = kv.key.rsplit("/", 1)[-1]
            address, _, length = subnet.partition("-")
            if attrs.instance_id:
                expected[f"{address}/{length}"] = attrs.instance_id
        return expected

    def converged(self) -> bool:
        """Every running node has a lease, every lease its Available entry, and no other
        instance entry lies inside the Network."""
        network = ipaddress.ip_network(json.loads(self.network_config or "{}").get("Network", "0.0.0.0/0"))
        routes = {dest: hop for dest, hop in self.instance_routes().items()
                  if ipaddress.ip_network(dest).subnet_of(network)}  # type: ignore[arg-type]
        expected = self.expected_routes()
        running = {n.instance_id for n in self.nodes if n.running}
        return bool(expected) and running <= set(expected.values()) and routes == expected and all(
            status == "Available" for (_, _, status) in self.table_entries().values())


# -- flannel's own ali-vpc backend (v0.8-v0.19), for rolling-upgrade tests --------------------------


def join_as_old_flanneld(cluster: LocalCluster, node: Node, subnet: str) -> None:
    """Put ``node`` in the cluster the way flanneld's ali-vpc backend did, with no daemon of ours.

    The lease is what that backend acquired (``{"PublicIP": ..., "PublicIPv6": null}``,
    no BackendType, no BackendData) on a 24 h etcd lease; the route entry is what
    its recreateRoute made through the ECS API (2014-05-26): DestinationCidrBlock,
    NextHopType Instance, NextHopId, an empty ClientToken, no name, no description.
    """
    network = ipaddress.ip_network(subnet)
    key = f"{cluster.prefix}/subnets/{network.network_address}-{network.prefixlen}"
    value = LeaseAttrs(public_ip=ipaddress.IPv4Address(node.private_ip)).to_json()
    with cluster.etcd_client() as etcd:
        if etcd.create_if_absent(key, value, LEASE_TTL) is None:
            raise RuntimeError(f"{key} is already leased")
    api = AliyunApi(cluster.emulator.state.settings.region, cluster.emulator.endpoint,
                    StaticCredentials(ACCESS_KEY_ID, cluster.secret))
    api.call("ecs", "CreateRouteEntry", {"RouteTableId": cluster.route_table_id, "DestinationCidrBlock": subnet,
                                         "NextHopType": "Instance", "NextHopId": node.instance_id,
                                         "ClientToken": ""})
