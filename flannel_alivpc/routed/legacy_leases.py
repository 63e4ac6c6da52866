"""Finds the ECS instance behind leases flannel's own ali-vpc backend wrote.

Those leases are ``{"PublicIP": ..., "PublicIPv6": null}``: no InstanceId.
In a VPC the PublicIP is the instance's private address, so one
DescribeInstances call filtered by VPC and address (up to 100 addresses a
call) names them all. Answers are cached, so a steady cluster makes no ECS
call at all; an address with no instance is asked again after a short while
(the node may still be booting), a found one after a longer while (private
addresses are reused once an instance is released).

A failed lookup is not an answer: the addresses stay unresolved, which keeps
their route entries (see ``core.routes``), and the failure is logged once per
change of state, not once per pass.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from flannel_alivpc.core.cloud import Instance
from flannel_alivpc.core.errors import CloudError

log = logging.getLogger(__name__)

FOUND_TTL = 600.0
"""Seconds an address -> instance answer is trusted."""
NOT_FOUND_TTL = 30.0
"""Seconds before an address with no instance (or a failed lookup) is asked again."""


class InstanceDirectory(Protocol):
    def describe_instances(self, *, instance_ids: Sequence[str] | None = None, vpc_id: str | None = None,
                           private_ips: Sequence[str] | None = None) -> list[Instance]: ...


class LegacyLeaseResolver:
    """Maps old-backend leases' PublicIPs to instance ids; shared by every table writer of a daemon."""

    def __init__(self, ecs: InstanceDirectory, vpc_id: str, *, found_ttl: float = FOUND_TTL,
                 not_found_ttl: float = NOT_FOUND_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._ecs = ecs
        self._vpc_id = vpc_id
        self._found_ttl = found_ttl
        self._not_found_ttl = not_found_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[ipaddress.IPv4Address, tuple[str | None, float]] = {}
        """address -> (instance id or None, when the answer expires)."""
        self._failing = False
        self.lookups = 0

    def resolve(self, addresses: Iterable[ipaddress.IPv4Address]) -> dict[ipaddress.IPv4Address, str]:
        """The instance of each address that has one; at most one (batched) lookup for the stale ones."""
        wanted = set(addresses)
        with self._lock:
            now = self._clock()
            stale = sorted(a for a in wanted if a not in self._known or self._known[a][1] <= now)
            if stale:
                self._lookup(stale, now)
            # An answer that just expired still serves while its refresh failed.
            return {a: found for a in wanted if (found := self._known.get(a, (None, 0.0))[0])}

    def _lookup(self, addresses: list[ipaddress.IPv4Address], now: float) -> None:
        self.lookups += 1
        try:
            instances = self._ecs.describe_instances(vpc_id=self._vpc_id, private_ips=[str(a) for a in addresses])
        except CloudError as error:
            if not self._failing:
                log.warning("cannot look up the instances of %d leases written by flannel's old ali-vpc backend "
                            "(%s); their route entries are kept until the lookup works", len(addresses), error)
            self._failing = True
            for address in addresses:
                previous = self._known.get(address, (None, 0.0))[0]
                self._known[address] = (previous, now + self._not_found_ttl)
            return
        if self._failing:
            log.info("instance lookups for old-backend leases work again")
        self._failing = False
        by_ip = {inst.private_ip: inst.instance_id for inst in instances if inst.private_ip}
        for address in addresses:
            instance_id = by_ip.get(str(address))
            previous = self._known.get(address, (None, 0.0))[0]
            if instance_id and instance_id != previous:
                log.info("lease at %s (flannel's old ali-vpc backend) is instance %s", address, instance_id)
            elif not instance_id and (address not in self._known or previous):
                log.warning("no instance of VPC %s has the address %s of an old-backend lease; its subnet gets "
                            "no route entry (and none is deleted) until one does", self._vpc_id, address)
            ttl = self._found_ttl if instance_id else self._not_found_ttl
            self._known[address] = (instance_id, now + ttl)
