"""Helpers shared by the routed tests (not fixtures)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import etcd3

from flannel_alivpc.core.network import LeaseAttrs
from flannel_alivpc.testbed.etcd_server import EtcdServer

T = TypeVar("T")

PREFIX = "/coreos.com/network"
CONFIG = {"Network": "10.5.0.0/16", "Backend": {"Type": "ali-vpc"}}


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.02, what: str = "") -> T:
    """Poll until ``predicate()`` is truthy and return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def raw_client(server: EtcdServer) -> etcd3.Etcd3Client:
    """An etcd3 client independent of the code under test, to set up and inspect etcd."""
    return etcd3.client(host="127.0.0.1", port=server.client_port, timeout=5)


def etcdctl(server: EtcdServer, *args: str) -> str:
    binary = Path(server.binary).parent / "etcdctl"
    result = subprocess.run([str(binary), "--endpoints", server.endpoint, *args],
                            capture_output=True, text=True, timeout=10, check=True)
    return result.stdout


def put_config(raw: etcd3.Etcd3Client, config: dict[str, object] | None = None, prefix: str = PREFIX) -> None:
    raw.put(f"{prefix}/config", json.dumps(config if config is not None else CONFIG))


def put_lease(raw: etcd3.Etcd3Client, subnet: str, value: str | bytes, *, ttl: int | None = 86400,
              prefix: str = PREFIX) -> int:
    """Write a lease the way flanneld (or an operator, ttl=None) would; returns the etcd lease id."""
    key = f"{prefix}/subnets/{subnet}"
    if ttl is None:
        raw.put(key, value)
        return 0
    lease = raw.lease(ttl)
    raw.put(key, value, lease=lease)
    return int(lease.id)


def attrs(ip: str, **backend: object) -> LeaseAttrs:
    return LeaseAttrs(public_ip=ipaddress.IPv4Address(ip), backend_type="ali-vpc" if backend else "",
                      backend_data=backend or None)


def bare_value(ip: str) -> str:
    """A lease value as flannel's cloud backends wrote it (no backend fields)."""
    return f'{{"PublicIP":"{ip}","PublicIPv6":null}}'
