"""LeaseWatcher against a real etcd: snapshot, events, compaction, outages, malformed input."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Iterator

import etcd3
import pytest

from flannel_alivpc.clients.etcd import EtcdClient, EtcdWatch
from flannel_alivpc.core.network import LEASE_TTL, IPv4Network
from flannel_alivpc.routed.leases import LeaseSnapshot, LeaseWatcher
from flannel_alivpc.testbed.etcd_server import EtcdServer
from tests.routed.support import PREFIX, bare_value, put_lease, raw_client, wait_for

NET = ipaddress.ip_network


class Changes:
    """The on_change callback: counts calls."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.count += 1


@pytest.fixture
def changes() -> Changes:
    return Changes()


@pytest.fixture
def watcher(client: EtcdClient, changes: Changes) -> Iterator[LeaseWatcher]:
    lease_watcher = LeaseWatcher(client, PREFIX, changes)
    try:
        yield lease_watcher
    finally:
        lease_watcher.stop()


def _subnets(snapshot: LeaseSnapshot) -> set[str]:
    return {str(subnet) for subnet in snapshot.leases}


def _has(watcher: LeaseWatcher, *subnets: str) -> bool:
    return _subnets(watcher.snapshot()) == set(subnets)


def test_snapshot_then_events(watcher: LeaseWatcher, raw: etcd3.Etcd3Client, changes: Changes) -> None:
    assert watcher.snapshot() == LeaseSnapshot(leases={}, malformed={}, revision=0, in_sync=False)
    first_id = put_lease(raw, "10.5.1.0-24", bare_value("192.168.0.1"))
    put_lease(raw, "10.5.2.0-24", bare_value("192.168.0.2"), ttl=None)
    watcher.start()
    assert watcher.wait_in_sync(5)
    snapshot = watcher.snapshot()
    assert snapshot.in_sync and snapshot.connected and not snapshot.malformed
    assert _subnets(snapshot) == {"10.5.1.0/24", "10.5.2.0/24"}
    first = snapshot.leases[IPv4Network("10.5.1.0/24")]
    assert first.etcd_lease == first_id and str(first.attrs.public_ip) == "192.168.0.1"
    assert first.expiration == pytest.approx(time.time() + LEASE_TTL, abs=5)
    reservation = snapshot.leases[IPv4Network("10.5.2.0/24")]
    assert reservation.expiration is None and reservation.etcd_lease == 0
    calls = changes.count
    assert calls >= 1

    put_lease(raw, "10.5.3.0-24", bare_value("192.168.0.3"))
    wait_for(lambda: _has(watcher, "10.5.1.0/24", "10.5.2.0/24", "10.5.3.0/24"), what="the new lease")
    raw.delete(f"{PREFIX}/subnets/10.5.1.0-24")
    wait_for(lambda: _has(watcher, "10.5.2.0/24", "10.5.3.0/24"), what="the deletion")
    assert changes.count >= calls + 2
    assert watcher.snapshot().revision == raw.get(f"{PREFIX}/subnets/10.5.3.0-24")[1].response_header.revision


def test_expired_lease_disappears(watcher: LeaseWatcher, raw: etcd3.Etcd3Client) -> None:
    lease_id = put_lease(raw, "10.5.1.0-24", bare_value("192.168.0.1"))
    watcher.start()
    assert watcher.wait_in_sync(5) and _has(watcher, "10.5.1.0/24")
    raw.revoke_lease(lease_id)  # what expiry does, without waiting for it
    wait_for(lambda: _has(watcher), what="the expired lease to go")


def test_one_ttl_lookup_per_lease(client: EtcdClient, raw: etcd3.Etcd3Client, changes: Changes,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[int] = []
    real = client.lease_remaining

    def counting(lease_id: int) -> float | None:
        looked_up.append(lease_id)
        return real(lease_id)

    monkeypatch.setattr(client, "lease_remaining", counting)
    ids = [put_lease(raw, f"10.5.{i}.0-24", bare_value(f"192.168.0.{i}")) for i in (1, 2, 3)]
    put_lease(raw, "10.5.4.0-24", bare_value("192.168.0.4"), ttl=None)  # no lease, no lookup
    with LeaseWatcher(client, PREFIX, changes) as watcher:
        assert watcher.wait_in_sync(5)
        assert sorted(looked_up) == sorted(ids)
        # a re-put on the same etcd lease does not look it up again; a renewal (new lease) does
        raw.put(f"{PREFIX}/subnets/10.5.1.0-24", bare_value("192.168.0.1"), lease=ids[0])
        new_id = put_lease(raw, "10.5.2.0-24", bare_value("192.168.0.2"))
        wait_for(lambda: watcher.snapshot().leases[IPv4Network("10.5.2.0/24")].etcd_lease == new_id,
                 what="the renewal")
        assert sorted(looked_up) == sorted([*ids, new_id])


def test_without_expirations_no_ttl_lookups_are_made(client: EtcdClient, raw: etcd3.Etcd3Client, changes: Changes,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[int] = []
    monkeypatch.setattr(client, "lease_remaining", lambda lease_id: looked_up.append(lease_id))
    lease_id = put_lease(raw, "10.5.1.0-24", bare_value("192.168.0.1"))
    with LeaseWatcher(client, PREFIX, changes, fetch_expirations=False) as watcher:
        assert watcher.wait_in_sync(5)
        lease = watcher.snapshot().leases[IPv4Network("10.5.1.0/24")]
        assert lease.etcd_lease == lease_id and lease.expiration is None
        put_lease(raw, "10.5.2.0-24", bare_value("192.168.0.2"))
        wait_for(lambda: IPv4Network("10.5.2.0/24") in watcher.snapshot().leases, what="the new lease")
    assert looked_up == []


def test_compaction_makes_it_relist(client: EtcdClient, raw: etcd3.Etcd3Client, changes: Changes,
                                    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flannel_alivpc.routed.leases")
    put_lease(raw, "10.5.1.0-24", bare_value("192.168.0.1"))
    put_lease(raw, "10.5.2.0-24", bare_value("192.168.0.2"))
    real_watch = client.watch_prefix
    starts: list[int] = []

    def watch_after_compaction(prefix: str, start_revision: int) -> EtcdWatch:
        starts.append(start_revision)
        if len(starts) == 1:
            # between the listing and the watch: changes, then a compaction past them
            raw.delete(f"{PREFIX}/subnets/10.5.1.0-24")
            put_lease(raw, "10.5.3.0-24", bare_value("192.168.0.3"))
            revision = raw.get(f"{PREFIX}/subnets/10.5.3.0-24")[1].response_header.revision
            raw.compact(revision, physical=True)
        return real_watch(prefix, start_revision)

    monkeypatch.setattr(client, "watch_prefix", watch_after_compaction)
    with LeaseWatcher(client, PREFIX, changes) as watcher:
        wait_for(lambda: _has(watcher, "10.5.2.0/24", "10.5.3.0/24"), what="the re-listed snapshot")
        assert len(starts) == 2 and starts[1] > starts[0]
        assert "compaction" in caplog.text
        # and it keeps watching from the new listing
        put_lease(raw, "10.5.4.0-24", bare_value("192.168.0.4"))
        wait_for(lambda: _has(watcher, "10.5.2.0/24", "10.5.3.0/24", "10.5.4.0/24"), what="a later event")


def test_keeps_its_leases_through_an_etcd_restart(client: EtcdClient, etcd_server: EtcdServer,
                                                  raw: etcd3.Etcd3Client, changes: Changes) -> None:
    put_lease(raw, "10.5.1.0-24", bare_value("192.168.0.1"))
    put_lease(raw, "10.5.2.0-24", bare_value("192.168.0.2"))
    with LeaseWatcher(client, PREFIX, changes, backoff_max=0.5) as watcher:
        assert watcher.wait_in_sync(5)
        etcd_server.stop()
        wait_for(lambda: not watcher.snapshot().connected, what="the watcher to notice the outage")
        during = watcher.snapshot()
        assert during.in_sync and _subnets(during) == {"10.5.1.0/24", "10.5.2.0/24"}
        time.sleep(0.3)  # a few failed reconnects: still nothing dropped
        assert _has(watcher, "10.5.1.0/24", "10.5.2.0/24")
        etcd_server.start()
        with raw_client(etcd_server) as fresh:
            put_lease(fresh, "10.5.3.0-24", bare_value("192.168.0.3"))
        wait_for(lambda: _has(watcher, "10.5.1.0/24", "10.5.2.0/24", "10.5.3.0/24"), timeout=8,
                 what="the lease written after the restart")
        assert watcher.snapshot().connected


def test_a_killed_etcd_and_a_deletion_during_the_outage(client: EtcdClient, etcd_server: EtcdServer,
                                                        raw: etcd3.Etcd3Client, changes: Changes) -> None:
    put_lease(raw, "10.5.1.0-24", bare_value("192.168.0.1"))
    put_lease(raw, "10.5.2.0-24", bare_value("192.168.0.2"))
    with LeaseWatcher(client, PREFIX, changes, backoff_max=0.5) as watcher:
        assert watcher.wait_in_sync(5)
        etcd_server.kill()
        wait_for(lambda: not watcher.snapshot().connected, what="the outage")
        etcd_server.start()
        # the re-list after reconnecting is authoritative
        with raw_client(etcd_server) as fresh:
            fresh.delete(f"{PREFIX}/subnets/10.5.1.0-24")
        wait_for(lambda: _has(watcher, "10.5.2.0/24"), timeout=8, what="the deletion after the restart")


def test_malformed_input_is_skipped_reported_and_warned_once(
        watcher: LeaseWatcher, raw: etcd3.Etcd3Client, caplog: pytest.LogCaptureFixture) -> None:
    put_lease(raw, "10.5.1.0-24", bare_value("192.168.0.1"))
    put_lease(raw, "10.5.2.0-24", b"{not json")
    put_lease(raw, "10.5.3.0-24", b'{"PublicIP":"not-an-ip","PublicIPv6":null}')
    put_lease(raw, "garbage", bare_value("192.168.0.9"))
    watcher.start()
    assert watcher.wait_in_sync(5)
    snapshot = watcher.snapshot()
    assert _subnets(snapshot) == {"10.5.1.0/24"}
    assert set(snapshot.malformed) == {f"{PREFIX}/subnets/{name}" for name in ("10.5.2.0-24", "10.5.3.0-24",
                                                                                 "garbage")}
    assert "not JSON" in snapshot.malformed[f"{PREFIX}/subnets/10.5.2.0-24"]
    assert snapshot.malformed_subnets() == {NET("10.5.2.0/24"), NET("10.5.3.0/24")}
    assert snapshot.protects(NET("10.5.2.0/24")) and not snapshot.protects(NET("10.5.9.0/24"))

    def warnings_for(name: str) -> int:
        return sum(1 for r in caplog.records
                   if r.getMessage().startswith(f"Ignoring bad subnet node {PREFIX}/subnets/{name}:"))

    assert warnings_for("10.5.2.0-24") == warnings_for("garbage") == 1
    # the same bad value again (and unrelated events): no new warning
    raw.put(f"{PREFIX}/subnets/10.5.2.0-24", b"{not json")
    put_lease(raw, "10.5.4.0-24", bare_value("192.168.0.4"))
    wait_for(lambda: _has(watcher, "10.5.1.0/24", "10.5.4.0/24"), what="the unrelated lease")
    assert warnings_for("10.5.2.0-24") == 1
    # a different bad value is a new warning
    raw.put(f"{PREFIX}/subnets/10.5.2.0-24", b"[]")
    wait_for(lambda: warnings_for("10.5.2.0-24") == 2, what="the second warning")
    # fixed: it becomes a lease and leaves the malformed list
    raw.put(f"{PREFIX}/subnets/10.5.2.0-24", bare_value("192.168.0.2"))
    wait_for(lambda: _has(watcher, "10.5.1.0/24", "10.5.2.0/24", "10.5.4.0/24"), what="the fixed lease")
    assert NET("10.5.2.0/24") not in watcher.snapshot().malformed_subnets()


def test_a_lease_overwritten_with_garbage_stays_protected(watcher: LeaseWatcher, raw: etcd3.Etcd3Client) -> None:
    put_lease(raw, "10.5.1.0-24", bare_value("192.168.0.1"))
    watcher.start()
    assert watcher.wait_in_sync(5)
    raw.put(f"{PREFIX}/subnets/10.5.1.0-24", b"oops")
    wait_for(lambda: not watcher.snapshot().leases, what="the lease to turn malformed")
    snapshot = watcher.snapshot()
    assert snapshot.malformed_subnets() == {NET("10.5.1.0/24")}
    assert snapshot.protects(NET("10.5.1.0/24"))
    raw.delete(f"{PREFIX}/subnets/10.5.1.0-24")
    wait_for(lambda: not watcher.snapshot().malformed, what="the deletion of the malformed key")


def test_other_prefixes_are_ignored(watcher: LeaseWatcher, raw: etcd3.Etcd3Client) -> None:
    raw.put(f"{PREFIX}/config", '{"Network": "10.5.0.0/16"}')
    raw.put("/other.io/network/subnets/10.5.9.0-24", bare_value("192.168.0.9"))
    put_lease(raw, "10.5.1.0-24", bare_value("192.168.0.1"))
    watcher.start()
    assert watcher.wait_in_sync(5)
    raw.put("/other.io/network/subnets/10.5.8.0-24", bare_value("192.168.0.8"))
    put_lease(raw, "10.5.2.0-24", bare_value("192.168.0.2"))
    wait_for(lambda: _has(watcher, "10.5.1.0/24", "10.5.2.0/24"), what="only this prefix's leases")
    assert not watcher.snapshot().malformed


def test_stop_is_prompt_even_while_etcd_is_down(client: EtcdClient, etcd_server: EtcdServer,
                                                changes: Changes) -> None:
    etcd_server.stop()
    watcher = LeaseWatcher(client, PREFIX, changes).start()
    assert not watcher.wait_in_sync(0.3)
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 1.0
    assert not watcher.snapshot().in_sync
