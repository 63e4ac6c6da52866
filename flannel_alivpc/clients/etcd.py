"""The etcd v3 client: the only module of the package that imports etcd3 and grpc.

Callers get plain dataclasses (``KeyValue``, ``WatchEvent``, ``EtcdStatus``) and
the typed errors of ``core.errors``; nothing from etcd3, grpc or protobuf leaks
out of this module.

etcd3 0.12 binds one client to one host, so failover is done here: the client
keeps a connection to one endpoint and, when a call fails because that endpoint
cannot be reached, drops the connection and tries the next endpoint, in order,
until each has been tried once. Only calls that failed before reaching the
server (UNAVAILABLE) are replayed elsewhere; a call that timed out may have been
applied, so it is reported as ``EtcdUnavailable`` without a replay.

etcd3's own watch helper runs a background thread that re-opens the stream in a
tight loop while the server is down and cannot report the revision of a
compaction cleanly, so watches are driven directly over the gRPC Watch stream.
The same goes for the other calls: they use the generated stubs and request
messages, which gives response headers (revisions) and the server's error text.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import etcd3
import etcd3.etcdrpc as rpc
import grpc
from etcd3.etcdrpc import auth_pb2, kv_pb2

from flannel_alivpc.core.errors import (
    ConfigError,
    EtcdAuthError,
    EtcdError,
    EtcdUnavailable,
    WatchCompacted,
)
from flannel_alivpc.core.secrets import Secret

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PORT = 2379

# Keepalive pings find a dead peer on an otherwise idle watch stream. etcd's
# default enforcement policy (--grpc-keepalive-min-time 5s) allows this rate;
# pings without an open stream are not allowed by that policy, so none are sent.
_GRPC_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]

# etcd's "WithRequireLeader": the server cancels the watch when its member loses
# the leader, instead of leaving a stream that silently stops delivering events.
_REQUIRE_LEADER = ("hasleader", "true")


# -- plain data -------------------------------------------------------------------


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    lease_id: int
    mod_revision: int
    create_revision: int
    version: int = 0


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    kv: KeyValue
    revision: int
    """The revision of this change (the key's mod_revision; for a delete, the deletion's)."""


@dataclass(frozen=True)
class EtcdStatus:
    endpoint: str
    version: str
    revision: int
    member_id: int
    leader_id: int
    raft_term: int
    db_size: int

    @property
    def has_leader(self) -> bool:
        return self.leader_id != 0

    @property
    def is_leader(self) -> bool:
        return self.leader_id != 0 and self.leader_id == self.member_id


@dataclass(frozen=True)
class Endpoint:
    url: str
    host: str
    port: int
    secure: bool

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_endpoints(endpoints: str | Sequence[str]) -> list[Endpoint]:
    """flannel-style endpoint URLs: ``http://127.0.0.1:2379,https://etcd-1:2379``."""
    raw = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    items = [part.strip() for item in raw for part in item.split(",") if part.strip()]
    if not items:
        raise ConfigError("no etcd endpoints given; set --etcd-endpoints, e.g. http://127.0.0.1:2379")
    parsed = []
    for item in items:
        url = item if "://" in item else f"http://{item}"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ConfigError(f"etcd endpoint {item!r}: scheme must be http or https")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ConfigError(f"etcd endpoint {item!r} has an invalid port") from None
        if not parts.hostname:
            raise ConfigError(f"etcd endpoint {item!r} has no host")
        parsed.append(Endpoint(url=url, host=parts.hostname, port=port, secure=parts.scheme == "https"))
    return parsed


# -- error mapping ----------------------------------------------------------------


def _rpc_code(error: BaseException) -> grpc.StatusCode | None:
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        code = error.code()
        return code if isinstance(code, grpc.StatusCode) else None
    return None


def _rpc_details(error: BaseException) -> str:
    if isinstance(error, grpc.RpcError) and hasattr(error, "details"):
        details = error.details()
        if details:
            return str(details)
    return str(error) or type(error).__name__


def _is_connection_error(error: BaseException) -> bool:
    """The endpoint was not reached (or our channel to it is gone): safe to replay elsewhere."""
    code = _rpc_code(error)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return True
    if isinstance(error, etcd3.exceptions.ConnectionFailedError):
        return True
    # grpc raises ValueError for a call on a channel that has been closed.
    return isinstance(error, ValueError) and "closed channel" in str(error).lower()


def _is_timeout(error: BaseException) -> bool:
    return (_rpc_code(error) == grpc.StatusCode.DEADLINE_EXCEEDED
            or isinstance(error, etcd3.exceptions.ConnectionTimeoutError))


def _is_stale_token(error: BaseException) -> bool:
    return _rpc_code(error) == grpc.StatusCode.UNAUTHENTICATED and "token" in _rpc_details(error).lower()


def _map_error(error: BaseException, op: str, endpoint: Endpoint) -> EtcdError:
    code = _rpc_code(error)
    details = _rpc_details(error)
    where = f"etcd {op} at {endpoint.url}"
    # "user name is empty": authentication is on and the request carried no credentials at all.
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) or (
            code == grpc.StatusCode.INVALID_ARGUMENT
            and ("authentication failed" in details or "user name is empty" in details)):
        return EtcdAuthError(f"{where}: {details}; check --etcd-username, env FLANNELD_ETCD_PASSWORD "
                             "and the user's role")
    if _is_timeout(error) or _is_connection_error(error):
        return EtcdUnavailable(f"{where}: {details}")
    name = code.name if code is not None else type(error).__name__
    return EtcdError(f"{where}: {name}: {details}")


# -- the client -------------------------------------------------------------------


def _to_bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")


def _prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # an empty prefix: the whole keyspace


def _key_value(kv: Any) -> KeyValue:
    return KeyValue(key=bytes(kv.key).decode("utf-8", "surrogateescape"), value=bytes(kv.value),
                    lease_id=int(kv.lease), mod_revision=int(kv.mod_revision),
                    create_revision=int(kv.create_revision), version=int(kv.version))


class _Connection:
    """One etcd3 client (one gRPC channel) to one endpoint."""

    def __init__(self, client: Any, endpoint: Endpoint, generation: int) -> None:
        self.client = client
        self.endpoint = endpoint
        self.generation = generation

    def kw(self, *extra_metadata: tuple[str, str]) -> dict[str, Any]:
        # The auth token travels as plain metadata: etcd3's call credentials are
        # refused by grpc on a plaintext channel, and etcd reads the same header.
        metadata = tuple(self.client.metadata or ()) + extra_metadata
        return {"metadata": metadata or None}


class EtcdClient:
    """A typed etcd v3 client with endpoint failover.

    Thread-safe: the lease watcher, the renewal loop and the route writer share one.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: Secret | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._endpoints = parse_endpoints(endpoints)
        if bool(cert_file) != bool(key_file):
            raise ConfigError("etcd TLS client auth needs both --etcd-certfile and --etcd-keyfile")
        if (cert_file or key_file) and not ca_file:
            raise ConfigError("etcd TLS client auth needs --etcd-cafile as well")
        if any(e.secure for e in self._endpoints) and not ca_file:
            raise ConfigError("an https etcd endpoint needs --etcd-cafile (the CA that signed the etcd server)")
        if bool(username) != bool(password):
            raise ConfigError("etcd authentication needs both --etcd-username and the password "
                              "(env FLANNELD_ETCD_PASSWORD)")
        self._ca_file = ca_file
        self._cert_file = cert_file
        self._key_file = key_file
        self._username = username
        self._password = password
        self.timeout = timeout
        self._lock = threading.Lock()
        self._index = 0
        self._generation = 0
        self._connection: _Connection | None = None
        self._closed = False

    def __repr__(self) -> str:
        tls = "tls" if self._ca_file else "plain"
        user = f", username={self._username!r}" if self._username else ""
        return f"EtcdClient({[e.url for e in self._endpoints]}, {tls}{user})"

    @property
    def endpoints(self) -> list[str]:
        return [e.url for e in self._endpoints]

    @property
    def current_endpoint(self) -> str:
        with self._lock:
            return self._endpoints[self._index].url

    # -- connection management ----------------------------------------------------

    def _connect(self, endpoint: Endpoint) -> Any:
        secure = endpoint.secure
        return etcd3.Etcd3Client(
            host=f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host,
            port=endpoint.port,
            ca_cert=self._ca_file if secure else None,
            cert_key=self._key_file if secure else None,
            cert_cert=self._cert_file if secure else None,
            timeout=self.timeout,
            user=self._username,
            password=self._password.reveal() if self._password else None,
            grpc_options=_GRPC_OPTIONS,
        )

    def _current(self) -> _Connection:
        with self._lock:
            if self._closed:
                raise EtcdError("etcd client is closed")
            if self._connection is None:
                endpoint = self._endpoints[self._index]
                self._generation += 1
                try:
                    client = self._connect(endpoint)
                except Exception as error:
                    # Authentication happens while connecting; a dead endpoint fails here.
                    self._index = (self._index + 1) % len(self._endpoints)
                    if _is_connection_error(error) or _is_timeout(error):
                        raise _ConnectFailed(endpoint, error) from error
                    raise _map_error(error, "connect", endpoint) from None
                self._connection = _Connection(client, endpoint, self._generation)
            return self._connection

    def _drop(self, connection: _Connection, *, rotate: bool = True) -> None:
        """Forget a connection that failed; the next call connects (to the next endpoint)."""
        with self._lock:
            if self._connection is not connection:
                return  # another thread already moved on
            self._connection = None
            if rotate:
                self._index = (self._index + 1) % len(self._endpoints)
        # The channel is not closed here: other threads may still be using it and
        # would see their calls cancelled. It is released when the last user drops it.

    def _call(self, op: str, fn: Callable[[_Connection], T]) -> T:
        failures: list[str] = []
        reauthenticated = False
        attempts = len(self._endpoints)
        while attempts > 0:
            attempts -= 1
            try:
                connection = self._current()
            except _ConnectFailed as failed:
                failures.append(f"{failed.endpoint.url}: {_rpc_details(failed.error)}")
                continue
            try:
                return fn(connection)
            except EtcdUnavailable as error:
                # raised by a watch that could not be set up on this endpoint: try the next
                self._drop(connection)
                failures.append(f"{connection.endpoint.url}: {error}")
                continue
            except EtcdError:
                raise
            except Exception as error:
                if _is_stale_token(error) and not reauthenticated:
                    # simple tokens expire after --auth-token-ttl of disuse: log in again
                    reauthenticated = True
                    attempts += 1
                    self._drop(connection, rotate=False)
                    continue
                if _is_connection_error(error):
                    self._drop(connection)
                    failures.append(f"{connection.endpoint.url}: {_rpc_details(error)}")
                    continue
                if _is_timeout(error):
                    self._drop(connection)
                raise _map_error(error, op, connection.endpoint) from None
        raise EtcdUnavailable(f"etcd {op}: no endpoint answered ({'; '.join(failures)})")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.client.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- key/value ------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        request = rpc.RangeRequest(key=_to_bytes(key))

        def run(c: _Connection) -> KeyValue | None:
            response = c.client.kvstub.Range(request, self.timeout, **c.kw())
            return _key_value(response.kvs[0]) if response.kvs else None

        return self._call("get", run)

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` and the store revision they were read at."""
        start = _to_bytes(prefix)
        request = rpc.RangeRequest(key=start, range_end=_prefix_end(start))

        def run(c: _Connection) -> tuple[list[KeyValue], int]:
            response = c.client.kvstub.Range(request, self.timeout, **c.kw())
            return [_key_value(kv) for kv in response.kvs], int(response.header.revision)

        return self._call("get-prefix", run)

    def put(self, key: str, value: bytes | str, *, lease_id: int = 0) -> int:
        """Write ``key``; returns the revision of the write."""
        request = rpc.PutRequest(key=_to_bytes(key), value=_to_bytes(value), lease=lease_id)

        def run(c: _Connection) -> int:
            return int(c.client.kvstub.Put(request, self.timeout, **c.kw()).header.revision)

        return self._call("put", run)

    def delete(self, key: str) -> bool:
        """Delete ``key``; False when it did not exist."""
        request = rpc.DeleteRangeRequest(key=_to_bytes(key))

        def run(c: _Connection) -> bool:
            return int(c.client.kvstub.DeleteRange(request, self.timeout, **c.kw()).deleted) > 0

        return self._call("delete", run)

    def compare_and_delete(self, key: str, value: bytes | str) -> bool:
        """Delete ``key`` only while it holds ``value``."""
        raw_key = _to_bytes(key)
        request = rpc.TxnRequest(
            compare=[rpc.Compare(key=raw_key, target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL,
                                 value=_to_bytes(value))],
            success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=raw_key))],
        )

        def run(c: _Connection) -> bool:
            return bool(c.client.kvstub.Txn(request, self.timeout, **c.kw()).succeeded)

        return self._call("compare-and-delete", run)

    def compact(self, revision: int) -> None:
        """Discard the history before ``revision`` (tests and maintenance)."""
        request = rpc.CompactionRequest(revision=revision, physical=True)
        self._call("compact", lambda c: c.client.kvstub.Compact(request, self.timeout, **c.kw()))

    # -- leases ---------------------------------------------------------------------

    def grant(self, ttl: int) -> int:
        """A new etcd lease of ``ttl`` seconds; returns its id."""
        request = rpc.LeaseGrantRequest(TTL=ttl, ID=0)

        def run(c: _Connection) -> int:
            response = c.client.leasestub.LeaseGrant(request, self.timeout, **c.kw())
            if response.error:
                raise EtcdError(f"etcd lease grant at {c.endpoint.url}: {response.error}")
            return int(response.ID)

        return self._call("lease-grant", run)

    def revoke(self, lease_id: int) -> None:
        """Revoke a lease (deleting its keys); an unknown or expired lease is not an error."""
        request = rpc.LeaseRevokeRequest(ID=lease_id)

        def run(c: _Connection) -> None:
            try:
                c.client.leasestub.LeaseRevoke(request, self.timeout, **c.kw())
            except grpc.RpcError as error:
                if _rpc_code(error) != grpc.StatusCode.NOT_FOUND:
                    raise

        self._call("lease-revoke", run)

    def _revoke_quietly(self, lease_id: int) -> None:
        try:
            self.revoke(lease_id)
        except EtcdError as error:
            log.warning("could not revoke etcd lease %x (it expires on its own): %s", lease_id, error)

    def lease_remaining(self, lease_id: int) -> float | None:
        """Seconds until the lease expires; None for no lease (0) or an expired/unknown one."""
        if not lease_id:
            return None
        request = rpc.LeaseTimeToLiveRequest(ID=lease_id, keys=False)

        def run(c: _Connection) -> float | None:
            ttl = int(c.client.leasestub.LeaseTimeToLive(request, self.timeout, **c.kw()).TTL)
            return float(ttl) if ttl >= 0 else None

        return self._call("lease-ttl", run)

    def keepalive(self, lease_id: int) -> float | None:
        """Refresh a lease once; returns its new TTL, or None when it has expired."""
        request = rpc.LeaseKeepAliveRequest(ID=lease_id)

        def run(c: _Connection) -> float | None:
            for response in c.client.leasestub.LeaseKeepAlive(iter([request]), self.timeout, **c.kw()):
                return float(response.TTL) if int(response.TTL) > 0 else None
            return None

        return self._call("lease-keepalive", run)

    def create_if_absent(self, key: str, value: bytes | str, ttl: int) -> int | None:
        """flannel's createSubnet: write ``key`` on a new ``ttl`` lease only if it does not exist.

        Returns the lease id, or None when the key already exists (the new lease is revoked).
        """
        lease_id = self.grant(ttl)
        raw_key = _to_bytes(key)
        request = rpc.TxnRequest(
            compare=[rpc.Compare(key=raw_key, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL, version=0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=raw_key, value=_to_bytes(value),
                                                              lease=lease_id))],
        )

        def run(c: _Connection) -> bool:
            return bool(c.client.kvstub.Txn(request, self.timeout, **c.kw()).succeeded)

        try:
            created = self._call("create", run)
        except EtcdError:
            self._revoke_quietly(lease_id)
            raise
        if not created:
            self._revoke_quietly(lease_id)
            return None
        return lease_id

    def put_if_absent(self, key: str, value: bytes | str) -> bool:
        """Write ``key`` (with no lease) only if it does not exist; True when this call wrote it."""
        raw_key = _to_bytes(key)
        request = rpc.TxnRequest(
            compare=[rpc.Compare(key=raw_key, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL, version=0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=raw_key, value=_to_bytes(value)))],
        )

        def run(c: _Connection) -> bool:
            return bool(c.client.kvstub.Txn(request, self.timeout, **c.kw()).succeeded)

        return self._call("create", run)

    def put_with_new_lease(self, key: str, value: bytes | str, ttl: int) -> int:
        """flannel's updateSubnet (renewal): a new ``ttl`` lease and a plain put; returns the lease id.

        The previous lease is left to expire, as flannel does.
        """
        lease_id = self.grant(ttl)
        try:
            self.put(key, value, lease_id=lease_id)
        except EtcdError:
            self._revoke_quietly(lease_id)
            raise
        return lease_id

    # -- authentication administration (the installer confines the daemons' user) ----------

    def _auth(self, op: str, call: Callable[[Any], Any]) -> None:
        """One Auth RPC; "already exists" answers count as done, so every step can be repeated."""
        def run(c: _Connection) -> None:
            try:
                call(c)
            except grpc.RpcError as error:
                if "already exists" not in _rpc_details(error):
                    raise

        self._call(op, run)

    def ensure_user(self, name: str, password: Secret, role: str) -> None:
        """User ``name`` exists (with ``password`` if it is new) and holds ``role``."""
        def add(c: _Connection) -> None:
            rpc.AuthStub(c.client.channel).UserAdd(
                rpc.AuthUserAddRequest(name=name, password=password.reveal()), self.timeout, **c.kw())

        def grant(c: _Connection) -> None:
            rpc.AuthStub(c.client.channel).UserGrantRole(
                rpc.AuthUserGrantRoleRequest(user=name, role=role), self.timeout, **c.kw())

        self._auth("user-add", add)
        self._auth("user-grant-role", grant)

    def ensure_prefix_role(self, role: str, prefix: str) -> None:
        """Role ``role`` exists and may read and write every key under ``prefix`` (a range, nothing beyond)."""
        key = _to_bytes(prefix)
        range_end = key[:-1] + bytes([key[-1] + 1])  # etcd's prefix range: [prefix, prefix with its last byte + 1)

        def add(c: _Connection) -> None:
            rpc.AuthStub(c.client.channel).RoleAdd(rpc.AuthRoleAddRequest(name=role), self.timeout, **c.kw())

        def grant(c: _Connection) -> None:
            permission = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=key, range_end=range_end)
            rpc.AuthStub(c.client.channel).RoleGrantPermission(
                rpc.AuthRoleGrantPermissionRequest(name=role, perm=permission), self.timeout, **c.kw())

        self._auth("role-add", add)
        self._auth("role-grant-permission", grant)

    def role_prefixes(self, role: str) -> list[tuple[bytes, bytes, str]] | None:
        """(key, range_end, READ|WRITE|READWRITE) of each permission ``role`` holds; None if it does not exist."""
        def run(c: _Connection) -> list[tuple[bytes, bytes, str]] | None:
            try:
                answer = rpc.AuthStub(c.client.channel).RoleGet(rpc.AuthRoleGetRequest(role=role), self.timeout,
                                                                 **c.kw())
            except grpc.RpcError as error:
                if "not found" in _rpc_details(error):
                    return None
                raise
            return [(bytes(p.key), bytes(p.range_end), auth_pb2.Permission.Type.Name(p.permType))
                    for p in answer.perm]

        return self._call("role-get", run)

    def enable_auth(self) -> None:
        """Turn authentication on (etcd ignores the request when it is on already). Needs user root first."""
        self._auth("auth-enable", lambda c: rpc.AuthStub(c.client.channel).AuthEnable(
            rpc.AuthEnableRequest(), self.timeout, **c.kw()))

    # -- watching, locking, status -----------------------------------------------------

    def watch_prefix(self, prefix: str, start_revision: int) -> EtcdWatch:
        """Watch every key under ``prefix`` from ``start_revision`` on.

        Returns once etcd has confirmed the watch. Raises ``WatchCompacted`` (here
        or while iterating) when ``start_revision`` is older than the compaction
        point, and ``EtcdUnavailable`` when no endpoint answers.
        """
        start = _to_bytes(prefix)
        create = rpc.WatchCreateRequest(key=start, range_end=_prefix_end(start), start_revision=start_revision)

        def run(c: _Connection) -> EtcdWatch:
            return EtcdWatch(c, create, timeout=self.timeout, on_lost=lambda: self._drop(c))

        return self._call("watch", run)

    def lock(self, name: str, ttl: float = 60, *, holder: str = "") -> EtcdLock:
        """A lock held by the existence of key ``name`` on a ``ttl`` lease (not yet acquired)."""
        return EtcdLock(self, name, ttl, holder=holder)

    def status(self) -> EtcdStatus:
        def run(c: _Connection) -> EtcdStatus:
            response = c.client.maintenancestub.Status(rpc.StatusRequest(), self.timeout, **c.kw())
            return EtcdStatus(endpoint=c.endpoint.url, version=str(response.version),
                              revision=int(response.header.revision), member_id=int(response.header.member_id),
                              leader_id=int(response.leader), raft_term=int(response.raftTerm),
                              db_size=int(response.dbSize))

        return self._call("status", run)


class _ConnectFailed(Exception):
    def __init__(self, endpoint: Endpoint, error: BaseException) -> None:
        super().__init__(endpoint.url)
        self.endpoint = endpoint
        self.error = error


# -- watch ------------------------------------------------------------------------


class EtcdWatch(Iterator[list[WatchEvent]]):
    """One gRPC watch stream: iterate for batches of events, ``cancel()`` to end it.

    Iteration ends (StopIteration) after ``cancel()``, raises ``WatchCompacted``
    when etcd has compacted the requested history and ``EtcdUnavailable`` when
    the connection is lost or the member loses its leader.
    """

    def __init__(self, connection: _Connection, create: Any, *, timeout: float,
                 on_lost: Callable[[], None]) -> None:
        self._connection = connection
        self._on_lost = on_lost
        self._requests: queue.Queue[Any] = queue.Queue()
        self._requests.put(rpc.WatchRequest(create_request=create))
        self._cancelled = False
        self._timed_out = False
        self.watch_id: int | None = None
        stub = rpc.WatchStub(connection.client.channel)
        self._call = stub.Watch(self._request_stream(), **connection.kw(_REQUIRE_LEADER))
        # The stream itself has no deadline; only its creation is bounded.
        timer = threading.Timer(timeout, self._creation_timeout)
        timer.daemon = True
        timer.start()
        try:
            while self.watch_id is None:
                response = self._next_response()
                if response.created:
                    self.watch_id = int(response.watch_id)
                self._check(response)
        finally:
            timer.cancel()

    def _request_stream(self) -> Iterator[Any]:
        while True:
            request = self._requests.get()
            if request is None:
                return
            yield request

    def _creation_timeout(self) -> None:
        if self.watch_id is None:
            self._timed_out = True
            self._call.cancel()

    def _close(self) -> None:
        self._requests.put(None)
        self._call.cancel()

    def cancel(self) -> None:
        """End the watch; a thread blocked in ``next()`` gets StopIteration."""
        self._cancelled = True
        self._close()

    def _next_response(self) -> Any:
        try:
            return next(self._call)
        except StopIteration:
            self._close()
            if self._cancelled:
                raise
            self._on_lost()
            raise EtcdUnavailable(f"etcd watch at {self._connection.endpoint.url}: stream ended") from None
        except grpc.RpcError as error:
            self._close()
            if self._cancelled:
                raise StopIteration from None
            if self._timed_out:
                self._on_lost()
                raise EtcdUnavailable(f"etcd watch at {self._connection.endpoint.url}: "
                                      "not confirmed in time") from None
            mapped = _map_error(error, "watch", self._connection.endpoint)
            if isinstance(mapped, EtcdUnavailable):
                self._on_lost()
            raise mapped from None

    def _check(self, response: Any) -> None:
        if response.compact_revision:
            self._close()
            raise WatchCompacted(int(response.compact_revision))
        if response.canceled:
            self._close()
            if self._cancelled:
                raise StopIteration
            reason = response.cancel_reason or "cancelled by the server"
            if "leader" in reason:
                self._on_lost()
                raise EtcdUnavailable(f"etcd watch at {self._connection.endpoint.url}: {reason}")
            raise EtcdError(f"etcd watch at {self._connection.endpoint.url}: {reason}")

    def __next__(self) -> list[WatchEvent]:
        while True:
            if self._cancelled:
                raise StopIteration
            response = self._next_response()
            self._check(response)
            if not response.events:
                continue  # creation confirmations and progress notifications
            batch = []
            for event in response.events:
                kv = _key_value(event.kv)
                kind: Literal["put", "delete"] = "delete" if event.type == kv_pb2.Event.DELETE else "put"
                batch.append(WatchEvent(kind=kind, kv=kv, revision=kv.mod_revision))
            return batch

    def __iter__(self) -> EtcdWatch:
        return self


# -- lock -------------------------------------------------------------------------


class EtcdLock:
    """A mutual-exclusion lock: whoever created key ``name`` (on a TTL lease) holds it.

    ``acquire`` polls; ``refresh`` keeps the lease alive and must run well within
    ``ttl``; when the holder dies the lease expires and the key goes away.
    """

    POLL_INTERVAL = 0.5

    def __init__(self, client: EtcdClient, name: str, ttl: float, *, holder: str = "") -> None:
        if ttl <= 0:
            raise ValueError("lock ttl must be positive")
        self._client = client
        self.name = name
        self.ttl = max(1, math.ceil(ttl))  # etcd leases have whole seconds
        self._token = f"{holder}#{uuid.uuid4().hex}" if holder else uuid.uuid4().hex
        self._lease_id: int | None = None

    def __repr__(self) -> str:
        return f"EtcdLock({self.name!r}, ttl={self.ttl}, held={self._lease_id is not None})"

    def acquire(self, timeout: float | None = 0.0) -> bool:
        """Try to take the lock, waiting up to ``timeout`` seconds (None: forever)."""
        if self._lease_id is not None and self.is_held():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # Waiters only read the key (one cheap RPC per poll); the lease grant and the
            # transaction happen only when the key is gone, so idle nodes cost etcd little.
            if self._client.get(self.name) is None:
                lease_id = self._client.create_if_absent(self.name, self._token, self.ttl)
                if lease_id is not None:
                    self._lease_id = lease_id
                    return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            pause = self.POLL_INTERVAL
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)

    def refresh(self) -> None:
        """Keep the lease alive. When it has already expired the lock is lost: ``is_held()`` turns False.

        Raises ``EtcdUnavailable`` when etcd cannot be reached (the lock may still be held).
        """
        if self._lease_id is None:
            return
        if self._client.keepalive(self._lease_id) is None:
            log.warning("lock %s: its etcd lease expired; the lock is lost", self.name)
            self._lease_id = None

    def release(self) -> None:
        """Give the lock up (only deletes the key while it is still ours)."""
        lease_id, self._lease_id = self._lease_id, None
        self._client.compare_and_delete(self.name, self._token)
        if lease_id is not None:
            self._client.revoke(lease_id)

    def is_held(self) -> bool:
        """True while our lease lives and the key holds our token (read back from etcd)."""
        if self._lease_id is None:
            return False
        kv = self._client.get(self.name)
        return kv is not None and kv.value == self._token.encode() and kv.lease_id == self._lease_id
