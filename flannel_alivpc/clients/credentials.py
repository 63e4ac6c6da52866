"""Alibaba Cloud credentials: a static access key from the environment, or a RAM role.

A provider's ``get()`` is called before every API request, so it must be cheap
when nothing changes; ``clients.aliyun_sdk.AliyunApi`` rebuilds its SDK client
whenever the returned value differs from the last one.

RAM role credentials come from the instance metadata service through our own
``MetadataClient``, never through the SDK's ``EcsRamRoleCredential``: that one
hard-codes the address 100.100.100.200, fetches without a timeout and ignores
the ``Expiration`` it is given.
"""

from __future__ import annotations

import calendar
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from flannel_alivpc.core.errors import ConfigError, MetadataError, MetadataNotFound
from flannel_alivpc.core.secrets import Secret

log = logging.getLogger(__name__)

ROLE_DIRECTORY = "ram/security-credentials/"


@dataclass(frozen=True)
class Credentials:
    """One set of credentials. The secret and the token print as ``***``.

    ``expiration`` is a Unix time (seconds), ``None`` for long-lived keys.
    """

    access_key_id: str
    access_key_secret: Secret
    security_token: Secret | None = None
    expiration: float | None = None

    @property
    def is_sts(self) -> bool:
        return self.security_token is not None


class CredentialProvider(Protocol):
    def get(self) -> Credentials: ...


class StaticCredentials:
    """A fixed access key (optionally with an STS token)."""

    def __init__(self, access_key_id: str, access_key_secret: Secret | str,
                 security_token: Secret | str | None = None, expiration: float | None = None) -> None:
        secret = access_key_secret if isinstance(access_key_secret, Secret) else Secret(access_key_secret)
        token = security_token if isinstance(security_token, Secret) or security_token is None \
            else Secret(security_token)
        if not access_key_id or not secret:
            raise ConfigError("an access key needs both an id and a secret")
        self._credentials = Credentials(access_key_id, secret, token, expiration)

    def get(self) -> Credentials:
        return self._credentials

    def __repr__(self) -> str:
        return f"StaticCredentials(access_key_id={self._credentials.access_key_id!r})"


# (id variable, secret variable), in order of preference: flannel's own names first.
_ENV_PAIRS = (
    ("ACCESS_KEY_ID", "ACCESS_KEY_SECRET"),
    ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
)
_ENV_TOKEN = "ALIBABA_CLOUD_SECURITY_TOKEN"


def credentials_from_env(env: Mapping[str, str]) -> StaticCredentials | None:
    """A static key from ``env``, or ``None`` when no key variable is set.

    ``ACCESS_KEY_ID``/``ACCESS_KEY_SECRET`` (the names flannel's ali-vpc backend
    used) win over ``ALIBABA_CLOUD_ACCESS_KEY_ID``/``ALIBABA_CLOUD_ACCESS_KEY_SECRET``.
    ``ALIBABA_CLOUD_SECURITY_TOKEN`` adds an STS token to the second pair. A pair
    with only one half set is a ``ConfigError``: silently falling back to the
    RAM role would hide the typo.
    """
    for id_name, secret_name in _ENV_PAIRS:
        key_id = env.get(id_name, "").strip()
        secret = env.get(secret_name, "").strip()
        if key_id and secret:
            token = env.get(_ENV_TOKEN, "").strip() if id_name.startswith("ALIBABA_CLOUD_") else ""
            return StaticCredentials(key_id, Secret(secret), Secret(token) if token else None)
        if key_id or secret:
            present, missing = (id_name, secret_name) if key_id else (secret_name, id_name)
            raise ConfigError(
                f"{present} is set but {missing} is not: set both to use an access key, "
                f"or neither to use the instance's RAM role"
            )
    return None


class MetadataSource(Protocol):
    """What ``RamRoleCredentials`` needs of ``clients.metadata.MetadataClient``."""

    def get(self, path: str) -> str: ...


def _parse_time(value: object, field: str) -> float:
    if not isinstance(value, str):
        raise ValueError(f"{field} is missing")
    try:
        return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        raise ValueError(f"{field} {value!r} is not a UTC time like 2024-01-01T00:00:00Z") from None


class RamRoleCredentials:
    """STS credentials of the instance's RAM role, refreshed before they expire.

    A new set is fetched once less than ``max(min_refresh_margin,
    refresh_fraction * lifetime)`` remains (15 minutes or a quarter of the
    lifetime by default). If that fetch fails while the current set is still
    valid, the current set is kept and the fetch is tried again after
    ``retry_interval``; once it has expired, the failure is raised. Thread-safe.
    """

    def __init__(
        self,
        metadata_client: MetadataSource,
        role: str | None = None,
        *,
        min_refresh_margin: float = 900.0,
        refresh_fraction: float = 0.25,
        retry_interval: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._metadata = metadata_client
        self._configured_role = role
        self._role = role
        self._min_margin = min_refresh_margin
        self._fraction = refresh_fraction
        self._retry_interval = retry_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._current: Credentials | None = None
        self._refresh_at = 0.0

    def __repr__(self) -> str:
        return f"RamRoleCredentials(role={self._role!r})"

    @property
    def role(self) -> str | None:
        """The role name, once given or discovered."""
        return self._role

    def get(self) -> Credentials:
        with self._lock:
            now = self._clock()
            current = self._current
            if current is not None and now < self._refresh_at:
                return current
            try:
                fresh, lifetime = self._fetch(now)
            except MetadataError as error:
                if current is not None and current.expiration is not None and now < current.expiration:
                    self._refresh_at = min(now + self._retry_interval, current.expiration)
                    log.warning("could not refresh the credentials of RAM role %s, keeping the current "
                                "ones (valid for %.0f s more): %s", self._role, current.expiration - now, error)
                    return current
                raise
            assert fresh.expiration is not None
            margin = max(self._min_margin, self._fraction * lifetime)
            refresh_at = fresh.expiration - margin
            if refresh_at <= now:
                # The service handed out a set that is already inside the margin (it
                # publishes the next one only some time before expiry): use it, ask again soon.
                refresh_at = now + min(self._retry_interval, max(fresh.expiration - now, 0.0) / 2)
            self._refresh_at = refresh_at
            if current is None or fresh.access_key_id != current.access_key_id:
                log.info("using credentials of RAM role %s (key %s, valid until %s)", self._role,
                         fresh.access_key_id, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(fresh.expiration)))
            self._current = fresh
            return fresh

    def _discover_role(self) -> str:
        try:
            listing = self._metadata.get(ROLE_DIRECTORY)
        except MetadataNotFound:
            listing = ""
        roles = [line.strip().rstrip("/") for line in listing.splitlines() if line.strip()]
        if not roles:
            raise MetadataNotFound(
                "no RAM role is attached to this instance: attach one that allows the VPC route "
                "actions, or set ACCESS_KEY_ID and ACCESS_KEY_SECRET",
                code="NoRamRole", action=ROLE_DIRECTORY,
            )
        if len(roles) > 1:
            log.warning("several RAM roles attached (%s), using %s", ", ".join(roles), roles[0])
        return roles[0]

    def _fetch(self, now: float) -> tuple[Credentials, float]:
        if self._role is None:
            self._role = self._discover_role()
        role = self._role
        path = ROLE_DIRECTORY + role
        try:
            text = self._metadata.get(path)
        except MetadataNotFound as error:
            if self._configured_role is None:
                self._role = None  # detached or replaced: look the role up again next time
            raise MetadataNotFound(
                f"the instance has no RAM role {role!r}: "
                f"check the role attached to the instance or the --ram-role setting ({error.message})",
                code="NoRamRole", action=path, http_status=error.http_status,
            ) from None
        try:
            data: Any = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if data.get("Code") != "Success":
                raise ValueError(f"Code is {data.get('Code')!r}, not 'Success'")
            for name in ("AccessKeyId", "AccessKeySecret", "SecurityToken"):
                if not isinstance(data.get(name), str) or not data[name]:
                    raise ValueError(f"{name} is missing")
            expiration = _parse_time(data.get("Expiration"), "Expiration")
            try:
                issued = _parse_time(data.get("LastUpdated"), "LastUpdated")
            except ValueError:
                issued = now
        except ValueError as error:
            # Never quote the document: it holds the secret and the token.
            raise MetadataError(f"unusable credentials document for RAM role {role}: {error}",
                                code="InvalidCredentials", action=path) from None
        credentials = Credentials(
            access_key_id=data["AccessKeyId"],
            access_key_secret=Secret(data["AccessKeySecret"]),
            security_token=Secret(data["SecurityToken"]),
            expiration=expiration,
        )
        return credentials, max(expiration - issued, 0.0)
