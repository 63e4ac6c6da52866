"""The ECS instance metadata service: who and where this instance is, and its RAM role keys.

Plain HTTP GETs under ``<base_url>/latest/meta-data/`` with short timeouts and a
couple of quick retries: the service is local to the host, so when it does not
answer within a second or two it is not there (not an ECS instance, or a wrong
``--metadata-url``) and waiting longer only delays the error.

Proxy variables are ignored for these requests (``trust_env`` off): the
metadata service is only reachable directly from the instance.
"""

from __future__ import annotations

import requests

from flannel_alivpc.core.cloud import InstanceIdentity
from flannel_alivpc.core.errors import MetadataError, MetadataNotFound
from flannel_alivpc.core.retry import RetryPolicy, retry_call

"""Where the service answers on a real ECS instance. Only ever used as a default."""

_HINT = "is this an ECS instance? set --metadata-url"


def _transient(error: BaseException) -> bool:
    return isinstance(error, MetadataError) and not isinstance(error, MetadataNotFound) \
        and error.code in ("Unreachable", "ServerError")


class MetadataClient:
    """Reads the metadata of the instance this process runs on.

    ``base_url`` is the service root (``http://100.100.100.200`` on ECS, the
    emulator's ``<endpoint>/meta/<instance-id>`` in tests); paths passed to
    ``get`` are relative to ``<base_url>/latest/meta-data/``, or to
    ``base_url`` when they start with ``/``.
    """

    def __init__(self, base_url: str, timeout: float = 2.0, retries: int = 2) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"metadata URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._policy = RetryPolicy(max_attempts=retries + 1, base_delay=0.05, max_delay=0.2)
        self._session = requests.Session()
        self._session.trust_env = False

    def __repr__(self) -> str:
        return f"MetadataClient({self.base_url!r})"

    def close(self) -> None:
        self._session.close()

    def url(self, path: str) -> str:
        if path.startswith("/"):
            return self.base_url + path
        return f"{self.base_url}/latest/meta-data/{path}"

    def get(self, path: str) -> str:
        """The text at ``path``.

        Raises ``MetadataNotFound`` (404: the item does not exist here) or
        ``MetadataError`` (the service is unreachable, slow or failing).
        """
        return retry_call(lambda: self._get_once(path), self._policy, is_retryable=_transient)

    def _get_once(self, path: str) -> str:
        url = self.url(path)
        try:
            response = self._session.get(url, timeout=self.timeout, allow_redirects=False)
        except requests.Timeout:
            raise MetadataError(f"the metadata service at {url} did not answer within {self.timeout:g} s: {_HINT}",
                                code="Unreachable", action=path) from None
        except requests.RequestException as error:
            reason = type(error).__name__
            raise MetadataError(f"cannot reach the metadata service at {url} ({reason}): {_HINT}",
                                code="Unreachable", action=path) from None
        status = response.status_code
        if status == 404:
            raise MetadataNotFound(f"metadata item {path!r} does not exist on this instance ({url})",
                                   code="NotFound", action=path, http_status=404)
        if status >= 500:
            raise MetadataError(f"the metadata service at {url} failed with HTTP {status}",
                                code="ServerError", action=path, http_status=status)
        if status != 200:
            raise MetadataError(f"the metadata service at {url} answered HTTP {status}",
                                code="UnexpectedStatus", action=path, http_status=status)
        return response.text.strip()

    # -- typed items ---------------------------------------------------------

    def instance_id(self) -> str:
        return self.get("instance-id")

    def region_id(self) -> str:
        return self.get("region-id")

    def zone_id(self) -> str:
        return self.get("zone-id")

    def private_ipv4(self) -> str:
        return self.get("private-ipv4")

    def network_type(self) -> str:
        """``vpc`` or ``classic``."""
        return self.get("network-type")

    def hostname(self) -> str:
        return self.get("hostname")

    def vpc_id(self) -> str:
        """Raises ``MetadataNotFound`` on the classic network."""
        return self.get("vpc-id")

    def vswitch_id(self) -> str:
        """Raises ``MetadataNotFound`` on the classic network."""
        return self.get("vswitch-id")

    def vpc_cidr_block(self) -> str:
        """Raises ``MetadataNotFound`` on the classic network."""
        return self.get("vpc-cidr-block")

    def vswitch_cidr_block(self) -> str:
        """Raises ``MetadataNotFound`` on the classic network."""
        return self.get("vswitch-cidr-block")

    def ram_role(self) -> str | None:
        """The attached RAM role's name, ``None`` when there is none."""
        try:
            listing = self.get("ram/security-credentials/")
        except MetadataNotFound:
            return None
        roles = [line.strip().rstrip("/") for line in listing.splitlines() if line.strip()]
        return roles[0] if roles else None

    def _optional(self, path: str) -> str | None:
        try:
            return self.get(path)
        except MetadataNotFound:
            return None

    def identity(self) -> InstanceIdentity:
        """Everything about this instance; the VPC items are ``None`` on classic."""
        return InstanceIdentity(
            instance_id=self.instance_id(),
            region_id=self.region_id(),
            zone_id=self.zone_id(),
            private_ipv4=self.private_ipv4(),
            network_type=self.network_type(),
            hostname=self.hostname(),
            vpc_id=self._optional("vpc-id"),
            vswitch_id=self._optional("vswitch-id"),
            vpc_cidr=self._optional("vpc-cidr-block"),
            vswitch_cidr=self._optional("vswitch-cidr-block"),
        )
