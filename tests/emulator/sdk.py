"""Helpers for driving the emulator the way users do: the official SDK, raw HTTP, the admin API.

``Cloud`` wraps one ``AcsClient`` pointed at one emulator. Requests are the
SDK's own request classes, built by name with their generated setters, e.g.
``cloud.vpc("CreateRouteEntry", RouteTableId=..., DestinationCidrBlock=...)``
calls ``CreateRouteEntryRequest().set_RouteTableId(...)`` and so on.

``signed_params`` signs a parameter set with a separate implementation of the
RPC signature (the reference's sketch, not the emulator's code), for tests that
must control the request byte by byte: replayed nonces, old timestamps,
tampered values.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient

from flannel_alivpc.emulator.server import Emulator
from tests.conftest import EMULATOR_AK, EMULATOR_SECRET

REGION = "cn-hangzhou"
VPC_PACKAGE = "aliyunsdkvpc.request.v20160428"
ECS_PACKAGE = "aliyunsdkecs.request.v20140526"


def sdk_request(package: str, action: str, **params: Any) -> Any:
    """``<action>Request`` from ``package`` with ``set_<name>(value)`` called for each param."""
    module = importlib.import_module(f"{package}.{action}Request")
    request = getattr(module, f"{action}Request")()
    for name, value in params.items():
        getattr(request, f"set_{name}")(value)
    return request


class Cloud:
    """One SDK client against one emulator, plus the emulator's admin API."""

    def __init__(self, emulator: Emulator, client: AcsClient | None = None) -> None:
        self.emulator = emulator
        self.base = emulator.endpoint
        self.host = emulator.endpoint.removeprefix("http://")
        self.client = client or AcsClient(EMULATOR_AK, EMULATOR_SECRET, REGION)

    # -- the SDK ----------------------------------------------------------------

    def call(self, request: Any, client: AcsClient | None = None) -> dict[str, Any]:
        request.set_endpoint(self.host)
        body: dict[str, Any] = json.loads((client or self.client).do_action_with_exception(request))
        return body

    def fail(self, request: Any, client: AcsClient | None = None) -> ServerException:
        with pytest.raises(ServerException) as caught:
            self.call(request, client)
        return caught.value

    def vpc(self, action: str, **params: Any) -> dict[str, Any]:
        return self.call(sdk_request(VPC_PACKAGE, action, **params))

    def vpc_error(self, action: str, **params: Any) -> ServerException:
        return self.fail(sdk_request(VPC_PACKAGE, action, **params))

    def ecs(self, action: str, **params: Any) -> dict[str, Any]:
        return self.call(sdk_request(ECS_PACKAGE, action, **params))

    def ecs_error(self, action: str, **params: Any) -> ServerException:
        return self.fail(sdk_request(ECS_PACKAGE, action, **params))

    # -- route tables -------------------------------------------------------------

    def add_route(self, table_id: str, destination: str, next_hop: str) -> str:
        body = self.vpc("CreateRouteEntry", RouteTableId=table_id, DestinationCidrBlock=destination,
                        NextHopId=next_hop, NextHopType="Instance")
        entry_id: str = body["RouteEntryId"]
        return entry_id

    def entries(self, table_id: str, **filters: Any) -> list[dict[str, Any]]:
        """Every entry of the table, following NextToken."""
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            params = dict(filters, RouteTableId=table_id, MaxResult=100)
            if token:
                params["NextToken"] = token
            page = self.vpc("DescribeRouteEntryList", **params)
            out.extend(page["RouteEntrys"]["RouteEntry"])
            token = page["NextToken"]
            if not token:
                return out

    def custom_entries(self, table_id: str) -> dict[str, dict[str, Any]]:
        """Custom entries of the table by destination."""
        return {e["DestinationCidrBlock"]: e for e in self.entries(table_id, RouteEntryType="Custom")}

    # -- the admin API ------------------------------------------------------------

    def admin(self, method: str, path: str, body: Any = None, *, expect: int | None = 200) -> Any:
        response = requests.request(method, f"{self.base}/_emulator/{path}", json=body, timeout=10)
        if expect is not None:
            assert response.status_code == expect, response.text
        return response.json()

    def settings(self, **values: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("PATCH", "settings", values)
        return result

    def metadata(self, instance_id: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(f"{self.base}/meta/{instance_id}/latest/{path}", timeout=10, **kwargs)


def wait_for(predicate: Callable[[], bool], timeout: float = 1.5, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


# -- raw signed requests -------------------------------------------------------------


def _pe(value: str) -> str:
    return quote(value, safe="-_.~")


def reference_signature(method: str, params: dict[str, str], secret: str) -> str:
    """The RPC signature as aliyun-openapi.md §1.3 describes it, independent of the emulator."""
    items = sorted((k, v) for k, v in params.items() if k != "Signature")
    canonical = "&".join(_pe(k) + "=" + _pe(v) for k, v in items)
    to_sign = method + "&" + _pe("/") + "&" + _pe(canonical)
    digest = hmac.new((secret + "&").encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signed_params(action: str, params: dict[str, str] | None = None, *, version: str = "2016-04-28",
                  method: str = "POST", secret: str = EMULATOR_SECRET, **common: str) -> dict[str, str]:
    """A complete signed parameter set; ``common`` overrides Timestamp, AccessKeyId, ..."""
    full = {
        **(params or {}),
        "Action": action, "Version": version, "Format": "JSON", "RegionId": REGION,
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "SignatureMethod": "HMAC-SHA1", "SignatureType": "", "SignatureVersion": "1.0",
        "SignatureNonce": uuid.uuid4().hex, "AccessKeyId": EMULATOR_AK,
        **common,
    }
    full["Signature"] = reference_signature(method, full, secret)
    return full


def raw_call(base: str, params: dict[str, str], method: str = "POST") -> requests.Response:
    """Send ``params`` in the query string, as the SDK does."""
    return requests.request(method, f"{base}/?{urlencode(params)}", timeout=10)
