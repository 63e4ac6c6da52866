"""Shared fixtures: the cloud emulator on loopback, and no proxies for SDK calls.

The SDK sends even loopback calls through http(s)_proxy when set, and ignores
NO_PROXY, so the variables are removed for the whole test session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

for _name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_name, None)

from flannel_alivpc.emulator.server import Emulator, Topology  # noqa: E402
from flannel_alivpc.emulator.state import Settings  # noqa: E402

EMULATOR_AK = "test-ak"
EMULATOR_SECRET = "test-secret-do-not-log"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A running emulator with no route delay (tests that need one set it)."""
    em = Emulator(settings=Settings(route_delay=0.0), access_key_id=EMULATOR_AK,
                  access_key_secret=EMULATOR_SECRET)
    em.start()
    try:
        yield em
    finally:
        em.stop()


@pytest.fixture
def topology(emulator: Emulator) -> Topology:
    """One VPC, vRouter, System route table, vSwitch and three running instances."""
    return emulator.bootstrap(instances=3)


# -- a real etcd server ------------------------------------------------------------

from flannel_alivpc.testbed.etcd_server import EtcdServer, find_etcd_binary  # noqa: E402


@pytest.fixture
def etcd_server() -> Iterator[EtcdServer]:
    """A fresh single-member etcd on free loopback ports with its own data directory.

    ``.endpoint`` is its URL; ``.stop()``/``.kill()`` and ``.start()`` take it away
    and bring it back on the same ports and data, for outage tests.
    """
    try:
        binary = find_etcd_binary()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    server = EtcdServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
