"""The Kubernetes lease source: flanneld's ``--kube-subnet-mgr`` (Nodes as leases), Lease-elected
writers, and the Node ``NetworkUnavailable`` condition from the real route state.

* **Leases.** A node's lease is its ``spec.podCIDR``; it publishes its
  BackendData in the Node's flannel annotations (``core.kube_subnets``), as
  flanneld does, through ``nodes/status``. Everyone's leases come from one
  list and then one watch of the Nodes (re-listed only when the server says
  the history is gone, 410). A Node whose flannel annotations are malformed is
  skipped with one Warning Event; its podCIDR is protected (no route there is
  deleted). A Node without a podCIDR is waited for, and said so.
* **Writers.** One ``coordination.k8s.io/v1`` Lease per route table, in the
  daemon's namespace (``flannel-alivpc-writer-<table-id>``). The writer also
  publishes, on that Lease, which subnets its table carries (``Available``)
  and which it refused, so that whichever writer reports last sees every
  table's state.
* **Overflow.** A writer whose table cannot hold every lease publishes the
  rest on its Lease too (``OVERFLOW_ANNOTATION``); every daemon already
  reads every table's writer Lease as a candidate, so it learns the overflow
  from those reads, with no extra request. A node confirms its VXLAN path to
  leases being moved off a table on its own Node (``PROGRAMMED_ANNOTATION``,
  through ``nodes/status`` as the flannel annotations); writers read the
  confirmations from the Nodes they already follow.
* **Conditions.** A node's ``NetworkUnavailable`` turns ``False``
  (``RouteCreated``) only once its entry is Available in every table that
  must carry it, and ``True`` (``NoRouteCreated``, the cloud's words in the
  message) when an entry is refused; a Warning Event on the Node marks each
  change into a refusal, not each retry.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flannel_alivpc.clients.kube import KubeClient
from flannel_alivpc.core.errors import ConfigError, LeaseLost
from flannel_alivpc.core.kube import NETWORK_UNAVAILABLE, KubeConflict, KubeError, KubeGone, Node
from flannel_alivpc.core.kube import Lease as KubeLease
from flannel_alivpc.core.kube_subnets import (
    EVENT_NAMESPACE,
    FlannelAnnotations,
    check_pod_cidr,
    ipv4_pod_cidr,
    lease_annotations,
    node_lease,
)
from flannel_alivpc.core.network import IPv4Network, Lease, LeaseAttrs, NetworkConfig, parse_network_config
from flannel_alivpc.core.routes import NodeRouteState, ProgrammedOverflow, TableOverflow
from flannel_alivpc.kube_lease_lock import KubeLeaseLock
from flannel_alivpc.routed.config import DaemonConfig
from flannel_alivpc.routed.leases import EMPTY_SNAPSHOT, LeaseSnapshot
from flannel_alivpc.routed.writer import WriterLock

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "kube-system"
WATCH_TIMEOUT = 300
"""Seconds a watch stays open before it is resumed from its last resourceVersion (no re-list)."""
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
PODCIDR_WAIT_LOG = 30.0
CLUSTER_ID_LEASE = "flannel-alivpc-cluster-id"
CLUSTER_ID_ANNOTATION = "flannel-alivpc.io/cluster-id"
ROUTE_STATE_ANNOTATION = "flannel-alivpc.io/route-state"
OVERFLOW_ANNOTATION = "flannel-alivpc.io/route-overflow"
PROGRAMMED_ANNOTATION = "flannel-alivpc.io/overflow-programmed"
OVERFLOW_CHECK = 0.5
"""Seconds between looks at the writer Leases as last read (local: no request is made)."""
COMPONENT = "flannel-alivpc"


class NodeNameMissing(ConfigError):
    """flanneld exits 1 when it cannot tell which Node it runs on; so do we."""

    exit_code = 1


_UNWRITTEN = object()


def writer_lease_name(table_id: str) -> str:
    return f"flannel-alivpc-writer-{table_id}"


@dataclass(frozen=True)
class _Parsed:
    """What one Node means for the leases: a lease, a problem (with the subnet to protect), or nothing."""

    lease: Lease | None = None
    problem: str = ""
    protected: IPv4Network | None = None


def _parse(node: Node, names: FlannelAnnotations) -> _Parsed:
    try:
        return _Parsed(lease=node_lease(node, names))
    except ValueError as error:
        try:
            subnet = ipv4_pod_cidr(node)
        except ValueError:
            subnet = None
        return _Parsed(problem=str(error), protected=subnet)


class NodeWatcher:
    """Every Node, from one list and then one resumed watch; the lease snapshot derived from them.

    Each Node is parsed once per change. Only a change of what a Node means
    for the leases (upstream's rule: backend type, backend data, public IP,
    and here the podCIDR) counts as a change: status updates such as the
    conditions the writers set, or the kubelet's, wake nobody.
    """

    def __init__(self, kube: KubeClient, names: FlannelAnnotations, on_change: Callable[[], None],
                 on_malformed: Callable[[Node, str], None]) -> None:
        self._kube = kube
        self._names = names
        self._on_change = on_change
        self._on_malformed = on_malformed
        self._lock = threading.Lock()
        self._nodes: dict[str, Node] = {}
        self._parsed: dict[str, _Parsed] = {}
        self._synced = threading.Event()
        self._connected = False
        self._revision = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-watcher", daemon=True)
        self._snapshot: LeaseSnapshot | None = None
        self.lists = 0
        self.watches = 0

    def start(self) -> NodeWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._kube.stop_watches()
        self._thread.join(timeout=5)

    def wait_in_sync(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def node(self, name: str) -> Node | None:
        with self._lock:
            return self._nodes.get(name)

    def nodes(self) -> list[Node]:
        with self._lock:
            return list(self._nodes.values())

    def snapshot(self) -> LeaseSnapshot:
        with self._lock:
            cached = self._snapshot
            if cached is not None and cached.revision == self._revision and cached.connected == self._connected \
                    and cached.in_sync == self._synced.is_set():
                return cached
            leases: dict[IPv4Network, Lease] = {}
            malformed: dict[str, str] = {}
            by_subnet: dict[IPv4Network, str] = {}
            for name in sorted(self._parsed):
                parsed = self._parsed[name]
                if parsed.lease is not None:
                    leases.setdefault(parsed.lease.subnet, parsed.lease)
                elif parsed.problem:
                    malformed[f"node/{name}"] = parsed.problem
                    if parsed.protected is not None:
                        by_subnet[parsed.protected] = parsed.problem
            self._snapshot = LeaseSnapshot(leases=leases, malformed=malformed, revision=self._revision,
                                           in_sync=self._synced.is_set(), malformed_by_subnet=by_subnet,
                                           connected=self._connected)
            return self._snapshot

    def _run(self) -> None:
        backoff = BACKOFF_INITIAL
        failing = False
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._relist()
                if failing:
                    log.info("the Kubernetes API answers again; following Nodes from resourceVersion %s", version)
                    failing = False
                backoff = BACKOFF_INITIAL
                self.watches += 1
                for event in self._kube.watch_nodes(version, WATCH_TIMEOUT):
                    self._apply(event.type, event.object)
                    version = event.object.meta.resource_version or version
            except KubeGone:
                log.info("the Node watch history is gone (410); listing the Nodes again")
                version = ""
            except KubeError as error:
                if self._stop.is_set():
                    return
                if not failing:
                    log.warning("lost the Kubernetes API while following Nodes (keeping the last %d; retrying "
                                "with backoff): %s", len(self._nodes), error)
                failing = True
                # Start again from a list: it proves the API answers (a quiet watch would not) and
                # catches up on whatever changed meanwhile. Only failures cost a list, never time.
                version = ""
                self._set_connected(False)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _relist(self) -> str:
        nodes, version = self._kube.list_nodes()
        self.lists += 1
        parsed = {n.meta.name: _parse(n, self._names) for n in nodes}
        with self._lock:
            problems = [(n, parsed[n.meta.name].problem) for n in nodes
                        if parsed[n.meta.name].problem and self._parsed.get(n.meta.name) != parsed[n.meta.name]]
            self._nodes = {n.meta.name: n for n in nodes}
            self._parsed = parsed
            self._revision += 1
            self._connected = True
        self._synced.set()
        for node, problem in problems:
            self._report(node, problem)
        self._notify()
        return version

    def _apply(self, kind: str, node: Node) -> None:
        name = node.meta.name
        parsed = _Parsed() if kind == "DELETED" else _parse(node, self._names)
        with self._lock:
            if kind == "DELETED":
                self._nodes.pop(name, None)
            else:
                self._nodes[name] = node
            previous = self._parsed.get(name)
            changed = previous != parsed
            if kind == "DELETED":
                self._parsed.pop(name, None)
            else:
                self._parsed[name] = parsed
            if changed:
                self._revision += 1
            self._connected = True
        if changed:
            if parsed.problem:
                self._report(node, parsed.problem)
            self._notify()

    def _report(self, node: Node, problem: str) -> None:
        """One Warning per change of a Node's annotation problem (the caller checks it changed)."""
        log.warning("skipping peer %s: %s", node.meta.name, problem)
        self._on_malformed(node, problem)

    def _set_connected(self, connected: bool) -> None:
        with self._lock:
            changed = self._connected != connected
            self._connected = connected
        if changed:
            self._notify()

    def _notify(self) -> None:
        try:
            self._on_change()
        except Exception:
            log.exception("lease change callback failed")


def _route_state(value: Any) -> tuple[bool, str]:
    """One published [routed, why]; a bare string is the earlier form ("" routed, else the refusal)."""
    if isinstance(value, list) and len(value) == 2:
        return bool(value[0]), str(value[1] or "")
    return value == "", str(value or "")


def _version(node: Node) -> int:
    try:
        return int(node.meta.resource_version)
    except ValueError:
        return 0


@dataclass
class _NodeVerdict:
    status: str
    reason: str
    message: str


class KubeLeaseSource:
    """The Node objects as leases (``--kube-subnet-mgr``)."""

    def __init__(self, config: DaemonConfig, env: Mapping[str, str], kube: KubeClient | None = None, *,
                 own_node: bool = True, stop: threading.Event | None = None) -> None:
        """``own_node`` False: read-only use (``routes``, ``leases``), which needs no NODE_NAME.

        ``stop`` (the daemon's) ends the waits for this Node and its podCIDR: they raise ``LeaseLost``.
        """
        if own_node and not config.node_name:
            raise NodeNameMissing("--kube-subnet-mgr needs this node's name in env NODE_NAME; in the DaemonSet set it "
                              "from the downward API: env: [{name: NODE_NAME, valueFrom: {fieldRef: "
                              "{fieldPath: spec.nodeName}}}]")
        self.config = config
        self.node_name = config.node_name or ""
        self.namespace = config.pod_namespace or DEFAULT_NAMESPACE
        self.names = FlannelAnnotations.for_prefix(config.kube_annotation_prefix)
        self.kube = kube or KubeClient.connect(config.kubeconfig_file, host=config.kube_api_url)
        self.description = f"Kubernetes Nodes (this node {self.node_name or '-'}, namespace {self.namespace})"
        self._watcher: NodeWatcher | None = None
        self._on_change: Callable[[], None] = lambda: None
        self._locks: dict[str, KubeLeaseLock] = {}
        self._own: Lease | None = None
        self._verdicts: dict[str, _NodeVerdict] = {}
        self._written: dict[str, int] = {}
        """Node -> the resourceVersion our last condition patch produced."""
        self._tables: dict[str, dict[str, Any]] = {}
        """table -> subnet -> [routed, why] as this daemon's writers last saw it."""
        self._report_lock = threading.Lock()
        self._conditions_due = threading.Event()
        self._conditions_thread: threading.Thread | None = None
        self._overflow: dict[str, tuple[str, TableOverflow]] = {}
        self._overflow_view: Mapping[str, TableOverflow] = {}
        self._programmed_written: str | object | None = _UNWRITTEN
        self._closed = threading.Event()
        self._stop = stop or threading.Event()

    def __repr__(self) -> str:
        return f"KubeLeaseSource({self.description!r})"

    # -- the network config ----------------------------------------------------------------

    def wait_for_network_config(self, stop: threading.Event) -> NetworkConfig | None:
        """net-conf.json is a mounted file: a missing or invalid one is an operator's error, not a wait."""
        return self.read_network_config()

    def read_network_config(self) -> NetworkConfig:
        path = self.config.net_config_path
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except OSError as error:
            raise ConfigError(f"failed to read net conf {path}: {error.strerror}; in the DaemonSet mount the "
                              f"kube-flannel-cfg ConfigMap's net-conf.json there, or pass --net-config-path") from None
        return parse_network_config(raw, source=path)

    # -- this node -------------------------------------------------------------------------

    def _ensure_watching(self) -> NodeWatcher:
        if self._watcher is None:
            self._watcher = NodeWatcher(self.kube, self.names, lambda: self._on_change(),
                                        self._event_malformed).start()
        return self._watcher

    def _pause(self) -> None:
        """One second of a wait for this Node; stopping the daemon ends the wait."""
        if self._stop.wait(1.0):
            raise LeaseLost()

    def _own_node(self) -> Node:
        watcher = self._ensure_watching()
        waited = 0.0
        while True:
            if watcher.wait_in_sync(1.0):
                node = watcher.node(self.node_name)
                if node is not None:
                    return node
                if waited == 0 or waited >= PODCIDR_WAIT_LOG:
                    log.warning("node %s is not in the Kubernetes API yet; waiting (NODE_NAME must be the "
                                "Node's name, from the downward API spec.nodeName)", self.node_name)
                    waited = 0.0
            self._pause()
            waited += 1.0

    def stored_public_ip(self) -> ipaddress.IPv4Address | None:
        raw = self._own_node().meta.annotations.get(self.names.node_public_ip, "")
        if not raw:
            return None
        try:
            return ipaddress.IPv4Address(raw)
        except ValueError:
            raise ConfigError(f"node {self.node_name}: annotation {self.names.node_public_ip}={raw!r} is not an "
                              "IPv4 address; fix or remove it") from None

    def published_attrs(self, public_ip: ipaddress.IPv4Address) -> LeaseAttrs | None:
        try:
            lease = node_lease(self._own_node(), self.names)
        except ValueError:
            return None
        return lease.attrs if lease is not None else None

    def acquire(self, network: NetworkConfig, public_ip: ipaddress.IPv4Address, attrs: LeaseAttrs) -> Lease:
        waited = -1.0
        while True:
            node = self._own_node()
            try:
                subnet = ipv4_pod_cidr(node)
            except ValueError as error:
                raise ConfigError(f"node {self.node_name}: {error}") from None
            if subnet is not None:
                break
            if waited < 0 or waited >= PODCIDR_WAIT_LOG:
                log.warning("node %s has no podCIDR yet: waiting for the controller-manager to assign one "
                            "(--allocate-node-cidrs) before taking a lease; nothing is changed meanwhile",
                            self.node_name)
                waited = 0.0
            self._pause()
            waited += 1.0
        check_pod_cidr(subnet, network.network, self.node_name)
        patch = lease_annotations(node, self.names, attrs)
        if patch is not None:
            self.kube.patch_node_status(self.node_name, {"metadata": {"annotations": patch}})
        overwrite = node.meta.annotations.get(self.names.public_ip_overwrite)
        if overwrite:
            log.info("Overriding public ip with '%s' from node annotation '%s'", overwrite,
                     self.names.public_ip_overwrite)
        self._own = Lease(subnet=subnet, attrs=attrs)
        return self._own

    def start_watching(self, on_change: Callable[[], None], *, expirations: bool = False) -> None:
        """A Node lease does not expire: ``expirations`` changes nothing."""
        self._on_change = on_change
        self._ensure_watching()
        threading.Thread(target=self._follow_overflow, name="overflow-follower", daemon=True).start()
        on_change()

    def _follow_overflow(self) -> None:
        """Call ``on_change`` when a writer Lease read by the candidates carries a new overflow."""
        while not self._closed.wait(OVERFLOW_CHECK):
            before = self._overflow_view
            if self.route_overflow() is not before:
                self._on_change()

    def snapshot(self) -> LeaseSnapshot:
        return self._watcher.snapshot() if self._watcher is not None else EMPTY_SNAPSHOT

    def wait_in_sync(self, timeout: float) -> bool:
        return self._ensure_watching().wait_in_sync(timeout)

    def hold(self, stop: threading.Event) -> None:
        """Until ``stop``: the Node deleted or given another podCIDR ends the lease (exit 1, as flanneld's)."""
        assert self._own is not None, "acquire() first"
        watcher = self._ensure_watching()
        while not stop.wait(1.0):
            if not watcher.snapshot().connected:
                continue
            node = watcher.node(self.node_name)
            try:
                subnet = ipv4_pod_cidr(node) if node is not None else None
            except ValueError:
                subnet = None
            if subnet != self._own.subnet:
                why = "was deleted" if node is None else f"now has podCIDR {subnet}"
                log.error("Lease has been revoked. Shutting down daemon.: node %s %s", self.node_name, why)
                raise LeaseLost()

    # -- cluster id and writers --------------------------------------------------------------

    def cluster_id(self) -> str:
        existing = self.existing_cluster_id()
        if existing:
            return existing
        # Create-only: of two daemons starting together exactly one create succeeds (409 for the
        # other), and both then read the same id. It is never rewritten afterwards.
        with contextlib.suppress(KubeConflict):
            self.kube.create_lease(KubeLease(name=CLUSTER_ID_LEASE, namespace=self.namespace,
                                             annotations={CLUSTER_ID_ANNOTATION: uuid.uuid4().hex}))
        made = self.existing_cluster_id()
        if not made:
            raise ConfigError(f"could not record the cluster id on Lease {self.namespace}/{CLUSTER_ID_LEASE}")
        return made

    def existing_cluster_id(self) -> str | None:
        lease = self.kube.get_lease(self.namespace, CLUSTER_ID_LEASE)
        return lease.annotations.get(CLUSTER_ID_ANNOTATION) if lease is not None else None

    def writer_lock(self, table_id: str, ttl: int, holder: str) -> Callable[[], WriterLock]:
        # A waiting node reads the Lease once per ttl/3, as etcd-mode waiters read their lock key. It takes
        # over once the record has stayed unchanged for 0.6 ttl as it observed it: it saw the holder's last
        # renewal at most ttl/3 late, so that is within one ttl of the renewal (and of a SIGKILL), and a
        # holder that cannot renew has stopped writing by then (writer.STEP_DOWN_AFTER: ~0.52 ttl).
        lock = KubeLeaseLock(self.kube, namespace=self.namespace, name=writer_lease_name(table_id),
                             identity=f"{self.node_name}/{holder}", duration=ttl, poll_interval=ttl / 3,
                             takeover_after=ttl * 0.6)
        self._locks[table_id] = lock
        return lambda: lock

    # -- route state and Node conditions ---------------------------------------------------

    def report_route_states(self, table_id: str, states: Mapping[ipaddress.IPv4Network, NodeRouteState]) -> None:
        published = {str(subnet): [state.ok, state.reason] for subnet, state in states.items()
                     if state.ok or state.reason}
        encoded = json.dumps(published, separators=(",", ":"), sort_keys=True)
        lock = self._locks.get(table_id)
        if lock is not None and lock.is_held():
            lock.publish({ROUTE_STATE_ANNOTATION: encoded})
            lock.refresh()
        if not self.config.set_node_network_unavailable:
            return
        # The Node conditions are written by a thread of their own, so that a thousand of them
        # (a fresh cluster) never hold up the table's next pass; reports arriving meanwhile coalesce.
        with self._report_lock:
            self._tables[table_id] = published
            if self._conditions_thread is None:
                self._conditions_thread = threading.Thread(target=self._write_conditions, name="node-conditions",
                                                           daemon=True)
                self._conditions_thread.start()
        self._conditions_due.set()

    def _write_conditions(self) -> None:
        while not self._closed.is_set():
            if not self._conditions_due.wait(1.0):
                continue
            self._conditions_due.clear()
            try:
                with self._report_lock:
                    tables = self._all_table_states()
                self._update_conditions(tables)
            except KubeError as error:
                log.warning("cannot update the Node conditions (%s); retrying at the next report", error)

    def _all_table_states(self) -> dict[str, dict[str, Any]]:
        """This writer's tables as it just saw them; the other tables as their writers published them."""
        tables = dict(self._tables)
        for table_id in self._locks:
            if table_id in tables:
                continue
            lease = self.kube.get_lease(self.namespace, writer_lease_name(table_id))
            raw = lease.annotations.get(ROUTE_STATE_ANNOTATION) if lease is not None else None
            try:
                tables[table_id] = json.loads(raw) if raw else {}
            except ValueError:
                tables[table_id] = {}
        return tables

    def _update_conditions(self, tables: Mapping[str, Mapping[str, Any]]) -> None:
        watcher = self._ensure_watching()
        snapshot = watcher.snapshot()
        by_subnet = {str(subnet): lease for subnet, lease in snapshot.leases.items()}
        for node in watcher.nodes():
            try:
                subnet = ipv4_pod_cidr(node)
            except ValueError:
                continue
            if subnet is None or str(subnet) not in by_subnet:
                continue
            key = str(subnet)
            carried = [t for t, states in tables.items() if key in states]
            if not carried:
                continue  # no table carries it (a VXLAN-only peer), or none has reported it yet
            seen = {t: _route_state(tables[t][key]) for t in carried}
            refusals = [f"{t}: {why}" for t, (ok, why) in seen.items() if not ok and why]
            notes = [f"{t}: {why}" for t, (ok, why) in seen.items() if ok and why]
            if refusals:
                verdict = _NodeVerdict("True", "NoRouteCreated", "; ".join(refusals))
            elif len(carried) == len(tables) and all(ok for ok, _ in seen.values()):
                verdict = _NodeVerdict("False", "RouteCreated", "; ".join(notes) or "RouteController created a route")
            else:
                continue
            self._set_condition(node, verdict)

    def _set_condition(self, node: Node, verdict: _NodeVerdict) -> None:
        current = node.conditions.get(NETWORK_UNAVAILABLE)
        previous = self._verdicts.get(node.meta.name)
        if current is not None and (current.status, current.reason, current.message) == (
                verdict.status, verdict.reason, verdict.message):
            self._verdicts[node.meta.name] = verdict
            return
        if previous == verdict and _version(node) <= self._written.get(node.meta.name, 0):
            return  # our own write, not yet seen by the watch: writing it again would only echo
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        condition = {"type": NETWORK_UNAVAILABLE, "status": verdict.status, "reason": verdict.reason,
                     "message": verdict.message, "lastTransitionTime": now, "lastHeartbeatTime": now}
        try:
            written = self.kube.patch_node_status(node.meta.name, {"status": {"conditions": [condition]}})
        except KubeError as error:
            log.warning("cannot set %s on node %s: %s (retried at the next pass)", NETWORK_UNAVAILABLE,
                        node.meta.name, error)
            return
        self._written[node.meta.name] = _version(written)
        self._verdicts[node.meta.name] = verdict
        log.info("node %s: %s=%s (%s)", node.meta.name, NETWORK_UNAVAILABLE, verdict.status, verdict.reason)
        if verdict.status == "True" and (previous is None or previous.message != verdict.message):
            self._event(node, "Warning", verdict.reason, verdict.message)

    def report_vxlan_programmed(self, device: str, peers: int) -> None:
        if not self.config.set_node_network_unavailable:
            return
        node = self._ensure_watching().node(self.node_name)
        if node is not None:
            self._set_condition(node, _NodeVerdict("False", "RouteCreated",
                                                   f"{device} and its {peers} VXLAN peers are programmed"))

    # -- route table overflow ---------------------------------------------------------------

    def publish_route_overflow(self, table_id: str, overflow: TableOverflow) -> None:
        lock = self._locks.get(table_id)
        if lock is not None and lock.is_held():
            lock.publish({OVERFLOW_ANNOTATION: overflow.to_json()})
            lock.refresh()

    def read_route_overflow(self, table_id: str) -> TableOverflow | None:
        lease = self.kube.get_lease(self.namespace, writer_lease_name(table_id))
        raw = lease.annotations.get(OVERFLOW_ANNOTATION) if lease is not None else None
        return self._parse_overflow(table_id, raw) if raw else None

    def route_overflow(self) -> Mapping[str, TableOverflow]:
        changed = False
        for table_id, lock in list(self._locks.items()):
            seen = lock.last_seen
            raw = seen.annotations.get(OVERFLOW_ANNOTATION) if seen is not None else None
            known = self._overflow.get(table_id)
            if not raw or (known is not None and known[0] == raw):
                continue
            parsed = self._parse_overflow(table_id, raw)
            if parsed is None:
                parsed = known[1] if known is not None else TableOverflow()
            # Remember the raw value, good or not, so a bad one is warned about once.
            changed = changed or known is None or known[1] != parsed
            self._overflow[table_id] = (raw, parsed)
        if changed:
            self._overflow_view = {table_id: parsed for table_id, (_, parsed) in self._overflow.items()}
        return self._overflow_view

    def report_overflow_programmed(self, subnets: frozenset[IPv4Network]) -> None:
        value = ProgrammedOverflow(subnets).to_json() if subnets else None
        # What this daemon wrote last, else (the first report) what the Node carries: the watch may not
        # have shown our own last patch yet, so the cache alone could skip a needed write.
        known = self._programmed_written
        if known is _UNWRITTEN:
            node = self._ensure_watching().node(self.node_name)
            known = node.meta.annotations.get(PROGRAMMED_ANNOTATION) if node is not None else _UNWRITTEN
        if known == value:
            self._programmed_written = value
            return
        # null removes the annotation (strategic merge): a Node carries one only while something moves.
        self.kube.patch_node_status(self.node_name, {"metadata": {"annotations": {PROGRAMMED_ANNOTATION: value}}})
        self._programmed_written = value

    def overflow_programmed(self) -> Mapping[IPv4Network, ProgrammedOverflow]:
        confirmations: dict[IPv4Network, ProgrammedOverflow] = {}
        for node in self._ensure_watching().nodes():
            raw = node.meta.annotations.get(PROGRAMMED_ANNOTATION)
            if not raw:
                continue
            try:
                subnet = ipv4_pod_cidr(node)
                if subnet is not None:
                    confirmations[subnet] = ProgrammedOverflow.from_json(raw)
            except ValueError as error:
                log.debug("ignoring %s on node %s: %s", PROGRAMMED_ANNOTATION, node.meta.name, error)
        return confirmations

    def _parse_overflow(self, table_id: str, raw: str) -> TableOverflow | None:
        try:
            return TableOverflow.from_json(raw)
        except ValueError as error:
            log.warning("ignoring annotation %s on Lease %s/%s (%s); keeping the last good overflow",
                        OVERFLOW_ANNOTATION, self.namespace, writer_lease_name(table_id), error)
            return None

    def _event(self, node: Node, kind: str, reason: str, message: str) -> None:
        try:
            self.kube.create_event(namespace=EVENT_NAMESPACE, involved=node, event_type=kind, reason=reason,
                                   message=message, component=COMPONENT,
                                   timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        except KubeError as error:
            log.warning("cannot record an Event on node %s: %s", node.meta.name, error)

    def _event_malformed(self, node: Node, problem: str) -> None:
        self._event(node, "Warning", "MalformedFlannelAnnotations",
                    f"flannel-alivpc skips this peer until its annotations are fixed: {problem}")

    def close(self) -> None:
        self._closed.set()
        if self._watcher is not None:
            self._watcher.stop()
        for lock in self._locks.values():
            if lock.is_held():
                lock.release()
        self.kube.close()
