"""The error hierarchy every cloud-facing caller sees.

Callers decide what to do by class, never by parsing strings:

* ``RetryableCloudError``  try again later (throttling, conflicting in-flight
  change, transient server or network failure); loops back off and requeue.
* ``NotFoundCloudError``   the named resource does not exist; idempotent deletes
  treat it as success.
* ``AuthCloudError``       credentials or RAM permissions are wrong; retrying the
  same call will not help, an operator must act.
* ``QuotaCloudError``      a quota is exhausted; an operator must act.
* ``PermanentCloudError``  any other refusal.

Every error carries the API code, the action and the request id (for support
tickets) and a message that never contains secrets.

etcd failures have their own branch under ``EtcdError``: ``EtcdUnavailable``
(no endpoint answered; retry), ``EtcdAuthError`` (credentials or role; an
operator must act) and ``WatchCompacted`` (a watch started before the
compaction point; re-list and watch again). ``LeaseLost`` is the signal that
this node's subnet lease is gone and the daemon must exit.
"""

from __future__ import annotations


class FlannelAliVpcError(Exception):
    """Base of all errors raised by this package."""


class ConfigError(FlannelAliVpcError):
    """Bad configuration or input: the message says what is wrong and how to fix it."""

    exit_code = 2
    """What the daemon exits with (flanneld's 1 where a flanneld user expects it)."""


class CloudError(FlannelAliVpcError):
    """A call to Alibaba Cloud (API or metadata service) failed."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        action: str = "",
        request_id: str = "",
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.action = action
        self.request_id = request_id
        self.http_status = http_status

    def __str__(self) -> str:
        parts = []
        if self.action:
            parts.append(self.action)
        if self.code:
            parts.append(self.code)
        head = ": ".join(parts)
        text = f"{head}: {self.message}" if head else self.message
        if self.request_id:
            text += f" (RequestId {self.request_id})"
        return text


class RetryableCloudError(CloudError):
    """Transient: throttling, a conflicting change in flight, 5xx, network errors."""


class NotFoundCloudError(CloudError):
    """The resource named in the call does not exist."""


class AuthCloudError(CloudError):
    """Credentials rejected or the RAM policy does not allow the action."""


class QuotaCloudError(CloudError):
    """A quota (route entries per table, listeners per SLB, ...) is exhausted."""


class PermanentCloudError(CloudError):
    """Refused for a reason that retrying will not change."""


class MetadataError(CloudError):
    """The instance metadata service failed or lacks the requested item."""


class MetadataNotFound(MetadataError):
    """The metadata item does not exist on this instance (e.g. vpc-id on classic)."""


class EtcdError(FlannelAliVpcError):
    """An etcd request failed for a reason other than the ones below."""


class EtcdUnavailable(EtcdError):
    """No etcd endpoint answered (refused, timed out, no leader): try again later."""


class EtcdAuthError(EtcdError):
    """etcd rejected the username/password or the user's role lacks permission."""


class WatchCompacted(EtcdError):
    """A watch asked for history that etcd has compacted away: re-list, then watch again."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"etcd history before revision {compact_revision} has been compacted")
        self.compact_revision = compact_revision


LEASE_LOST_MESSAGE = "Lease has been revoked. Shutting down daemon."


class LeaseLost(FlannelAliVpcError):
    """This node's subnet lease was deleted, expired or taken over: the daemon must exit."""

    def __init__(self, message: str = LEASE_LOST_MESSAGE) -> None:
        super().__init__(message)
