"""Least privilege in etcd mode, proved against a real etcd with authentication enabled.

The installer's confinement (``installer.etcd_access``) is applied to a real
etcd through the product's client; the daemons' identity then does everything the route daemon does (network config,
lease acquisition and renewal, the lease watch, the writer lock, the cluster
id) under ``/coreos.com/network/`` and is refused everywhere else: another
prefix, the Secrets kube-apiserver keeps, the whole keyspace, a watch from the
root.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.core.errors import EtcdAuthError
from flannel_alivpc.core.network import LeaseAttrs, parse_network_config
from flannel_alivpc.core.secrets import Secret
from flannel_alivpc.installer.etcd_access import ROOT, USER, confine_to_prefix, is_confined
from flannel_alivpc.routed.leases import LeaseManager, LeaseWatcher, ensure_cluster_id, read_network_config
from flannel_alivpc.testbed.etcd_server import EtcdServer

PREFIX = "/coreos.com/network"
ROOT_PASSWORD = "root-pw-for-tests"
USER_PASSWORD = "flannel-pw-for-tests"
SECRET_KEY = "/registry/secrets/kube-system/bootstrap-token-abcdef"


def _etcdctl(server: EtcdServer, *args: str, stdin: str | None = None, user: str | None = None) -> str:
    command = [str(Path(sys.executable).parent / "etcdctl"), "--endpoints", server.endpoint, *args]
    if user:
        command[1:1] = ["--user", user]
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(data_dir=tmp_path_factory.mktemp("etcd-auth"))
    server.start()
    try:
        # What a cluster's etcd holds besides flannel's keys, written before authentication is on.
        _etcdctl(server, "put", SECRET_KEY, "c2VjcmV0")
        _etcdctl(server, "put", "/other-app/config", "{}")
        _etcdctl(server, "put", f"{PREFIX}/config", '{"Network": "10.244.0.0/16", "Backend": {"Type": "ali-vpc"}}')
        with EtcdClient([server.endpoint]) as admin:
            confine_to_prefix(admin, PREFIX, root_password=Secret(ROOT_PASSWORD), user_password=Secret(USER_PASSWORD))
        # Repeating it (an installer re-run) changes nothing and fails nothing, as root now.
        with EtcdClient([server.endpoint], username=ROOT, password=Secret(ROOT_PASSWORD)) as admin:
            confine_to_prefix(admin, PREFIX, root_password=Secret(ROOT_PASSWORD), user_password=Secret(USER_PASSWORD))
            assert is_confined(admin, PREFIX)
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def as_flannel(secured: EtcdServer) -> Iterator[EtcdClient]:
    client = EtcdClient([secured.endpoint], username=USER, password=Secret(USER_PASSWORD))
    yield client
    client.close()


def test_authentication_is_on_for_everyone_else(secured: EtcdServer) -> None:
    with EtcdClient([secured.endpoint]) as anonymous, pytest.raises(EtcdAuthError):
        anonymous.get(f"{PREFIX}/config")


def test_the_daemons_identity_does_the_daemons_whole_job(as_flannel: EtcdClient) -> None:
    network = read_network_config(as_flannel, PREFIX)
    assert network == parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "ali-vpc"}}')
    attrs = LeaseAttrs(public_ip=ipaddress.IPv4Address("192.168.0.10"), backend_type="ali-vpc",
                       backend_data={"InstanceId": "i-1"})
    manager = LeaseManager(as_flannel, PREFIX, network, attrs.public_ip, lambda: attrs, None, 3600.0)
    lease = manager.acquire()
    assert lease.subnet.subnet_of(network.network)
    assert manager.renew().subnet == lease.subnet
    with LeaseWatcher(as_flannel, PREFIX, lambda: None) as watcher:
        assert watcher.wait_in_sync(10)
        assert lease.subnet in watcher.snapshot().leases
    lock = as_flannel.lock(f"{PREFIX}/alivpc/writers/vtb-1", 5, holder="i-1")
    assert lock.acquire(timeout=5)
    lock.release()
    cluster_id = ensure_cluster_id(as_flannel, PREFIX)
    assert ensure_cluster_id(as_flannel, PREFIX) == cluster_id


@pytest.mark.parametrize("key", [SECRET_KEY, "/other-app/config", "/coreos.com/networkx/config", "/"])
def test_the_daemons_identity_is_refused_outside_the_prefix(as_flannel: EtcdClient, key: str) -> None:
    with pytest.raises(EtcdAuthError):
        as_flannel.get(key)
    with pytest.raises(EtcdAuthError):
        as_flannel.put(key, "overwritten")
    with pytest.raises(EtcdAuthError):
        as_flannel.get_prefix(key)


def test_the_secret_is_intact_and_readable_by_root_only(secured: EtcdServer, as_flannel: EtcdClient) -> None:
    with pytest.raises(EtcdAuthError):
        as_flannel.get_prefix("/registry/")
    shown = _etcdctl(secured, "get", SECRET_KEY, user=f"{ROOT}:{ROOT_PASSWORD}")
    assert shown.splitlines()[-1] == "c2VjcmV0"


def test_a_wrong_password_is_refused_clearly(secured: EtcdServer) -> None:
    client = EtcdClient([secured.endpoint], username=USER, password=Secret("wrong"))
    try:
        with pytest.raises(EtcdAuthError) as refused:
            client.get(f"{PREFIX}/config")
        assert "wrong" not in str(refused.value)
    finally:
        client.close()
