"""Who may call the RPC API: the request as received, access keys and STS tokens, timestamps, nonces and
both signature versions.

Signature 1.0 travels in the parameters (``AccessKeyId``, ``Signature``,
``Timestamp``, ``SignatureNonce``, ``SecurityToken``): the legacy SDKs send it,
and so do the V2 SDKs configured with ``signature_algorithm='v2'``. V3 travels
in headers (``Authorization``, ``x-acs-date``, ``x-acs-signature-nonce``,
``x-acs-content-sha256``, ``x-acs-security-token``), with the action and
version in ``x-acs-action``/``x-acs-version``: the V2 SDKs send it by default.
A request is checked as V3 when it has an ``Authorization`` header, or action
headers and no 1.0 credentials. Both versions share one nonce memory, as they
share one gateway.
"""

from __future__ import annotations

import calendar
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import parse_qsl

from flannel_alivpc.emulator import signature, signature_v3
from flannel_alivpc.emulator.errors import ApiError, missing_parameter
from flannel_alivpc.emulator.state import AccessKey, CloudState

_NONCE_MEMORY = 100_000
# The SDKs split this message at the first ":" (the legacy one compares the rest
# with its own string to sign), so the wording and the colon must stay exactly so.
SIGNATURE_MISMATCH = "Specified signature is not matched with our calculation. server string to sign is:"
_INCOMPLETE = "The request signature does not conform to Aliyun standards."


@dataclass
class ApiRequest:
    """One HTTP request to the RPC gateway, as it arrived."""

    method: str
    path: str = "/"
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, list[str]] = field(default_factory=dict)
    """Every value received under each header name; names lower-case."""
    body: bytes = b""

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    @cached_property
    def form(self) -> list[tuple[str, str]]:
        if self.body and "x-www-form-urlencoded" in self.header("content-type"):
            return parse_qsl(self.body.decode(), keep_blank_values=True)
        return []

    @cached_property
    def params(self) -> dict[str, str]:
        """Query and form parameters together; a form value wins over a query value of the same name."""
        return {**dict(self.query), **dict(self.form)}

    @property
    def signed_v3(self) -> bool:
        if self.header("authorization"):
            return True
        has_v1_credentials = "Signature" in self.params or "AccessKeyId" in self.params
        return bool(self.header("x-acs-action")) and not has_v1_credentials

    @property
    def action(self) -> str:
        return (self.header("x-acs-action") if self.signed_v3 else "") or self.params.get("Action", "")

    @property
    def version(self) -> str:
        return (self.header("x-acs-version") if self.signed_v3 else "") or self.params.get("Version", "")


class Authenticator:
    """Checks one request's credentials, timestamp, signature and nonce against the cloud's access keys."""

    def __init__(self, state: CloudState) -> None:
        self.state = state
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, request: ApiRequest) -> None:
        if request.signed_v3:
            self._check_v3(request)
        else:
            self._check_v1(request.method, request.params)

    # -- signature 1.0 ---------------------------------------------------------

    def _check_v1(self, method: str, params: dict[str, str]) -> None:
        key_id = params.get("AccessKeyId", "")
        if not key_id:
            raise missing_parameter("AccessKeyId")
        if not params.get("Signature"):
            raise missing_parameter("Signature")
        key = self._access_key(key_id, params.get("SecurityToken", ""))
        self._check_time(params.get("Timestamp", ""), "Timestamp")
        if not signature.signature_matches(method, params, key.secret):
            raise ApiError(400, "SignatureDoesNotMatch", SIGNATURE_MISMATCH + signature.string_to_sign(method, params))
        nonce = params.get("SignatureNonce", "")
        if not nonce:
            raise missing_parameter("SignatureNonce")
        self._remember(nonce)

    # -- signature V3 ------------------------------------------------------------

    def _check_v3(self, request: ApiRequest) -> None:
        header = request.header("authorization")
        if not header:
            raise missing_parameter("Authorization")
        auth = signature_v3.parse_authorization(header)
        if auth is None:
            raise ApiError(400, "IncompleteSignature", f"{_INCOMPLETE} The Authorization header must read "
                           "'<algorithm> Credential=<AccessKeyId>,SignedHeaders=<names>,Signature=<hex>'.")
        if auth.algorithm not in signature_v3.DIGESTS:
            raise ApiError(400, "InvalidSignatureMethod", "Specified signature method is not valid.")
        key = self._access_key(auth.access_key_id, request.header("x-acs-security-token"))
        self._check_time(request.header("x-acs-date"), "x-acs-date")
        for required in ("x-acs-signature-nonce", "x-acs-content-sha256"):
            if not request.header(required):
                raise missing_parameter(required)
        signed = {name.lower() for name in auth.signed_headers}
        unsigned = sorted(name for name in request.headers
                          if (name == "host" or name.startswith("x-acs-")) and name not in signed)
        if unsigned:
            raise ApiError(400, "IncompleteSignature", f"{_INCOMPLETE} SignedHeaders must name host and every "
                           f"x-acs-* header sent; not signed: {', '.join(unsigned)}.")
        # The payload line is the digest of the body as received, so a body that
        # does not match x-acs-content-sha256 fails the signature like any other change.
        canonical = signature_v3.canonical_request(
            request.method, request.path, request.query, request.headers, auth.signed_headers,
            signature_v3.hex_digest(auth.algorithm, request.body))
        to_sign = signature_v3.string_to_sign(auth.algorithm, canonical)
        if not signature_v3.signature_matches(auth.algorithm, to_sign, key.secret, auth.signature):
            raise ApiError(400, "SignatureDoesNotMatch", SIGNATURE_MISMATCH + to_sign)
        self._remember(request.header("x-acs-signature-nonce"))

    # -- shared checks -----------------------------------------------------------

    def _access_key(self, key_id: str, token: str) -> AccessKey:
        key = self.state.access_keys.get(key_id)
        if key is None:
            raise ApiError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if key.security_token:
            if not token:
                raise ApiError(400, "InvalidSecurityToken.MismatchWithAccessKey",
                               "Specified SecurityToken mismatch with the AccessKey.")
            if token != key.security_token:
                raise ApiError(400, "InvalidSecurityToken.Malformed", "Specified SecurityToken is malformed.")
            if key.expires_at is not None and self.state.clock() >= key.expires_at:
                raise ApiError(400, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired.")
        return key

    def _check_time(self, stamp: str, name: str) -> None:
        if not stamp:
            raise missing_parameter(name)
        try:
            sent = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            raise ApiError(400, "InvalidTimeStamp.Format",
                           "Specified time stamp or date value is not well formatted.") from None
        if abs(self.state.clock() - sent) > self.state.settings.timestamp_skew:
            raise ApiError(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")

    def _remember(self, nonce: str) -> None:
        """Refuse a nonce seen before; only called once the signature has matched."""
        with self._lock:
            if nonce in self._nonces:
                raise ApiError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
            self._nonces[nonce] = self.state.clock()
            while len(self._nonces) > _NONCE_MEMORY:
                self._nonces.popitem(last=False)
