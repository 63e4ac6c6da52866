"""Root tests on real kernels: network namespaces the tests make, removed even when a test fails.

Every cluster removes its namespaces in ``close()``; this session fixture is
the safety net behind that: it removes what a killed earlier run left and,
at the end, whatever this run still has.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_alivpc.testbed.dataplane import (
    DataplaneCluster,
    emergency_cleanup,
    is_root,
    remove_stale_namespaces,
)


@pytest.fixture(scope="session", autouse=True)
def namespace_safety_net() -> Iterator[None]:
    if is_root():
        remove_stale_namespaces()
    yield
    if is_root():
        emergency_cleanup()


@pytest.fixture
def dataplane(tmp_path: Path) -> Iterator[DataplaneCluster]:
    with DataplaneCluster(tmp_path, route_delay=0.2, writer_lock_ttl=3, resync_interval=10.0) as cluster:
        yield cluster
