from __future__ import annotations

from collections.abc import Iterator

import etcd3
import pytest

from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.testbed.etcd_server import EtcdServer
from tests.routed.support import raw_client


@pytest.fixture
def client(etcd_server: EtcdServer) -> Iterator[EtcdClient]:
    etcd = EtcdClient([etcd_server.endpoint], timeout=2.0)
    try:
        yield etcd
    finally:
        etcd.close()


@pytest.fixture
def raw(etcd_server: EtcdServer) -> Iterator[etcd3.Etcd3Client]:
    etcd = raw_client(etcd_server)
    try:
        yield etcd
    finally:
        etcd.close()
