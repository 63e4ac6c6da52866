"""AliyunApi against the emulator: calls, retries, error classes, endpoints and protocol."""

from __future__ import annotations

import time

import pytest

from flannel_alivpc.clients.aliyun_sdk import (
    AliyunApi,
    error_class_for,
    flatten_params,
    parse_endpoint,
)
from flannel_alivpc.clients.credentials import StaticCredentials
from flannel_alivpc.core.errors import (
    AuthCloudError,
    CloudError,
    ConfigError,
    NotFoundCloudError,
    PermanentCloudError,
    QuotaCloudError,
    RetryableCloudError,
)
from flannel_alivpc.core.retry import NO_RETRY, RetryPolicy
from flannel_alivpc.emulator.server import Emulator, Topology
from tests.clients.helpers import REGION, Admin, closed_port, emulator_counts, make_api


def test_call_returns_the_decoded_answer_and_counts_it(api: AliyunApi, topology: Topology) -> None:
    answer = api.call("vpc", "DescribeVpcs", {"VpcId": topology.vpc_id})
    assert answer["RequestId"]
    assert [v["VpcId"] for v in answer["Vpcs"]["Vpc"]] == [topology.vpc_id]
    answer = api.call("ecs", "DescribeInstances", {"VpcId": topology.vpc_id, "PageSize": 100})
    assert answer["TotalCount"] == 3
    assert api.counter.snapshot() == {("DescribeVpcs", "success"): 1, ("DescribeInstances", "success"): 1}


def test_transient_errors_are_retried_until_success(api: AliyunApi, topology: Topology, admin: Admin) -> None:
    admin("PATCH", "faults", {"DescribeRouteEntryList": {"error": {"code": "ServiceUnavailable", "status": 503,
                                                                   "count": 2}}})
    answer = api.call("vpc", "DescribeRouteEntryList", {"RouteTableId": topology.route_table_id})
    assert answer["RouteEntrys"]["RouteEntry"]
    assert emulator_counts(admin, "DescribeRouteEntryList") == {"ServiceUnavailable": 2, "Success": 1}
    assert api.counter.get("DescribeRouteEntryList", "retryable") == 2
    assert api.counter.get("DescribeRouteEntryList", "success") == 1


def test_throttling_is_retried(emulator: Emulator, topology: Topology, admin: Admin) -> None:
    api = make_api(emulator, retry=RetryPolicy(max_attempts=8, base_delay=0.3, max_delay=1.0))
    admin("PATCH", "faults", {"DescribeVpcs": {"throttle": {"rate": 1, "burst": 1}}})
    for _ in range(2):
        api.call("vpc", "DescribeVpcs", {"VpcId": topology.vpc_id})
    counts = emulator_counts(admin, "DescribeVpcs")
    assert counts["Success"] == 2
    assert counts["Throttling.User"] >= 1
    assert api.counter.get("DescribeVpcs", "retryable") == counts["Throttling.User"]


def test_dropped_connection_is_retried(api: AliyunApi, topology: Topology, admin: Admin) -> None:
    admin("PATCH", "faults", {"DescribeVSwitches": {"drop": {"count": 1}}})
    answer = api.call("vpc", "DescribeVSwitches", {"VpcId": topology.vpc_id})
    assert answer["TotalCount"] == 1
    assert emulator_counts(admin, "DescribeVSwitches") == {"Dropped": 1, "Success": 1}


def test_permanent_error_is_not_retried(api: AliyunApi, topology: Topology, admin: Admin) -> None:
    admin("PATCH", "faults", {"DescribeVpcs": {"error": {"code": "InvalidParameter", "status": 400, "count": 5}}})
    with pytest.raises(PermanentCloudError) as info:
        api.call("vpc", "DescribeVpcs", {})
    assert info.value.code == "InvalidParameter"
    assert info.value.http_status == 400
    assert emulator_counts(admin, "DescribeVpcs") == {"InvalidParameter": 1}


def test_retry_gives_up_after_max_attempts(emulator: Emulator, topology: Topology, admin: Admin) -> None:
    api = make_api(emulator, retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02))
    admin("PATCH", "faults", {"DescribeVpcs": {"error": {"code": "ServiceUnavailable", "status": 503}}})
    with pytest.raises(RetryableCloudError) as info:
        api.call("vpc", "DescribeVpcs", {})
    error = info.value
    assert error.code == "ServiceUnavailable" and error.http_status == 503 and error.action == "DescribeVpcs"
    assert error.request_id
    assert "gave up after 3 attempts" in str(error)
    assert emulator_counts(admin, "DescribeVpcs") == {"ServiceUnavailable": 3}
    # A per-call policy overrides the client's.
    admin("DELETE", "counters")
    with pytest.raises(RetryableCloudError):
        api.call("vpc", "DescribeVpcs", {}, retry=NO_RETRY)
    assert emulator_counts(admin, "DescribeVpcs") == {"ServiceUnavailable": 1}


@pytest.mark.parametrize(("code", "status", "expected"), [
    ("Throttling.User", 400, RetryableCloudError),
    ("Throttling", 503, RetryableCloudError),
    ("TaskConflict", 400, RetryableCloudError),
    ("IncorrectRouteEntryStatus", 400, RetryableCloudError),
    ("IncorrcetRouteEntryStatus", 400, RetryableCloudError),
    ("OperationConflict", 409, RetryableCloudError),
    ("ServiceUnavailable", 503, RetryableCloudError),
    ("InternalError", 500, RetryableCloudError),
    ("UnknownError", 400, RetryableCloudError),
    ("SystemBusy", 400, RetryableCloudError),
    ("OperationFailed.DistibuteLock", 400, RetryableCloudError),
    ("LastTokenProcessing", 400, RetryableCloudError),
    ("IncorrectStatus.RouteTableStatus", 400, RetryableCloudError),
    ("VPC.ERROR", 502, RetryableCloudError),
    ("InvalidRouteTableId.NotFound", 404, NotFoundCloudError),
    ("InvalidRouteEntry.NotFound", 400, NotFoundCloudError),
    ("Forbidden.VpcNotFound", 400, NotFoundCloudError),
    ("InvalidAccessKeyId.NotFound", 404, AuthCloudError),
    ("InvalidAccessKeySecret", 400, AuthCloudError),
    ("SignatureDoesNotMatch", 400, AuthCloudError),
    ("InvalidSecurityToken.Expired", 400, AuthCloudError),
    ("InvalidSecurityToken.Malformed", 400, AuthCloudError),
    ("Forbidden.RAM", 403, AuthCloudError),
    ("Forbidden", 403, AuthCloudError),
    ("NoPermission", 403, AuthCloudError),
    ("QuotaExceeded", 400, QuotaCloudError),
    ("QuotaExceeded.RouteEntry", 400, QuotaCloudError),
    ("Listener.OverLimit", 400, QuotaCloudError),
    ("InvalidParameter", 400, PermanentCloudError),
    ("InvalidCIDRBlock.Duplicate", 400, PermanentCloudError),
    ("InvalidAction.NotFound", 404, PermanentCloudError),
    ("InvalidRegionId.NotFound", 404, PermanentCloudError),
])
def test_injected_errors_map_to_their_class(api: AliyunApi, topology: Topology, admin: Admin, code: str,
                                           status: int, expected: type[CloudError]) -> None:
    admin("PATCH", "faults", {"DescribeVpcs": {"error": {"code": code, "status": status, "count": 1}}})
    with pytest.raises(CloudError) as info:
        api.call("vpc", "DescribeVpcs", {}, retry=NO_RETRY)
    error = info.value
    assert type(error) is expected
    assert (error.code, error.http_status, error.action) == (code, status, "DescribeVpcs")
    assert error.request_id and error.request_id in str(error)
    assert error_class_for(code, status) is expected


def test_client_side_codes_map_too() -> None:
    assert error_class_for("SDK.HttpError", None) is RetryableCloudError
    assert error_class_for("SDK.UnknownServerError", 502) is RetryableCloudError
    assert error_class_for("SDK.EndpointResolvingError", None) is PermanentCloudError
    assert error_class_for("SDK.InvalidCredential", None) is AuthCloudError


def test_real_not_found_carries_request_id_and_status(api: AliyunApi, topology: Topology) -> None:
    with pytest.raises(NotFoundCloudError) as info:
        api.call("vpc", "DescribeRouteEntryList", {"RouteTableId": "vtb-missing"})
    assert info.value.code == "InvalidRouteTableId.NotFound"
    assert info.value.http_status == 404
    assert len(info.value.request_id) == 36
    assert api.counter.get("DescribeRouteEntryList", "not_found") == 1


def test_wrong_secret_is_an_auth_error_naming_the_secret(emulator: Emulator, topology: Topology) -> None:
    api = make_api(emulator, credentials=StaticCredentials(emulator.access_key_id, "not-the-secret"))
    with pytest.raises(AuthCloudError) as info:
        api.call("vpc", "DescribeVpcs", {})
    message = str(info.value)
    assert "bad secret" in message and "ACCESS_KEY_SECRET" in message
    assert "not-the-secret" not in message and emulator.access_key_secret not in message


def test_unknown_key_id_is_an_auth_error_naming_the_key(emulator: Emulator, topology: Topology) -> None:
    api = make_api(emulator, credentials=StaticCredentials("no-such-key", "whatever"))
    with pytest.raises(AuthCloudError) as info:
        api.call("vpc", "DescribeVpcs", {})
    assert info.value.code == "InvalidAccessKeyId.NotFound"
    assert "bad access key id" in str(info.value) and "no-such-key" in str(info.value)


def test_missing_ram_permission_says_which_action(api: AliyunApi, topology: Topology, admin: Admin) -> None:
    admin("PATCH", "faults", {"CreateRouteEntry": {"error": {"code": "Forbidden.RAM", "status": 403, "count": 1}}})
    with pytest.raises(AuthCloudError) as info:
        api.call("vpc", "CreateRouteEntry", {"RouteTableId": topology.route_table_id,
                                             "DestinationCidrBlock": "10.9.0.0/24",
                                             "NextHopId": topology.instance_ids[0]})
    assert "missing RAM permission for CreateRouteEntry" in str(info.value)
    assert "vpc:CreateRouteEntry" in str(info.value)


def test_unreachable_endpoint_is_retryable_and_fast(emulator: Emulator) -> None:
    api = AliyunApi(REGION, f"http://127.0.0.1:{closed_port()}",
                    StaticCredentials(emulator.access_key_id, emulator.access_key_secret), retry=NO_RETRY)
    started = time.monotonic()
    with pytest.raises(RetryableCloudError) as info:
        api.call("vpc", "DescribeVpcs", {})
    assert time.monotonic() - started < 3
    assert info.value.code == "SDK.HttpError"
    assert "connection refused" in str(info.value)
    assert "Signature=" not in str(info.value)


def test_read_timeout_is_retryable(emulator: Emulator, topology: Topology, admin: Admin) -> None:
    api = make_api(emulator, read_timeout=0.3, retry=NO_RETRY)
    admin("PATCH", "faults", {"DescribeVpcs": {"latency": 1.0}})
    with pytest.raises(RetryableCloudError) as info:
        api.call("vpc", "DescribeVpcs", {})
    assert "no answer in time" in str(info.value)


def test_action_missing_from_sdk_goes_through_common_request(api: AliyunApi, topology: Topology) -> None:
    request = api.build_request("vpc", "DescribeSomethingNew", {"A": 1})
    assert type(request).__name__ == "CommonRequest"
    assert request.get_method() == "POST"
    # Signed and sent like any call; the emulator does not know the action.
    with pytest.raises(PermanentCloudError) as info:
        api.call("vpc", "DescribeSomethingNew", {})
    assert info.value.code == "InvalidAction.NotFound"


def test_typed_request_class_is_used_when_the_sdk_has_it(api: AliyunApi) -> None:
    request = api.build_request("ecs", "DescribeInstances", {"InstanceIds": '["i-1"]', "DryRun": False})
    assert type(request).__name__ == "DescribeInstancesRequest"
    assert request.get_query_params() == {"InstanceIds": '["i-1"]', "DryRun": "false"}
    with pytest.raises(ValueError):
        api.build_request("vpc", "../etc", {})


# -- endpoints and protocol: built, never sent ------------------------------------------


def test_without_override_the_sdk_resolves_the_endpoint_over_https() -> None:
    api = AliyunApi(REGION, None, StaticCredentials("ak", "secret"))
    for product, action in (("vpc", "DescribeRouteEntryList"), ("ecs", "DescribeInstances"),
                            ("slb", "DescribeLoadBalancers"), ("vpc", "NotInTheSdk")):
        request = api.build_request(product, action, {})  # type: ignore[arg-type]
        assert request.get_protocol_type() == "https"
        assert request.endpoint is None
    assert api.protocol == "https" and api.host is None


@pytest.mark.parametrize(("endpoint", "protocol", "host"), [
    ("http://127.0.0.1:8080", "http", "127.0.0.1:8080"),
    ("http://127.0.0.1:8080/", "http", "127.0.0.1:8080"),
    ("https://vpc.example.internal:8443", "https", "vpc.example.internal:8443"),
    ("vpc.example.internal", "https", "vpc.example.internal"),
    ("127.0.0.1:9443", "https", "127.0.0.1:9443"),
])
def test_endpoint_override(endpoint: str, protocol: str, host: str) -> None:
    assert parse_endpoint(endpoint) == (protocol, host)
    api = AliyunApi(REGION, endpoint, StaticCredentials("ak", "secret"))
    request = api.build_request("vpc", "DescribeVpcs", {})
    assert (request.get_protocol_type(), request.endpoint) == (protocol, host)


@pytest.mark.parametrize("endpoint", ["ftp://host", "http://host/path", "https://", "http://h?x=1"])
def test_bad_endpoint_override(endpoint: str) -> None:
    with pytest.raises(ConfigError):
        parse_endpoint(endpoint)


def test_flatten_params() -> None:
    flat = flatten_params({
        "RouteEntries": [{"DstCidrBlock": "10.0.0.0/24", "NextHop": "i-1", "Name": None},
                         {"DstCidrBlock": "10.0.1.0/24", "NextHop": "i-2"}],
        "DestCidrBlockList": ["10.0.0.0/24", "10.0.1.0/24"],
        "MaxResult": 100,
        "DryRun": True,
        "NextToken": None,
    })
    assert flat == {
        "RouteEntries.1.DstCidrBlock": "10.0.0.0/24", "RouteEntries.1.NextHop": "i-1",
        "RouteEntries.2.DstCidrBlock": "10.0.1.0/24", "RouteEntries.2.NextHop": "i-2",
        "DestCidrBlockList.1": "10.0.0.0/24", "DestCidrBlockList.2": "10.0.1.0/24",
        "MaxResult": "100", "DryRun": "true",
    }
    with pytest.raises(TypeError):
        flatten_params({"Bad": {"a": 1}})


def test_region_is_required() -> None:
    with pytest.raises(ConfigError):
        AliyunApi("", None, StaticCredentials("ak", "secret"))
