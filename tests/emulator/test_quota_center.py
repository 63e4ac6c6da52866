"""Quota Center 2020-05-10 ``GetProductQuota`` (the route-entry quota) through the legacy SDK
(aliyunsdkquotas) and the V2 SDK (alibabacloud_quotas20200510), with both signature versions:
the value follows ``settings.route_quota``, unknown codes and other regions are refused, and the
answer fits the V2 SDK's model without loss."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from alibabacloud_quotas20200510 import models as quotas_models
from alibabacloud_quotas20200510.client import Client as QuotasClient
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
from alibabacloud_tea_openapi.models import Config
from aliyunsdkquotas.request.v20200510.GetProductQuotaRequest import GetProductQuotaRequest

from flannel_alivpc.emulator.gateway import ApiRequest
from flannel_alivpc.emulator.server import Emulator, Topology
from tests.conftest import EMULATOR_AK, EMULATOR_SECRET
from tests.emulator.sdk import REGION, Cloud, raw_call, signed_params

VERSION = "2020-05-10"
QUOTA = "vpc_quota_route_entrys_num"


def legacy_request(product: str = "vpc", code: str = QUOTA, dimensions: list[dict[str, str]] | None = None,
                   ) -> GetProductQuotaRequest:
    request = GetProductQuotaRequest()
    request.set_ProductCode(product)
    request.set_QuotaActionCode(code)
    request.set_Dimensionss([{"Key": "regionId", "Value": REGION}] if dimensions is None else dimensions)
    return request


class V2:
    """The V2 Quota Center client against the emulator, keeping the raw body of its last answer."""

    def __init__(self, emulator: Emulator, signature_algorithm: str | None = None) -> None:
        recorded: dict[str, Any] = {}

        class Recording(QuotasClient):  # type: ignore[misc]
            def call_api(self, params: Any, request: Any, runtime: Any) -> Any:
                result = super().call_api(params, request, runtime)
                recorded["body"] = result.get("body")
                return result

        self.recorded = recorded
        self.client = Recording(Config(
            access_key_id=EMULATOR_AK, access_key_secret=EMULATOR_SECRET, protocol="http", region_id=REGION,
            endpoint=emulator.endpoint.removeprefix("http://"), signature_algorithm=signature_algorithm))

    def get(self, product: str = "vpc", code: str = QUOTA, region: str | None = REGION) -> Any:
        dimensions = None if region is None else [quotas_models.GetProductQuotaRequestDimensions(
            key="regionId", value=region)]
        return self.client.get_product_quota(quotas_models.GetProductQuotaRequest(
            product_code=product, quota_action_code=code, dimensions=dimensions))

    def fail(self, **kwargs: Any) -> AlibabaCloudException:
        with pytest.raises(AlibabaCloudException) as caught:
            self.get(**kwargs)
        return caught.value


@pytest.fixture
def signed_v3(emulator: Emulator) -> list[bool]:
    """Whether each request the gateway checked was signed with V3 (else signature 1.0)."""
    seen: list[bool] = []
    check = emulator.authenticator.check

    def recording(request: ApiRequest) -> None:
        seen.append(request.signed_v3)
        check(request)

    emulator.authenticator.check = recording  # type: ignore[method-assign]
    return seen


# -- the legacy SDK ---------------------------------------------------------------------------------


def test_legacy_sdk_reads_the_route_quota(cloud: Cloud, signed_v3: list[bool]) -> None:
    body = cloud.call(legacy_request())
    quota = body["Quota"]
    assert quota["TotalQuota"] == 200.0 and isinstance(quota["TotalQuota"], float)
    assert (quota["ProductCode"], quota["QuotaActionCode"], quota["Dimensions"]) == ("vpc", QUOTA,
                                                                                     {"regionId": REGION})
    assert quota["QuotaArn"] == f"acs:quotas:{REGION}:1234567890123456:quota/vpc/{QUOTA}"
    assert (quota["Adjustable"], quota["Consumable"], quota["GlobalQuota"], quota["QuotaCategory"]) == (
        True, False, False, "CommonQuota")
    assert quota["QuotaName"] and quota["QuotaUnit"] and body["RequestId"]
    assert signed_v3 == [False]


def test_the_value_is_the_emulators_route_quota(cloud: Cloud, topology: Topology) -> None:
    """The read follows PATCH /_emulator/settings, and CreateRouteEntry enforces the same number."""
    cloud.settings(route_quota=2)
    assert cloud.call(legacy_request())["Quota"]["TotalQuota"] == 2.0
    for n in range(2):
        cloud.add_route(topology.route_table_id, f"172.20.{n}.0/24", topology.instance_ids[0])
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=topology.route_table_id,
                            DestinationCidrBlock="172.20.9.0/24", NextHopId=topology.instance_ids[0])
    assert error.get_error_code() == "QuotaExceeded"
    cloud.settings(route_quota=1000)
    assert cloud.call(legacy_request())["Quota"]["TotalQuota"] == 1000.0


def test_parameters_in_the_query_string(cloud: Cloud) -> None:
    """The legacy request class sends a form body; a query string (as AliyunApi sends) works the same."""
    params = signed_params("GetProductQuota", {"ProductCode": "vpc", "QuotaActionCode": QUOTA,
                                               "Dimensions.1.Key": "regionId", "Dimensions.1.Value": REGION},
                           version=VERSION)
    response = raw_call(cloud.base, params)
    assert response.status_code == 200, response.text
    assert response.json()["Quota"]["TotalQuota"] == 200.0


@pytest.mark.parametrize("product, code, dimensions, status, error_code, words", [
    ("ecs", "q_security-groups", None, 404, "InvalidProductCode.NotFound", "'ecs'"),
    ("vpc", "vpc_quota_vpc_num", None, 404, "InvalidQuotaActionCode.NotFound", "'vpc_quota_vpc_num'"),
    ("vpc", QUOTA, [], 400, "MissingParameter", '"Dimensions"'),
    ("vpc", QUOTA, [{"Key": "zoneId", "Value": "cn-hangzhou-g"}], 400, "InvalidParameter", "regionId only"),
    ("vpc", QUOTA, [{"Key": "regionId", "Value": "cn-beijing"}], 400, "InvalidParameter",
     "not the emulator's region"),
    ("vpc", QUOTA, [{"Key": "regionId", "Value": "xx-nowhere-1"}], 400, "InvalidParameter", "not a known region"),
    ("", QUOTA, None, 400, "MissingParameter", '"ProductCode"'),
    ("vpc", "", None, 400, "MissingParameter", '"QuotaActionCode"'),
])
def test_legacy_sdk_refusals(cloud: Cloud, product: str, code: str, dimensions: list[dict[str, str]] | None,
                             status: int, error_code: str, words: str) -> None:
    error = cloud.fail(legacy_request(product, code, dimensions))
    assert (error.get_http_status(), error.get_error_code()) == (status, error_code)
    assert words in error.get_error_msg()


def test_other_quota_center_actions_are_not_served(cloud: Cloud) -> None:
    response = raw_call(cloud.base, signed_params("ListProductQuotas", {"ProductCode": "vpc"}, version=VERSION))
    assert (response.status_code, response.json()["Code"]) == (404, "InvalidAction.NotFound")


def test_injected_faults_apply(cloud: Cloud) -> None:
    cloud.admin("PUT", "faults", {"GetProductQuota": {"error": {"code": "Throttling.User", "status": 400,
                                                                "count": 1}}})
    error = cloud.fail(legacy_request())
    assert (error.get_http_status(), error.get_error_code()) == (400, "Throttling.User")
    assert cloud.call(legacy_request())["Quota"]["TotalQuota"] == 200.0
    assert cloud.admin("GET", "counters")["GetProductQuota"] == {"Throttling.User": 1, "Success": 1}


# -- the V2 SDK ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm, v3", [(None, True), ("v2", False)])
def test_v2_sdk_reads_the_route_quota(emulator: Emulator, cloud: Cloud, signed_v3: list[bool],
                                      algorithm: str | None, v3: bool) -> None:
    sdk = V2(emulator, algorithm)
    response = sdk.get()
    assert response.status_code == 200
    quota = response.body.quota
    assert quota.total_quota == 200.0 and isinstance(quota.total_quota, float)
    assert (quota.product_code, quota.quota_action_code, quota.dimensions) == ("vpc", QUOTA, {"regionId": REGION})
    assert (quota.adjustable, quota.consumable, quota.global_quota) == (True, False, False)
    cloud.settings(route_quota=37)
    assert sdk.get().body.quota.total_quota == 37.0
    assert signed_v3 == [v3, v3]


def _model_problems(model_class: type[Any], raw: Any, path: str = "") -> list[str]:
    """Keys of ``raw`` the Tea model does not know, and values whose JSON type differs from its annotation."""
    problems: list[str] = []
    hints = typing.get_type_hints(model_class.__init__)
    hints.pop("return", None)
    base = model_class().to_map()
    keys: dict[str, Any] = {}  # JSON key -> annotation, found by setting one attribute at a time
    for attr, kind in hints.items():
        probe = model_class()
        setattr(probe, attr, _sample(kind))
        [key] = [k for k, v in probe.to_map().items() if base.get(k) != v]
        keys[key] = kind
    for key, value in raw.items():
        where = f"{path}.{key}" if path else key
        if key not in keys:
            problems.append(f"{where}: not in the model")
            continue
        kind = keys[key]
        origin = typing.get_origin(kind)
        if origin is list:
            ok = isinstance(value, list)
            [item_kind] = typing.get_args(kind)
            if ok and isinstance(item_kind, type) and hasattr(item_kind, "to_map"):
                for item in value:
                    problems.extend(_model_problems(item_kind, item, where + "[]"))
        elif origin is dict:
            ok = isinstance(value, dict)
        elif kind is bool:
            ok = isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif kind in (int, str):
            ok = isinstance(value, kind) and not isinstance(value, bool)
        else:  # a nested model
            ok = isinstance(value, dict)
            if ok:
                problems.extend(_model_problems(kind, value, where))
        if not ok:
            problems.append(f"{where}: the model has {kind}, the answer {value!r}")
    return problems


def _sample(kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is list:
        [item_kind] = typing.get_args(kind)
        return [_sample(item_kind)]
    if origin is dict:
        return {"probe": 1}
    if kind in (bool, int, float, str):
        return {bool: True, int: 7, float: 0.5, str: "probe"}[kind]
    return kind()


def test_v2_answer_fits_the_model_without_loss(emulator: Emulator) -> None:
    sdk = V2(emulator)
    sdk.get()
    raw = sdk.recorded["body"]
    assert _model_problems(quotas_models.GetProductQuotaResponseBody, raw) == []
    assert isinstance(raw["Quota"]["TotalQuota"], float)


@pytest.mark.parametrize("kwargs, status, error_code", [
    ({"product": "ecs"}, 404, "InvalidProductCode.NotFound"),
    ({"code": "vpc_quota_vpc_num"}, 404, "InvalidQuotaActionCode.NotFound"),
    ({"region": None}, 400, "MissingParameter"),
    ({"region": "cn-shanghai"}, 400, "InvalidParameter"),
])
def test_v2_sdk_refusals(emulator: Emulator, kwargs: dict[str, Any], status: int, error_code: str) -> None:
    error = V2(emulator).fail(**kwargs)
    assert (error.status_code, error.code) == (status, error_code)
    assert error.request_id
