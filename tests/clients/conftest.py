"""Fixtures for the client tests: an ``AliyunApi`` on the emulator and the emulator's admin API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from flannel_alivpc.clients.aliyun_sdk import AliyunApi
from flannel_alivpc.emulator.server import Emulator
from tests.clients.helpers import Admin, make_api


@pytest.fixture
def admin(emulator: Emulator) -> Admin:
    """``admin("PATCH", "faults", {...})``: one call to the emulator's admin API, checked."""

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = requests.request(method, f"{emulator.endpoint}/_emulator/{path}", json=body, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    return call


@pytest.fixture
def api(emulator: Emulator) -> Iterator[AliyunApi]:
    client = make_api(emulator)
    yield client
    client.close()
