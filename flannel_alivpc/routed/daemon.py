"""The route daemon's wiring: ``flannel-alivpc --iface eth0``.

Start-up order (each step must succeed before the next; nothing in the cloud
or etcd is written until everything needed to do the job is known, so a
misconfigured node never leaves a lease without a route):

1. read and validate the network config from etcd (retried until it appears);
2. pick the external interface and this node's PublicIP;
3. read the instance identity from the metadata service and discover the
   route tables to manage (``--route-table-ids`` or every table of the VPC);
4. acquire (or reuse) the subnet lease, write subnet.env;
5. follow the leases, campaign for the writer lock of each table, serve
   /healthz and /metrics, renew the lease until stopped.

SIGTERM/SIGINT stop cleanly: writer locks are released, the lease is kept
(as flannel does), routes are left in place. A lease deleted or taken over
ends the daemon with exit code 1 ("Lease has been revoked").
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flannel_alivpc.clients.cloud import Cloud, CloudConfig, build_cloud
from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.clients.netlink import select_interface
from flannel_alivpc.core.cloud import InstanceIdentity
from flannel_alivpc.core.errors import CloudError, ConfigError, EtcdError, FlannelAliVpcError
from flannel_alivpc.core.network import BACKEND_TYPE, LEASE_TTL, LeaseAttrs, NetworkConfig, render_subnet_env
from flannel_alivpc.core.reconcile import ReconcileLoop
from flannel_alivpc.routed.config import DaemonConfig
from flannel_alivpc.routed.health import HealthServer
from flannel_alivpc.routed.leases import (
    LeaseLost,
    LeaseManager,
    LeaseWatcher,
    read_network_config,
    read_previous_subnet,
    write_subnet_env,
)
from flannel_alivpc.routed.vpc_routes import TableWriter
from flannel_alivpc.routed.writer import TableLeadership, WriterLock

log = logging.getLogger(__name__)

EXIT_LEASE_LOST = 1
CONFIG_RETRY_INTERVAL = 5.0


def connect_etcd(config: DaemonConfig) -> EtcdClient:
    return EtcdClient(config.etcd_endpoints, ca_file=config.etcd_cafile, cert_file=config.etcd_certfile,
                      key_file=config.etcd_keyfile, username=config.etcd_username, password=config.etcd_password)


def connect_cloud(config: DaemonConfig, env: Mapping[str, str]) -> Cloud:
    return build_cloud(CloudConfig(region=config.region, api_endpoint=config.api_endpoint,
                                   metadata_url=config.metadata_url), env)


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


def writer_lock_name(prefix: str, table_id: str) -> str:
    return f"{prefix.rstrip('/')}/alivpc/writers/{table_id}"


@dataclass
class _Table:
    writer: TableWriter
    leadership: TableLeadership


class RouteDaemon:
    def __init__(self, config: DaemonConfig, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = env if env is not None else os.environ
        self.stop_event = threading.Event()
        self.ready = False
        self.tables: dict[str, _Table] = {}
        self.watcher: LeaseWatcher | None = None
        self.cloud: Cloud | None = None
        self.network: NetworkConfig | None = None

    def stop(self) -> None:
        self.stop_event.set()

    def _wait_for_network_config(self, etcd: EtcdClient) -> NetworkConfig | None:
        while not self.stop_event.is_set():
            try:
                return read_network_config(etcd, self.config.etcd_prefix)
            except (ConfigError, EtcdError) as error:
                log.error("%s (retrying in %.0fs)", error, CONFIG_RETRY_INTERVAL)
            self.stop_event.wait(CONFIG_RETRY_INTERVAL)
        return None

    def run(self) -> int:
        config = self.config
        etcd = connect_etcd(config)
        try:
            network = self._wait_for_network_config(etcd)
            if network is None:
                return 0
            self.network = network
            if network.backend_type != BACKEND_TYPE:
                raise ConfigError(f"network config Backend.Type is {network.backend_type!r}; this daemon serves "
                                  f'"{BACKEND_TYPE}" (VXLAN support is tracked separately)')
            iface = select_interface(config.iface, config.iface_regex)
            public_ip = ipaddress.IPv4Address(config.public_ip) if config.public_ip else iface.primary_ipv4
            if public_ip is None:
                raise ConfigError(f"interface {iface.name} has no IPv4 address; pass --public-ip")
            log.info("using interface %s (mtu %d), public IP %s", iface.name, iface.mtu, public_ip)
            cloud = connect_cloud(config, self.env)
            self.cloud = cloud
            identity = cloud.metadata.identity()
            tables = discover_route_tables(cloud, identity, config.route_table_ids)
            if identity.network_type != "vpc":
                log.error("instance %s is on the %s network: there is no VPC route table to program; "
                          "its pods are unreachable until the VXLAN fallback is available",
                          identity.instance_id, identity.network_type)
            backend_data = {"InstanceId": identity.instance_id, "NetworkType": identity.network_type}
            if identity.vpc_id:
                backend_data["VpcId"] = identity.vpc_id
            attrs = LeaseAttrs(public_ip=public_ip, backend_type=BACKEND_TYPE, backend_data=backend_data)
            manager = LeaseManager(etcd, config.etcd_prefix, network, public_ip, lambda: attrs,
                                   read_previous_subnet(config.subnet_file), config.renew_margin_minutes * 60.0)
            lease = manager.acquire()
            log.info("acquired lease %s (instance %s, expires in %.0fs)", lease.subnet, identity.instance_id,
                     (lease.expiration or time.time() + LEASE_TTL) - time.time())
            write_subnet_env(config.subnet_file,
                             render_subnet_env(network, lease.subnet, mtu=iface.mtu, ip_masq=config.ip_masq))
            self.ready = True
            return self._serve(etcd, cloud, identity, network, manager, tables)
        except LeaseLost:
            return EXIT_LEASE_LOST
        finally:
            self.stop_event.set()
            if self.watcher is not None:
                self.watcher.stop()
            etcd.close()

    def _serve(self, etcd: EtcdClient, cloud: Cloud, identity: InstanceIdentity, network: NetworkConfig,
               manager: LeaseManager, table_ids: list[str]) -> int:
        def on_change() -> None:
            for table in self.tables.values():
                table.leadership.mark_dirty()
            manager.wake()

        watcher = LeaseWatcher(etcd, self.config.etcd_prefix, on_change)
        self.watcher = watcher
        for table_id in table_ids:
            writer = TableWriter(table_id=table_id, vpc_id=identity.vpc_id or "", network=network.network,
                                 api=cloud.vpc, snapshot=watcher.snapshot, stop=self.stop_event)
            loop = ReconcileLoop(f"route-table {table_id}", writer.reconcile,
                                 resync_interval=self.config.resync_interval)
            lock_name = writer_lock_name(self.config.etcd_prefix, table_id)

            def make_lock(name: str = lock_name) -> WriterLock:
                return etcd.lock(name, self.config.writer_lock_ttl, holder=identity.instance_id)

            leadership = TableLeadership(table_id=table_id, loop=loop, ttl=self.config.writer_lock_ttl,
                                         stop=self.stop_event, make_lock=make_lock)
            self.tables[table_id] = _Table(writer, leadership)
        watcher.start()
        for table in self.tables.values():
            table.leadership.start()
        health = None
        if self.config.healthz_port:
            health = HealthServer(self.config.healthz_ip, self.config.healthz_port, health=self.health,
                                  ready=lambda: self.ready, metrics=self.metrics)
            health.start()
        try:
            manager.run_renewal(self.stop_event, watcher)
        finally:
            self.stop_event.set()
            for table in self.tables.values():
                table.leadership.thread.join(timeout=5)
            if health is not None:
                health.stop()
        return 0

    # -- observability -------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        snapshot = self.watcher.snapshot() if self.watcher else None
        etcd_ok = bool(snapshot and snapshot.connected)
        tables: dict[str, Any] = {}
        healthy = etcd_ok and self.ready
        for table_id, table in self.tables.items():
            stats = table.leadership.loop.stats
            writer = table.leadership.is_writer
            info: dict[str, Any] = {"writer": writer, "last_success": stats.last_success,
                                    "consecutive_failures": stats.consecutive_failures,
                                    "last_error": stats.last_error}
            if table.writer.report.quota_error:
                info["quota_error"] = table.writer.report.quota_error
            if writer and stats.consecutive_failures >= 3:
                healthy = False
            tables[table_id] = info
        api_ok = True
        if self.cloud is not None:
            calls = self.cloud.api.counter.snapshot()
            api_ok = not calls or any(outcome == "success" for (_, outcome) in calls)
        return healthy, {"status": "ok" if healthy else "unhealthy", "ready": self.ready, "etcd": etcd_ok,
                         "api": api_ok, "leases": len(snapshot.leases) if snapshot else 0, "tables": tables}

    def metrics(self) -> dict[str, Any]:
        snapshot = self.watcher.snapshot() if self.watcher else None
        tables: dict[str, Any] = {}
        for table_id, table in self.tables.items():
            stats = table.leadership.loop.stats
            routes: dict[str, int] = {}
            plan = table.writer.report.plan
            for status in plan.statuses if plan else ():
                routes[status.state.value] = routes.get(status.state.value, 0) + 1
            tables[table_id] = {"passes": stats.passes, "failures": stats.failures,
                                "last_duration": stats.last_duration, "writer": table.leadership.is_writer,
                                "routes": routes}
        return {
            "tables": tables,
            "api_calls": self.cloud.api.counter.snapshot() if self.cloud else {},
            "leases": len(snapshot.leases) if snapshot else 0,
            "malformed_leases": len(snapshot.malformed) if snapshot else 0,
        }


def run_daemon(config: DaemonConfig) -> int:
    daemon = RouteDaemon(config)

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: shutting down (routes and lease are kept)", signum)
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return daemon.run()
    except (ConfigError, CloudError, FlannelAliVpcError) as error:
        log.error("%s", error)
        return 2
