"""Where the leases live: one interface, and its etcd implementation (flannel's registry).

The daemon, the route writers, the VXLAN backend and the ``routes``/``leases``
commands see only ``LeaseSource``: the network config, this node's lease, a
snapshot of everyone's, a writer lock per route table, the cluster's id, a
place to say how each node's routes stand, and each table's overflow (the
nodes its writer cannot give an entry, which every daemon reaches over VXLAN:
published by the writer, followed by every daemon, so no daemon but the writer
reads the route table), and each node's confirmation that its VXLAN path to
the overflow leases being moved off a table is in place (before their entries
are deleted). ``EtcdLeaseSource`` keeps them under flannel's etcd prefix (the
overflow at ``<prefix>/alivpc/overflow/<table-id>``, the confirmations at
``<prefix>/alivpc/overflow-programmed/<subnet-key>``);
``routed.kube_leases.KubeLeaseSource`` in the Kubernetes Node objects, as
flanneld's ``--kube-subnet-mgr`` does.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from flannel_alivpc.core.errors import ConfigError, WatchCompacted
from flannel_alivpc.core.network import IPv4Network, Lease, LeaseAttrs, NetworkConfig, parse_subnet_key, subnet_key
from flannel_alivpc.core.routes import NodeRouteState, ProgrammedOverflow, TableOverflow
from flannel_alivpc.routed.config import DaemonConfig
from flannel_alivpc.routed.leases import (
    EMPTY_SNAPSHOT,
    LeaseManager,
    LeaseSnapshot,
    LeaseWatcher,
    ensure_cluster_id,
    load_published_attrs,
    read_cluster_id,
    read_network_config,
    read_previous_subnet,
)
from flannel_alivpc.routed.startup import network_failure, wait_until_ready
from flannel_alivpc.routed.writer import WriterLock

if TYPE_CHECKING:
    # Imported where an etcd client is made (EtcdLeaseSource): kube mode loads no etcd client, nor grpc.
    from flannel_alivpc.clients.etcd import EtcdClient, EtcdWatch, KeyValue

log = logging.getLogger(__name__)


class LeaseSource(Protocol):
    """Everything the daemon and the inspection commands need of where the leases live."""

    description: str
    """For logs: "etcd http://...:2379 prefix /coreos.com/network", "Kubernetes node ip-10-0-0-1"."""

    def wait_for_network_config(self, stop: threading.Event) -> NetworkConfig | None:
        """The network config, retried (with a log line saying what is wrong) until valid; None once stopped."""
        ...

    def read_network_config(self) -> NetworkConfig:
        """The network config, read once (``ConfigError`` when missing or invalid)."""
        ...

    def stored_public_ip(self) -> ipaddress.IPv4Address | None:
        """A PublicIP the operator pinned on this node (kube: the node-public-ip annotation)."""
        ...

    def published_attrs(self, public_ip: ipaddress.IPv4Address) -> LeaseAttrs | None:
        """What this node published last time (its VtepMAC is reused, so peers need no update)."""
        ...

    def acquire(self, network: NetworkConfig, public_ip: ipaddress.IPv4Address, attrs: LeaseAttrs) -> Lease:
        """Take (or reuse) this node's lease and publish ``attrs`` on it."""
        ...

    def start_watching(self, on_change: Callable[[], None], *, expirations: bool = False) -> None:
        """Follow every lease; ``on_change`` only marks work as due.

        ``expirations``: also learn when each lease expires (``leases`` shows it;
        the daemon does not need it, and in etcd it costs a call per lease).
        """
        ...

    def snapshot(self) -> LeaseSnapshot: ...

    def wait_in_sync(self, timeout: float) -> bool:
        """Wait for the first complete view of every lease (after ``start_watching``)."""
        ...

    def hold(self, stop: threading.Event) -> None:
        """Keep this node's lease until ``stop``; raises ``LeaseLost`` when it is taken away."""
        ...

    def cluster_id(self) -> str:
        """The id that marks this cluster's route entries (made once, never changed)."""
        ...

    def existing_cluster_id(self) -> str | None:
        """The cluster id if one was made, without making it (for read-only commands)."""
        ...

    def writer_lock(self, table_id: str, ttl: int, holder: str) -> Callable[[], WriterLock]:
        """A factory of the lock that elects one writer for ``table_id``."""
        ...

    def report_route_states(self, table_id: str, states: Mapping[ipaddress.IPv4Network, NodeRouteState]) -> None:
        """Tell the nodes how their routes stand in ``table_id`` (called by its writer after each pass)."""
        ...

    def publish_route_overflow(self, table_id: str, overflow: TableOverflow) -> None:
        """Publish the leases ``table_id`` cannot hold, for every daemon (called by its writer on change)."""
        ...

    def read_route_overflow(self, table_id: str) -> TableOverflow | None:
        """What was last published for ``table_id``, read now (a writer starting a pass, ``routes``)."""
        ...

    def route_overflow(self) -> Mapping[str, TableOverflow]:
        """Every table's published overflow as last seen (after ``start_watching``; changes call ``on_change``)."""
        ...

    def report_vxlan_programmed(self, device: str, peers: int) -> None:
        """This node needs no route entry and its VXLAN device and peers are in the kernel."""
        ...

    def report_overflow_programmed(self, subnets: frozenset[IPv4Network]) -> None:
        """Confirm that this node's VXLAN path to these moving overflow leases is in the kernel (empty: none)."""
        ...

    def overflow_programmed(self) -> Mapping[IPv4Network, ProgrammedOverflow]:
        """Every node's confirmation, by the node's subnet, read now (a writer about to delete trimmed entries)."""
        ...

    def close(self) -> None: ...


OVERFLOW_BACKOFF_MAX = 10.0


def overflow_prefix(prefix: str) -> str:
    return f"{prefix.rstrip('/')}/alivpc/overflow/"


def programmed_prefix(prefix: str) -> str:
    return f"{prefix.rstrip('/')}/alivpc/overflow-programmed/"


class OverflowWatcher:
    """Follows ``<prefix>/alivpc/overflow/`` (list, then watch): every table writer's published overflow.

    A value that does not parse is skipped with one warning and the table's
    last good value is kept: bad input never takes a node's VXLAN path away.
    """

    def __init__(self, etcd: EtcdClient, prefix: str, on_change: Callable[[], None]) -> None:
        self._etcd = etcd
        self._prefix = overflow_prefix(prefix)
        self._on_change = on_change
        self._tables: Mapping[str, TableOverflow] = MappingProxyType({})
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watch: EtcdWatch | None = None
        self._thread = threading.Thread(target=self._run, name="overflow-watcher", daemon=True)

    def start(self) -> OverflowWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            watch = self._watch
        if watch is not None:
            watch.cancel()
        self._thread.join(timeout=5)

    def tables(self) -> Mapping[str, TableOverflow]:
        """A new mapping object after every change (callers may cache on its identity)."""
        return self._tables

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                kvs, revision = self._etcd.get_prefix(self._prefix)
                tables = {table_id: known for table_id, known in self._tables.items()
                          if any(kv.key == self._prefix + table_id for kv in kvs)}
                for kv in kvs:
                    self._parse_into(tables, kv)
                self._set(tables)
                watch = self._etcd.watch_prefix(self._prefix, revision + 1)
                with self._lock:
                    self._watch = watch
                if self._stop.is_set():
                    watch.cancel()
                    return
                backoff = 0.5
                for batch in watch:
                    tables = dict(self._tables)
                    for event in batch:
                        if event.kind == "delete":
                            tables.pop(event.kv.key[len(self._prefix):], None)
                        else:
                            self._parse_into(tables, event.kv)
                    self._set(tables)
            except WatchCompacted:
                continue
            except Exception as error:
                if self._stop.is_set():
                    return
                log.warning("following the route tables' overflow in etcd failed (keeping the last view; "
                            "retrying): %s", error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, OVERFLOW_BACKOFF_MAX)
            finally:
                with self._lock:
                    self._watch = None

    def _parse_into(self, tables: dict[str, TableOverflow], kv: KeyValue) -> None:
        table_id = kv.key[len(self._prefix):]
        try:
            tables[table_id] = TableOverflow.from_json(kv.value)
        except ValueError as error:
            log.warning("ignoring the published overflow of route table %s (%s): %s; keeping the last good "
                        "one until its writer publishes again", table_id, kv.key, error)

    def _set(self, tables: dict[str, TableOverflow]) -> None:
        changed = tables != dict(self._tables)
        self._tables = MappingProxyType(tables)
        if changed:
            try:
                self._on_change()
            except Exception:
                log.exception("overflow change callback failed")


class EtcdLeaseSource:
    """flannel's etcd registry: ``<prefix>/config``, ``<prefix>/subnets/``, lease TTLs and renewal."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.prefix = config.etcd_prefix
        from flannel_alivpc.clients.etcd import EtcdClient

        self.etcd = EtcdClient(config.etcd_endpoints, ca_file=config.etcd_cafile, cert_file=config.etcd_certfile,
                               key_file=config.etcd_keyfile, username=config.etcd_username,
                               password=config.etcd_password)
        self.description = f"etcd {','.join(config.etcd_endpoints)} prefix {self.prefix}"
        self._manager: LeaseManager | None = None
        self._own: Lease | None = None
        self._watcher: LeaseWatcher | None = None
        self._overflow: OverflowWatcher | None = None

    def __repr__(self) -> str:
        return f"EtcdLeaseSource({self.description!r})"

    def wait_for_network_config(self, stop: threading.Event) -> NetworkConfig | None:
        # A missing or invalid config is waited for too: the operator may be about to put it.
        return wait_until_ready(lambda: read_network_config(self.etcd, self.prefix), what="the network config",
                                stop=stop, transient=lambda e: isinstance(e, ConfigError) or network_failure(e))

    def read_network_config(self) -> NetworkConfig:
        return read_network_config(self.etcd, self.prefix)

    def stored_public_ip(self) -> ipaddress.IPv4Address | None:
        return None

    def published_attrs(self, public_ip: ipaddress.IPv4Address) -> LeaseAttrs | None:
        return load_published_attrs(self.etcd, self.prefix, public_ip)

    def acquire(self, network: NetworkConfig, public_ip: ipaddress.IPv4Address, attrs: LeaseAttrs) -> Lease:
        self._manager = LeaseManager(self.etcd, self.prefix, network, public_ip, lambda: attrs,
                                     read_previous_subnet(self.config.subnet_file),
                                     self.config.renew_margin_minutes * 60.0)
        self._own = self._manager.acquire()
        return self._own

    def start_watching(self, on_change: Callable[[], None], *, expirations: bool = False) -> None:
        def changed() -> None:
            on_change()
            if self._manager is not None:
                self._manager.wake()

        self._watcher = LeaseWatcher(self.etcd, self.prefix, changed, fetch_expirations=expirations).start()
        self._overflow = OverflowWatcher(self.etcd, self.prefix, on_change).start()

    def snapshot(self) -> LeaseSnapshot:
        return self._watcher.snapshot() if self._watcher is not None else EMPTY_SNAPSHOT

    def wait_in_sync(self, timeout: float) -> bool:
        return self._watcher is not None and self._watcher.wait_in_sync(timeout)

    def hold(self, stop: threading.Event) -> None:
        assert self._manager is not None, "acquire() first"
        self._manager.run_renewal(stop, self._watcher)

    def cluster_id(self) -> str:
        return ensure_cluster_id(self.etcd, self.prefix)

    def existing_cluster_id(self) -> str | None:
        return read_cluster_id(self.etcd, self.prefix)

    def writer_lock(self, table_id: str, ttl: int, holder: str) -> Callable[[], WriterLock]:
        name = f"{self.prefix.rstrip('/')}/alivpc/writers/{table_id}"
        return lambda: self.etcd.lock(name, ttl, holder=holder)

    def report_route_states(self, table_id: str, states: Mapping[ipaddress.IPv4Network, NodeRouteState]) -> None:
        """etcd mode has no node objects to report to: /healthz, /metrics and logs carry the state."""

    def report_vxlan_programmed(self, device: str, peers: int) -> None:
        """As ``report_route_states``: nothing to report to in etcd mode."""

    def publish_route_overflow(self, table_id: str, overflow: TableOverflow) -> None:
        self.etcd.put(overflow_prefix(self.prefix) + table_id, overflow.to_json())

    def read_route_overflow(self, table_id: str) -> TableOverflow | None:
        kv = self.etcd.get(overflow_prefix(self.prefix) + table_id)
        if kv is None:
            return None
        try:
            return TableOverflow.from_json(kv.value)
        except ValueError as error:
            log.warning("%s: the published overflow (%s) is unusable (%s); starting without it", table_id, kv.key,
                        error)
            return None

    def route_overflow(self) -> Mapping[str, TableOverflow]:
        return self._overflow.tables() if self._overflow is not None else MappingProxyType({})

    def report_overflow_programmed(self, subnets: frozenset[IPv4Network]) -> None:
        assert self._own is not None, "acquire() first"
        key = programmed_prefix(self.prefix) + subnet_key(self._own.subnet)
        if subnets:
            self.etcd.put(key, ProgrammedOverflow(subnets, self._own.attrs.public_ip).to_json())
        else:
            # Only while something moves does a node hold a key here.
            self.etcd.delete(key)

    def overflow_programmed(self) -> Mapping[IPv4Network, ProgrammedOverflow]:
        prefix = programmed_prefix(self.prefix)
        kvs, _ = self.etcd.get_prefix(prefix)
        confirmations: dict[IPv4Network, ProgrammedOverflow] = {}
        for kv in kvs:
            try:
                confirmations[parse_subnet_key(kv.key[len(prefix):])] = ProgrammedOverflow.from_json(kv.value)
            except ValueError as error:
                # Not a confirmation: its node counts as not confirmed, so nothing is deleted on its account.
                log.debug("ignoring %s: %s", kv.key, error)
        return confirmations

    def close(self) -> None:
        if self._overflow is not None:
            self._overflow.stop()
        if self._watcher is not None:
            self._watcher.stop()
        self.etcd.close()
