"""The route daemon's wiring: ``flannel-alivpc --iface eth0``.

The network config's ``Backend.Type`` and the instance's network pick how
pods are reached (docs/vxlan.md):

* ``ali-vpc`` on a VPC instance: the VPC route tables carry the leases of
  instances in the VPC; VXLAN (``flannel.<VNI>``, created only when needed)
  reaches the rest: classic-network nodes, stock flanneld vxlan nodes, and
  the nodes a full table cannot hold (its published overflow; a node in the
  overflow itself reaches every peer over VXLAN);
* ``ali-vpc`` on a classic instance (metadata network-type ``classic``): no
  route table exists; every peer is reached over VXLAN;
* ``vxlan``: flanneld's vxlan backend, with no cloud access at all (no
  metadata, no API).

Start-up order (each step must succeed before the next; nothing in the cloud
or etcd is written until everything needed to do the job is known, so a
misconfigured node never leaves a lease without a route):

1. read and validate the network config from etcd (retried until it appears);
2. pick the external interface and this node's PublicIP;
3. ali-vpc only: read the instance identity from the metadata service and
   discover the route tables to manage (``--route-table-ids`` or every table
   of the VPC);
4. choose the VtepMAC (the existing device's, else the one published before,
   else a new one) and, on the classic network and with ``vxlan``, create the
   VXLAN device;
5. acquire (or reuse) the subnet lease, publishing VNI and VtepMAC in its
   BackendData; put the subnet's address on the device; install flannel's
   iptables rules (FORWARD accept rules unless --iptables-forward-rules=false,
   masquerade rules with --ip-masq) and, with --ip-blackhole-route, the
   blackhole route; write subnet.env;
6. follow the leases, campaign for the writer lock of each table, run the
   VXLAN reconcile loop, serve /healthz and /metrics, renew the lease until
   stopped.

SIGTERM/SIGINT stop cleanly: writer locks are released, the lease is kept
(as flannel does), routes and the VXLAN device are left in place. A lease
deleted or taken over ends the daemon with exit code 1 ("Lease has been
revoked").
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flannel_alivpc.clients.cloud import Cloud, CloudConfig, build_cloud
from flannel_alivpc.clients.credentials import StaticCredentials
from flannel_alivpc.clients.iptables import Iptables
from flannel_alivpc.clients.netlink import Interface, Netlink, NetlinkMonitor, select_interface
from flannel_alivpc.core.cloud import InstanceIdentity
from flannel_alivpc.core.errors import CloudError, ConfigError, FlannelAliVpcError
from flannel_alivpc.core.network import (
    BACKEND_TYPE,
    LEASE_TTL,
    Lease,
    LeaseAttrs,
    NetworkConfig,
    render_subnet_env,
)
from flannel_alivpc.core.reconcile import ReconcileLoop
from flannel_alivpc.core.routes import TableOverflow, served_by_vpc_table
from flannel_alivpc.core.secrets import Secret
from flannel_alivpc.core.vxlan import (
    VXLAN_BACKEND_TYPE,
    VxlanSettings,
    parse_mac,
    parse_vxlan_settings,
    vxlan_backend_data,
)
from flannel_alivpc.routed.blackhole import BlackholeRoute
from flannel_alivpc.routed.config import DaemonConfig
from flannel_alivpc.routed.health import HealthServer
from flannel_alivpc.routed.lease_source import EtcdLeaseSource, LeaseSource
from flannel_alivpc.routed.leases import EMPTY_SNAPSHOT, LeaseLost, LeaseSnapshot, write_subnet_env
from flannel_alivpc.routed.legacy_leases import LegacyLeaseResolver
from flannel_alivpc.routed.masq import IptablesRules, flannel_chains
from flannel_alivpc.routed.startup import wait_until_ready
from flannel_alivpc.routed.vpc_routes import TableWriter
from flannel_alivpc.routed.vxlan import VxlanBackend, choose_vtep_mac
from flannel_alivpc.routed.writer import TableLeadership

log = logging.getLogger(__name__)

EXIT_LEASE_LOST = 1
SUPPORTED_BACKENDS = (BACKEND_TYPE, VXLAN_BACKEND_TYPE)
VXLAN_COALESCE = 0.005
"""Seconds of quiet before a VXLAN pass: a lease change reaches the kernel within milliseconds."""
VXLAN_CONFIRM_RETRY = 5.0
"""Seconds before a failed overflow confirmation (lease source away) is tried again."""

MODE_VPC = "vpc"
MODE_CLASSIC = "classic"
MODE_VXLAN = "vxlan"


def open_lease_source(config: DaemonConfig, env: Mapping[str, str], *, own_node: bool = True,
                      stop: threading.Event | None = None) -> LeaseSource:
    """The Kubernetes Nodes with ``--kube-subnet-mgr``, else flannel's etcd registry.

    ``own_node`` False for the read-only commands, which hold no lease of their own; ``stop``
    (the daemon's) ends any wait for this node's lease.
    """
    if config.kube_subnet_mgr:
        # Imported here: the kubernetes client costs an etcd-mode daemon ~15 MiB it never uses.
        from flannel_alivpc.routed.kube_leases import KubeLeaseSource

        return KubeLeaseSource(config, env, own_node=own_node, stop=stop)
    return EtcdLeaseSource(config)


def backend_access_key(network: NetworkConfig) -> StaticCredentials | None:
    """The access key flannel's old ali-vpc backend read from the Backend object, if the config still has one.

    As there, it is used only when both halves are set (else the environment
    or the RAM role is); it works, but every etcd client can read it.
    """
    key_id = str(network.backend_value("AccessKeyID") or "")
    secret = str(network.backend_value("AccessKeySecret") or "")
    if not (key_id and secret):
        return None
    log.warning("the network config's Backend carries AccessKeyID/AccessKeySecret (flannel's old ali-vpc "
                "backend): using them, but every reader of the config can see the secret; attach a RAM role to "
                "the instances (docs/route-daemon.md, 'Credentials') and remove both keys from the config")
    return StaticCredentials(key_id, Secret(secret))


def connect_cloud(config: DaemonConfig, env: Mapping[str, str], network: NetworkConfig | None = None) -> Cloud:
    return build_cloud(CloudConfig(region=config.region, api_endpoint=config.api_endpoint,
                                   metadata_url=config.metadata_url,
                                   access_key=backend_access_key(network) if network else None), env)


def discover_route_tables(cloud: Cloud, identity: InstanceIdentity, explicit: list[str]) -> list[str]:
    """The tables to manage: the explicit list, else every route table of the VPC."""
    if explicit:
        return list(explicit)
    if not identity.vpc_id:
        return []
    tables = cloud.vpc.list_route_tables(identity.vpc_id)
    if not tables:
        raise ConfigError(f"VPC {identity.vpc_id} has no route table; check the region and the RAM policy")
    return [t.table_id for t in tables]


@dataclass
class _Table:
    writer: TableWriter
    leadership: TableLeadership


class RouteDaemon:
    def __init__(self, config: DaemonConfig, env: Mapping[str, str] | None = None,
                 source: LeaseSource | None = None) -> None:
        self.config = config
        self.env = env if env is not None else os.environ
        self.stop_event = threading.Event()
        self.stop_requested = False
        self.ready = False
        self.tables: dict[str, _Table] = {}
        self.source: LeaseSource | None = source
        self.cloud: Cloud | None = None
        self.network: NetworkConfig | None = None
        self.mode = ""
        self.vxlan: VxlanBackend | None = None
        self.vxlan_loop: ReconcileLoop | None = None
        self.rule_loops: list[ReconcileLoop] = []
        self._overflow_seen: tuple[Mapping[str, TableOverflow] | None, frozenset[ipaddress.IPv4Network]] = (
            None, frozenset())
        self._threads: list[threading.Thread] = []

    def stop(self) -> None:
        """Asked to stop (SIGTERM/SIGINT): a clean exit 0, whatever wait it interrupts."""
        self.stop_requested = True
        self.stop_event.set()

    def run(self) -> int:
        config = self.config
        source = self.source if self.source is not None else open_lease_source(config, self.env,
                                                                                stop=self.stop_event)
        self.source = source
        netlink = Netlink()
        try:
            log.info("leases from %s", source.description)
            network = source.wait_for_network_config(self.stop_event)
            if network is None:
                return 0
            self.network = network
            if network.backend_type not in SUPPORTED_BACKENDS:
                raise ConfigError(f"network config Backend.Type is {network.backend_type!r}; flannel-alivpc serves "
                                  f'"{BACKEND_TYPE}" (VPC route tables, VXLAN where they cannot reach) and '
                                  f'"{VXLAN_BACKEND_TYPE}" (flanneld-compatible VXLAN only)')
            settings = parse_vxlan_settings(network)
            iface = select_interface(config.iface, config.iface_regex, config.iface_can_reach)
            pinned = source.stored_public_ip()
            public_ip = pinned or (ipaddress.IPv4Address(config.public_ip) if config.public_ip
                                   else iface.primary_ipv4)
            if public_ip is None:
                raise ConfigError(f"interface {iface.name} has no IPv4 address; pass --public-ip")
            log.info("using interface %s (mtu %d), public IP %s", iface.name, iface.mtu, public_ip)
            identity: InstanceIdentity | None = None
            tables: list[str] = []
            if network.backend_type == VXLAN_BACKEND_TYPE:
                self.mode = MODE_VXLAN
                log.info("Backend.Type vxlan: flanneld-compatible VXLAN on %s; no cloud access", settings.device)
            else:
                cloud = connect_cloud(config, self.env, network)
                self.cloud = cloud
                found = wait_until_ready(cloud.metadata.identity, what="the instance identity (metadata service)",
                                         stop=self.stop_event)
                if found is None:
                    return 0
                identity = found
                if identity.network_type == "classic":
                    self.mode = MODE_CLASSIC
                    log.info("instance %s is on the classic network: there is no VPC route table; every peer is "
                             "reached over VXLAN (%s)", identity.instance_id, settings.device)
                elif identity.network_type == "vpc":
                    self.mode = MODE_VPC
                    listed = wait_until_ready(
                        lambda: discover_route_tables(cloud, identity, config.route_table_ids),
                        what=f"the route tables of {identity.vpc_id} (VPC API)", stop=self.stop_event)
                    if listed is None:
                        return 0
                    tables = listed
                else:
                    raise ConfigError(f"instance {identity.instance_id} reports network type "
                                      f"{identity.network_type!r}; expected vpc or classic")
            published = source.published_attrs(public_ip)
            vtep_mac = choose_vtep_mac(netlink, settings,
                                       parse_mac(published.backend_field("VtepMAC")) if published else None)
            backend = self._vxlan_backend(netlink, settings, iface, network, identity, vtep_mac)
            if backend.eager:
                # Like flannel's RegisterNetwork: the device exists before the lease is published.
                backend.ensure_device()
            attrs = self._lease_attrs(public_ip, identity, settings, vtep_mac)
            lease = source.acquire(network, public_ip, attrs)
            log.info("acquired lease %s (%s, VtepMAC %s, expires in %.0fs)", lease.subnet,
                     f"instance {identity.instance_id}" if identity else "vxlan", vtep_mac,
                     (lease.expiration or time.time() + LEASE_TTL) - time.time())
            backend.own_subnet = lease.subnet
            if backend.eager:
                backend.ensure_device()
            node_rules = self._node_rules(netlink, network, lease.subnet)
            for ensure in node_rules.values():
                ensure()
            mtu = iface.mtu if self.mode == MODE_VPC else settings.device_mtu(iface.mtu)
            write_subnet_env(config.subnet_file,
                             render_subnet_env(network, lease.subnet, mtu=mtu, ip_masq=config.ip_masq))
            self.ready = True
            return self._serve(source, self.cloud, identity, network, tables, backend, node_rules)
        except LeaseLost:
            # Asked to stop while waiting for the lease is a clean stop, not a lost lease.
            return 0 if self.stop_requested else EXIT_LEASE_LOST
        finally:
            self.stop_event.set()
            for loop in (self.vxlan_loop, *self.rule_loops):
                if loop is not None:
                    loop.stop()
            for thread in self._threads:
                thread.join(timeout=5)
            netlink.close()
            source.close()

    def _node_rules(self, netlink: Netlink, network: NetworkConfig,
                    subnet: ipaddress.IPv4Network) -> dict[str, Callable[[], float | None]]:
        """flanneld's iptables chains and blackhole route for these flags, by name: each an ensure pass."""
        config = self.config
        rules: dict[str, Callable[[], float | None]] = {}
        if config.ip_masq or config.iptables_forward_rules:
            try:
                iptables = Iptables()
            except ConfigError as error:
                if config.ip_masq:
                    raise ConfigError(f"--ip-masq: {error}, or run without --ip-masq and let the CNI plugin "
                                      "masquerade") from None
                # flanneld carries on without its FORWARD rules too; say what that costs.
                log.error("FORWARD accept rules (FLANNEL-FWD) not installed: %s; pod traffic is dropped where "
                          "FORWARD's policy is DROP; install iptables or pass --iptables-forward-rules=false", error)
            else:
                chains = flannel_chains(iptables, network.network, subnet, ip_masq=config.ip_masq,
                                        forward_rules=config.iptables_forward_rules,
                                        random_fully_disable=config.ip_masq_fully_random_disable)
                rules["iptables"] = IptablesRules(iptables, chains).ensure
        if config.ip_blackhole_route:
            rules["blackhole-route"] = BlackholeRoute(netlink, subnet).ensure
        return rules

    def _vxlan_backend(self, netlink: Netlink, settings: VxlanSettings, iface: Interface, network: NetworkConfig,
                       identity: InstanceIdentity | None, vtep_mac: str) -> VxlanBackend:
        """The VXLAN data plane for this mode: every peer, or on a VPC node those the route table misses."""
        if self.mode == MODE_VPC:
            vpc_id = identity.vpc_id if identity and identity.vpc_id else ""

            def wanted(lease: Lease) -> bool:
                overflow = self.overflow_subnets()
                if lease.subnet in overflow or backend.own_subnet in overflow:
                    return True
                return not served_by_vpc_table(lease, vpc_id)
        else:
            def wanted(lease: Lease) -> bool:
                return True

        def snapshot() -> LeaseSnapshot:
            return self.source.snapshot() if self.source is not None else EMPTY_SNAPSHOT

        backend = VxlanBackend(netlink=netlink, settings=settings, iface=iface, network=network.network,
                               subnet_len=network.subnet_len, snapshot=snapshot, wanted=wanted, vtep_mac=vtep_mac,
                               eager=self.mode != MODE_VPC, full_resync=self.config.resync_interval)
        self.vxlan = backend
        return backend

    def _lease_attrs(self, public_ip: ipaddress.IPv4Address, identity: InstanceIdentity | None,
                     settings: VxlanSettings, vtep_mac: str) -> LeaseAttrs:
        """flannel's vxlan BackendData; on ali-vpc also who we are, so VPC writers can route to us."""
        vxlan_data = vxlan_backend_data(settings.vni, vtep_mac)
        if identity is None:
            return LeaseAttrs(public_ip=public_ip, backend_type=VXLAN_BACKEND_TYPE, backend_data=vxlan_data)
        backend_data: dict[str, Any] = {"InstanceId": identity.instance_id, "NetworkType": identity.network_type}
        if identity.vpc_id:
            backend_data["VpcId"] = identity.vpc_id
        backend_data.update(vxlan_data)
        return LeaseAttrs(public_ip=public_ip, backend_type=BACKEND_TYPE, backend_data=backend_data)

    def _start_loop(self, loop: ReconcileLoop, name: str) -> None:
        thread = threading.Thread(target=loop.run, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _serve(self, source: LeaseSource, cloud: Cloud | None, identity: InstanceIdentity | None,
               network: NetworkConfig, table_ids: list[str], backend: VxlanBackend,
               node_rules: Mapping[str, Callable[[], float | None]]) -> int:
        vxlan_only = not table_ids
        programmed = threading.Event()
        confirmed: list[frozenset[ipaddress.IPv4Network] | None] = [None]

        def vxlan_pass() -> float | None:
            result = backend.reconcile()
            # A node no route table carries is reachable once its device and peers are programmed.
            if vxlan_only and not programmed.is_set():
                programmed.set()
                source.report_vxlan_programmed(backend.settings.device, backend.report.peers)
            # Leases being moved off a table wait for every node's word that its VXLAN path to them is in
            # the kernel (only what a completed pass programmed counts); said again only when it changes.
            moving = self.moving_subnets() & backend.report.programmed
            if moving != confirmed[0]:
                try:
                    source.report_overflow_programmed(moving)
                except Exception as error:
                    # The kernel is programmed either way: the lease source being away must not fail the
                    # pass (and delay the next lease change); the confirmation is tried again next pass.
                    log.warning("cannot confirm the VXLAN path to %d moving overflow leases (%s); retrying at "
                                "the next pass", len(moving), error)
                    return min(result, VXLAN_CONFIRM_RETRY) if result is not None else VXLAN_CONFIRM_RETRY
                confirmed[0] = moving
            return result

        self.vxlan_loop = ReconcileLoop(f"vxlan {backend.settings.device}", vxlan_pass,
                                        resync_interval=self.config.resync_interval, coalesce=VXLAN_COALESCE,
                                        coalesce_max=0.1)

        def on_change() -> None:
            for table in self.tables.values():
                table.leadership.mark_dirty()
            if self.vxlan_loop is not None:
                self.vxlan_loop.mark_dirty()

        if table_ids:
            assert cloud is not None and identity is not None and identity.vpc_id
            cluster_id = source.cluster_id()
            log.info("cluster %s: route entries carry this id in their description (the proof of ownership)",
                     cluster_id)
            legacy = LegacyLeaseResolver(cloud.ecs, identity.vpc_id)
            for table_id in table_ids:
                writer = TableWriter(table_id=table_id, vpc_id=identity.vpc_id, network=network.network,
                                     api=cloud.vpc, snapshot=source.snapshot, cluster_id=cluster_id,
                                     legacy=legacy, report=source.report_route_states, overflow_store=source,
                                     read_quota=lambda: cloud.quotas.route_entry_quota(cloud.api.region),
                                     probe_interval=self.config.resync_interval, stop=self.stop_event)
                loop = ReconcileLoop(f"route-table {table_id}", writer.reconcile,
                                     resync_interval=self.config.resync_interval)
                leadership = TableLeadership(
                    table_id=table_id, loop=loop, ttl=self.config.writer_lock_ttl, stop=self.stop_event,
                    make_lock=source.writer_lock(table_id, self.config.writer_lock_ttl, identity.instance_id))
                writer.still_writer = leadership.writing
                self.tables[table_id] = _Table(writer, leadership)
        source.start_watching(on_change)
        for table in self.tables.values():
            table.leadership.start()
        self._start_loop(self.vxlan_loop, "vxlan")
        watcher_thread = threading.Thread(target=self._watch_device, args=(backend, self.vxlan_loop),
                                          name="vxlan-device-watch", daemon=True)
        watcher_thread.start()
        self._threads.append(watcher_thread)
        for name, ensure in node_rules.items():
            # flanneld's --iptables-resync period, for the blackhole route too.
            loop = ReconcileLoop(name, ensure, resync_interval=float(self.config.iptables_resync), jitter=0.1)
            self.rule_loops.append(loop)
            self._start_loop(loop, name)
        health = None
        if self.config.healthz_port:
            health = HealthServer(self.config.healthz_ip, self.config.healthz_port, health=self.health,
                                  ready=self.is_ready, metrics=self.metrics)
            health.start()
        try:
            source.hold(self.stop_event)
        finally:
            self.stop_event.set()
            for table in self.tables.values():
                table.leadership.thread.join(timeout=5)
            if health is not None:
                health.stop()
        return 0

    def _watch_device(self, backend: VxlanBackend, loop: ReconcileLoop) -> None:
        """Repair at once when the device is deleted (a network restart does that; flannel#869, #1434)."""
        try:
            monitor = NetlinkMonitor(links=True, tables=False)
        except OSError as error:
            log.warning("cannot follow link changes (%s); a deleted %s is recreated at the next resync",
                        error, backend.settings.device)
            return
        with monitor:
            while not self.stop_event.is_set():
                try:
                    event = monitor.next(timeout=1.0)
                except OSError as error:
                    log.warning("link change notifications failed (%s); relying on the periodic resync", error)
                    return
                if event is not None and event.action == "del" and event.key == backend.settings.device:
                    log.warning("%s was deleted by someone else; recreating it", event.key)
                    backend.forget_observation()
                    loop.mark_dirty()

    def overflow_subnets(self) -> frozenset[ipaddress.IPv4Network]:
        """The leases some table of ours cannot hold, as their writers published them (reached over VXLAN)."""
        published = self.source.route_overflow() if self.source is not None else {}
        seen, subnets = self._overflow_seen
        if published is not seen:
            subnets = frozenset(subnet for table_id, overflow in published.items() if table_id in self.tables
                                for subnet in overflow.subnets)
            self._overflow_seen = (published, subnets)
        return subnets

    def moving_subnets(self) -> frozenset[ipaddress.IPv4Network]:
        """The overflow leases our tables' writers are moving off them (entries still there, awaiting nodes)."""
        published = self.source.route_overflow() if self.source is not None else {}
        return frozenset(subnet for table_id, overflow in published.items() if table_id in self.tables
                         for subnet in overflow.moving)

    # -- observability -------------------------------------------------------------------

    def is_ready(self) -> bool:
        """Serving, and the lease source answers (a daemon cut off from it keeps its routes but is not ready)."""
        return self.ready and self.source is not None and self.source.snapshot().connected

    def health(self) -> tuple[bool, dict[str, Any]]:
        snapshot = self.source.snapshot() if self.source else None
        leases_ok = bool(snapshot and snapshot.connected)
        tables: dict[str, Any] = {}
        healthy = leases_ok and self.ready
        for table_id, table in self.tables.items():
            stats = table.leadership.loop.stats
            writer = table.leadership.is_writer
            info: dict[str, Any] = {"writer": writer, "last_success": stats.last_success,
                                    "consecutive_failures": stats.consecutive_failures,
                                    "last_error": stats.last_error}
            if table.writer.report.quota_error:
                info["quota_error"] = table.writer.report.quota_error
            overflow = self.source.route_overflow().get(table_id) if self.source else None
            info["overflow"] = len(overflow.subnets) if overflow else 0
            if writer and table.writer.report.unconfirmed:
                # Trimmed leases whose entries wait for nodes' VXLAN confirmations: which nodes, per lease.
                info["moving_to_vxlan"] = table.writer.report.unconfirmed
            if writer and stats.consecutive_failures >= 3:
                healthy = False
            tables[table_id] = info
        api_ok = True
        if self.cloud is not None:
            calls = self.cloud.api.counter.snapshot()
            api_ok = not calls or any(outcome == "success" for (_, outcome) in calls)
        vxlan: dict[str, Any] | None = None
        if self.vxlan is not None and self.vxlan_loop is not None:
            stats = self.vxlan_loop.stats
            report = self.vxlan.report
            vxlan = {"device": report.device, "ifindex": report.ifindex, "vtep_mac": self.vxlan.vtep_mac,
                     "peers": report.peers, "last_success": stats.last_success,
                     "consecutive_failures": stats.consecutive_failures, "last_error": stats.last_error,
                     "unusable": {str(subnet): reason for subnet, reason in report.unusable.items()}}
            if stats.consecutive_failures >= 3:
                healthy = False
        return healthy, {"status": "ok" if healthy else "unhealthy", "ready": self.ready, "mode": self.mode,
                         "lease_source": leases_ok, "etcd": leases_ok, "api": api_ok,
                         "leases": len(snapshot.leases) if snapshot else 0,
                         "tables": tables, "vxlan": vxlan}

    def metrics(self) -> dict[str, Any]:
        snapshot = self.source.snapshot() if self.source else None
        tables: dict[str, Any] = {}
        for table_id, table in self.tables.items():
            stats = table.leadership.loop.stats
            routes: dict[str, int] = {}
            plan = table.writer.report.plan
            overflow = self.source.route_overflow().get(table_id) if self.source else None
            for status in plan.statuses if plan else ():
                routes[status.state.value] = routes.get(status.state.value, 0) + 1
            tables[table_id] = {"passes": stats.passes, "failures": stats.failures,
                                "last_duration": stats.last_duration, "total_duration": stats.total_duration,
                                "writer": table.leadership.is_writer,
                                "routes": routes, "overflow": len(overflow.subnets) if overflow else 0}
        vxlan: dict[str, Any] = {}
        if self.vxlan is not None and self.vxlan_loop is not None:
            stats = self.vxlan_loop.stats
            vxlan = {"passes": stats.passes, "failures": stats.failures, "last_duration": stats.last_duration,
                     "peers": self.vxlan.report.peers, "unusable": len(self.vxlan.report.unusable)}
        return {
            "tables": tables,
            "vxlan": vxlan,
            "api_calls": self.cloud.api.counter.snapshot() if self.cloud else {},
            "leases": len(snapshot.leases) if snapshot else 0,
            "malformed_leases": len(snapshot.malformed) if snapshot else 0,
        }


def run_daemon(config: DaemonConfig) -> int:
    daemon = RouteDaemon(config)

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: shutting down (routes, VXLAN entries and lease are kept)", signum)
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return daemon.run()
    except ConfigError as error:
        log.error("%s", error)
        return error.exit_code
    except (CloudError, FlannelAliVpcError) as error:
        log.error("%s", error)
        return 2
