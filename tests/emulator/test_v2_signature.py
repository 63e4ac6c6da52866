"""Signature V3 (ACS3-HMAC-SHA256) at the gateway: the published vector, byte-level tampering, every
refusal with its code and status, STS tokens, and the V2 SDKs' own error fields.

Raw requests are signed by ``tests.emulator.sdk_v2.v3_authorization``, written from the documented
algorithm; the emulator's ``signature_v3`` module is only checked against the same published vector.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import pytest

from flannel_alivpc.emulator import signature_v3
from flannel_alivpc.emulator.server import Emulator, Topology
from tests.conftest import EMULATOR_SECRET
from tests.emulator.sdk import REGION, Cloud
from tests.emulator.sdk_v2 import CloudV2, RawV3, rfc3986, v3_authorization

# Alibaba Cloud's published V3 example (RunInstances on ECS in cn-shanghai).
VECTOR_HEADERS = {
    "host": "ecs.cn-shanghai.aliyuncs.com",
    "x-acs-action": "RunInstances",
    "x-acs-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "x-acs-date": "2023-10-26T10:22:32Z",
    "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
    "x-acs-version": "2014-05-26",
}
VECTOR_QUERY = [("ImageId", "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd"), ("RegionId", "cn-shanghai")]
VECTOR_SIGNATURE = "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
VECTOR_HASHED_REQUEST = "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
MISMATCH = "Specified signature is not matched with our calculation. server string to sign is:"


def _stamp(seconds_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds_ago))


def _raw(emulator: Emulator, action: str = "DescribeVpcs", **kwargs: Any) -> RawV3:
    kwargs.setdefault("query", [("RegionId", REGION), ("PageSize", "10")])
    return RawV3(emulator.endpoint.removeprefix("http://"), action, **kwargs)


# -- the algorithm --------------------------------------------------------------------------


def test_published_vector_by_the_independent_signer() -> None:
    authorization = v3_authorization("POST", "/", VECTOR_QUERY, VECTOR_HEADERS, b"", "YourAccessKeyId",
                                     "YourAccessKeySecret")
    assert authorization == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;x-acs-content-sha256;"
        f"x-acs-date;x-acs-signature-nonce;x-acs-version,Signature={VECTOR_SIGNATURE}")


def test_published_vector_by_the_emulator() -> None:
    canonical = signature_v3.canonical_request(
        "POST", "/", VECTOR_QUERY, {k: [v] for k, v in VECTOR_HEADERS.items()}, list(VECTOR_HEADERS),
        signature_v3.hex_digest("ACS3-HMAC-SHA256", b""))
    to_sign = signature_v3.string_to_sign("ACS3-HMAC-SHA256", canonical)
    assert to_sign == f"ACS3-HMAC-SHA256\n{VECTOR_HASHED_REQUEST}"
    assert signature_v3.sign("ACS3-HMAC-SHA256", to_sign, "YourAccessKeySecret") == VECTOR_SIGNATURE
    # The key is the secret itself: signature 1.0's trailing "&" breaks it.
    assert signature_v3.sign("ACS3-HMAC-SHA256", to_sign, "YourAccessKeySecret&") != VECTOR_SIGNATURE


def test_encoding_of_the_canonical_query() -> None:
    assert rfc3986("a b*~/+") == "a%20b%2A~%2F%2B"
    assert signature_v3.canonical_query([("b", "2"), ("a", "x y"), ("a.b", "*"), ("Empty", "")]) == (
        "Empty=&a=x%20y&a.b=%2A&b=2")


# -- a raw request, then one byte changed in each signed part -------------------------------


def test_raw_signed_request_is_served(emulator: Emulator, topology: Topology) -> None:
    status, body = _raw(emulator).sign().send()
    assert status == 200, body
    assert [v["VpcId"] for v in body["Vpcs"]["Vpc"]] == [topology.vpc_id]


def test_parameters_in_a_form_body(emulator: Emulator, topology: Topology) -> None:
    form = f"RegionId={REGION}&VpcId={topology.vpc_id}".encode()
    request = _raw(emulator, "DescribeVSwitches", query=[], body=form,
                   content_type="application/x-www-form-urlencoded")
    status, body = request.sign().send()
    assert status == 200, body
    assert [v["VSwitchId"] for v in body["VSwitches"]["VSwitch"]] == [topology.vswitch_id]


def test_get_with_parameters_in_the_query(emulator: Emulator, topology: Topology) -> None:
    status, body = _raw(emulator, method="GET").sign().send()
    assert status == 200, body
    assert body["TotalCount"] == 1


def _flip(text: str, index: int) -> str:
    """``text`` with one character replaced by another of the same kind (digit, letter, other)."""
    char = text[index]
    if char.isdigit():
        new = "0" if char != "0" else "1"
    elif char.isalpha():
        new = "a" if char.lower() != "a" else "b"
        new = new.upper() if char.isupper() else new
    else:
        new = "-" if char != "-" else "_"
    return text[:index] + new + text[index + 1:]


Tamper = Callable[[RawV3], None]


def _query_tampers() -> list[tuple[str, Tamper]]:
    cases: list[tuple[str, Tamper]] = []
    for part in (0, 1):       # the name or the value of the PageSize parameter
        for pos in range(len(("PageSize", "10")[part])):
            def tamper(request: RawV3, part: int = part, pos: int = pos) -> None:
                name, value = request.query[1]
                request.query[1] = (_flip(name, pos), value) if part == 0 else (name, _flip(value, pos))
            cases.append((f"query[{'name' if part == 0 else 'value'}][{pos}]", tamper))
    return cases


def _header_tampers(names: tuple[str, ...]) -> list[tuple[str, Tamper]]:
    cases: list[tuple[str, Tamper]] = []
    for name in names:
        def tamper(request: RawV3, name: str = name) -> None:
            value = request.headers[name]
            request.headers[name] = _flip(value, len(value) // 2)
        cases.append((f"header {name}", tamper))
    return cases


SIGNED_HEADERS_CHANGED = ("x-acs-signature-nonce", "x-acs-content-sha256", "user-agent", "accept")


@pytest.mark.parametrize(("where", "tamper"), _query_tampers() + _header_tampers(SIGNED_HEADERS_CHANGED))
def test_one_changed_byte_after_signing_is_refused(emulator: Emulator, topology: Topology, where: str,
                                                   tamper: Tamper) -> None:
    request = _raw(emulator, headers={"user-agent": "sdk-test/1.0", "accept": "application/json"}).sign()
    tamper(request)
    status, body = request.send()
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch"), where
    assert body["Message"].startswith(MISMATCH + "ACS3-HMAC-SHA256\n")


def test_any_changed_byte_of_a_form_body_is_refused(emulator: Emulator, topology: Topology) -> None:
    form = f"RegionId={REGION}&VpcId={topology.vpc_id}&PageSize=10"
    for pos in range(len(form)):
        request = _raw(emulator, "DescribeVSwitches", query=[], body=form.encode(),
                       content_type="application/x-www-form-urlencoded").sign()
        request.body = _flip(form, pos).encode()
        status, body = request.send()
        assert (status, body["Code"]) == (400, "SignatureDoesNotMatch"), pos


def test_changed_host_method_date_and_signature_are_refused(emulator: Emulator, topology: Topology) -> None:
    request = _raw(emulator).sign()
    request.headers["host"] = request.headers["host"].replace("127.0.0.1", "localhost")
    assert request.send()[1]["Code"] == "SignatureDoesNotMatch"
    request = _raw(emulator).sign()
    request.method = "GET"
    assert request.send()[1]["Code"] == "SignatureDoesNotMatch"
    request = _raw(emulator).sign()
    request.headers["x-acs-date"] = _stamp(1)      # one second earlier: still fresh, no longer signed
    assert request.send()[1]["Code"] == "SignatureDoesNotMatch"
    request = _raw(emulator).sign()
    auth = request.headers["Authorization"]
    request.headers["Authorization"] = auth[:-1] + ("0" if auth[-1] != "0" else "1")
    assert request.send()[1]["Code"] == "SignatureDoesNotMatch"


def test_wrong_secret_answers_with_the_servers_string_to_sign(emulator: Emulator, topology: Topology) -> None:
    request = _raw(emulator).sign(secret="not-the-secret")
    status, body = request.send()
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")
    # What follows the colon is the server's string to sign; with the right secret it would match.
    headers = {k: v for k, v in request.headers.items() if k != "Authorization"}
    query = "&".join(f"{k}={v}" for k, v in sorted((rfc3986(k), rfc3986(v)) for k, v in request.query))
    canonical = "\n".join(["POST", "/", query, "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
                           ";".join(sorted(headers)), hashlib.sha256(b"").hexdigest()])
    assert body["Message"] == MISMATCH + "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert body["HostId"] == "vpc.aliyuncs.com"


# -- refusals, in the gateway's order --------------------------------------------------------


def _refusal(request: RawV3) -> tuple[int, str, str]:
    status, body = request.send()
    return status, body["Code"], body["Message"]


def test_missing_headers(emulator: Emulator, topology: Topology) -> None:
    request = _raw(emulator)            # never signed
    assert _refusal(request)[:2] == (400, "MissingParameter")
    assert "Authorization" in _refusal(request)[2]
    for name in ("x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"):
        request = _raw(emulator)
        del request.headers[name]
        status, code, message = _refusal(request.sign())
        assert (status, code) == (400, "MissingParameter"), name
        assert f'"{name}"' in message
    request = _raw(emulator)
    del request.headers["x-acs-action"]
    request.query.append(("Version", "2016-04-28"))
    status, code, message = _refusal(request.sign())
    assert (status, code) == (400, "MissingParameter") and '"x-acs-action"' in message


def test_unsigned_acs_header_and_malformed_authorization(emulator: Emulator, topology: Topology) -> None:
    request = _raw(emulator).sign()
    request.headers["x-acs-extra"] = "added after signing"
    status, code, message = _refusal(request)
    assert (status, code) == (400, "IncompleteSignature") and "x-acs-extra" in message
    request = _raw(emulator).sign()
    request.headers["Authorization"] = "ACS3-HMAC-SHA256 Credential=test-ak Signature=abc"
    assert _refusal(request)[:2] == (400, "IncompleteSignature")
    request = _raw(emulator).sign()
    request.headers["Authorization"] = request.headers["Authorization"].replace("ACS3-HMAC-SHA256",
                                                                                "ACS3-RSA-SHA256")
    assert _refusal(request) == (400, "InvalidSignatureMethod", "Specified signature method is not valid.")


def test_unknown_key_stale_or_malformed_date_and_reused_nonce(emulator: Emulator, topology: Topology) -> None:
    assert _refusal(_raw(emulator).sign(key_id="nobody")) == (
        404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    assert _refusal(_raw(emulator, headers={"x-acs-date": _stamp(16 * 60)}).sign())[:2] == (
        400, "InvalidTimeStamp.Expired")
    assert _refusal(_raw(emulator, headers={"x-acs-date": _stamp(-16 * 60)}).sign())[:2] == (
        400, "InvalidTimeStamp.Expired")
    assert _refusal(_raw(emulator, headers={"x-acs-date": "2024-01-01 00:00:00"}).sign())[:2] == (
        400, "InvalidTimeStamp.Format")
    assert _raw(emulator, headers={"x-acs-date": _stamp(14 * 60)}).sign().send()[0] == 200
    request = _raw(emulator).sign()
    assert request.send()[0] == 200
    assert _refusal(request) == (400, "SignatureNonceUsed", "Specified signature nonce was used already.")


def test_nonces_are_shared_with_signature_1_0(emulator: Emulator, topology: Topology) -> None:
    from tests.emulator.sdk import raw_call, signed_params

    params = signed_params("DescribeVpcs")
    assert raw_call(emulator.endpoint, params).status_code == 200
    request = _raw(emulator, headers={"x-acs-signature-nonce": params["SignatureNonce"]}).sign()
    assert _refusal(request)[1] == "SignatureNonceUsed"


def test_a_refused_signature_does_not_burn_the_nonce(emulator: Emulator, topology: Topology) -> None:
    request = _raw(emulator).sign(secret="wrong")
    assert _refusal(request)[1] == "SignatureDoesNotMatch"
    assert request.sign().send()[0] == 200


# -- through the V2 SDK ----------------------------------------------------------------------


def test_sdk_wrong_secret_and_unknown_key(emulator: Emulator, topology: Topology) -> None:
    error = CloudV2(emulator, access_key_secret="wrong").fail("vpc", "DescribeVpcs")
    assert (error.status_code, error.code) == (400, "SignatureDoesNotMatch")
    assert error.data is not None
    assert error.request_id == error.data["RequestId"] and len(error.request_id) == 36
    assert error.data["HostId"] == "vpc.aliyuncs.com"
    assert error.data["Recommend"].startswith("https://api.aliyun.com/troubleshoot?q=SignatureDoesNotMatch")
    assert error.message.startswith(f"code: 400, {MISMATCH}ACS3-HMAC-SHA256\n")
    assert EMULATOR_SECRET not in str(error) and "wrong" not in error.message
    error = CloudV2(emulator, access_key_id="nobody").fail("ecs", "DescribeInstances")
    assert (error.status_code, error.code) == (404, "InvalidAccessKeyId.NotFound")
    assert error.data is not None and error.data["HostId"] == "ecs.aliyuncs.com"


def test_sdk_with_signature_1_0(emulator: Emulator, topology: Topology) -> None:
    """``signature_algorithm='v2'`` makes the V2 SDK sign with 1.0 in the query: both are accepted."""
    cloud = CloudV2(emulator, signature_algorithm="v2")
    assert cloud.vpc("DescribeVpcs")["TotalCount"] == 1
    error = CloudV2(emulator, access_key_secret="wrong", signature_algorithm="v2").fail("vpc", "DescribeVpcs")
    assert (error.status_code, error.code) == (400, "SignatureDoesNotMatch")
    assert error.message.startswith(f"code: 400, {MISMATCH}POST&%2F&")


def _role_credentials(cloud: Cloud, role: str) -> dict[str, str]:
    inst = cloud.admin("POST", "instances", {"hostname": f"node-{role}", "ram_role": role})
    answer = cloud.metadata(inst["instance_id"], f"meta-data/ram/security-credentials/{role}")
    assert answer.status_code == 200
    creds: dict[str, str] = answer.json()
    return creds


def test_sdk_with_sts_credentials_from_the_metadata_role(cloud: Cloud, emulator: Emulator,
                                                         topology: Topology) -> None:
    creds = _role_credentials(cloud, "KubernetesNode")
    sts = CloudV2(emulator, access_key_id=creds["AccessKeyId"], access_key_secret=creds["AccessKeySecret"],
                  security_token=creds["SecurityToken"])
    assert [v["VpcId"] for v in sts.vpc("DescribeVpcs")["Vpcs"]["Vpc"]] == [topology.vpc_id]
    forged = CloudV2(emulator, access_key_id=creds["AccessKeyId"], access_key_secret=creds["AccessKeySecret"],
                     security_token="CAISforged")
    error = forged.fail("vpc", "DescribeVpcs")
    assert (error.status_code, error.code) == (400, "InvalidSecurityToken.Malformed")
    assert creds["SecurityToken"] not in str(error)
    bare = CloudV2(emulator, access_key_id=creds["AccessKeyId"], access_key_secret=creds["AccessKeySecret"])
    assert bare.fail("vpc", "DescribeVpcs").code == "InvalidSecurityToken.MismatchWithAccessKey"
    emulator.state.access_keys[creds["AccessKeyId"]].expires_at = time.time() - 1
    assert sts.fail("vpc", "DescribeVpcs").code == "InvalidSecurityToken.Expired"


def test_consecutive_sdk_calls_carry_fresh_nonces(emulator: Emulator, cloud: Cloud, topology: Topology) -> None:
    sdk = CloudV2(emulator)
    for _ in range(3):
        assert sdk.vpc("DescribeVpcs")["TotalCount"] == 1
    assert cloud.admin("GET", "counters")["DescribeVpcs"] == {"Success": 3}

