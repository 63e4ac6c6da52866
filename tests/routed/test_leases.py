"""routed.leases against a real etcd: config, acquisition, renewal, lease loss, subnet.env."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import stat
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import etcd3
import pytest

from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.core.errors import ConfigError, LeaseLost
from flannel_alivpc.core.network import (
    LEASE_TTL,
    IPv4Network,
    Lease,
    LeaseAttrs,
    parse_network_config,
    render_subnet_env,
)
from flannel_alivpc.routed.leases import (
    RACE_RETRIES,
    AcquireError,
    LeaseManager,
    LeaseSnapshot,
    LeaseWatcher,
    read_network_config,
    read_previous_subnet,
    write_subnet_env,
)
from flannel_alivpc.testbed.etcd_server import EtcdServer
from tests.routed.support import (
    CONFIG,
    PREFIX,
    attrs,
    bare_value,
    etcdctl,
    put_config,
    put_lease,
    wait_for,
)

MY_IP = "192.168.0.10"
NET = ipaddress.ip_network


def _manager(client: EtcdClient, *, config: dict[str, object] | None = None, ip: str = MY_IP,
             lease_attrs: LeaseAttrs | None = None, previous: str | None = None,
             margin: float = 3600.0, clock: Callable[[], float] | None = None,
             rng: random.Random | None = None, retry_interval: float = 60.0) -> LeaseManager:
    cfg = parse_network_config(json.dumps(config if config is not None else CONFIG))
    value = lease_attrs or attrs(ip)
    extra = {} if clock is None else {"clock": clock}
    return LeaseManager(client, PREFIX, cfg, ipaddress.IPv4Address(ip), lambda: value,
                        IPv4Network(previous) if previous else None, margin, retry_interval=retry_interval,
                        poll_interval=0.02, rng=rng, **extra)


def _value(raw: etcd3.Etcd3Client, subnet: str) -> bytes | None:
    value, _ = raw.get(f"{PREFIX}/subnets/{subnet}")
    return value  # type: ignore[no-any-return]


def _lease_id(raw: etcd3.Etcd3Client, subnet: str) -> int:
    _, meta = raw.get(f"{PREFIX}/subnets/{subnet}")
    return int(meta.lease_id)


# -- network config -------------------------------------------------------------------------------


def test_config_is_read_from_prefix_config(client: EtcdClient, raw: etcd3.Etcd3Client) -> None:
    put_config(raw)
    config = read_network_config(client, PREFIX + "/")
    assert config.network == NET("10.5.0.0/16")
    assert config.subnet_len == 24 and config.backend_type == "ali-vpc"


def test_missing_config_says_how_to_create_it(client: EtcdClient) -> None:
    with pytest.raises(ConfigError) as caught:
        read_network_config(client, PREFIX)
    message = str(caught.value)
    assert message.startswith("flannel config not found in etcd store at /coreos.com/network/config. "
                              "Did you create your config using the etcd v3 API?")
    assert "etcdctl put /coreos.com/network/config '{" in message


def test_config_written_through_the_v2_api_is_not_found(client: EtcdClient, etcd_server: EtcdServer) -> None:
    # What a pre-0.18 setup did: `etcdctl set` (v2). The v3 keyspace does not see it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    body = urllib.parse.urlencode({"value": json.dumps(CONFIG)}).encode()
    request = urllib.request.Request(f"{etcd_server.endpoint}/v2/keys{PREFIX}/config", data=body, method="PUT")
    with opener.open(request, timeout=5) as response:
        assert response.status in (200, 201)
    with pytest.raises(ConfigError, match="Did you create your config using the etcd v3 API"):
        read_network_config(client, PREFIX)


@pytest.mark.parametrize(("value", "message"), [
    ("{not json", r"etcd key /coreos.com/network/config is not valid JSON"),
    ('{"Network": "10.5.0.0/29"}', r"etcd key /coreos.com/network/config: network 10.5.0.0/29 is too small"),
    ('{"Network": "10.5.0.0/16", "SubnetLen": 31}', r"too long"),
    ('["10.5.0.0/16"]', r"must be a JSON object"),
])
def test_bad_config_names_the_key(client: EtcdClient, raw: etcd3.Etcd3Client, value: str, message: str) -> None:
    raw.put(f"{PREFIX}/config", value)
    with pytest.raises(ConfigError, match=message):
        read_network_config(client, PREFIX)


# -- acquisition -------------------------------------------------------------------------------------


def test_fresh_lease_has_flannels_bytes_and_a_24h_ttl(client: EtcdClient, raw: etcd3.Etcd3Client,
                                                      etcd_server: EtcdServer) -> None:
    vxlan = LeaseAttrs(public_ip=ipaddress.IPv4Address("192.168.64.3"), backend_type="vxlan",
                       backend_data={"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"})
    lease = _manager(client, ip="192.168.64.3", lease_attrs=vxlan).acquire()
    key = f"{lease.subnet.network_address}-24"
    assert lease.subnet.subnet_of(NET("10.5.0.0/16")) and lease.subnet != NET("10.5.0.0/24")
    # byte for byte what flanneld writes (Documentation/reservations.md)
    assert _value(raw, key) == (b'{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
                                b'"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}')
    assert etcdctl(etcd_server, "get", "--keys-only", "--prefix", PREFIX + "/subnets/").split() == \
        [f"{PREFIX}/subnets/{key}"]
    ttl = etcdctl(etcd_server, "lease", "timetolive", f"{lease.etcd_lease:x}")
    assert "granted with TTL(86400s)" in ttl
    assert lease.expiration is not None


def test_bare_lease_value(client: EtcdClient, raw: etcd3.Etcd3Client) -> None:
    lease = _manager(client, ip="1.2.3.4").acquire()
    assert _value(raw, f"{lease.subnet.network_address}-24") == b'{"PublicIP":"1.2.3.4","PublicIPv6":null}'


def test_reuses_the_lease_of_its_public_ip(client: EtcdClient, raw: etcd3.Etcd3Client) -> None:
    old_id = put_lease(raw, "10.5.7.0-24", bare_value(MY_IP))
    put_lease(raw, "10.5.8.0-24", bare_value("192.168.0.11"))
    new_attrs = attrs(MY_IP, InstanceId="i-abc")
    lease = _manager(client, lease_attrs=new_attrs, previous="10.5.9.0/24").acquire()
    assert lease.subnet == NET("10.5.7.0/24")
    assert lease.etcd_lease != old_id and _lease_id(raw, "10.5.7.0-24") == lease.etcd_lease
    assert _value(raw, "10.5.7.0-24") == new_attrs.to_json().encode()
    assert b'"BackendData":{"InstanceId":"i-abc"}' in (_value(raw, "10.5.7.0-24") or b"")


def test_a_reservation_stays_a_reservation(client: EtcdClient, raw: etcd3.Etcd3Client) -> None:
    put_lease(raw, "10.5.7.0-24", bare_value(MY_IP), ttl=None)
    manager = _manager(client)
    lease = manager.acquire()
    assert lease == Lease(subnet=NET("10.5.7.0/24"), attrs=attrs(MY_IP), expiration=None, etcd_lease=0)
    assert _lease_id(raw, "10.5.7.0-24") == 0
    assert manager.renew().etcd_lease == 0


def test_reuses_the_previous_subnet_when_free(client: EtcdClient, raw: etcd3.Etcd3Client) -> None:
    put_lease(raw, "10.5.8.0-24", bare_value("192.168.0.11"))
    lease = _manager(client, previous="10.5.9.0/24").acquire()
    assert lease.subnet == NET("10.5.9.0/24")


def test_does_not_take_the_previous_subnet_from_another_node(client: EtcdClient, raw: etcd3.Etcd3Client) -> None:
    other_id = put_lease(raw, "10.5.9.0-24", bare_value("192.168.0.11"))
    lease = _manager(client, previous="10.5.9.0/24").acquire()
    assert lease.subnet != NET("10.5.9.0/24")
    assert _value(raw, "10.5.9.0-24") == bare_value("192.168.0.11").encode()
    assert _lease_id(raw, "10.5.9.0-24") == other_id


def test_ignores_a_previous_subnet_outside_the_network(client: EtcdClient) -> None:
    lease = _manager(client, previous="10.6.9.0/24").acquire()
    assert lease.subnet.subnet_of(NET("10.5.0.0/16"))


def test_deletes_its_incompatible_old_lease(client: EtcdClient, raw: etcd3.Etcd3Client) -> None:
    # the network was shrunk: the node's old subnet is no longer allowed
    put_lease(raw, "10.5.200.0-24", bare_value(MY_IP))
    config = {"Network": "10.5.0.0/16", "SubnetMax": "10.5.100.0", "Backend": {"Type": "ali-vpc"}}
    lease = _manager(client, config=config).acquire()
    assert _value(raw, "10.5.200.0-24") is None
    assert NET("10.5.1.0/24") <= lease.subnet <= NET("10.5.100.0/24")


def test_lost_race_is_retried(client: EtcdClient) -> None:
    # Both nodes pick the same candidate (same random choices); A lists, then B
    # takes the subnet before A's create: A must retry and end up elsewhere.
    config = {"Network": "10.5.0.0/16", "SubnetMax": "10.5.4.0"}
    node_a = _manager(client, config=config, ip="192.168.0.1", rng=random.Random(7))
    node_b = _manager(client, config=config, ip="192.168.0.2", rng=random.Random(7))
    listings = []
    real_get_prefix = client.get_prefix

    class Racing:
        def __getattr__(self, name: str) -> object:
            return getattr(client, name)

        def get_prefix(self, prefix: str) -> object:
            result = real_get_prefix(prefix)
            listings.append(prefix)
            if len(listings) == 1:
                node_b.acquire()
            return result

    node_a._client = Racing()  # type: ignore[assignment]
    lease_a = node_a.acquire()
    lease_b = node_b.lease
    assert lease_b is not None and lease_a.subnet != lease_b.subnet
    assert len(listings) == 2


def test_concurrent_nodes_get_distinct_subnets(client: EtcdClient, etcd_server: EtcdServer) -> None:
    config = {"Network": "10.5.0.0/16", "SubnetMax": "10.5.4.0"}  # exactly four subnets
    clients = [EtcdClient(etcd_server.endpoint, timeout=2.0) for _ in range(4)]
    managers = [_manager(c, config=config, ip=f"192.168.0.{i + 1}") for i, c in enumerate(clients)]
    barrier = threading.Barrier(len(managers))
    results: dict[int, Lease] = {}

    def run(index: int) -> None:
        barrier.wait()
        results[index] = managers[index].acquire()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(managers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for c in clients:
        c.close()
    assert sorted(str(lease.subnet) for lease in results.values()) == [
        "10.5.1.0/24", "10.5.2.0/24", "10.5.3.0/24", "10.5.4.0/24"]


def test_out_of_subnets(client: EtcdClient, raw: etcd3.Etcd3Client) -> None:
    put_lease(raw, "10.5.1.0-24", bare_value("192.168.0.11"))
    config = {"Network": "10.5.0.0/16", "SubnetMax": "10.5.1.0"}
    with pytest.raises(ConfigError, match="out of subnets"):
        _manager(client, config=config).acquire()


def test_a_malformed_key_still_counts_as_taken(client: EtcdClient, raw: etcd3.Etcd3Client) -> None:
    put_lease(raw, "10.5.1.0-24", b"{not json")
    config = {"Network": "10.5.0.0/16", "SubnetMax": "10.5.2.0"}
    assert _manager(client, config=config, previous="10.5.1.0/24").acquire().subnet == NET("10.5.2.0/24")


def test_gives_up_after_ten_lost_races(client: EtcdClient, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = []

    def always_taken(key: str, value: object, ttl: int) -> None:
        attempts.append(key)

    monkeypatch.setattr(client, "create_if_absent", always_taken)
    with pytest.raises(AcquireError, match="max retries reached trying to acquire a subnet"):
        _manager(client).acquire()
    assert len(attempts) == RACE_RETRIES


# -- renewal ---------------------------------------------------------------------------------------------


def test_renew_puts_the_lease_on_a_new_etcd_lease(client: EtcdClient, raw: etcd3.Etcd3Client,
                                                  etcd_server: EtcdServer) -> None:
    manager = _manager(client)
    first = manager.acquire()
    key = f"{first.subnet.network_address}-24"
    renewed = manager.renew()
    assert renewed.subnet == first.subnet and renewed.etcd_lease != first.etcd_lease
    assert _lease_id(raw, key) == renewed.etcd_lease
    assert _value(raw, key) == attrs(MY_IP).to_json().encode()
    assert "granted with TTL(86400s)" in etcdctl(etcd_server, "lease", "timetolive", f"{renewed.etcd_lease:x}")
    assert client.lease_remaining(first.etcd_lease) is not None  # not revoked: it runs out


def test_update_attrs_republishes(client: EtcdClient, raw: etcd3.Etcd3Client) -> None:
    manager = _manager(client)
    lease = manager.acquire()
    updated = manager.update_attrs(attrs(MY_IP, InstanceId="i-new"))
    assert updated.attrs.instance_id == "i-new"
    assert _value(raw, f"{lease.subnet.network_address}-24") == attrs(MY_IP, InstanceId="i-new").to_json().encode()


class FakeClock:
    """Wall time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_run_renewal_renews_at_expiration_minus_margin(client: EtcdClient, raw: etcd3.Etcd3Client) -> None:
    clock = FakeClock()
    manager = _manager(client, clock=clock, margin=3600)
    lease = manager.acquire()
    key = f"{lease.subnet.network_address}-24"
    stop = threading.Event()
    thread = threading.Thread(target=manager.run_renewal, args=(stop,))
    thread.start()
    try:
        clock.offset = LEASE_TTL - 3600 - 30  # not yet due
        manager.wake()
        threading.Event().wait(0.2)
        assert _lease_id(raw, key) == lease.etcd_lease
        clock.offset = LEASE_TTL - 3600 + 1
        manager.wake()
        wait_for(lambda: _lease_id(raw, key) != lease.etcd_lease, what="a renewal")
        current = manager.lease
        assert current is not None and current.expiration is not None
        assert current.expiration == pytest.approx(clock() + LEASE_TTL, abs=5)
    finally:
        stop.set()
        manager.wake()
        thread.join(5)
    assert not thread.is_alive()


def test_failed_renewal_is_retried(client: EtcdClient, raw: etcd3.Etcd3Client, etcd_server: EtcdServer,
                                   caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    manager = _manager(client, clock=clock, retry_interval=0.1)
    lease = manager.acquire()
    stop = threading.Event()
    etcd_server.stop()
    clock.offset = LEASE_TTL
    thread = threading.Thread(target=manager.run_renewal, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: caplog.text.count("Error renewing lease (trying again in 0.1 s)") >= 2,
                 what="two failed renewals")
        etcd_server.start()
        wait_for(lambda: (manager.lease or lease).etcd_lease != lease.etcd_lease, what="a renewal after the outage")
    finally:
        stop.set()
        manager.wake()
        thread.join(5)
    with etcd3.client(host="127.0.0.1", port=etcd_server.client_port) as fresh:
        assert _lease_id(fresh, f"{lease.subnet.network_address}-24") == (manager.lease or lease).etcd_lease


# -- losing the lease ---------------------------------------------------------------------------------------


def _run_until_lost(manager: LeaseManager, watcher: LeaseWatcher,
                    stop: threading.Event) -> list[BaseException]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            manager.run_renewal(stop, watcher)
        except BaseException as error:
            errors.append(error)

    threading.Thread(target=run, daemon=True).start()
    return errors


@pytest.mark.parametrize("how", ["delete", "revoke", "take-over"])
def test_own_lease_loss_is_detected(client: EtcdClient, raw: etcd3.Etcd3Client, how: str,
                                    caplog: pytest.LogCaptureFixture) -> None:
    manager = _manager(client)
    lease = manager.acquire()
    key = f"{PREFIX}/subnets/{lease.subnet.network_address}-24"
    watcher = LeaseWatcher(client, PREFIX, manager.wake).start()
    stop = threading.Event()
    try:
        assert watcher.wait_in_sync(5)
        errors = _run_until_lost(manager, watcher, stop)
        threading.Event().wait(0.1)
        assert not errors  # our own lease in the snapshot: all is well
        if how == "delete":
            raw.delete(key)
        elif how == "revoke":
            raw.revoke_lease(lease.etcd_lease)
        else:
            raw.put(key, bare_value("192.168.0.99"))
        wait_for(lambda: errors, what="LeaseLost")
        assert isinstance(errors[0], LeaseLost)
        assert str(errors[0]) == "Lease has been revoked. Shutting down daemon."
        assert "Lease has been revoked. Shutting down daemon." in caplog.text
    finally:
        stop.set()
        manager.wake()
        watcher.stop()


def test_renewal_never_resurrects_a_deleted_lease(client: EtcdClient, raw: etcd3.Etcd3Client) -> None:
    manager = _manager(client)
    lease = manager.acquire()
    key = f"{PREFIX}/subnets/{lease.subnet.network_address}-24"
    raw.delete(key)
    with pytest.raises(LeaseLost):
        manager.renew()
    assert raw.get(key) == (None, None)


def test_a_snapshot_older_than_our_write_cannot_judge(client: EtcdClient) -> None:
    manager = _manager(client)
    manager.acquire()
    stale = LeaseSnapshot(leases={}, malformed={}, revision=1, in_sync=True)
    manager.observe(stale)  # no LeaseLost: it predates our lease
    not_synced = LeaseSnapshot(leases={}, malformed={}, revision=10**6, in_sync=False)
    manager.observe(not_synced)
    with pytest.raises(LeaseLost):
        manager.observe(LeaseSnapshot(leases={}, malformed={}, revision=10**6, in_sync=True))


# -- subnet.env ------------------------------------------------------------------------------------------------


def test_subnet_env_is_written_atomically_with_flannels_content(tmp_path: Path) -> None:
    config = parse_network_config(json.dumps(CONFIG))
    target = tmp_path / "run" / "flannel" / "subnet.env"
    old_umask = os.umask(0o077)
    try:
        write_subnet_env(target, render_subnet_env(config, NET("10.5.52.0/24"), mtu=1500, ip_masq=False))
    finally:
        os.umask(old_umask)
    assert target.read_text() == ("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\n"
                                  "FLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o755
    assert read_previous_subnet(target) == NET("10.5.52.0/24")

    # a reader holding the old file keeps reading the old content: the new one is renamed in
    with open(target) as old_reader:
        write_subnet_env(target, render_subnet_env(config, NET("10.5.53.0/24"), mtu=1450, ip_masq=True))
        assert "10.5.52.1/24" in old_reader.read()
    assert "FLANNEL_SUBNET=10.5.53.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n" in target.read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["subnet.env"]


def test_a_failed_write_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "subnet.env"
    write_subnet_env(target, "FLANNEL_SUBNET=10.5.52.1/24\n")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_subnet_env(target, "FLANNEL_SUBNET=10.5.99.1/24\n")
    assert target.read_text() == "FLANNEL_SUBNET=10.5.52.1/24\n"
    assert [p.name for p in tmp_path.iterdir()] == ["subnet.env"]


def test_no_previous_subnet_without_a_file(tmp_path: Path) -> None:
    assert read_previous_subnet(tmp_path / "missing.env") is None

