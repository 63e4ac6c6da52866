"""The one door to the Alibaba Cloud APIs: ``AliyunApi.call(product, action, params)``.

This is the only module that imports the legacy SDK (``aliyunsdkcore`` and the
product packages). Around each call it adds what the SDK lacks or gets wrong:

* **Endpoints.** With an override (``--api-endpoint``, env ``ALIYUN_API_ENDPOINT``;
  one value for every product) requests go to that host: ``http://host:port``
  means plain HTTP, ``https://...`` or a bare ``host[:port]`` means HTTPS.
  Without one the SDK resolves the endpoint itself, but the protocol is forced
  to HTTPS: the SDK's default is plain HTTP, which would send the signed
  requests (and STS tokens) in clear text.
* **Retries.** The SDK's own retry is off (it only knows ECS actions and
  ``Throttling`` spelled exactly so); transient failures (throttling, a route
  table busy with another change, 5xx, network errors) are retried here with
  capped exponential backoff and jitter (``core.retry``).
* **Errors.** Every failure becomes one of the ``core.errors`` classes with
  code, action, request id and HTTP status, and a message that says what to do
  for credential and permission problems.
* **Secrets.** Messages never carry the secret or the STS token: the
  ``SignatureDoesNotMatch`` message embeds the server's string to sign (which
  holds the token) and network errors quote the signed URL; both are cut, and
  every known secret is masked. The SDK's own log records are scrubbed the same
  way by a filter on its loggers.
* **Credentials.** The provider is asked before every attempt; when it returns
  a different set (a refreshed RAM role token) the SDK client is rebuilt.
* **Counts.** ``counter`` tallies every HTTP attempt by (action, outcome).
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.auth.credentials import StsTokenCredential
from aliyunsdkcore.auth.signers.sts_token_signer import StsTokenSigner
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest

from flannel_alivpc.clients.credentials import CredentialProvider, Credentials
from flannel_alivpc.core.cloud import Product
from flannel_alivpc.core.errors import (
    AuthCloudError,
    CloudError,
    ConfigError,
    MetadataError,
    MetadataNotFound,
    NotFoundCloudError,
    PermanentCloudError,
    QuotaCloudError,
    RetryableCloudError,
)
from flannel_alivpc.core.retry import RetryPolicy, retry_call
from flannel_alivpc.core.secrets import Secret, redact

log = logging.getLogger(__name__)

# product -> (SDK product code, API version, request package of the SDK)
PRODUCTS: dict[str, tuple[str, str, str]] = {
    "vpc": ("Vpc", "2016-04-28", "v20160428"),
    "ecs": ("Ecs", "2014-05-26", "v20140526"),
    "slb": ("Slb", "2014-05-15", "v20140515"),
    # Quota Center: one central endpoint (quotas.aliyuncs.com) for every region.
    "quotas": ("quotas", "2020-05-10", "v20200510"),
}
DEFAULT_RETRY = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=8.0)

# -- error classification -----------------------------------------------------------

RETRYABLE_CODES = frozenset({
    "TaskConflict",
    "IncorrectRouteEntryStatus",
    "IncorrcetRouteEntryStatus",  # sic, as older VPC docs list it
    "OperationConflict",
    "ServiceUnavailable",
    "InternalError",
    "UnknownError",
    "SystemBusy",
    "OperationFailed.DistibuteLock",  # sic
    "LastTokenProcessing",
    "IncorrectStatus.RouteTableStatus",
    "IncorrectVpcStatus",
    # A retry is signed anew with a fresh nonce, so a nonce clash cannot repeat.
    "SignatureNonceUsed",
    # Client side: timeouts, refused or dropped connections.
    "SDK.HttpError",
})
AUTH_CODES = frozenset({"InvalidAccessKeySecret", "SignatureDoesNotMatch", "NoPermission", "SDK.InvalidCredential"})
# "*.NotFound" codes that do not mean "the resource you named is gone": an idempotent
# delete must not take them for success.
NOT_A_MISSING_RESOURCE = frozenset({"InvalidAction.NotFound", "InvalidRegionId.NotFound"})


def error_class_for(code: str, http_status: int | None) -> type[CloudError]:
    """The ``core.errors`` class for an API error code and HTTP status."""
    if (code.startswith(("InvalidAccessKeyId", "InvalidSecurityToken"))
            or code in AUTH_CODES):
        return AuthCloudError
    if code.startswith("Throttling") or code in RETRYABLE_CODES or (http_status is not None and http_status >= 500):
        return RetryableCloudError
    if code.startswith("QuotaExceeded") or code.endswith("OverLimit"):
        return QuotaCloudError
    if code.endswith("NotFound") and code not in NOT_A_MISSING_RESOURCE:
        return NotFoundCloudError  # also "Forbidden.VpcNotFound": a missing VPC, not a RAM refusal
    if code.startswith("Forbidden"):
        return AuthCloudError
    return PermanentCloudError


OUTCOMES: dict[type[CloudError], str] = {
    RetryableCloudError: "retryable",
    NotFoundCloudError: "not_found",
    AuthCloudError: "auth",
    QuotaCloudError: "quota",
    PermanentCloudError: "permanent",
}


def outcome_of(error: CloudError) -> str:
    for cls, name in OUTCOMES.items():
        if isinstance(error, cls):
            return name
    return "error"


# -- scrubbing ------------------------------------------------------------------------

_STRING_TO_SIGN = re.compile(r"(string to sign is)\s*:.*", re.IGNORECASE | re.DOTALL)
# A query string that carries parameters (the signed URL quoted by network errors).
_QUERY = re.compile(r"\?(?=[^\s'\"]*=)[^\s'\"()<>]*")
# Sensitive parameters wherever they appear: name=value, name%3Dvalue, 'name': 'value'.
_SENSITIVE = re.compile(
    r"(SecurityToken|Signature|AccessKeySecret|x-acs-security-token)"
    r"(=|%3D|%253D|['\"]?\s*:\s*['\"]?)[^&\s'\",%}]+"
)

_known_secrets: deque[str] = deque(maxlen=64)
_known_lock = threading.Lock()


def _variants(value: str) -> Iterable[str]:
    """A secret as it may appear: raw, percent-encoded once or twice, form-encoded."""
    once = quote(value, safe="-_.~")
    return {value, once, quote(once, safe="-_.~"), quote_plus(value)}


def _remember(credentials: Credentials) -> None:
    """Let the log filter mask this set's secret and token from now on."""
    with _known_lock:
        for secret in (credentials.access_key_secret, credentials.security_token):
            if secret is not None and secret:
                for variant in _variants(secret.reveal()):
                    if variant not in _known_secrets:
                        _known_secrets.append(variant)


def scrub(text: str, *secrets: Secret | str | None) -> str:
    """``text`` without strings to sign, signed query strings or any known secret."""
    text = _STRING_TO_SIGN.sub(r"\1: <omitted>", text)
    text = _QUERY.sub("?<query omitted>", text)
    text = _SENSITIVE.sub(r"\1\2***", text)
    extra: list[str] = []
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            extra.extend(_variants(value))
    with _known_lock:
        known = list(_known_secrets)
    # Longest first, so that a secret is masked whole before any shorter variant.
    return redact(text, *sorted({*known, *extra}, key=len, reverse=True))


class _ScrubSdkLogs(logging.Filter):
    """Masks secrets in the SDK's own log records.

    The SDK logs the request parameters at DEBUG (with the STS token) and every
    error at ERROR (with the server's string to sign). The error records are
    dropped -- ``AliyunApi`` reports each failure itself, classified and
    scrubbed, and the caller decides whether it is worth an error (a missing
    entry on delete is not) -- and the rest are scrubbed.
    """

    _DROP = ("ServerException occurred", "HttpError occurred")

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: keep only its template
            message = str(record.msg)
        if message.startswith(self._DROP):
            return False
        record.msg = scrub(message)
        record.args = None
        return True


_SDK_FILTER = _ScrubSdkLogs()


def _install_log_filter() -> None:
    names = [name for name in list(logging.Logger.manager.loggerDict) if name.startswith("aliyunsdk")]
    for name in names:
        logger = logging.getLogger(name)
        if _SDK_FILTER not in logger.filters:
            logger.addFilter(_SDK_FILTER)


_install_log_filter()

# -- requests ---------------------------------------------------------------------------

_ACTION_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")


def parse_endpoint(value: str) -> tuple[str, str]:
    """``(protocol, host[:port])`` of an endpoint override.

    ``http://h:p`` is plain HTTP; ``https://h:p`` and a bare ``h[:p]`` are HTTPS.
    """
    text = value.strip()
    protocol = "https"
    if text.startswith("http://"):
        protocol, text = "http", text[len("http://"):]
    elif text.startswith("https://"):
        text = text[len("https://"):]
    text = text.rstrip("/")
    if not _HOST_PORT.match(text):
        raise ConfigError(f"bad API endpoint {value!r}: expected http://HOST:PORT, https://HOST[:PORT] "
                          f"or HOST[:PORT] (no path)")
    return protocol, text


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flatten_params(params: Mapping[str, object]) -> dict[str, str]:
    """RPC query parameters from ``params``.

    Scalars become strings (booleans ``true``/``false``), ``None`` is left out,
    and lists become RepeatList keys numbered from 1: ``["a", "b"]`` under
    ``X`` gives ``X.1``, ``X.2``; a list of dicts under ``RouteEntries`` gives
    ``RouteEntries.1.DstCidrBlock`` and so on. Parameters the API wants as a
    JSON string (ECS ``InstanceIds``) must be passed already encoded.
    """
    flat: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            for n, item in enumerate(value, start=1):
                if isinstance(item, Mapping):
                    for field, field_value in item.items():
                        if field_value is not None:
                            flat[f"{name}.{n}.{field}"] = _text(field_value)
                elif item is not None:
                    flat[f"{name}.{n}"] = _text(item)
        elif isinstance(value, Mapping):
            raise TypeError(f"parameter {name}: pass a dict as a list of one, or JSON-encode it")
        else:
            flat[name] = _text(value)
    return flat


_request_classes: dict[tuple[str, str], Any] = {}


def _request_class(product: str, action: str) -> Any:
    """The SDK's typed request class for the action, or ``None`` if the package lacks it."""
    key = (product, action)
    if key not in _request_classes:
        package = PRODUCTS[product][2]
        try:
            module = importlib.import_module(f"aliyunsdk{product}.request.{package}.{action}Request")
            _request_classes[key] = getattr(module, f"{action}Request", None)
        except ImportError:
            _request_classes[key] = None
    return _request_classes[key]


class _Client(AcsClient):  # type: ignore[misc]
    """The SDK client, robust to one crash of its error parsing.

    On HTTP 400 ``SignatureDoesNotMatch`` the SDK splits the message on ``:``
    to compare string-to-sign values and raises ``IndexError`` when there is
    none (a proxy or gateway wording it differently); the error is then built
    here without that comparison.
    """

    def _get_server_exception(self, http_status: Any, response_body: Any, endpoint: Any,
                              string_to_sign: Any) -> Any:
        try:
            return super()._get_server_exception(http_status, response_body, endpoint, string_to_sign)
        except IndexError:
            code, message = self._parse_error_info_from_response_body(response_body.decode("utf-8"))
            try:
                request_id = json.loads(response_body).get("RequestId")
            except (ValueError, AttributeError):
                request_id = None
            return ServerException(code, message, http_status=http_status, request_id=request_id)


class CallCounter:
    """Thread-safe tally of API attempts by (action, outcome).

    Outcomes: ``success``, ``retryable``, ``not_found``, ``auth``, ``quota``,
    ``permanent``. Every HTTP attempt counts, so a call that succeeded on its
    third try adds two ``retryable`` and one ``success``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def add(self, action: str, outcome: str) -> None:
        with self._lock:
            self._counts[(action, outcome)] = self._counts.get((action, outcome), 0) + 1

    def get(self, action: str, outcome: str) -> int:
        with self._lock:
            return self._counts.get((action, outcome), 0)

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)


class AliyunApi:
    """Signs, sends, retries and classifies RPC calls to VPC, ECS, SLB and Quota Center.

    ``endpoint`` is the override for every product (``None``: let the SDK
    resolve it, over HTTPS). ``retry`` is the default policy; each call may
    pass its own. ``verify`` is passed to the SDK for TLS (a CA bundle path,
    or ``False`` for a test endpoint with a self-signed certificate).
    """

    def __init__(
        self,
        region: str,
        endpoint: str | None,
        credentials: CredentialProvider,
        connect_timeout: float = 5,
        read_timeout: float = 10,
        retry: RetryPolicy = DEFAULT_RETRY,
        *,
        verify: bool | str | None = None,
        counter: CallCounter | None = None,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if not region:
            raise ConfigError("no region: pass --region (e.g. cn-hangzhou)")
        self.region = region
        self.endpoint = endpoint
        self.protocol = "https"
        self.host: str | None = None
        if endpoint:
            self.protocol, self.host = parse_endpoint(endpoint)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retry = retry
        self.counter = counter if counter is not None else CallCounter()
        self._credentials = credentials
        self._verify = verify
        self._sleep = sleep
        self._lock = threading.Lock()
        self._client: Any = None
        self._client_credentials: Credentials | None = None

    def __repr__(self) -> str:
        where = f"{self.protocol}://{self.host}" if self.host else "sdk-resolved https"
        return f"AliyunApi(region={self.region!r}, endpoint={where!r})"

    @property
    def active_access_key_id(self) -> str | None:
        """The access key id the current SDK client signs with (``None`` before the first call)."""
        with self._lock:
            return self._client_credentials.access_key_id if self._client_credentials else None

    # -- building ---------------------------------------------------------------

    def build_request(self, product: Product, action: str, params: Mapping[str, object]) -> Any:
        """The SDK request object for one attempt: parameters, protocol and endpoint set.

        Nothing is sent; ``call`` builds a new one for every attempt.
        """
        if product not in PRODUCTS:
            raise ValueError(f"unknown product {product!r}; expected one of {sorted(PRODUCTS)}")
        if not _ACTION_NAME.match(action):
            raise ValueError(f"bad action name {action!r}")
        cls = _request_class(product, action)
        if cls is not None:
            request = cls()
        else:
            code, version, _ = PRODUCTS[product]
            request = CommonRequest(version=version, action_name=action, product=code)
            request.set_method("POST")
            request.set_location_service_code(product)
            endpoint_data = importlib.import_module(f"aliyunsdk{product}.endpoint").endpoint_data
            request.endpoint_map = endpoint_data.getEndpointMap()
            request.endpoint_regional = endpoint_data.getEndpointRegional()
        for name, value in flatten_params(params).items():
            request.add_query_param(name, value)
        request.set_protocol_type(self.protocol)
        if self.host:
            request.set_endpoint(self.host)
        return request

    def _new_client(self, credentials: Credentials) -> Any:
        common: dict[str, Any] = {
            "region_id": self.region,
            "auto_retry": False,
            "connect_timeout": self.connect_timeout,
            "timeout": self.read_timeout,
            "verify": self._verify,
        }
        if credentials.security_token is None:
            return _Client(ak=credentials.access_key_id, secret=credentials.access_key_secret.reveal(), **common)
        sts = StsTokenCredential(credentials.access_key_id, credentials.access_key_secret.reveal(),
                                 credentials.security_token.reveal())
        client = _Client(credential=sts, **common)
        if not isinstance(client._signer, StsTokenSigner):
            # The SDK prefers ALIYUN_ACCESS_KEY_ID/_SECRET from the environment over the
            # credential object; the provider we were given must win.
            client._signer = StsTokenSigner(sts)
        return client

    def _current(self, action: str) -> tuple[Credentials, Any]:
        """The credentials to sign with, and an SDK client built for them."""
        try:
            credentials = self._credentials.get()
        except MetadataNotFound as error:  # no such RAM role: an operator must act
            raise AuthCloudError(error.message, code=error.code or "NoCredentials", action=action) from None
        except MetadataError as error:  # the metadata service is away for now
            raise RetryableCloudError(f"cannot get RAM role credentials: {error.message}",
                                      code=error.code or "NoCredentials", action=action) from None
        with self._lock:
            if self._client is None or credentials != self._client_credentials:
                _remember(credentials)
                if self._client_credentials is not None:
                    log.debug("credentials changed (key %s -> %s): rebuilding the SDK client",
                              self._client_credentials.access_key_id, credentials.access_key_id)
                self._client = self._new_client(credentials)
                self._client_credentials = credentials
            return credentials, self._client

    # -- calling ------------------------------------------------------------------

    def call(
        self,
        product: Product,
        action: str,
        params: Mapping[str, object],
        *,
        retry: RetryPolicy | None = None,
    ) -> dict[str, Any]:
        """Run ``action`` and return the decoded JSON answer.

        Retryable failures are retried per ``retry`` (else the default policy);
        when attempts run out the last ``RetryableCloudError`` is raised.
        """
        policy = retry or self.retry

        def on_retry(attempt: int, error: Exception, delay: float) -> None:
            log.debug("%s %s attempt %d/%d failed (%s), retrying in %.2f s",
                      product, action, attempt, policy.max_attempts, error, delay)

        try:
            return retry_call(lambda: self._attempt(product, action, params), policy,
                              sleep=self._sleep, on_retry=on_retry)
        except RetryableCloudError as error:
            if policy.max_attempts <= 1:
                raise
            last = error
        # Still retryable, so attempts ran out: say so (raised here, outside the
        # except block, so that the error does not chain to a copy of itself).
        raise RetryableCloudError(f"{last.message} (gave up after {policy.max_attempts} attempts)",
                                  code=last.code, action=last.action, request_id=last.request_id,
                                  http_status=last.http_status)

    def _attempt(self, product: Product, action: str, params: Mapping[str, object]) -> dict[str, Any]:
        credentials, client = self._current(action)
        request = self.build_request(product, action, params)
        started = time.monotonic()
        error: CloudError | None = None
        body: Any = None
        try:
            body = client.do_action_with_exception(request)
        except ServerException as exc:
            error = self._server_error(exc, product, action, credentials)
        except ClientException as exc:
            error = self._client_error(exc, product, action, credentials)
        except Exception as exc:  # the SDK crashes on a few odd answers (IndexError, TypeError)
            error = PermanentCloudError(
                scrub(f"the SDK failed on the answer: {type(exc).__name__}: {exc}", *self._secrets(credentials)),
                code="SDK.Failure", action=action)
        elapsed = (time.monotonic() - started) * 1000
        # Raised outside the except blocks: the SDK exception, whose text is not
        # scrubbed, must not ride along as __context__ into tracebacks.
        if error is not None:
            self.counter.add(action, outcome_of(error))
            log.debug("%s %s -> %s %s in %.0f ms (RequestId %s)", product, action, outcome_of(error),
                      error.code, elapsed, error.request_id or "-")
            raise error
        data = self._decode(body, action)
        self.counter.add(action, "success")
        log.debug("%s %s -> success in %.0f ms (RequestId %s)", product, action, elapsed,
                  data.get("RequestId", "-"))
        return data

    @staticmethod
    def _decode(body: Any, action: str) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except (TypeError, ValueError):
            data = None
        if not isinstance(data, dict):
            raise PermanentCloudError("the API answered with a body that is not a JSON object",
                                      code="InvalidResponse", action=action)
        return data

    @staticmethod
    def _secrets(credentials: Credentials) -> tuple[Secret | None, ...]:
        return credentials.access_key_secret, credentials.security_token

    def _where(self) -> str:
        return f"{self.protocol}://{self.host}" if self.host else f"the SDK's endpoint for region {self.region}"

    def _server_error(self, exc: Any, product: str, action: str, credentials: Credentials) -> CloudError:
        code = str(exc.get_error_code() or "SDK.UnknownServerError")
        status = exc.get_http_status()
        request_id = str(exc.get_request_id() or "")
        server_message = scrub(str(exc.get_error_msg() or ""), *self._secrets(credentials))
        cls = error_class_for(code, status)
        if cls is AuthCloudError:
            message = self._auth_message(code, product, action, credentials, server_message)
        elif code == "InvalidRegionId.NotFound":
            message = f"region {self.region} is not known to {product}: check --region ({server_message})"
        elif code.startswith("InvalidTimeStamp"):
            message = f"{server_message} The node's clock is off by minutes: synchronise it (NTP)."
        else:
            message = server_message or f"HTTP {status}"
        return cls(scrub(message, *self._secrets(credentials)), code=code, action=action,
                   request_id=request_id, http_status=status)

    def _client_error(self, exc: Any, product: str, action: str, credentials: Credentials) -> CloudError:
        code = str(exc.get_error_code() or "SDK.ClientError")
        detail = scrub(str(exc.get_error_msg() or ""), *self._secrets(credentials))
        if len(detail) > 400:
            detail = detail[:400] + "..."
        if code == "SDK.HttpError":
            lowered = detail.lower()
            if "timed out" in lowered or "timeout" in lowered:
                reason = "no answer in time"
            elif "refused" in lowered:
                reason = "connection refused"
            elif "aborted" in lowered or "disconnected" in lowered or "reset" in lowered:
                reason = "connection closed without an answer"
            else:
                reason = "network error"
            message = f"cannot reach the {product} API at {self._where()}: {reason} ({detail})"
        elif code == "SDK.EndpointResolvingError":
            message = (f"the SDK knows no {product} endpoint for region {self.region}: "
                       f"check --region or set --api-endpoint ({detail})")
        else:
            message = detail or code
        cls = error_class_for(code, None)
        return cls(scrub(message, *self._secrets(credentials)), code=code, action=action)

    @staticmethod
    def _auth_message(code: str, product: str, action: str, credentials: Credentials, server_message: str) -> str:
        key = credentials.access_key_id
        role = credentials.security_token is not None
        source = "the instance's RAM role" if role else "ACCESS_KEY_ID/ACCESS_KEY_SECRET"
        if code.startswith("InvalidAccessKeyId"):
            return (f"bad access key id: {key} is not a valid access key ({code}); it was deleted, disabled "
                    f"or mistyped: check {source}")
        if code in ("InvalidAccessKeySecret", "SignatureDoesNotMatch"):
            if role:
                return (f"bad secret: the request signature did not match for STS key {key}; the RAM role "
                        f"credentials from the metadata service are inconsistent, check --metadata-url "
                        f"({server_message})")
            return (f"bad secret: the access key secret does not belong to access key {key}: "
                    f"check ACCESS_KEY_SECRET ({server_message})")
        if code == "InvalidSecurityToken.Expired":
            return (f"expired token: the STS security token of key {key} has expired; the RAM role "
                    f"credentials were not refreshed in time: check the node's clock and that the "
                    f"metadata service answers ({server_message})")
        if code.startswith("InvalidSecurityToken"):
            return (f"bad token: the STS security token was refused for key {key} ({code}): "
                    f"fetch fresh RAM role credentials ({server_message})")
        if code == "SDK.InvalidCredential":
            return f"no usable credentials: set ACCESS_KEY_ID/ACCESS_KEY_SECRET or attach a RAM role ({server_message})"
        who = "the instance's RAM role" if role else f"the RAM user of access key {key}"
        return (f"missing RAM permission for {action}: the policy of {who} does not allow "
                f"{product}:{action}; add it to the policy (see docs) ({server_message})")

    def close(self) -> None:
        """Close the SDK client's connection pool."""
        with self._lock:
            if self._client is not None:
                self._client.session.close()
