"""flannel's subnet leases in etcd: the network config, this node's lease, everyone's leases.

* ``read_network_config`` reads ``<prefix>/config`` with flannel's error messages.
* ``LeaseManager`` takes this node's lease as flannel's tryAcquireLease does,
  renews it ahead of expiry, re-publishes it when its attributes change, and
  raises ``LeaseLost`` once the lease is gone so the daemon can exit.
* ``LeaseWatcher`` keeps a snapshot of every lease (list, then watch) in a
  background thread. It never drops what it knows because etcd went away: the
  last snapshot stays in use until a fresh listing replaces it. Malformed keys
  and values are reported, not guessed at; their subnets are listed so that a
  route consumer can leave them alone.
* ``write_subnet_env`` writes subnet.env atomically for the CNI plugin.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING

from flannel_alivpc.core.errors import (
    LEASE_LOST_MESSAGE,
    ConfigError,
    EtcdError,
    EtcdUnavailable,
    FlannelAliVpcError,
    LeaseLost,
    WatchCompacted,
)
from flannel_alivpc.core.network import (
    LEASE_TTL,
    IPv4Network,
    Lease,
    LeaseAttrs,
    LeaseFormatError,
    NetworkConfig,
    parse_lease_value,
    parse_network_config,
    parse_subnet_key,
    pick_free_subnet,
    previous_subnet,
    subnet_key,
)
from flannel_alivpc.core.routes import valid_cluster_id

if TYPE_CHECKING:
    # Only annotations: the module is loaded in kube mode too, which needs no etcd (nor grpc) at all.
    from flannel_alivpc.clients.etcd import EtcdClient, EtcdWatch, KeyValue, WatchEvent

log = logging.getLogger(__name__)

RACE_RETRIES = 10
"""flannel's raceRetries: attempts when another node creates the chosen subnet first."""

RENEW_RETRY_INTERVAL = 60.0
"""flannel retries a failed renewal every minute."""

WATCH_BACKOFF_INITIAL = 0.1
WATCH_BACKOFF_MAX = 5.0

Clock = Callable[[], float]


class AcquireError(FlannelAliVpcError):
    """No lease could be taken (every attempt lost a race with another node)."""


# -- keys ------------------------------------------------------------------------------


def _base(prefix: str) -> str:
    # path.Join(prefix, ...) in flannel: trailing slashes do not matter
    return prefix.rstrip("/") or "/"


def config_key(prefix: str) -> str:
    return f"{_base(prefix).rstrip('/')}/config"


def subnets_prefix(prefix: str) -> str:
    return f"{_base(prefix).rstrip('/')}/subnets/"


def lease_key(prefix: str, subnet: IPv4Network) -> str:
    return subnets_prefix(prefix) + subnet_key(subnet)


# -- config ----------------------------------------------------------------------------


def _config_example(key: str) -> str:
    return f"etcdctl put {key} '{{\"Network\": \"10.244.0.0/16\", \"Backend\": {{\"Type\": \"ali-vpc\"}}}}'"


def read_network_config(client: EtcdClient, prefix: str) -> NetworkConfig:
    """The network config at ``<prefix>/config``, validated with flannel's rules."""
    key = config_key(prefix)
    kv = client.get(key)
    if kv is None:
        raise ConfigError(f"flannel config not found in etcd store at {key}. Did you create your config "
                          f"using the etcd v3 API? e.g. {_config_example(key)}")
    return parse_network_config(kv.value, source=f"etcd key {key}")


# -- cluster identity ------------------------------------------------------------------


def cluster_id_key(prefix: str) -> str:
    return f"{_base(prefix).rstrip('/')}/alivpc/cluster-id"


def read_cluster_id(client: EtcdClient, prefix: str) -> str | None:
    """This cluster's id (the marker on its route entries), or None before any daemon made one."""
    key = cluster_id_key(prefix)
    kv = client.get(key)
    if kv is None:
        return None
    value = kv.value.decode(errors="replace").strip()
    if not valid_cluster_id(value):
        raise ConfigError(f"etcd key {key} holds {value!r}, which is not a cluster id (letters, digits, '.', "
                          f"'_', '-', at most 64); delete the key only if no route entry carries that value, "
                          f"else put it back")
    return value


def ensure_cluster_id(client: EtcdClient, prefix: str) -> str:
    """This cluster's id, made once (by whichever daemon comes first) and never changed."""
    existing = read_cluster_id(client, prefix)
    if existing is not None:
        return existing
    client.put_if_absent(cluster_id_key(prefix), uuid.uuid4().hex)
    made = read_cluster_id(client, prefix)
    if made is None:
        raise EtcdError(f"etcd key {cluster_id_key(prefix)} vanished right after it was written")
    return made


def load_published_attrs(client: EtcdClient, prefix: str, public_ip: IPv4Address) -> LeaseAttrs | None:
    """The attributes the lease with ``public_ip`` carries now (what this node published before), if any."""
    base = subnets_prefix(prefix)
    kvs, _ = client.get_prefix(base)
    for kv in kvs:
        parsed = _parse_key(kv, base)
        if not isinstance(parsed, _Bad) and parsed[1].public_ip == public_ip:
            return parsed[1]
    return None


# -- parsing one key -------------------------------------------------------------------


@dataclass(frozen=True)
class _Bad:
    subnet: IPv4Network | None
    reason: str


def _parse_key(kv: KeyValue, prefix: str) -> tuple[IPv4Network, LeaseAttrs] | _Bad:
    name = kv.key[len(prefix):] if kv.key.startswith(prefix) else kv.key
    try:
        subnet = parse_subnet_key(name)
    except LeaseFormatError as error:
        return _Bad(None, str(error))
    try:
        return subnet, parse_lease_value(kv.value)
    except LeaseFormatError as error:
        return _Bad(subnet, str(error))


# -- snapshot and watcher -----------------------------------------------------------------


@dataclass(frozen=True)
class LeaseSnapshot:
    """Every lease known at ``revision``.

    ``in_sync`` turns True after the first complete listing and stays True: a
    snapshot taken during an etcd outage (``connected`` False) is the last good
    one and is still to be used, never treated as "no leases".
    ``malformed`` maps the etcd keys that were skipped to the reason;
    ``malformed_by_subnet`` holds those whose key names a subnet. Routes to
    those subnets must be kept: bad input never causes a deletion.
    """

    leases: dict[IPv4Network, Lease]
    malformed: dict[str, str]
    revision: int
    in_sync: bool
    malformed_by_subnet: dict[IPv4Network, str] = field(default_factory=dict)
    connected: bool = False

    def malformed_subnets(self) -> frozenset[IPv4Network]:
        return frozenset(self.malformed_by_subnet)

    def protects(self, subnet: IPv4Network) -> bool:
        """True when ``subnet`` overlaps a lease or a malformed entry (no route deletion there)."""
        return any(subnet.overlaps(other) for other in (*self.leases, *self.malformed_by_subnet))


EMPTY_SNAPSHOT = LeaseSnapshot(leases={}, malformed={}, revision=0, in_sync=False)


class LeaseWatcher:
    """Follows ``<prefix>/subnets/`` in a background thread: list, then watch.

    ``on_change`` is called (from the watcher thread) whenever the snapshot
    changed; it should only mark work as due. Read the state with ``snapshot()``.
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        on_change: Callable[[], None],
        *,
        clock: Clock = time.time,
        backoff_initial: float = WATCH_BACKOFF_INITIAL,
        backoff_max: float = WATCH_BACKOFF_MAX,
        fetch_expirations: bool = True,
    ) -> None:
        self._client = client
        # One TimeToLive call per etcd lease (as flannel does) only when someone reads the
        # expirations: the daemon does not need them, and at 1000 leases they cost most of
        # a cold start. Without them a leased key's expiration is left None.
        self._fetch_expirations = fetch_expirations
        self._prefix = subnets_prefix(prefix)
        self._on_change = on_change
        self._clock = clock
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._lock = threading.Lock()
        self._entries: dict[str, Lease] = {}
        self._bad: dict[str, _Bad] = {}
        self._warned: dict[str, bytes] = {}
        self._expiry: dict[int, float | None] = {}
        self._revision = 0
        self._connected = False
        self._generation = 0
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._watch: EtcdWatch | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"LeaseWatcher({self._prefix!r}, revision={self._revision}, leases={len(self._entries)})"

    # -- public --------------------------------------------------------------------------

    def start(self) -> LeaseWatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lease-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            watch = self._watch
        if watch is not None:
            watch.cancel()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> LeaseWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_in_sync(self, timeout: float | None = None) -> bool:
        """Wait for the first complete listing."""
        return self._synced.wait(timeout)

    @property
    def generation(self) -> int:
        """Increases with every change of the snapshot (a cheap "anything new?" test)."""
        return self._generation

    def snapshot(self) -> LeaseSnapshot:
        with self._lock:
            leases: dict[IPv4Network, Lease] = {}
            # Two keys can name one IPv4 subnet (a dual-stack key and a plain one): keep one.
            for key in sorted(self._entries):
                lease = self._entries[key]
                leases.setdefault(lease.subnet, lease)
            return LeaseSnapshot(
                leases=leases,
                malformed={key: bad.reason for key, bad in self._bad.items()},
                revision=self._revision,
                in_sync=self._synced.is_set(),
                malformed_by_subnet={bad.subnet: bad.reason for bad in self._bad.values() if bad.subnet is not None},
                connected=self._connected,
            )

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self._backoff_initial
        failing = False
        while not self._stop.is_set():
            try:
                revision = self._relist()
                if failing:
                    log.info("etcd is reachable again; lease snapshot refreshed at revision %d", revision)
                    failing = False
                watch = self._client.watch_prefix(self._prefix, revision + 1)
                with self._lock:
                    self._watch = watch
                if self._stop.is_set():
                    watch.cancel()
                    break
                backoff = self._backoff_initial
                for batch in watch:
                    self._apply(batch)
            except WatchCompacted as compacted:
                log.info("lease watch fell behind etcd compaction (revision %d); re-listing",
                         compacted.compact_revision)
                continue
            except Exception as error:
                if self._stop.is_set():
                    break
                unavailable = isinstance(error, EtcdUnavailable)
                if not failing:
                    if unavailable:
                        log.warning("lost etcd while following leases (keeping the last %d; retrying): %s",
                                    len(self._entries), error)
                    else:
                        log.exception("lease watch failed (keeping the last snapshot; retrying)")
                else:
                    log.debug("lease watch still failing: %s", error)
                failing = True
                self._set_connected(False)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._backoff_max)
            finally:
                with self._lock:
                    self._watch = None
        self._set_connected(False, notify=False)

    def _relist(self) -> int:
        kvs, revision = self._client.get_prefix(self._prefix)
        entries: dict[str, Lease] = {}
        bad: dict[str, _Bad] = {}
        for kv in kvs:
            parsed = self._classify(kv)
            if isinstance(parsed, _Bad):
                bad[kv.key] = parsed
            else:
                entries[kv.key] = parsed
        live_ids = {lease.etcd_lease for lease in entries.values()}
        with self._lock:
            for key in list(self._warned):
                if key not in bad:
                    del self._warned[key]
            self._expiry = {lid: exp for lid, exp in self._expiry.items() if lid in live_ids}
            self._entries = entries
            self._bad = bad
            self._revision = revision
            self._connected = True
            self._generation += 1
        self._synced.set()
        self._notify()
        return revision

    def _classify(self, kv: KeyValue) -> Lease | _Bad:
        """Parse one key; warns once per key and value; one TimeToLive call per new etcd lease."""
        parsed = _parse_key(kv, self._prefix)
        if isinstance(parsed, _Bad):
            with self._lock:
                fresh = self._warned.get(kv.key) != kv.value
                self._warned[kv.key] = kv.value
            if fresh:
                log.warning("Ignoring bad subnet node %s: %s", kv.key, parsed.reason)
            return parsed
        subnet, attrs = parsed
        return Lease(subnet=subnet, attrs=attrs, expiration=self._expiration(kv.lease_id), etcd_lease=kv.lease_id)

    def _expiration(self, lease_id: int) -> float | None:
        if not lease_id or not self._fetch_expirations:
            return None  # a reservation (a key with no etcd lease), or expirations not wanted
        with self._lock:
            if lease_id in self._expiry:
                return self._expiry[lease_id]
        remaining = self._client.lease_remaining(lease_id)
        # An expired lease's key is about to be deleted; its delete event removes it.
        expiration = self._clock() + (remaining if remaining is not None else 0.0)
        with self._lock:
            self._expiry[lease_id] = expiration
        return expiration

    def _apply(self, batch: list[WatchEvent]) -> None:
        updates: list[tuple[str, Lease | _Bad | None]] = []
        revision = self._revision
        for event in batch:
            revision = max(revision, event.revision)
            updates.append((event.kv.key, None if event.kind == "delete" else self._classify(event.kv)))
        with self._lock:
            for key, update in updates:
                old = self._entries.pop(key, None)
                self._bad.pop(key, None)
                if isinstance(update, Lease):
                    self._entries[key] = update
                    self._warned.pop(key, None)
                elif isinstance(update, _Bad):
                    self._bad[key] = update
                else:
                    self._warned.pop(key, None)
                if old is not None and (not isinstance(update, Lease) or update.etcd_lease != old.etcd_lease):
                    self._expiry.pop(old.etcd_lease, None)
            self._revision = revision
            self._generation += 1
        self._notify()

    def _set_connected(self, connected: bool, *, notify: bool = True) -> None:
        with self._lock:
            changed = self._connected != connected
            self._connected = connected
            if changed:
                self._generation += 1
        if changed and notify:
            self._notify()

    def _notify(self) -> None:
        try:
            self._on_change()
        except Exception:
            log.exception("lease change callback failed")


# -- this node's lease ------------------------------------------------------------------------


class LeaseManager:
    """Takes, renews and watches over this node's subnet lease."""

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        config: NetworkConfig,
        public_ip: IPv4Address,
        attrs_factory: Callable[[], LeaseAttrs],
        subnet_file_previous: IPv4Network | None,
        renew_margin: float,
        clock: Clock = time.time,
        *,
        retry_interval: float = RENEW_RETRY_INTERVAL,
        poll_interval: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < renew_margin < LEASE_TTL:
            raise ConfigError(f"subnet lease renew margin must be between 0 and {LEASE_TTL} s, got {renew_margin}")
        self._client = client
        self._prefix = prefix
        self.config = config
        self.public_ip = public_ip
        self._attrs_factory = attrs_factory
        self._previous = subnet_file_previous
        self.renew_margin = renew_margin
        self._clock = clock
        self._retry_interval = retry_interval
        self._poll_interval = poll_interval
        self._rng = rng
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._lease: Lease | None = None
        self._written_revision = 0
        self._renew_due: float | None = None
        self._lost = False
        self._seen_generation = -1

    @property
    def lease(self) -> Lease | None:
        with self._lock:
            return self._lease

    # -- acquire -------------------------------------------------------------------------

    def acquire(self) -> Lease:
        """flannel's AcquireLease: reuse, previous subnet, or a free one; retry lost races."""
        for attempt in range(1, RACE_RETRIES + 1):
            lease = self._try_acquire()
            if lease is not None:
                self._publish(lease)
                return lease
            log.info("another node took the chosen subnet first; trying again (%d/%d)", attempt, RACE_RETRIES)
        raise AcquireError(f"max retries reached trying to acquire a subnet: {RACE_RETRIES} attempts each lost "
                           f"a race with another node for the subnet they picked in {self.config.network}")

    def _try_acquire(self) -> Lease | None:
        prefix = subnets_prefix(self._prefix)
        kvs, _ = self._client.get_prefix(prefix)
        taken: list[IPv4Network] = []
        own: tuple[KeyValue, IPv4Network] | None = None
        for kv in kvs:
            parsed = _parse_key(kv, prefix)
            if isinstance(parsed, _Bad):
                log.warning("Ignoring bad subnet node %s: %s", kv.key, parsed.reason)
                # Unlike flannel, a key that names a subnet counts as taken even when its
                # value is unreadable: allocating it would only lose the create race.
                if parsed.subnet is not None:
                    taken.append(parsed.subnet)
                continue
            subnet, attrs = parsed
            taken.append(subnet)
            if own is None and attrs.public_ip == self.public_ip:
                own = (kv, subnet)

        attrs = self._attrs_factory()
        if own is not None:
            kv, subnet = own
            if self.config.subnet_fits(subnet):
                log.info("Found lease (%s) for current IP (%s), reusing", subnet, self.public_ip)
                return self._write_existing(subnet, attrs, reservation=kv.lease_id == 0)
            log.info("Found lease (%s) for current IP (%s) but not compatible with current config, deleting",
                     subnet, self.public_ip)
            self._client.delete(kv.key)
            taken.remove(subnet)

        chosen: IPv4Network | None = None
        previous = self._previous
        if previous is not None:
            if any(previous.overlaps(other) for other in taken):
                log.info("Found previously leased subnet (%s) that is now used by another node, ignoring", previous)
            elif not self.config.subnet_fits(previous):
                log.error("Found previously leased subnet (%s) that is not compatible with the etcd network "
                          "config, ignoring", previous)
            else:
                log.info("Found previously leased subnet (%s), reusing", previous)
                chosen = previous
        if chosen is None:
            chosen = pick_free_subnet(self.config, taken, self._rng)

        lease_id = self._client.create_if_absent(lease_key(self._prefix, chosen), attrs.to_json(), LEASE_TTL)
        if lease_id is None:
            return None
        log.info("Allocated lease (%s) to current node (%s)", chosen, self.public_ip)
        return Lease(subnet=chosen, attrs=attrs, expiration=self._clock() + LEASE_TTL, etcd_lease=lease_id)

    def _write_existing(self, subnet: IPv4Network, attrs: LeaseAttrs, *, reservation: bool) -> Lease:
        """flannel's updateSubnet: put the attrs on a fresh 24 h lease.

        A reservation (a key an operator wrote without a lease) stays one: it is
        re-put without a lease and never renewed, as Documentation/reservations.md
        describes (flannel's v3 code would turn it into a 24 h lease).
        """
        key = lease_key(self._prefix, subnet)
        if reservation:
            self._client.put(key, attrs.to_json())
            return Lease(subnet=subnet, attrs=attrs, expiration=None, etcd_lease=0)
        lease_id = self._client.put_with_new_lease(key, attrs.to_json(), LEASE_TTL)
        return Lease(subnet=subnet, attrs=attrs, expiration=self._clock() + LEASE_TTL, etcd_lease=lease_id)

    def _publish(self, lease: Lease) -> None:
        """Record a lease we just wrote, and the revision it was written at."""
        kv = self._client.get(lease_key(self._prefix, lease.subnet))
        with self._lock:
            self._lease = lease
            self._written_revision = kv.mod_revision if kv is not None else 0
            self._renew_due = None if lease.expiration is None else lease.expiration - self.renew_margin
            self._lost = False
        self._wake.set()

    # -- renew and update ------------------------------------------------------------------

    def _check_still_ours(self, lease: Lease) -> None:
        """Read our key back before re-putting it, so a renewal never resurrects a lost lease."""
        kv = self._client.get(lease_key(self._prefix, lease.subnet))
        if kv is None:
            self._declare_lost(f"lease {lease.subnet} no longer exists in etcd")
        assert kv is not None
        try:
            attrs = parse_lease_value(kv.value)
        except LeaseFormatError as error:
            log.warning("own lease %s holds an unreadable value (%s); rewriting it", lease.subnet, error)
            return
        if attrs.public_ip != self.public_ip:
            self._declare_lost(f"lease {lease.subnet} now belongs to {attrs.public_ip}")

    def renew(self) -> Lease:
        """Re-put our lease on a new 24 h etcd lease (flannel's renewLease)."""
        return self._rewrite(None)

    def update_attrs(self, attrs: LeaseAttrs) -> Lease:
        """Publish new attributes (e.g. changed BackendData) on our subnet."""
        return self._rewrite(attrs)

    def _rewrite(self, attrs: LeaseAttrs | None) -> Lease:
        with self._lock:
            lease = self._lease
        if lease is None:
            raise RuntimeError("acquire() the lease first")
        self._check_still_ours(lease)
        new_attrs = attrs if attrs is not None else lease.attrs
        reservation = lease.etcd_lease == 0 and lease.expiration is None
        updated = self._write_existing(lease.subnet, new_attrs, reservation=reservation)
        self._publish(updated)
        log.info("Lease %s renewed, new expiration %s", updated.subnet,
                 "never (reservation)" if updated.expiration is None
                 else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(updated.expiration)))
        return updated

    # -- losing the lease ---------------------------------------------------------------------

    def _declare_lost(self, why: str) -> None:
        with self._lock:
            self._lost = True
        log.error("%s: %s", LEASE_LOST_MESSAGE, why)
        raise LeaseLost()

    def observe(self, snapshot: LeaseSnapshot) -> None:
        """Check our lease against a watcher snapshot; raises ``LeaseLost`` when it is gone.

        Like flannel's WatchLease: a removal is fatal, a re-put updates the expiration.
        A snapshot older than our own last write cannot judge it and is ignored.
        """
        with self._lock:
            lease = self._lease
            written = self._written_revision
        if lease is None or not snapshot.in_sync or snapshot.revision < written:
            return
        current = snapshot.leases.get(lease.subnet)
        if current is None:
            if lease.subnet in snapshot.malformed_by_subnet:
                return  # garbage on our key: the next renewal rewrites it
            self._declare_lost(f"lease {lease.subnet} was deleted or expired")
            return
        if current.attrs.public_ip != self.public_ip:
            self._declare_lost(f"lease {lease.subnet} now belongs to {current.attrs.public_ip}")
        if current.etcd_lease != lease.etcd_lease and current.expiration is not None:
            with self._lock:
                if self._lease is lease:
                    self._lease = replace(lease, etcd_lease=current.etcd_lease, expiration=current.expiration)
                    self._renew_due = current.expiration - self.renew_margin

    def wake(self) -> None:
        """Make ``run_renewal`` look at its state now (call from the watcher's on_change or on stop)."""
        self._wake.set()

    def run_renewal(self, stop_event: threading.Event, watcher: LeaseWatcher | None = None) -> None:
        """Renew at expiration - margin until ``stop_event`` is set.

        Raises ``LeaseLost`` when ``watcher`` shows our lease deleted or taken over,
        or a renewal finds it gone. A failed renewal is retried every
        ``retry_interval`` seconds (flannel: one minute).
        """
        if self.lease is None:
            raise RuntimeError("acquire() the lease first")
        while not stop_event.is_set():
            if watcher is not None and watcher.generation != self._seen_generation:
                self._seen_generation = watcher.generation
                self.observe(watcher.snapshot())
            with self._lock:
                due = self._renew_due
            now = self._clock()
            if due is not None and now >= due:
                try:
                    self.renew()
                except LeaseLost:
                    raise
                except EtcdError as error:
                    log.error("Error renewing lease (trying again in %s s): %s", self._retry_interval, error)
                    with self._lock:
                        self._renew_due = self._clock() + self._retry_interval
                continue
            timeout = self._poll_interval if due is None else min(self._poll_interval, max(due - now, 0.0))
            self._wake.wait(timeout)
            self._wake.clear()


# -- subnet.env ------------------------------------------------------------------------------


def write_subnet_env(path: str | os.PathLike[str], text: str) -> None:
    """Write subnet.env atomically: temp file in the same directory, fsync, rename.

    The directory is created with mode 0755 and the file gets mode 0644 whatever
    the umask, as flannel's renameio.WriteFile does.
    """
    target = Path(path)
    directory = target.parent
    if not directory.exists():
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o755)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_previous_subnet(path: str | os.PathLike[str]) -> IPv4Network | None:
    """FLANNEL_SUBNET from an existing subnet.env (flannel's ReadCIDRFromSubnetFile)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("could not read the previous subnet from %s: %s", path, error)
        return None
    return previous_subnet(text)


__all__ = [
    "EMPTY_SNAPSHOT",
    "RACE_RETRIES",
    "AcquireError",
    "LeaseLost",
    "LeaseManager",
    "LeaseSnapshot",
    "LeaseWatcher",
    "config_key",
    "lease_key",
    "read_network_config",
    "read_previous_subnet",
    "subnets_prefix",
    "write_subnet_env",
]
