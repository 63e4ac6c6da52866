"""clients.etcd against a real etcd: typed results, failover, errors, watch, lock."""

from __future__ import annotations

import logging
import socket
import threading
import time

import etcd3
import pytest

from flannel_alivpc.clients.etcd import EtcdClient, KeyValue, WatchEvent, parse_endpoints
from flannel_alivpc.core.errors import ConfigError, EtcdAuthError, EtcdUnavailable, WatchCompacted
from flannel_alivpc.core.secrets import Secret
from flannel_alivpc.testbed.etcd_server import EtcdServer
from tests.routed.support import etcdctl, wait_for


def _dead_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# -- endpoints and settings ----------------------------------------------------------------


def test_parse_endpoints_accepts_flannel_lists() -> None:
    parsed = parse_endpoints(["http://127.0.0.1:4001,http://127.0.0.1:2379", "etcd-1", "https://[fd00::1]:2380"])
    assert [(e.host, e.port, e.secure) for e in parsed] == [
        ("127.0.0.1", 4001, False), ("127.0.0.1", 2379, False), ("etcd-1", 2379, False), ("fd00::1", 2380, True)]
    assert parsed[3].target == "[fd00::1]:2380"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"endpoints": ""}, "no etcd endpoints"),
    ({"endpoints": "unix:///run/etcd.sock"}, "scheme must be http or https"),
    ({"endpoints": "https://etcd:2379"}, "--etcd-cafile"),
    ({"endpoints": "http://etcd:2379", "cert_file": "c.pem"}, "--etcd-keyfile"),
    ({"endpoints": "http://etcd:2379", "username": "root"}, "FLANNELD_ETCD_PASSWORD"),
])
def test_bad_settings_are_config_errors(kwargs: dict[str, str], message: str) -> None:
    endpoints = kwargs.pop("endpoints")
    with pytest.raises(ConfigError, match=message):
        EtcdClient(endpoints, **kwargs)  # type: ignore[arg-type]


def test_secrets_stay_out_of_repr() -> None:
    client = EtcdClient("http://127.0.0.1:1", username="root", password=Secret("hunter2-secret"))
    assert "hunter2" not in repr(client)
    assert "root" in repr(client)


# -- key/value ---------------------------------------------------------------------------------


def test_typed_get_put_delete(client: EtcdClient, raw: etcd3.Etcd3Client) -> None:
    assert client.get("/k") is None
    revision = client.put("/k", b"v1")
    kv = client.get("/k")
    assert kv == KeyValue(key="/k", value=b"v1", lease_id=0, mod_revision=revision, create_revision=revision,
                          version=1)
    raw.put("/k2", "x")
    raw.put("/kz", "outside")
    kvs, listed_at = client.get_prefix("/k")
    assert [kv.key for kv in kvs] == ["/k", "/k2", "/kz"]
    kvs, _ = client.get_prefix("/k2")
    assert [kv.key for kv in kvs] == ["/k2"]
    assert listed_at == revision + 2
    assert client.delete("/k") is True
    assert client.delete("/k") is False


def test_create_if_absent_is_a_version_zero_txn(client: EtcdClient, etcd_server: EtcdServer) -> None:
    lease_id = client.create_if_absent("/c", "first", 86400)
    assert lease_id
    assert client.create_if_absent("/c", "second", 86400) is None
    kv = client.get("/c")
    assert kv is not None and kv.value == b"first" and kv.lease_id == lease_id
    # the lease granted for the losing attempt was revoked: only the winner's is left
    assert etcdctl(etcd_server, "lease", "list").split() == ["found", "1", "leases", f"{lease_id:016x}"]


def test_put_with_new_lease_grants_a_fresh_lease_each_time(client: EtcdClient) -> None:
    first = client.put_with_new_lease("/r", "a", 100)
    second = client.put_with_new_lease("/r", "b", 100)
    assert first != second
    kv = client.get("/r")
    assert kv is not None and kv.value == b"b" and kv.lease_id == second
    # like flannel, the old lease is not revoked; it just runs out
    assert client.lease_remaining(first) is not None


def test_lease_remaining_and_revoke(client: EtcdClient) -> None:
    assert client.lease_remaining(0) is None
    assert client.lease_remaining(0x1234) is None
    lease_id = client.put_with_new_lease("/l", "v", 600)
    remaining = client.lease_remaining(lease_id)
    assert remaining is not None and 595 <= remaining <= 600
    client.revoke(lease_id)
    assert client.get("/l") is None
    assert client.lease_remaining(lease_id) is None
    client.revoke(lease_id)  # unknown lease: not an error


def test_status_reports_revision_and_leader(client: EtcdClient) -> None:
    revision = client.put("/s", "v")
    status = client.status()
    assert status.revision == revision
    assert status.has_leader and status.is_leader
    assert status.version.startswith("3.")


# -- failover and errors ------------------------------------------------------------------------


def test_fails_over_to_the_next_endpoint(etcd_server: EtcdServer) -> None:
    dead = _dead_endpoint()
    client = EtcdClient([dead, etcd_server.endpoint], timeout=2.0)
    try:
        client.put("/f", "v")
        assert client.current_endpoint == etcd_server.endpoint
        kv = client.get("/f")
        assert kv is not None and kv.value == b"v"
    finally:
        client.close()
    # a watch fails over too
    watching = EtcdClient([dead, etcd_server.endpoint], timeout=2.0)
    try:
        watch = watching.watch_prefix("/f", 1)  # replay the history
        assert [event.kv.key for event in next(watch)] == ["/f"]
        watch.cancel()
    finally:
        watching.close()


def test_no_endpoint_is_etcd_unavailable() -> None:
    first, second = _dead_endpoint(), _dead_endpoint()
    client = EtcdClient([first, second], timeout=1.0)
    started = time.monotonic()
    with pytest.raises(EtcdUnavailable) as caught:
        client.get("/x")
    assert time.monotonic() - started < 3
    assert first in str(caught.value) and second in str(caught.value)


def test_reconnects_after_a_restart(client: EtcdClient, etcd_server: EtcdServer) -> None:
    client.put("/p", "before")
    etcd_server.kill()
    with pytest.raises(EtcdUnavailable):
        client.get("/p")
    etcd_server.start()
    kv = client.get("/p")
    assert kv is not None and kv.value == b"before"


def test_authentication(etcd_server: EtcdServer, caplog: pytest.LogCaptureFixture) -> None:
    etcdctl(etcd_server, "user", "add", "root:right-password")
    etcdctl(etcd_server, "auth", "enable")
    caplog.set_level(logging.DEBUG)
    wrong = EtcdClient(etcd_server.endpoint, username="root", password=Secret("wrong-password"), timeout=2.0)
    with pytest.raises(EtcdAuthError) as caught:
        wrong.get("/a")
    assert "wrong-password" not in str(caught.value)
    right = EtcdClient(etcd_server.endpoint, username="root", password=Secret("right-password"), timeout=2.0)
    try:
        right.put("/a", "v")
        kv = right.get("/a")
        assert kv is not None and kv.value == b"v"
    finally:
        right.close()
    assert "right-password" not in caplog.text and "wrong-password" not in caplog.text


# -- watch ---------------------------------------------------------------------------------------


def test_watch_delivers_typed_batches_and_cancels(client: EtcdClient, raw: etcd3.Etcd3Client) -> None:
    _, revision = client.get_prefix("/w/")
    watch = client.watch_prefix("/w/", revision + 1)
    raw.put("/w/a", "1")
    raw.put("/other", "ignored")
    raw.delete("/w/a")
    events: list[WatchEvent] = []
    while len(events) < 2:
        events.extend(next(watch))
    assert [(e.kind, e.kv.key) for e in events] == [("put", "/w/a"), ("delete", "/w/a")]
    assert events[0].kv.value == b"1" and events[1].revision == events[0].revision + 2
    threading.Timer(0.1, watch.cancel).start()
    with pytest.raises(StopIteration):
        next(watch)


def test_watch_from_a_compacted_revision(client: EtcdClient) -> None:
    start = client.put("/wc/a", "1")
    for value in range(5):
        client.put("/wc/a", str(value))
    current = client.put("/wc/b", "x")
    client.compact(current)
    with pytest.raises(WatchCompacted) as caught:
        watch = client.watch_prefix("/wc/", start)
        next(watch)
    assert caught.value.compact_revision == current


def test_watch_reports_a_lost_server(client: EtcdClient, etcd_server: EtcdServer) -> None:
    watch = client.watch_prefix("/wl/", 0)
    threading.Timer(0.1, etcd_server.stop).start()
    with pytest.raises(EtcdUnavailable):
        next(watch)
    etcd_server.start()
    # the next call connects afresh
    watch = client.watch_prefix("/wl/", 0)
    client.put("/wl/x", "1")
    assert next(watch)[0].kv.key == "/wl/x"
    watch.cancel()


# -- lock -------------------------------------------------------------------------------------------


def test_lock_is_exclusive_and_released(client: EtcdClient) -> None:
    first = client.lock("/coreos.com/network/locks/vtb-1", ttl=5, holder="node-a")
    second = client.lock("/coreos.com/network/locks/vtb-1", ttl=5, holder="node-b")
    assert first.acquire(timeout=1)
    started = time.monotonic()
    assert not second.acquire(timeout=0.3)
    assert time.monotonic() - started >= 0.3
    assert first.is_held() and not second.is_held()
    first.refresh()
    assert first.is_held()
    first.release()
    assert not first.is_held()
    assert second.acquire(timeout=1) and second.is_held()
    second.release()


def test_lock_lost_when_its_lease_goes(client: EtcdClient) -> None:
    lock = client.lock("/locks/lost", ttl=5)
    assert lock.acquire()
    kv = client.get("/locks/lost")
    assert kv is not None
    client.revoke(kv.lease_id)  # as if the lease had expired
    lock.refresh()
    assert not lock.is_held()
    other = client.lock("/locks/lost", ttl=5)
    assert other.acquire(timeout=0.5)


def test_a_waiting_lock_takes_over_when_the_holder_releases(client: EtcdClient) -> None:
    holder = client.lock("/locks/wait", ttl=5)
    waiter = client.lock("/locks/wait", ttl=5)
    assert holder.acquire()
    threading.Timer(0.2, holder.release).start()
    assert waiter.acquire(timeout=3)
    wait_for(waiter.is_held, what="the waiter to hold the lock")
