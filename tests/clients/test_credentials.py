"""Credentials: environment keys, RAM role STS credentials and their refresh, and secret hygiene."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from flannel_alivpc.clients.aliyun_sdk import AliyunApi
from flannel_alivpc.clients.credentials import (
    Credentials,
    RamRoleCredentials,
    StaticCredentials,
    credentials_from_env,
)
from flannel_alivpc.clients.metadata import MetadataClient
from flannel_alivpc.core.errors import AuthCloudError, ConfigError, MetadataNotFound, RetryableCloudError
from flannel_alivpc.core.retry import NO_RETRY
from flannel_alivpc.core.secrets import Secret
from flannel_alivpc.emulator.server import Emulator, Topology
from tests.clients.helpers import REGION, Admin, closed_port, make_api

ROLE = "k8s-node"


def role_instance(emulator: Emulator, admin: Admin, role: str = ROLE) -> MetadataClient:
    """A new instance with a RAM role, and a metadata client for it."""
    instance = admin("POST", "instances", {"hostname": "sts-node", "ram_role": role})
    return MetadataClient(f"{emulator.endpoint}/meta/{instance['instance_id']}", timeout=1.0)


class Clock:
    """A clock shared by the emulator and the credentials: real time plus an offset."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


# -- environment -------------------------------------------------------------------


def test_env_prefers_flannel_names() -> None:
    creds = credentials_from_env({
        "ACCESS_KEY_ID": "flannel-id", "ACCESS_KEY_SECRET": "flannel-secret",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "other-id", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "other-secret",
    })
    assert creds is not None
    got = creds.get()
    assert (got.access_key_id, got.access_key_secret.reveal(), got.security_token) == \
        ("flannel-id", "flannel-secret", None)


def test_env_alibaba_cloud_names_with_token() -> None:
    creds = credentials_from_env({"ALIBABA_CLOUD_ACCESS_KEY_ID": "id", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s",
                                  "ALIBABA_CLOUD_SECURITY_TOKEN": "tok"})
    assert creds is not None
    got = creds.get()
    assert got.access_key_id == "id" and got.security_token == Secret("tok") and got.is_sts


def test_env_without_keys_means_ram_role() -> None:
    assert credentials_from_env({}) is None
    assert credentials_from_env({"ACCESS_KEY_ID": " ", "PATH": "/bin"}) is None


@pytest.mark.parametrize(("env", "missing"), [
    ({"ACCESS_KEY_ID": "id"}, "ACCESS_KEY_SECRET"),
    ({"ACCESS_KEY_SECRET": "secret"}, "ACCESS_KEY_ID"),
    ({"ALIBABA_CLOUD_ACCESS_KEY_ID": "id"}, "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
])
def test_env_half_set_is_a_config_error(env: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigError, match=f"but {missing} is not"):
        credentials_from_env(env)


def test_reprs_hide_secrets() -> None:
    creds = Credentials("key-id", Secret("the-secret"), Secret("the-token"), 123.0)
    for text in (repr(creds), str(creds), repr(StaticCredentials("key-id", "the-secret", "the-token"))):
        assert "the-secret" not in text and "the-token" not in text
        assert "key-id" in text


# -- RAM role --------------------------------------------------------------------------


def test_ram_role_credentials_are_discovered_and_work(emulator: Emulator, topology: Topology,
                                                      admin: Admin) -> None:
    metadata = role_instance(emulator, admin)
    assert metadata.ram_role() == ROLE
    provider = RamRoleCredentials(metadata)
    creds = provider.get()
    assert provider.role == ROLE
    assert creds.access_key_id.startswith("STS.") and creds.security_token is not None
    assert creds.expiration is not None and creds.expiration > time.time() + 3000
    assert provider.get() is creds  # cached, not fetched again
    api = make_api(emulator, credentials=provider)
    assert api.call("vpc", "DescribeVpcs", {"VpcId": topology.vpc_id})["TotalCount"] == 1
    assert api.active_access_key_id == creds.access_key_id


def test_short_lived_credentials_are_refreshed_before_expiry(emulator: Emulator, topology: Topology,
                                                             admin: Admin) -> None:
    admin("PATCH", "settings", {"sts_ttl": 2})
    metadata = role_instance(emulator, admin)
    provider = RamRoleCredentials(metadata, ROLE, min_refresh_margin=1.9, retry_interval=0.2)
    api = make_api(emulator, credentials=provider)
    api.call("vpc", "DescribeVpcs", {})
    first = provider.get()
    time.sleep(1.2)  # the emulator publishes a new set once half the lifetime is used
    api.call("vpc", "DescribeVpcs", {})
    second = provider.get()
    assert second.access_key_id != first.access_key_id
    assert api.active_access_key_id == second.access_key_id
    # Refreshed before expiry: the first set still works at this point.
    old = make_api(emulator, credentials=StaticCredentials(first.access_key_id, first.access_key_secret,
                                                           first.security_token))
    old.call("vpc", "DescribeVpcs", {})


def test_refresh_margin_and_expired_token(emulator: Emulator, topology: Topology, admin: Admin) -> None:
    clock = Clock()
    emulator.state.clock = clock
    admin("PATCH", "settings", {"sts_ttl": 600})
    metadata = role_instance(emulator, admin)
    provider = RamRoleCredentials(metadata, min_refresh_margin=60, clock=clock)  # margin max(60, 600/4) = 150 s
    api = make_api(emulator, credentials=provider)
    first = provider.get()
    clock.offset = 400  # 200 s left: more than the margin
    assert provider.get() is first
    clock.offset = 460  # 140 s left: refresh
    second = provider.get()
    assert second.access_key_id != first.access_key_id
    assert second.expiration is not None and first.expiration is not None
    assert second.expiration > first.expiration
    clock.offset = 610  # the first set has expired; the API client moved on to the second
    assert api.call("vpc", "DescribeVpcs", {"VpcId": topology.vpc_id})["TotalCount"] == 1
    assert api.active_access_key_id == second.access_key_id
    stale = make_api(emulator, credentials=StaticCredentials(first.access_key_id, first.access_key_secret,
                                                             first.security_token))
    with pytest.raises(AuthCloudError) as info:
        stale.call("vpc", "DescribeVpcs", {})
    assert info.value.code == "InvalidSecurityToken.Expired"
    assert "expired token" in str(info.value)


def test_failed_refresh_keeps_valid_credentials_then_raises(emulator: Emulator, topology: Topology,
                                                            admin: Admin, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    emulator.state.clock = clock
    admin("PATCH", "settings", {"sts_ttl": 600})
    metadata = role_instance(emulator, admin)
    provider = RamRoleCredentials(metadata, ROLE, min_refresh_margin=60, retry_interval=10, clock=clock)
    first = provider.get()
    instance_id = metadata.instance_id()
    admin("DELETE", f"instances/{instance_id}")  # its metadata disappears
    clock.offset = 500
    with caplog.at_level(logging.WARNING):
        assert provider.get() is first
    assert "keeping the current ones" in caplog.text
    clock.offset = 700
    with pytest.raises(MetadataNotFound):
        provider.get()
    api = make_api(emulator, credentials=provider, retry=NO_RETRY)
    with pytest.raises(AuthCloudError):
        api.call("vpc", "DescribeVpcs", {})


def test_instance_without_role(emulator: Emulator, topology: Topology) -> None:
    metadata = MetadataClient(f"{emulator.endpoint}/meta/{topology.instance_ids[0]}")
    assert metadata.ram_role() is None
    with pytest.raises(MetadataNotFound, match="no RAM role is attached"):
        RamRoleCredentials(metadata).get()


def test_unreachable_metadata_makes_calls_retryable(emulator: Emulator) -> None:
    metadata = MetadataClient(f"http://127.0.0.1:{closed_port()}", timeout=0.5, retries=0)
    api = make_api(emulator, credentials=RamRoleCredentials(metadata, ROLE), retry=NO_RETRY)
    with pytest.raises(RetryableCloudError, match="cannot get RAM role credentials"):
        api.call("vpc", "DescribeVpcs", {})


# -- secrets never leak ----------------------------------------------------------------


def assert_clean(texts: list[str], *secrets: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


def client_logs(caplog: pytest.LogCaptureFixture) -> str:
    """Everything logged in this process except by the emulator, which stands in for the remote
    gateway (its access log quotes request lines, as a server's would)."""
    return "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records
                     if not r.name.startswith("flannel_alivpc.emulator"))


def error_texts(error: BaseException) -> list[str]:
    return [str(error), repr(error), error.args[0], getattr(error, "message", "")]


def sts_credentials(emulator: Emulator, admin: Admin) -> Credentials:
    return RamRoleCredentials(role_instance(emulator, admin), ROLE).get()


def test_wrong_secret_with_sts_token_leaks_nothing(emulator: Emulator, topology: Topology, admin: Admin,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    real = sts_credentials(emulator, admin)
    assert real.security_token is not None
    token = real.security_token.reveal()
    wrong = StaticCredentials(real.access_key_id, "wrong-secret-value", token)
    api = make_api(emulator, credentials=wrong, retry=NO_RETRY)
    with pytest.raises(AuthCloudError) as info:
        api.call("vpc", "DescribeVpcs", {})
    assert "bad secret" in str(info.value)
    assert "SecurityToken" in client_logs(caplog)  # the SDK did log its parameters: scrubbed, not silenced
    secrets = (token, "wrong-secret-value", real.access_key_secret.reveal())
    assert_clean([*error_texts(info.value), repr(wrong), repr(wrong.get()), client_logs(caplog)], *secrets)


def test_signature_mismatch_message_is_stripped(emulator: Emulator, topology: Topology, admin: Admin,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """A server string to sign that differs from the SDK's reaches us whole: it must be cut."""
    caplog.set_level(logging.DEBUG)
    real = sts_credentials(emulator, admin)
    assert real.security_token is not None
    token = real.security_token.reveal()
    string_to_sign = (f"POST&%2F&AccessKeyId%3D{real.access_key_id}%26Action%3DDescribeVpcs"
                      f"%26SecurityToken%3D{token}%26Version%3D2016-04-28")
    admin("PATCH", "faults", {"DescribeVpcs": {"error": {
        "code": "SignatureDoesNotMatch", "status": 400, "count": 1,
        "message": f"Specified signature is not matched with our calculation. server string to sign is:"
                   f"{string_to_sign}"}}})
    api = make_api(emulator, credentials=RamRoleCredentials(role_instance(emulator, admin), ROLE))
    with pytest.raises(AuthCloudError) as info:
        api.call("vpc", "DescribeVpcs", {})
    assert info.value.code == "SignatureDoesNotMatch"
    assert "string to sign is: <omitted>" in str(info.value)
    assert_clean([*error_texts(info.value), client_logs(caplog)], token, real.access_key_secret.reveal())


def test_network_errors_do_not_quote_the_signed_url(emulator: Emulator, topology: Topology, admin: Admin,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    real = sts_credentials(emulator, admin)
    assert real.security_token is not None
    api = AliyunApi(REGION, f"http://127.0.0.1:{closed_port()}",
                    StaticCredentials(real.access_key_id, real.access_key_secret, real.security_token),
                    retry=NO_RETRY)
    with pytest.raises(RetryableCloudError) as info:
        api.call("vpc", "DescribeVpcs", {"VpcId": "vpc-x"})
    assert "query omitted" in str(info.value) or "?" not in str(info.value)
    assert_clean([*error_texts(info.value), client_logs(caplog)], real.security_token.reveal(),
                 real.access_key_secret.reveal())


def test_wrong_static_secret_leaks_nothing(emulator: Emulator, topology: Topology,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = make_api(emulator, credentials=StaticCredentials(emulator.access_key_id, "static-wrong-secret"),
                   retry=NO_RETRY)
    with pytest.raises(AuthCloudError) as info:
        api.call("vpc", "DescribeVpcs", {})
    texts: list[Any] = [*error_texts(info.value), client_logs(caplog)]
    assert_clean(texts, "static-wrong-secret", emulator.access_key_secret)
