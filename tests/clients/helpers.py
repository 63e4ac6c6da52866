"""Helpers shared by the client tests."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from flannel_alivpc.clients.aliyun_sdk import AliyunApi
from flannel_alivpc.clients.credentials import StaticCredentials
from flannel_alivpc.core.retry import RetryPolicy
from flannel_alivpc.emulator.server import Emulator

REGION = "cn-hangzhou"
# Quick retries so that fault tests stay fast; the real default waits seconds.
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)

Admin = Callable[..., Any]


def make_api(emulator: Emulator, **kwargs: Any) -> AliyunApi:
    kwargs.setdefault("retry", FAST_RETRY)
    credentials = kwargs.pop("credentials", None) or StaticCredentials(emulator.access_key_id,
                                                                       emulator.access_key_secret)
    return AliyunApi(REGION, emulator.endpoint, credentials, **kwargs)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def emulator_counts(admin: Admin, action: str) -> dict[str, int]:
    """The emulator's request counters for one action: {outcome: count}."""
    counts: dict[str, int] = admin("GET", "counters").get(action, {})
    return counts
