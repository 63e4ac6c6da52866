"""A data-plane test bed: real kernels, network namespaces, real daemons, TCP between pods.

Everything lives in network namespaces this module creates (root needed);
nothing is connected to the host's namespace, so no packet can leave them.
Per cluster (names ``fatb-<pid>-<n>-<role>``):

* ``fab``: the underlay, a bridge ``br0`` every other namespace is plugged into;
* ``gw``: the VPC vRouter and the cloud's service address. It owns the vSwitch
  gateway (192.168.15.253/20) and the classic network's gateway (10.0.0.1/24)
  and forwards between them; its kernel routes follow the emulator's route
  table (``emulator.router.RouterSync``: Available Instance entries become
  ``dst via <instance private IP>``), so pods on VPC nodes talk only through
  routes the daemons really programmed. On SERVICE_IP it serves the emulator
  (API and metadata on port 80, metadata answered by the caller's source
  address, as on ECS) and relays port 2379 to the suite's etcd (in kube
  mode, ``KubeDataplaneCluster``, port 6443 to the kube-apiserver stand-in
  instead);
* one namespace per node, its ``eth0`` on the underlay with the instance's
  private IP, default route via its gateway, running the real daemon
  (``--iface eth0``, ``--metadata-url http://SERVICE_IP``);
* once a node's subnet.env exists, what the CNI plugin would build: a bridge
  ``cni0`` holding FLANNEL_SUBNET, and pod namespaces with addresses from the
  lease, MTU FLANNEL_MTU, default route via cni0.

Nodes with no daemon of ours are played by the test bed: a stock flanneld
vxlan node (its lease, flannel.1 and entries as flanneld makes them) and a
node of flannel's old ali-vpc backend (bare lease, unmarked route entry, no
device), which a rolling upgrade later hands to our daemon.

Connectivity is checked with TCP (no ping binary needed): every pod runs an
echo server; a check opens a socket inside the source pod's namespace,
connects to the other pod and compares the echo; ``TcpStream`` keeps one
connection busy and records its longest gap.

``DataplaneCluster.close()`` stops the daemons and removes every namespace,
also when a test failed; ``emergency_cleanup()`` (a test session's safety net)
does the same for everything this process created, and
``remove_stale_namespaces()`` removes what dead test processes left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flannel_alivpc.clients.netlink import (
    FdbOp,
    Link,
    NeighbourOp,
    Netlink,
    NetlinkError,
    RouteOp,
    VxlanDeviceSpec,
)
from flannel_alivpc.clients.netns import (
    create_namespace,
    delete_namespace,
    list_namespaces,
    run_in_namespace,
    write_sysctl,
)
from flannel_alivpc.core.network import LeaseAttrs, parse_lease_value, parse_subnet_env, subnet_key
from flannel_alivpc.core.vxlan import DEFAULT_PORT, device_name, random_vtep_mac, vxlan_backend_data
from flannel_alivpc.emulator.router import RouterSync
from flannel_alivpc.testbed.cluster import LocalCluster, Node, join_as_old_flanneld
from flannel_alivpc.testbed.kube_cluster import NAMESPACE, KubeCluster

PREFIX = "fatb"
SERVICE_IP = IPv4Address("198.51.100.200")
"""Where the router namespace serves the emulator (API and metadata, port 80) and relays etcd (2379).

A documentation address (TEST-NET-2), only ever configured inside the test bed's own
namespaces; the real metadata address is never used, not even there."""
VSWITCH_CIDR = IPv4Network("192.168.0.0/20")
VPC_GATEWAY = IPv4Interface("192.168.15.253/20")
CLASSIC_CIDR = IPv4Network("10.0.0.0/24")
CLASSIC_GATEWAY = IPv4Interface("10.0.0.1/24")
ECHO_PORT = 7777
RTPROT_EMULATOR = 99
"""Routes the router namespace got from the route table carry this protocol number (ownership)."""
DEFAULT_NETWORK = "10.244.0.0/16"

_sequence = itertools.count(1)
_registry_lock = threading.Lock()
_namespaces: set[str] = set()
_processes: list[subprocess.Popen[bytes]] = []


def is_root() -> bool:
    return os.geteuid() == 0


def network_config(backend: str = "ali-vpc", network: str = DEFAULT_NETWORK, **backend_keys: object) -> str:
    return json.dumps({"Network": network, "Backend": {"Type": backend, **backend_keys}})


# -- the safety net ------------------------------------------------------------------------------


def _register_namespace(name: str) -> None:
    with _registry_lock:
        _namespaces.add(name)


def _new_namespace(name: str) -> str:
    create_namespace(name)
    _register_namespace(name)
    for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"):
        write_sysctl(key, 0, netns=name)
    with Netlink(netns=name) as nl:
        lo = nl.link("lo")
        if lo is not None:
            nl.set_link(lo.index, up=True)
    return name


def _drop_namespace(name: str) -> None:
    with contextlib.suppress(OSError):
        delete_namespace(name)
    with _registry_lock:
        _namespaces.discard(name)


def emergency_cleanup() -> list[str]:
    """Kill the daemons and remove the namespaces this process created and still has; returns the names."""
    with _registry_lock:
        processes = list(_processes)
        names = sorted(_namespaces)
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(OSError):
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
    for name in names:
        _drop_namespace(name)
    return names


def remove_stale_namespaces() -> list[str]:
    """Remove ``fatb-<pid>-...`` namespaces whose creating process is gone (left by a killed test run)."""
    removed = []
    for name in list_namespaces():
        parts = name.split("-")
        if len(parts) < 3 or parts[0] != PREFIX or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid() or Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(OSError):
            delete_namespace(name)
            removed.append(name)
    return removed


# -- sockets inside namespaces ---------------------------------------------------------------------------


def _socket_in(netns: str) -> socket.socket:
    return run_in_namespace(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))


def _recv_all(sock: socket.socket, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class _TcpServer:
    """Accepts connections on ``listener`` in a thread; ``close()`` ends the listener and every connection."""

    def __init__(self, listener: socket.socket, name: str) -> None:
        self._listener = listener
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=name, daemon=True)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, peer = self._listener.accept()
            except OSError:
                return
            self._serve(conn, IPv4Address(peer[0]))

    def _serve(self, conn: socket.socket, peer: IPv4Address) -> None:
        raise NotImplementedError

    def _track(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._sockets += sockets

    def close(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            self._sockets.clear()


class EchoServer(_TcpServer):
    """Echoes every TCP connection back, on ``ip:port`` inside namespace ``netns``."""

    def __init__(self, netns: str, ip: IPv4Address, port: int = ECHO_PORT) -> None:
        self.netns = netns
        self.ip = ip
        self.port = port
        listener = _socket_in(netns)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((str(ip), port))
        listener.listen(64)
        super().__init__(listener, f"echo-{netns}")
        self.peers: list[IPv4Address] = []
        """Source address of every connection accepted (shows whether traffic was masqueraded)."""
        self._thread.start()

    def _serve(self, conn: socket.socket, peer: IPv4Address) -> None:
        self._track(conn)
        with self._lock:
            self.peers.append(peer)
        threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    break
                conn.sendall(data)
        with contextlib.suppress(OSError):
            conn.close()


def tcp_echo(netns: str, ip: IPv4Address, *, port: int = ECHO_PORT, size: int = 64, timeout: float = 2.0) -> bool:
    """Connect from namespace ``netns`` to ``ip:port``, send ``size`` bytes and get the same bytes back."""
    payload = os.urandom(size)
    sock = _socket_in(netns)
    try:
        sock.settimeout(timeout)
        sock.connect((str(ip), port))
        sender = threading.Thread(target=lambda: _send_quietly(sock, payload), daemon=True)
        sender.start()
        echoed = _recv_all(sock, size)
        sender.join(timeout)
        return echoed == payload
    except OSError:
        return False
    finally:
        sock.close()


def _send_quietly(sock: socket.socket, payload: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(payload)


class TcpSession:
    """One long-lived TCP connection from a pod to another pod's echo server."""

    def __init__(self, netns: str, ip: IPv4Address, *, port: int = ECHO_PORT, timeout: float = 2.0) -> None:
        self.sock = _socket_in(netns)
        self.sock.settimeout(timeout)
        self.sock.connect((str(ip), port))

    def roundtrip(self, size: int = 32) -> bool:
        payload = os.urandom(size)
        try:
            self.sock.sendall(payload)
            return _recv_all(self.sock, size) == payload
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()


class TcpStream:
    """A TCP connection from one pod to another's echo server, kept busy from a thread.

    One small round trip every ``interval`` seconds; ``longest_gap`` is the
    longest time without a completed round trip (so a stall the kernel's
    retransmissions covered shows up, not only a reset), ``error`` the first
    failure (a reset, a stall longer than ``stall_timeout``, a wrong echo),
    after which the stream stops.
    """

    def __init__(self, source: Pod, target: Pod, *, interval: float = 0.02, stall_timeout: float = 5.0) -> None:
        self.name = f"{source.name} -> {target.name}"
        self.interval = interval
        self.roundtrips = 0
        self.longest_gap = 0.0
        self.error: str | None = None
        self._session = TcpSession(source.netns, target.ip, timeout=stall_timeout)
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stream-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self._session.sock
        while not self._stop.wait(self.interval):
            payload = os.urandom(32)
            try:
                sock.sendall(payload)
                echoed = _recv_all(sock, len(payload))
            except OSError as error:
                self.error = f"{type(error).__name__}: {error}"
                return
            if echoed != payload:
                self.error = "connection closed by the peer" if len(echoed) < len(payload) else "echo differs"
                return
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - self._last)
            self._last = now
            self.roundtrips += 1

    def stop(self) -> None:
        """End the stream; a round trip still pending counts as a gap up to now."""
        self._stop.set()
        self._thread.join(self._session.sock.gettimeout() or 5.0)
        if self.error is None:
            self.longest_gap = max(self.longest_gap, time.monotonic() - self._last)
        self._session.close()

    def __repr__(self) -> str:
        return (f"TcpStream({self.name}: {self.roundtrips} round trips, longest gap {self.longest_gap:.3f}s, "
                f"error {self.error})")


def http_get(netns: str, ip: IPv4Address, path: str, *, port: int = 80, timeout: float = 2.0) -> tuple[int, str] | None:
    """A plain HTTP/1.0 GET from inside ``netns``: (status, body), or None when nothing answered."""
    sock = _socket_in(netns)
    try:
        sock.settimeout(timeout)
        sock.connect((str(ip), port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    except OSError:
        return None
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None
    return status, body.decode(errors="replace")


def run_in(netns: str, *argv: str, timeout: float = 30.0) -> str:
    """Run a command inside ``netns`` (through the nsexec launcher); its stdout, or CalledProcessError."""
    done = subprocess.run([sys.executable, "-m", "flannel_alivpc.testbed.nsexec", netns, *argv],
                          capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


@contextlib.contextmanager
def scratch_namespace(role: str = "scratch") -> Iterator[str]:
    """A fresh, empty namespace for one test (lo up), removed afterwards."""
    name = _new_namespace(f"{PREFIX}-{os.getpid()}-{next(_sequence)}-{role}")
    try:
        yield name
    finally:
        _drop_namespace(name)


class TcpRelay(_TcpServer):
    """Forwards TCP connections accepted on ``listener`` (e.g. inside a namespace) to ``target``."""

    def __init__(self, listener: socket.socket, target: tuple[str, int]) -> None:
        super().__init__(listener, "tcp-relay")
        self._target = target

    def start(self) -> TcpRelay:
        self._listener.listen(128)
        self._thread.start()
        return self

    def _serve(self, conn: socket.socket, peer: IPv4Address) -> None:
        try:
            upstream = socket.create_connection(self._target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            conn.close()
            return
        # gRPC's small frames must not wait for delayed ACKs in the relay.
        for sock in (conn, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._track(conn, upstream)
        for source, sink in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class KernelRouteSink:
    """The router namespace's side of ``RouterSync``: its kernel routes become the table's forwarding view."""

    def __init__(self, netlink: Netlink, protocol: int = RTPROT_EMULATOR) -> None:
        self.netlink = netlink
        self.protocol = protocol

    def sync(self, routes: Mapping[IPv4Network, IPv4Address]) -> None:
        current = {r.dst: r.gateway for r in self.netlink.routes(protocol=self.protocol)}
        ops = [RouteOp("replace", dst, via, protocol=self.protocol) for dst, via in sorted(routes.items())
               if current.get(dst) != via]
        ops += [RouteOp("delete", dst, via) for dst, via in sorted(current.items()) if dst not in routes]
        errors = [error for error in self.netlink.apply(ops) if error is not None]
        if errors:
            raise errors[0]


# -- the cluster ----------------------------------------------------------------------------------------------


@dataclass
class Pod:
    name: str
    netns: str
    ip: IPv4Address
    node: str
    echo: EchoServer | None = None


@dataclass
class DataplaneNode(Node):
    netns: str = ""
    network_type: str = "vpc"
    address: IPv4Interface = field(default_factory=lambda: IPv4Interface("0.0.0.0/0"))
    gateway: IPv4Address | None = None
    port: str = ""
    """The node's port on the underlay bridge (in the fabric namespace)."""
    pods: list[Pod] = field(default_factory=list)
    stock_vtep: str | None = None
    """For a node that plays a stock flanneld (no daemon): its flannel.1 MAC."""

    @property
    def subnet_env(self) -> dict[str, str]:
        try:
            return parse_subnet_env(self.subnet_file.read_text())
        except OSError:
            return {}


@dataclass(frozen=True)
class VxlanEntries:
    """A node's flannel.<VNI> device and, per remote subnet, what its three entries say."""

    device: Link | None
    addresses: tuple[IPv4Interface, ...]
    neighbours: dict[IPv4Address, str | None]
    fdb: dict[str, set[IPv4Address]]
    routes: dict[IPv4Network, IPv4Address | None]

    def peer(self, subnet: IPv4Network) -> tuple[str | None, set[IPv4Address], bool]:
        """(neighbour MAC, FDB destinations of that MAC, onlink route present) for a remote subnet."""
        mac = self.neighbours.get(subnet.network_address)
        return mac, set(self.fdb.get(mac or "", set())), self.routes.get(subnet) == subnet.network_address

    @property
    def empty(self) -> bool:
        return not (self.neighbours or self.fdb or self.routes)


class DataplaneCluster(LocalCluster):
    """A LocalCluster whose nodes are network namespaces with real pods (see the module docstring)."""

    def __init__(self, workdir: Path, *, route_delay: float = 0.2, writer_lock_ttl: int = 3,
                 resync_interval: float = 10.0, pods_per_node: int = 1, serve_cloud: bool = True) -> None:
        super().__init__(workdir, route_delay=route_delay, writer_lock_ttl=writer_lock_ttl,
                         resync_interval=resync_interval)
        self.tag = f"{PREFIX}-{os.getpid()}-{next(_sequence)}"
        self.fabric = f"{self.tag}-fab"
        self.router = f"{self.tag}-gw"
        self.pods_per_node = pods_per_node
        self.serve_cloud = serve_cloud
        self.backend = "ali-vpc"
        self.router_sync: RouterSync | None = None
        self._relays: list[TcpRelay] = []
        self._router_netlink: Netlink | None = None
        self._observers: dict[str, Netlink] = {}
        self._fabric_bridge = 0
        self._ports = itertools.count(1)
        self.dp_nodes: list[DataplaneNode] = []

    # -- building --------------------------------------------------------------------------------------

    def start_dataplane(self, *, vpc: int = 0, classic: int = 0, config: str | None = None) -> None:
        """Emulator, etcd, underlay, router and ``vpc`` + ``classic`` node namespaces (daemons not started)."""
        config = config or network_config()
        self.backend = str(json.loads(config)["Backend"]["Type"])
        self.emulator.start()
        self.topology = self.emulator.bootstrap(instances=0, vswitch_cidr=str(VSWITCH_CIDR))
        self.network_config = config
        self._start_lease_store(config)
        self._build_underlay()
        for n in range(vpc):
            self.add_vpc_node(f"vpc{n + 1}")
        for n in range(classic):
            self.add_classic_node(f"cls{n + 1}")

    def _start_lease_store(self, config: str) -> None:
        """Where leases and the network config live: etcd, holding the config under the prefix."""
        self.etcd.start()
        with self.etcd_client() as etcd:
            etcd.put(f"{self.prefix}/config", config)

    def _service_relays(self) -> dict[int, tuple[str, int]]:
        """Port on SERVICE_IP -> the host-loopback service it relays to (etcd in etcd mode)."""
        return {2379: ("127.0.0.1", self.etcd.client_port)}

    def _build_underlay(self) -> None:
        _new_namespace(self.fabric)
        with Netlink(netns=self.fabric) as nl:
            bridge = nl.create_bridge("br0")
            nl.set_link(bridge.index, up=True)
            self._fabric_bridge = bridge.index
        _new_namespace(self.router)
        write_sysctl("net.ipv4.ip_forward", 1, netns=self.router)
        for key in ("net.ipv4.conf.all.send_redirects", "net.ipv4.conf.default.send_redirects"):
            write_sysctl(key, 0, netns=self.router)
        self._plug(self.router, [VPC_GATEWAY, CLASSIC_GATEWAY], gateway=None)
        nl = Netlink(netns=self.router)
        self._router_netlink = nl
        lo = nl.link("lo")
        assert lo is not None
        nl.add_address(lo.index, IPv4Interface(f"{SERVICE_IP}/32"))
        if self.serve_cloud:
            self.emulator.add_listener(self._listen(self.router, SERVICE_IP, 80))
        self._relays = [TcpRelay(self._listen(self.router, SERVICE_IP, port), target).start()
                        for port, target in self._service_relays().items()]
        assert self.topology is not None
        self.router_sync = RouterSync(self.emulator.state, self.topology.route_table_id,
                                      KernelRouteSink(nl)).start()

    @staticmethod
    def _listen(netns: str, ip: IPv4Address, port: int) -> socket.socket:
        sock = _socket_in(netns)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(ip), port))
        return sock

    def _plug(self, netns: str, addresses: list[IPv4Interface], gateway: IPv4Address | None) -> str:
        """Connect ``netns`` to the underlay bridge as ``eth0`` with ``addresses``; returns the bridge port."""
        port = f"p{next(self._ports)}"
        with Netlink(netns=self.fabric) as fabric:
            link = fabric.create_veth(port, "eth0", peer_netns=netns)
            fabric.set_link(link.index, master=self._fabric_bridge, up=True)
        with Netlink(netns=netns) as nl:
            eth0 = nl.link("eth0")
            assert eth0 is not None
            for address in addresses:
                nl.add_address(eth0.index, address)
            nl.set_link(eth0.index, up=True)
            if gateway is not None:
                nl.apply_one(RouteOp("replace", IPv4Network("0.0.0.0/0"), gateway, eth0.index,
                                     protocol=4))
        return port

    def _node_namespace(self, hostname: str, address: IPv4Interface, gateway: IPv4Address) -> tuple[str, str]:
        netns = _new_namespace(f"{self.tag}-{hostname}")
        write_sysctl("net.ipv4.ip_forward", 1, netns=netns)
        port = self._plug(netns, [address], gateway)
        return netns, port

    def add_vpc_node(self, hostname: str) -> DataplaneNode:
        assert self.topology is not None
        inst = self.emulator.state.create_instance(hostname=hostname, vswitch_id=self.topology.vswitch_id)
        address = IPv4Interface(f"{inst.private_ip}/{VSWITCH_CIDR.prefixlen}")
        return self._add_node(hostname, inst.instance_id, "vpc", address, VPC_GATEWAY.ip)

    def add_classic_node(self, hostname: str) -> DataplaneNode:
        taken = {i.private_ip for i in self.emulator.state.instances.values()}
        ip = next(str(h) for n, h in enumerate(CLASSIC_CIDR.hosts()) if n >= 10 and str(h) not in taken)
        inst = self.emulator.state.create_instance(hostname=hostname, network_type="classic", private_ip=ip)
        return self._add_node(hostname, inst.instance_id, "classic",
                              IPv4Interface(f"{ip}/{CLASSIC_CIDR.prefixlen}"), CLASSIC_GATEWAY.ip)

    def _add_node(self, hostname: str, instance_id: str, network_type: str, address: IPv4Interface,
                  gateway: IPv4Address) -> DataplaneNode:
        workdir = self.workdir / hostname
        workdir.mkdir(parents=True, exist_ok=True)
        netns, port = self._node_namespace(hostname, address, gateway)
        node = DataplaneNode(hostname, instance_id, str(address.ip), workdir, netns=netns,
                             network_type=network_type, address=address, gateway=gateway, port=port)
        self.nodes.append(node)
        self.dp_nodes.append(node)
        return node

    # -- daemons -----------------------------------------------------------------------------------------

    def lease_store_args(self) -> list[str]:
        """The daemon's flags that say where leases and the network config are (etcd, through the router)."""
        return ["--etcd-endpoints", f"http://{SERVICE_IP}:2379", "--etcd-prefix", self.prefix]

    def daemon_args(self, node: Node) -> list[str]:
        args = [
            sys.executable, "-m", "flannel_alivpc",
            *self.lease_store_args(),
            "--iface", "eth0",
            "--subnet-file", str(node.subnet_file),
            "--writer-lock-ttl", str(self.writer_lock_ttl),
            "--resync-interval", str(self.resync_interval),
        ]
        # In vxlan mode nothing answers there: a daemon that tried metadata or the API would fail.
        args += ["--metadata-url", f"http://{SERVICE_IP}"]
        if self.backend != "vxlan":
            args += ["--api-endpoint", f"http://{SERVICE_IP}"]
        return args + node.extra_args

    def start_node(self, node: Node) -> None:
        assert isinstance(node, DataplaneNode)
        command = [sys.executable, "-m", "flannel_alivpc.testbed.nsexec", node.netns, *self.daemon_args(node)]
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env={**self.node_env(), **node.env}, start_new_session=True)
        with _registry_lock:
            _processes.append(node.process)

    def restart_node(self, node: DataplaneNode) -> None:
        self.stop_node(node)
        self.start_node(node)

    def wait_for_subnets(self, nodes: Iterable[DataplaneNode], timeout: float = 30.0) -> None:
        """Wait until each node's daemon wrote subnet.env, then give it cni0 and its pods."""
        pending = [node for node in nodes if not node.pods]
        deadline = time.monotonic() + timeout
        while pending:
            for node in list(pending):
                if node.subnet_env.get("FLANNEL_SUBNET"):
                    self.attach_pods(node)
                    pending.remove(node)
                elif node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"daemon on {node.hostname} exited with {node.process.returncode}:\n"
                                       f"{node.log()[-3000:]}")
            if pending and time.monotonic() > deadline:
                names = ", ".join(n.hostname for n in pending)
                raise RuntimeError(f"no subnet.env from {names} within {timeout:.0f}s:\n"
                                   + "\n".join(n.log()[-2000:] for n in pending))
            if pending:
                time.sleep(0.05)

    # -- pods (what the CNI plugin would do) ------------------------------------------------------------------

    def attach_pods(self, node: DataplaneNode, count: int | None = None) -> list[Pod]:
        env = node.subnet_env
        gateway = IPv4Interface(env["FLANNEL_SUBNET"])
        mtu = int(env["FLANNEL_MTU"])
        with Netlink(netns=node.netns) as nl:
            bridge = nl.link("cni0") or nl.create_bridge("cni0", mtu=mtu)
            nl.add_address(bridge.index, gateway)
            nl.set_link(bridge.index, up=True)
            for n in range(len(node.pods), len(node.pods) + (count or self.pods_per_node)):
                name = f"{node.hostname}-p{n}"
                pod_ns = _new_namespace(f"{self.tag}-{name}")
                host_side = nl.create_veth(f"vp{n}", "eth0", peer_netns=pod_ns)
                nl.set_link(host_side.index, master=bridge.index, mtu=mtu, up=True)
                ip = gateway.network.network_address + 2 + n
                with Netlink(netns=pod_ns) as pod_nl:
                    eth0 = pod_nl.link("eth0")
                    assert eth0 is not None
                    pod_nl.add_address(eth0.index, IPv4Interface(f"{ip}/{gateway.network.prefixlen}"))
                    pod_nl.set_link(eth0.index, mtu=mtu, up=True)
                    pod_nl.apply_one(RouteOp("replace", IPv4Network("0.0.0.0/0"), gateway.ip, eth0.index,
                                             protocol=4))
                pod = Pod(name, pod_ns, ip, node.hostname)
                pod.echo = EchoServer(pod_ns, ip)
                node.pods.append(pod)
        return node.pods

    # -- a stock flanneld vxlan node, played by the test bed -----------------------------------------------------

    def add_stock_vxlan_node(self, hostname: str, subnet: IPv4Network, *, address: IPv4Interface | None = None,
                             vtep_mac: str | None = None, vpc: bool = False) -> DataplaneNode:
        """A node as stock flanneld (vxlan backend) would set it up: no daemon of ours runs there.

        Its lease is written in flanneld's exact format, its flannel.1 device made
        as flanneld makes it; ``program_stock_node`` then plays flanneld's
        handleSubnetEvents from the other leases. On the classic network unless
        ``vpc``: then it is an instance on the vSwitch (default route via the
        vRouter), with no route table entry of its own.
        """
        if vpc:
            assert self.topology is not None and address is None
            inst = self.emulator.state.create_instance(hostname=hostname, vswitch_id=self.topology.vswitch_id)
            address, gateway = IPv4Interface(f"{inst.private_ip}/{VSWITCH_CIDR.prefixlen}"), VPC_GATEWAY.ip
            instance_id = inst.instance_id
        else:
            gateway, instance_id = CLASSIC_GATEWAY.ip, ""
        taken = {n.address.ip for n in self.dp_nodes}
        if address is None:
            ip = next(h for n, h in enumerate(CLASSIC_CIDR.hosts()) if n >= 100 and h not in taken)
            address = IPv4Interface(f"{ip}/{CLASSIC_CIDR.prefixlen}")
        netns, port = self._node_namespace(hostname, address, gateway)
        workdir = self.workdir / hostname
        workdir.mkdir(parents=True, exist_ok=True)
        mac = vtep_mac or random_vtep_mac()
        node = DataplaneNode(hostname, instance_id, str(address.ip), workdir, netns=netns, network_type="stock",
                             address=address, gateway=gateway, port=port, stock_vtep=mac)
        self.nodes.append(node)
        self.dp_nodes.append(node)
        with Netlink(netns=netns) as nl:
            eth0 = nl.link("eth0")
            assert eth0 is not None
            # No local address: the kernel picks the source, so a PublicIP change needs no new device.
            device = nl.create_vxlan(VxlanDeviceSpec(device_name(1), 1, DEFAULT_PORT, None, eth0.index,
                                                     mac, eth0.mtu - 50))
            nl.add_address(device.index, IPv4Interface(f"{subnet.network_address}/32"))
            nl.set_link(device.index, up=True)
        self._write_flanneld_subnet_env(node, subnet, eth0.mtu - 50)
        self.write_stock_lease(node, subnet)
        self.attach_pods(node)
        return node

    def _write_flanneld_subnet_env(self, node: DataplaneNode, subnet: IPv4Network, mtu: int) -> None:
        """subnet.env as flanneld's WriteSubnetFile writes it (IPv4 only, no --ip-masq)."""
        node.subnet_file.write_text(f"FLANNEL_NETWORK={json.loads(self.network_config or '{}')['Network']}\n"
                                    f"FLANNEL_SUBNET={subnet.network_address + 1}/{subnet.prefixlen}\n"
                                    f"FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=false\n")

    def write_stock_lease(self, node: DataplaneNode, subnet: IPv4Network) -> None:
        """The lease flanneld writes: ``{"PublicIP":..,"PublicIPv6":null,"BackendType":"vxlan","BackendData":..}``."""
        assert node.stock_vtep is not None
        value = LeaseAttrs(public_ip=node.address.ip, backend_type="vxlan",
                           backend_data=vxlan_backend_data(1, node.stock_vtep)).to_json()
        with self.etcd_client() as etcd:
            lease_id = etcd.grant(24 * 3600)
            etcd.put(f"{self.prefix}/subnets/{subnet_key(subnet)}", value, lease_id=lease_id)

    def stock_view_of_leases(self) -> list[tuple[IPv4Network, LeaseAttrs]]:
        """Every lease as a stock flanneld reads it: here the etcd registry's subnets."""
        with self.etcd_client() as etcd:
            kvs, _ = etcd.get_prefix(f"{self.prefix}/subnets/")
        return [(IPv4Network(kv.key.rsplit("/", 1)[1].replace("-", "/")), parse_lease_value(kv.value))
                for kv in kvs]

    def program_stock_node(self, node: DataplaneNode, *, direct_routing: bool = False) -> int:
        """flanneld's handleSubnetEvents on ``node`` for every other "vxlan" lease: neighbour, FDB, route.

        Like flanneld, leases whose BackendType is not "vxlan" are ignored. With
        ``direct_routing`` (``"DirectRouting": true``), a lease whose PublicIP
        ``ip route get`` shows without a gateway gets only ``subnet via
        PublicIP`` instead. Returns the number of peers programmed.
        """
        own = IPv4Interface(node.subnet_env["FLANNEL_SUBNET"]).network
        count = 0
        with Netlink(netns=node.netns) as nl:
            device = nl.link(device_name(1))
            assert device is not None
            for subnet, attrs in self.stock_view_of_leases():
                if subnet == own or attrs.backend_type != "vxlan":
                    continue
                mac = str(attrs.backend_field("VtepMAC"))
                count += 1
                if direct_routing:
                    [lookup] = nl.lookup_routes([attrs.public_ip])
                    if not isinstance(lookup, NetlinkError) and lookup.on_link:
                        nl.apply_one(RouteOp("replace", subnet, attrs.public_ip))
                        continue
                # flanneld's order: neighbour, FDB entry, then the route.
                for op in (NeighbourOp("replace", device.index, subnet.network_address, mac),
                           FdbOp("replace", device.index, mac, attrs.public_ip),
                           RouteOp("replace", subnet, subnet.network_address, device.index, onlink=True)):
                    nl.apply_one(op)
        return count

    def iptables(self, node: DataplaneNode, *args: str) -> str:
        """``iptables -w <args>`` in the node's namespace (its output)."""
        return run_in(node.netns, "iptables", "-w", *args)

    def change_stock_vtep(self, node: DataplaneNode, subnet: IPv4Network, *, vtep_mac: str | None = None,
                          address: IPv4Interface | None = None) -> None:
        """The stock node's VtepMAC (a reboot in etcd mode) or PublicIP changes; it re-writes its lease."""
        with Netlink(netns=node.netns) as nl:
            if vtep_mac is not None:
                device = nl.link(device_name(1))
                assert device is not None
                nl.set_link(device.index, mac=vtep_mac)
                node.stock_vtep = vtep_mac
            if address is not None:
                eth0 = nl.link("eth0")
                assert eth0 is not None
                # Old first: deleting a primary address also deletes the secondaries of its subnet.
                nl.delete_address(eth0.index, node.address)
                nl.add_address(eth0.index, address)
                nl.apply_one(RouteOp("replace", IPv4Network("0.0.0.0/0"), CLASSIC_GATEWAY.ip, eth0.index,
                                     protocol=4))
                node.address = address
                node.private_ip = str(address.ip)
        self.write_stock_lease(node, subnet)

    # -- a node of flannel's own old ali-vpc backend (v0.8-v0.19), played by the test bed ------------------

    def add_old_alivpc_node(self, hostname: str, subnet: IPv4Network) -> DataplaneNode:
        """A VPC node as flanneld's ali-vpc backend left it; no daemon of ours runs there (yet).

        Its bare lease and its unmarked route entry are what that backend made
        (``cluster.join_as_old_flanneld``); its kernel holds only what the CNI
        plugin built from flanneld's subnet.env: cni0 with the subnet's first
        address, and pods. No VXLAN device: every other pod is reached through
        the vRouter. ``start_node`` later runs our daemon there, as the rolling
        upgrade's new DaemonSet pod.
        """
        node = self.add_vpc_node(hostname)
        join_as_old_flanneld(self, node, str(subnet))
        with Netlink(netns=node.netns) as nl:
            eth0 = nl.link("eth0")
            assert eth0 is not None
        # The backend's SimpleNetwork: the interface's MTU, nothing encapsulated.
        self._write_flanneld_subnet_env(node, subnet, eth0.mtu)
        self.attach_pods(node)
        return node

    # -- observation -----------------------------------------------------------------------------------------------

    def node(self, hostname: str) -> DataplaneNode:
        return next(n for n in self.dp_nodes if n.hostname == hostname)

    def subnet_of(self, node: DataplaneNode) -> IPv4Network:
        return IPv4Interface(node.subnet_env["FLANNEL_SUBNET"]).network

    def _observer(self, netns: str) -> Netlink:
        """One netlink handle per namespace for the test's observations, kept open.

        Opening a handle in a namespace forks (pyroute2's netns sockets), and a
        fork in this process full of threads (grpc's among them) can hang in the
        fork handlers; tests poll these views every few milliseconds.
        """
        handle = self._observers.get(netns)
        if handle is None:
            handle = self._observers[netns] = Netlink(netns=netns)
        return handle

    def vxlan_entries(self, node: DataplaneNode, vni: int = 1) -> VxlanEntries:
        nl = self._observer(node.netns)
        device = nl.link(device_name(vni))
        if device is None:
            return VxlanEntries(None, (), {}, {}, {})
        fdb: dict[str, set[IPv4Address]] = {}
        for entry in nl.fdb(device.index):
            if entry.dst is not None:
                fdb.setdefault(entry.mac, set()).add(entry.dst)
        return VxlanEntries(
            device=device,
            addresses=tuple(nl.addresses(device.index)),
            neighbours={n.ip: n.mac for n in nl.neighbours(device.index)},
            fdb=fdb,
            routes={r.dst: r.gateway for r in nl.routes(oif=device.index) if r.onlink},
        )

    def router_routes(self) -> dict[IPv4Network, IPv4Address | None]:
        assert self._router_netlink is not None
        return {r.dst: r.gateway for r in self._router_netlink.routes(protocol=RTPROT_EMULATOR)}

    def pods(self, nodes: Iterable[DataplaneNode] | None = None) -> list[Pod]:
        return [pod for node in (nodes if nodes is not None else self.dp_nodes) for pod in node.pods]

    def connectivity(self, pods: list[Pod] | None = None, *, size: int = 64,
                     timeout: float = 2.0) -> dict[tuple[str, str], bool]:
        """TCP echo between every ordered pair of pods on different nodes."""
        chosen = pods if pods is not None else self.pods()
        result: dict[tuple[str, str], bool] = {}
        for src, dst in itertools.permutations(chosen, 2):
            if src.node != dst.node:
                result[(src.name, dst.name)] = tcp_echo(src.netns, dst.ip, size=size, timeout=timeout)
        return result

    def wait_connected(self, pods: list[Pod] | None = None, timeout: float = 20.0,
                       size: int = 64) -> dict[tuple[str, str], bool]:
        """Retry ``connectivity`` until every pair answers (or time runs out); returns the last result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.connectivity(pods, size=size, timeout=1.0)
            if all(result.values()) or time.monotonic() > deadline:
                return result
            time.sleep(0.2)

    def diagnose(self) -> str:
        lines = []
        for node in self.dp_nodes:
            lines.append(f"--- {node.hostname} ({node.network_type}, {node.address}) env={node.subnet_env}")
            with contextlib.suppress(OSError, NetlinkError):
                lines.append(f"vxlan: {self.vxlan_entries(node)}")
            lines.append(node.log()[-2500:])
        with contextlib.suppress(OSError, NetlinkError, AssertionError):
            lines.append(f"router routes: {self.router_routes()}")
            lines.append(f"route table: {self.table_entries()}")
        return "\n".join(lines)

    # -- taking things away ------------------------------------------------------------------------------------------

    def remove_node(self, node: DataplaneNode) -> None:
        """The node leaves: daemon stopped, lease released, its namespaces and underlay port removed."""
        self.stop_node(node)
        self.release_lease(node)
        self._destroy_node(node)
        if node in self.nodes:
            self.nodes.remove(node)
        self.dp_nodes.remove(node)

    def _destroy_node(self, node: DataplaneNode) -> None:
        for pod in node.pods:
            if pod.echo is not None:
                pod.echo.close()
            _drop_namespace(pod.netns)
        node.pods = []
        observer = self._observers.pop(node.netns, None)
        if observer is not None:
            observer.close()
        _drop_namespace(node.netns)
        with contextlib.suppress(OSError, NetlinkError), Netlink(netns=self.fabric) as fabric:
            fabric.delete_link(node.port)

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.router_sync is not None:
                self.router_sync.stop()
            for relay in self._relays:
                relay.close()
            for node in self.dp_nodes:
                for pod in node.pods:
                    if pod.echo is not None:
                        pod.echo.close()
            if self._router_netlink is not None:
                self._router_netlink.close()
            for observer in self._observers.values():
                observer.close()
            self._observers.clear()
            for node in self.dp_nodes:
                for pod in node.pods:
                    _drop_namespace(pod.netns)
                _drop_namespace(node.netns)
            for name in (self.router, self.fabric):
                _drop_namespace(name)

    def __enter__(self) -> DataplaneCluster:
        return self


# -- kube mode -------------------------------------------------------------------------------------------------

KUBE_API_PORT = 6443
"""Where the router namespace relays the kube-apiserver stand-in, on SERVICE_IP."""
FLANNEL_ANNOTATION = "flannel.alpha.coreos.com"
"""The annotation prefix stock flanneld's kube subnet manager writes and reads (its default)."""


class KubeDataplaneCluster(DataplaneCluster, KubeCluster):
    """The data-plane test bed with the daemons in kube mode (``--kube-subnet-mgr``).

    The kube-apiserver stand-in (RBAC enforced, see ``kube_cluster``) listens
    on the host's loopback; the router namespace relays it on
    SERVICE_IP:6443 in place of etcd. Each daemon gets a kubeconfig pointing
    there with the service account's token, net-conf.json as a file and
    NODE_NAME. The test bed plays the controller-manager: every node added
    gets its Node with the next podCIDR. A stock flanneld node publishes its
    lease as flanneld's kube subnet manager does, in its Node's annotations.
    Built with ``start_dataplane``, like its base (``KubeCluster.start`` is
    the process-level cluster's).
    """

    def _start_lease_store(self, config: str) -> None:
        self.kube.start()
        self.kube.write_kubeconfig(self.kubeconfig, token=self.token, namespace=NAMESPACE)
        # The daemons reach the stand-in through the router's relay, not at its loopback address.
        kubeconfig = json.loads(self.kubeconfig.read_text())
        kubeconfig["clusters"][0]["cluster"]["server"] = f"http://{SERVICE_IP}:{KUBE_API_PORT}"
        self.kubeconfig.write_text(json.dumps(kubeconfig))
        self.net_conf.write_text(config)

    def _service_relays(self) -> dict[int, tuple[str, int]]:
        url = urlsplit(self.kube.url)
        assert url.hostname is not None and url.port is not None
        return {KUBE_API_PORT: (url.hostname, url.port)}

    def lease_store_args(self) -> list[str]:
        return ["--kube-subnet-mgr", "--kubeconfig-file", str(self.kubeconfig),
                "--net-config-path", str(self.net_conf)]

    def _add_node(self, hostname: str, instance_id: str, network_type: str, address: IPv4Interface,
                  gateway: IPv4Address) -> DataplaneNode:
        node = super()._add_node(hostname, instance_id, network_type, address, gateway)
        node.env["NODE_NAME"] = hostname
        self.add_kube_node(node, pod_cidr=self.next_pod_cidr())
        return node

    def release_lease(self, node: Node) -> None:
        """The node is decommissioned: its Node is deleted (its lease goes with it)."""
        if self.node_object(node) is not None:
            self.delete_kube_node(node)

    # -- a stock flanneld in kube mode ------------------------------------------------------------------------

    def write_stock_lease(self, node: DataplaneNode, subnet: IPv4Network) -> None:
        """The stock node's lease, as flanneld's kube subnet manager publishes it.

        Its Node is made first if it has none (the controller-manager's part,
        ``subnet`` as podCIDR); then flanneld's AcquireLease patches exactly
        these four annotations through nodes/status.
        """
        assert node.stock_vtep is not None
        if self.node_object(node) is None:
            self.add_kube_node(node, pod_cidr=str(subnet))
        annotations = {
            f"{FLANNEL_ANNOTATION}/backend-data": f'{{"VNI":1,"VtepMAC":"{node.stock_vtep}"}}',
            f"{FLANNEL_ANNOTATION}/backend-type": "vxlan",
            f"{FLANNEL_ANNOTATION}/kube-subnet-manager": "true",
            f"{FLANNEL_ANNOTATION}/public-ip": str(node.address.ip),
        }

        def publish(obj: dict[str, Any]) -> dict[str, Any]:
            obj["metadata"].setdefault("annotations", {}).update(annotations)
            return obj

        self.kube.write(self.kube.resource("v1", "nodes"), "", node.hostname, subresource="status", change=publish)

    def stock_view_of_leases(self) -> list[tuple[IPv4Network, LeaseAttrs]]:
        """Every Node's lease as flanneld's nodeToLease reads it (written out here, not our parser's)."""
        leases = []
        for obj in self.kube.objects("v1", "nodes"):
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            pod_cidr = (obj.get("spec") or {}).get("podCIDR")
            if annotations.get(f"{FLANNEL_ANNOTATION}/kube-subnet-manager") != "true" or not pod_cidr:
                continue
            data = json.loads(annotations.get(f"{FLANNEL_ANNOTATION}/backend-data") or "null")
            leases.append((IPv4Network(pod_cidr), LeaseAttrs(
                public_ip=IPv4Address(annotations[f"{FLANNEL_ANNOTATION}/public-ip"]),
                backend_type=annotations.get(f"{FLANNEL_ANNOTATION}/backend-type", ""),
                backend_data=data)))
        return leases

    def __enter__(self) -> KubeDataplaneCluster:
        return self
