"""QuotaCenterClient against the emulator: the route-entry quota, read back after a change; bad
answers and refusals as clear errors; Quota Center's central endpoint; the RAM action."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from aliyunsdkcore.endpoint.location_service_endpoint_resolver import LocationServiceEndpointResolver

from flannel_alivpc.clients import aliyun_sdk
from flannel_alivpc.clients.aliyun_sdk import AliyunApi
from flannel_alivpc.clients.cloud import CloudConfig, build_cloud
from flannel_alivpc.clients.credentials import StaticCredentials
from flannel_alivpc.clients.quotas import ROUTE_ENTRY_QUOTA, QuotaCenterClient
from flannel_alivpc.core.cloud import Product
from flannel_alivpc.core.errors import AuthCloudError, NotFoundCloudError, PermanentCloudError
from flannel_alivpc.core.retry import RetryPolicy
from flannel_alivpc.emulator.server import Emulator
from flannel_alivpc.installer.ram import ApiAction, called_actions, ram_policy
from tests.clients.helpers import REGION, Admin, emulator_counts, make_api


@pytest.fixture
def quotas(api: AliyunApi) -> QuotaCenterClient:
    return QuotaCenterClient(api)


def test_route_entry_quota(quotas: QuotaCenterClient, admin: Admin) -> None:
    quota = quotas.route_entry_quota(REGION)
    assert quota == 200 and type(quota) is int
    admin("PATCH", "settings", {"route_quota": 37})
    assert quotas.route_entry_quota(REGION) == 37
    admin("PATCH", "settings", {"route_quota": 0})
    assert quotas.route_entry_quota(REGION) == 0
    assert emulator_counts(admin, "GetProductQuota") == {"Success": 3}


def test_build_cloud_has_the_client(emulator: Emulator, admin: Admin) -> None:
    cloud = build_cloud(CloudConfig(region=REGION, api_endpoint=emulator.endpoint,
                                    access_key=StaticCredentials(emulator.access_key_id,
                                                                 emulator.access_key_secret)), {})
    admin("PATCH", "settings", {"route_quota": 512})
    assert cloud.quotas.route_entry_quota(cloud.api.region) == 512
    assert cloud.quotas.api is cloud.api


def test_refusals_keep_their_class(quotas: QuotaCenterClient, admin: Admin) -> None:
    with pytest.raises(PermanentCloudError) as info:
        quotas.route_entry_quota("cn-beijing")  # not the emulator's region
    assert (info.value.code, info.value.action, info.value.http_status) == ("InvalidParameter", "GetProductQuota", 400)
    assert "cn-beijing" in info.value.message and info.value.request_id
    admin("PUT", "faults", {"GetProductQuota": {"error": {"code": "Forbidden.RAM", "status": 403}}})
    with pytest.raises(AuthCloudError) as auth:
        quotas.route_entry_quota(REGION)
    assert "quotas:GetProductQuota" in auth.value.message


def test_unknown_quota_code_is_not_found(api: AliyunApi) -> None:
    with pytest.raises(NotFoundCloudError) as info:
        api.call("quotas", "GetProductQuota", {"ProductCode": "vpc", "QuotaActionCode": "vpc_quota_nothing",
                                               "Dimensions": [{"Key": "regionId", "Value": REGION}]})
    assert info.value.code == "InvalidQuotaActionCode.NotFound"


def test_transient_failures_are_retried(quotas: QuotaCenterClient, admin: Admin) -> None:
    admin("PUT", "faults", {"GetProductQuota": {"error": {"code": "ServiceUnavailable", "count": 2}}})
    assert quotas.route_entry_quota(REGION) == 200
    assert emulator_counts(admin, "GetProductQuota") == {"ServiceUnavailable": 2, "Success": 1}


def test_the_common_request_path_reaches_the_emulator(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the SDK's typed request class the call goes as a CommonRequest, signed and sent the same."""
    monkeypatch.setitem(aliyun_sdk._request_classes, ("quotas", "GetProductQuota"), None)
    api = make_api(emulator)
    try:
        assert type(api.build_request("quotas", "GetProductQuota", {})).__name__ == "CommonRequest"
        assert QuotaCenterClient(api).route_entry_quota(REGION) == 200
    finally:
        api.close()


# -- bad answers ------------------------------------------------------------------------------------------


class Tampering:
    """The real ``AliyunApi`` whose answers ``edit`` changes before the client sees them."""

    def __init__(self, api: AliyunApi, edit: Callable[[dict[str, Any]], None]) -> None:
        self.api = api
        self.edit = edit

    def call(self, product: Product, action: str, params: Mapping[str, object], *,
             retry: RetryPolicy | None = None) -> dict[str, Any]:
        answer = self.api.call(product, action, params, retry=retry)
        self.edit(answer)
        return answer


def _set_total(value: object) -> Callable[[dict[str, Any]], None]:
    def edit(answer: dict[str, Any]) -> None:
        answer["Quota"]["TotalQuota"] = value
    return edit


@pytest.mark.parametrize("edit, words", [
    (lambda a: a["Quota"].pop("TotalQuota"), "Quota.TotalQuota: it is missing"),
    (_set_total(None), "Quota.TotalQuota: it is missing"),
    (_set_total("200"), "Quota.TotalQuota: it is '200' (str), not a number"),
    (_set_total(True), "Quota.TotalQuota: it is True (bool), not a number"),
    (_set_total({"Value": 200}), "Quota.TotalQuota: it is {'Value': 200} (dict), not a number"),
    (_set_total(200.5), "Quota.TotalQuota 200.5: not a non-negative whole number"),
    (_set_total(-1.0), "Quota.TotalQuota -1.0: not a non-negative whole number"),
    (_set_total(float("nan")), "Quota.TotalQuota nan: not a non-negative whole number"),
    (_set_total(float("inf")), "Quota.TotalQuota inf: not a non-negative whole number"),
    (lambda a: a.pop("Quota"), "without a Quota object"),
    (lambda a: a.__setitem__("Quota", [200]), "without a Quota object"),
    (lambda a: a["Quota"].__setitem__("QuotaActionCode", "vpc_quota_vpc_num"),
     "for quota 'vpc_quota_vpc_num' instead of vpc_quota_route_entrys_num"),
])
def test_bad_answers_are_clear_errors(api: AliyunApi, edit: Callable[[dict[str, Any]], None], words: str) -> None:
    with pytest.raises(PermanentCloudError) as info:
        QuotaCenterClient(Tampering(api, edit)).route_entry_quota(REGION)
    assert words in info.value.message
    assert (info.value.code, info.value.action) == ("InvalidResponse", "GetProductQuota")
    assert info.value.request_id  # the real answer's, for a support ticket


def test_whole_floats_and_ints_are_accepted(api: AliyunApi) -> None:
    assert QuotaCenterClient(Tampering(api, _set_total(450))).route_entry_quota(REGION) == 450
    assert QuotaCenterClient(Tampering(api, _set_total(1e3))).route_entry_quota(REGION) == 1000


# -- the endpoint: resolved by the SDK, never sent -------------------------------------------------------


@pytest.fixture
def no_location_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's last resort asks location-readonly.aliyuncs.com over the network: not from a test."""

    def refuse(self: Any, request: Any) -> None:
        raise AssertionError(f"the SDK asked the location service for {request.product_code}")

    monkeypatch.setattr(LocationServiceEndpointResolver, "resolve", refuse)


@pytest.mark.parametrize("typed", [True, False])
@pytest.mark.parametrize("region", ["cn-hangzhou", "ap-southeast-1", "eu-central-1"])
def test_without_override_the_central_endpoint_over_https(no_location_service: None, monkeypatch: pytest.MonkeyPatch,
                                                          typed: bool, region: str) -> None:
    if not typed:
        monkeypatch.setitem(aliyun_sdk._request_classes, ("quotas", "GetProductQuota"), None)
    api = AliyunApi(region, None, StaticCredentials("ak", "secret"))
    _, client = api._current("GetProductQuota")
    request = api.build_request("quotas", "GetProductQuota", {"ProductCode": "vpc"})
    assert type(request).__name__ == ("GetProductQuotaRequest" if typed else "CommonRequest")
    assert (request.get_protocol_type(), request.endpoint) == ("https", None)
    assert client._resolve_endpoint(request) == "quotas.aliyuncs.com"
    # The regional product beside it keeps its own endpoint (the central one for cn-hangzhou, by its map).
    assert client._resolve_endpoint(api.build_request("vpc", "DescribeVpcs", {})) in (
        f"vpc.{region}.aliyuncs.com", "vpc.aliyuncs.com")


def test_with_override_every_product_goes_there() -> None:
    api = AliyunApi(REGION, "http://127.0.0.1:8080", StaticCredentials("ak", "secret"))
    request = api.build_request("quotas", "GetProductQuota", {"Dimensions": [{"Key": "regionId", "Value": REGION}]})
    assert (request.get_protocol_type(), request.endpoint) == ("http", "127.0.0.1:8080")
    assert request.get_query_params() == {"Dimensions.1.Key": "regionId", "Dimensions.1.Value": REGION}


# -- RAM ----------------------------------------------------------------------------------------------------


def test_the_ram_policy_allows_the_read() -> None:
    assert ApiAction("quotas", "GetProductQuota") in called_actions()
    statements = ram_policy()["Statement"]
    assert isinstance(statements, list)
    assert {"Effect": "Allow", "Action": ["quotas:GetProductQuota"], "Resource": "*"} in statements
    assert ROUTE_ENTRY_QUOTA == "vpc_quota_route_entrys_num"
