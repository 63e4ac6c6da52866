"""The RPC gateway: signature, credentials, timestamps, nonces, dispatch and error bodies."""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from aliyunsdkcore.auth.credentials import StsTokenCredential
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest

from flannel_alivpc.emulator import signature
from flannel_alivpc.emulator.protocol import ACTIONS, VPC_VERSION
from flannel_alivpc.emulator.server import Emulator, Topology
from tests.conftest import EMULATOR_AK, EMULATOR_SECRET
from tests.emulator.sdk import REGION, Cloud, raw_call, reference_signature, sdk_request, signed_params

SIGNATURE_PREFIX = "Specified signature is not matched with our calculation. server string to sign is:"


def _stamp(seconds_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds_ago))


# -- the signature algorithm ---------------------------------------------------------


def test_reference_vector_a_get() -> None:
    params = {
        "Timestamp": "2016-02-23T12:46:24Z", "Format": "XML", "AccessKeyId": "testid",
        "Action": "DescribeRegions", "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf", "Version": "2014-05-26",
        "SignatureVersion": "1.0",
    }
    assert signature.sign("GET", params, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_reference_vector_b_post() -> None:
    params = {
        "AccessKeyId": "testid", "Action": "CreateRouteEntry", "DestinationCidrBlock": "10.0.0.0/24",
        "Format": "JSON", "NextHopId": "i-abc", "NextHopType": "Instance", "RegionId": "cn-hangzhou",
        "RouteTableId": "vtb-123", "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "0dfd304039769baffea367a42cbc5f47", "SignatureType": "", "SignatureVersion": "1.0",
        "Timestamp": "2024-01-01T00:00:00Z", "Version": "2016-04-28",
    }
    assert signature.string_to_sign("POST", params) == (
        "POST&%2F&AccessKeyId%3Dtestid%26Action%3DCreateRouteEntry%26DestinationCidrBlock%3D10.0.0.0%252F24"
        "%26Format%3DJSON%26NextHopId%3Di-abc%26NextHopType%3DInstance%26RegionId%3Dcn-hangzhou"
        "%26RouteTableId%3Dvtb-123%26SignatureMethod%3DHMAC-SHA1"
        "%26SignatureNonce%3D0dfd304039769baffea367a42cbc5f47%26SignatureType%3D%26SignatureVersion%3D1.0"
        "%26Timestamp%3D2024-01-01T00%253A00%253A00Z%26Version%3D2016-04-28"
    )
    assert signature.sign("POST", params, "testsecret") == "CmxZajrfHj5oapSx8mUZ3I0q1Ws="
    # The Signature parameter itself never takes part.
    assert signature.signature_matches("POST", {**params, "Signature": "CmxZajrfHj5oapSx8mUZ3I0q1Ws="}, "testsecret")


def test_percent_encoding_follows_rfc3986() -> None:
    assert signature.percent_encode("a b*c~d/e+f=") == "a%20b%2Ac~d%2Fe%2Bf%3D"
    assert signature.percent_encode("路由") == "%E8%B7%AF%E7%94%B1"


# -- what the SDK sends is accepted ----------------------------------------------------


def test_typed_request_signs_query_parameters(cloud: Cloud, topology: Topology) -> None:
    body = cloud.vpc("DescribeRouteTables", RouteTableId=topology.route_table_id)
    assert re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}", body["RequestId"])
    assert [t["RouteTableId"] for t in body["RouteTables"]["RouteTable"]] == [topology.route_table_id]


def test_common_request_with_body_parameters(cloud: Cloud, topology: Topology) -> None:
    def describe(**body_params: str) -> dict[str, Any]:
        request = CommonRequest(domain=cloud.host, version=VPC_VERSION, action_name="DescribeRouteTables")
        request.set_method("POST")
        request.set_accept_format("json")
        for name, value in body_params.items():
            request.add_body_params(name, value)
        result: dict[str, Any] = json.loads(cloud.client.do_action_with_exception(request))
        return result

    # Body parameters are read (the filter applies) and signed (otherwise the call is refused).
    assert describe(RouteTableId=topology.route_table_id)["TotalCount"] == 1
    assert describe(RouteTableId="vtb-missing")["TotalCount"] == 0
    # Form encoding turns spaces into "+" and "*" into "%2A"; the signature uses %20 and %2A.
    assert describe(RouteTableName="a name*with~odd/chars+")["TotalCount"] == 0


def test_common_request_with_get(cloud: Cloud, topology: Topology) -> None:
    request = CommonRequest(domain=cloud.host, version=VPC_VERSION, action_name="DescribeVSwitches")
    request.set_accept_format("json")
    request.add_query_param("VpcId", topology.vpc_id)
    assert request.get_method() == "GET"
    body = json.loads(cloud.client.do_action_with_exception(request))
    assert [v["VSwitchId"] for v in body["VSwitches"]["VSwitch"]] == [topology.vswitch_id]


def test_the_method_is_part_of_the_signature(cloud: Cloud) -> None:
    params = signed_params("DescribeVpcs", method="GET")
    assert raw_call(cloud.base, params, method="GET").status_code == 200
    params = signed_params("DescribeVpcs", method="GET")
    answer = raw_call(cloud.base, params, method="POST")
    assert answer.status_code == 400
    assert answer.json()["Code"] == "SignatureDoesNotMatch"


# -- credentials -----------------------------------------------------------------------------


def test_wrong_secret_is_reported_as_invalid_secret(cloud: Cloud) -> None:
    error = cloud.fail(sdk_request("aliyunsdkvpc.request.v20160428", "DescribeVpcs"),
                       AcsClient(EMULATOR_AK, "not-the-secret", REGION))
    # The server's string to sign equals the SDK's own, so the SDK rewrites the code.
    assert error.get_error_code() == "InvalidAccessKeySecret"
    assert error.get_http_status() == 400


def test_tampered_parameter_gives_signature_does_not_match(cloud: Cloud) -> None:
    params = signed_params("DescribeVpcs", {"PageSize": "10"})
    params["PageSize"] = "20"
    answer = raw_call(cloud.base, params)
    assert answer.status_code == 400
    body = answer.json()
    assert body["Code"] == "SignatureDoesNotMatch"
    assert body["Message"].startswith(SIGNATURE_PREFIX)
    # What follows is the server's string to sign, the same text the SDK compares with its own.
    expected = signature.string_to_sign("POST", params)
    assert body["Message"].split(":", 1)[1] == expected
    assert "PageSize%3D20" in expected


def test_unknown_access_key(cloud: Cloud) -> None:
    error = cloud.fail(sdk_request("aliyunsdkvpc.request.v20160428", "DescribeVpcs"),
                       AcsClient("nobody", "whatever", REGION))
    assert error.get_error_code() == "InvalidAccessKeyId.NotFound"
    assert error.get_http_status() == 404
    assert error.get_error_msg() == "Specified access key is not found."


def test_access_key_added_through_admin(cloud: Cloud) -> None:
    cloud.admin("POST", "access-keys", {"access_key_id": "second", "access_key_secret": "second-secret"})
    body = cloud.call(sdk_request("aliyunsdkvpc.request.v20160428", "DescribeVpcs"),
                      AcsClient("second", "second-secret", REGION))
    assert body["TotalCount"] == 0


def _role_credentials(cloud: Cloud, role: str) -> dict[str, str]:
    inst = cloud.admin("POST", "instances", {"hostname": f"node-{role}", "ram_role": role})
    answer = cloud.metadata(inst["instance_id"], f"meta-data/ram/security-credentials/{role}")
    assert answer.status_code == 200
    creds: dict[str, str] = answer.json()
    return creds


def _sts_client(creds: dict[str, str], token: str | None = None) -> AcsClient:
    credential = StsTokenCredential(creds["AccessKeyId"], creds["AccessKeySecret"],
                                    creds["SecurityToken"] if token is None else token)
    return AcsClient(region_id=REGION, credential=credential)


def test_sts_credentials_from_the_metadata_role(cloud: Cloud, topology: Topology) -> None:
    creds = _role_credentials(cloud, "KubernetesNode")
    assert creds["Code"] == "Success"
    body = cloud.call(sdk_request("aliyunsdkvpc.request.v20160428", "DescribeVpcs"), _sts_client(creds))
    assert [v["VpcId"] for v in body["Vpcs"]["Vpc"]] == [topology.vpc_id]


def test_sts_with_a_wrong_or_missing_token(cloud: Cloud, topology: Topology) -> None:
    creds = _role_credentials(cloud, "KubernetesNode")
    request = sdk_request("aliyunsdkvpc.request.v20160428", "DescribeVpcs")
    error = cloud.fail(request, _sts_client(creds, token="CAISforged"))
    assert (error.get_http_status(), error.get_error_code()) == (400, "InvalidSecurityToken.Malformed")
    # The STS key pair without any token.
    error = cloud.fail(sdk_request("aliyunsdkvpc.request.v20160428", "DescribeVpcs"),
                       AcsClient(creds["AccessKeyId"], creds["AccessKeySecret"], REGION))
    assert (error.get_http_status(), error.get_error_code()) == (400, "InvalidSecurityToken.MismatchWithAccessKey")


def test_sts_expired_credentials_are_refused(cloud: Cloud, emulator: Emulator, topology: Topology) -> None:
    creds = _role_credentials(cloud, "KubernetesNode")
    client = _sts_client(creds)
    cloud.call(sdk_request("aliyunsdkvpc.request.v20160428", "DescribeVpcs"), client)
    # Expire the credentials without waiting an hour.
    emulator.state.access_keys[creds["AccessKeyId"]].expires_at = time.time() - 1
    error = cloud.fail(sdk_request("aliyunsdkvpc.request.v20160428", "DescribeVpcs"), client)
    assert (error.get_http_status(), error.get_error_code()) == (400, "InvalidSecurityToken.Expired")


def test_sts_ttl_setting_and_rotation(cloud: Cloud, topology: Topology) -> None:
    cloud.settings(sts_ttl=0.8)
    first = _role_credentials(cloud, "ShortLived")
    inst_id = next(i for i, v in cloud.emulator.state.instances.items() if v.ram_role == "ShortLived")
    path = "meta-data/ram/security-credentials/ShortLived"
    # Within the first half of the lifetime the same set is handed out again.
    assert cloud.metadata(inst_id, path).json()["AccessKeyId"] == first["AccessKeyId"]
    time.sleep(0.45)
    second = cloud.metadata(inst_id, path).json()
    assert second["AccessKeyId"] != first["AccessKeyId"]
    # Both sets are valid during the overlap ...
    for creds in (first, second):
        cloud.call(sdk_request("aliyunsdkvpc.request.v20160428", "DescribeVpcs"), _sts_client(creds))
    # ... and the first one expires at its own time.
    time.sleep(0.4)
    error = cloud.fail(sdk_request("aliyunsdkvpc.request.v20160428", "DescribeVpcs"), _sts_client(first))
    assert error.get_error_code() == "InvalidSecurityToken.Expired"


# -- timestamp and nonce ------------------------------------------------------------------------


def test_timestamp_skew(cloud: Cloud) -> None:
    assert raw_call(cloud.base, signed_params("DescribeVpcs", Timestamp=_stamp(600))).status_code == 200
    answer = raw_call(cloud.base, signed_params("DescribeVpcs", Timestamp=_stamp(16 * 60)))
    assert answer.status_code == 400
    assert answer.json()["Code"] == "InvalidTimeStamp.Expired"
    answer = raw_call(cloud.base, signed_params("DescribeVpcs", Timestamp=_stamp(-16 * 60)))
    assert answer.json()["Code"] == "InvalidTimeStamp.Expired"
    cloud.settings(timestamp_skew=60)
    answer = raw_call(cloud.base, signed_params("DescribeVpcs", Timestamp=_stamp(120)))
    assert answer.json()["Code"] == "InvalidTimeStamp.Expired"


def test_timestamp_format_and_presence(cloud: Cloud) -> None:
    answer = raw_call(cloud.base, signed_params("DescribeVpcs", Timestamp="2024-01-01 00:00:00"))
    assert (answer.status_code, answer.json()["Code"]) == (400, "InvalidTimeStamp.Format")
    params = signed_params("DescribeVpcs")
    del params["Timestamp"]
    answer = raw_call(cloud.base, params)
    assert (answer.status_code, answer.json()["Code"]) == (400, "MissingParameter")
    assert '"Timestamp"' in answer.json()["Message"]


def test_nonce_reuse_is_refused(cloud: Cloud) -> None:
    params = signed_params("DescribeVpcs")
    assert raw_call(cloud.base, params).status_code == 200
    answer = raw_call(cloud.base, params)
    assert answer.status_code == 400
    assert answer.json()["Code"] == "SignatureNonceUsed"


def test_nonce_of_a_refused_request_stays_usable(cloud: Cloud) -> None:
    good = signed_params("DescribeVpcs", SignatureNonce="fixed-nonce-1")
    bad = dict(good, Signature="AAAA" + good["Signature"][4:])
    assert raw_call(cloud.base, bad).json()["Code"] == "SignatureDoesNotMatch"
    assert raw_call(cloud.base, good).status_code == 200


# -- dispatch ---------------------------------------------------------------------------------------


def test_unknown_action(cloud: Cloud) -> None:
    request = CommonRequest(domain=cloud.host, version=VPC_VERSION, action_name="DescribeNothing")
    request.set_method("POST")
    error = cloud.fail(request)
    assert (error.get_http_status(), error.get_error_code()) == (404, "InvalidAction.NotFound")
    # A real action under the wrong product version is unknown too.
    request = CommonRequest(domain=cloud.host, version=VPC_VERSION, action_name="DescribeInstances")
    error = cloud.fail(request)
    assert error.get_error_code() == "InvalidAction.NotFound"


def test_missing_parameter(cloud: Cloud) -> None:
    error = cloud.vpc_error("DescribeRouteEntryList")
    assert (error.get_http_status(), error.get_error_code()) == (400, "MissingParameter")
    assert error.get_error_msg() == (
        'The input parameter "RouteTableId" that is mandatory for processing this request is not supplied.')
    answer = requests.post(f"{cloud.base}/?Version=2016-04-28", timeout=10)
    assert answer.json()["Code"] == "MissingParameter"
    assert '"Action"' in answer.json()["Message"]


def test_unknown_region(cloud: Cloud) -> None:
    error = cloud.fail(sdk_request("aliyunsdkvpc.request.v20160428", "DescribeVpcs"),
                       AcsClient(EMULATOR_AK, EMULATOR_SECRET, "cn-nowhere"))
    assert (error.get_http_status(), error.get_error_code()) == (404, "InvalidRegionId.NotFound")
    # Another real region is known, and simply empty.
    body = cloud.call(sdk_request("aliyunsdkvpc.request.v20160428", "DescribeVpcs"),
                      AcsClient(EMULATOR_AK, EMULATOR_SECRET, "cn-beijing"))
    assert body["TotalCount"] == 0


def test_error_body_shape(cloud: Cloud) -> None:
    answer = raw_call(cloud.base, signed_params("DescribeRouteEntryList", {"RouteTableId": "vtb-missing"}))
    assert answer.status_code == 404
    assert answer.headers["Content-Type"] == "application/json;charset=utf-8"
    body = answer.json()
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert body["HostId"] == "vpc.aliyuncs.com"
    assert body["Code"] == "InvalidRouteTableId.NotFound"
    assert body["Message"] == "Specified route table does not exist."
    assert "q=InvalidRouteTableId.NotFound" in body["Recommend"]
    assert body["RequestId"] in body["Recommend"]


def test_emulator_failure_is_an_internal_error(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(call: Any) -> dict[str, Any]:
        raise RuntimeError("emulator bug")

    monkeypatch.setitem(ACTIONS, (VPC_VERSION, "DescribeVpcs"), broken)
    error = cloud.vpc_error("DescribeVpcs")
    assert (error.get_http_status(), error.get_error_code()) == (500, "InternalError")


def test_other_paths_are_not_found(cloud: Cloud) -> None:
    answer = requests.get(f"{cloud.base}/some/path", timeout=10)
    assert answer.status_code == 404


# -- proxies ---------------------------------------------------------------------------------------------


def test_sdk_through_the_emulator_as_http_proxy(cloud: Cloud, topology: Topology) -> None:
    # With a proxy the SDK sends the absolute form "POST http://host:port/?..." to it.
    client = AcsClient(EMULATOR_AK, EMULATOR_SECRET, REGION, proxy={"http": cloud.base, "https": cloud.base})
    body = cloud.call(sdk_request("aliyunsdkvpc.request.v20160428", "DescribeVpcs"), client)
    assert body["Vpcs"]["Vpc"][0]["VpcId"] == topology.vpc_id


def test_absolute_form_request_target(cloud: Cloud) -> None:
    host, port = cloud.emulator.address
    query = urlencode(signed_params("DescribeVpcs"))
    request = (f"POST http://{host}:{port}/?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               "Content-Length: 0\r\nConnection: close\r\n\r\n")
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(request.encode())
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(payload)["TotalCount"] == 0


def test_reference_signature_helper_agrees_with_the_sdk(cloud: Cloud) -> None:
    # Guard for the helper itself: a request signed by it is accepted, so it and the
    # emulator implement the same algorithm as the SDK (checked by the SDK tests above).
    params = signed_params("DescribeVpcs", {"VpcName": "with space*"})
    assert params["Signature"] == reference_signature("POST", params, EMULATOR_SECRET)
    assert raw_call(cloud.base, params).status_code == 200
