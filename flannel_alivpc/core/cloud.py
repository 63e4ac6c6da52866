"""Typed views of the Alibaba Cloud resources this project reads and writes.

Pure values: the client layer (``flannel_alivpc.clients``) builds them from API
answers, everything above it works with them and never with raw JSON. All are
frozen, and sequences are tuples, so they can be shared between threads and
used as dict keys or set members.

``ApiCaller`` is the one seam between the typed wrappers and the SDK: the
product clients only need something with its ``call`` method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from flannel_alivpc.core.retry import RetryPolicy

Product = Literal["vpc", "ecs", "slb", "quotas"]


class ApiCaller(Protocol):
    """Runs one RPC action and returns the decoded JSON answer.

    Raises a ``flannel_alivpc.core.errors.CloudError`` subclass on failure.
    """

    def call(
        self,
        product: Product,
        action: str,
        params: Mapping[str, object],
        *,
        retry: RetryPolicy | None = None,
    ) -> dict[str, Any]: ...


DEFAULT_METADATA_URL = "http://100.100.100.200"
"""The ECS metadata service's address: only ever a default, never used by tests or the demo."""


@dataclass(frozen=True)
class Vpc:
    vpc_id: str
    cidr: str
    vrouter_id: str
    route_table_ids: tuple[str, ...]
    vswitch_ids: tuple[str, ...]


@dataclass(frozen=True)
class VSwitch:
    vswitch_id: str
    vpc_id: str
    cidr: str
    zone: str
    route_table_id: str


@dataclass(frozen=True)
class RouteTable:
    table_id: str
    vpc_id: str
    vrouter_id: str
    table_type: str
    """``System`` (the VPC's default table) or ``Custom``."""
    vswitch_ids: tuple[str, ...]


@dataclass(frozen=True)
class RouteEntry:
    table_id: str
    entry_id: str
    destination: str
    entry_type: str
    """``System``, ``Custom`` (ours, among others), ``BGP``, ``CEN``, ..."""
    status: str
    """``Pending``, ``Available``, ``Modifying`` or ``Deleting``."""
    next_hop_type: str
    """``Instance`` for node routes; empty for System entries."""
    next_hop_id: str
    name: str = ""
    description: str = ""


@dataclass(frozen=True)
class RouteSpec:
    """A route entry to create."""

    destination: str
    next_hop_id: str
    next_hop_type: str = "Instance"
    name: str = ""
    description: str = ""


@dataclass(frozen=True)
class BatchFailure:
    """One item of a batch call that the cloud refused."""

    destination: str
    next_hop_id: str
    entry_id: str
    code: str
    message: str


@dataclass(frozen=True)
class BatchResult:
    succeeded: int
    created_ids: tuple[str, ...]
    """Ids of the entries a create batch made, in no particular order (empty for deletes)."""
    failures: tuple[BatchFailure, ...]

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class Instance:
    instance_id: str
    hostname: str
    private_ip: str
    network_type: str
    """``vpc`` or ``classic``."""
    vpc_id: str
    vswitch_id: str
    zone: str
    status: str
    """``Pending``, ``Running``, ``Starting``, ``Stopping`` or ``Stopped``."""


@dataclass(frozen=True)
class InstanceIdentity:
    """What the metadata service says about the instance we run on.

    The VPC items are ``None`` on the classic network, where they do not exist.
    """

    instance_id: str
    region_id: str
    zone_id: str
    private_ipv4: str
    network_type: str
    hostname: str
    vpc_id: str | None
    vswitch_id: str | None
    vpc_cidr: str | None
    vswitch_cidr: str | None
