"""The vRouter's forwarding: a route table's Available entries as (destination -> next-hop address).

On Alibaba Cloud the vRouter forwards by its route table the moment an entry
is Available; Pending and Deleting entries do not forward yet/any more. The
data-plane test bed gives the emulator a real router (a network namespace);
``RouterSync`` keeps that router's kernel routes following the table:
every ``interval`` seconds it computes the forwarding view and hands it to a
``RouteSink`` whenever it changed (and again after a failed hand-over).

Only Custom entries with an ``Instance`` next hop forward to an address (the
instance's private IP); entries for stopped or released instances, NAT
gateways, VPN gateways and System entries are not mirrored (the sink's
router has nothing to send them to).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Mapping
from typing import Protocol

from flannel_alivpc.emulator.state import CloudState

log = logging.getLogger(__name__)

Forwarding = dict[ipaddress.IPv4Network, ipaddress.IPv4Address]


class RouteSink(Protocol):
    """Receives the full forwarding view each time it changes; raises to have it handed over again."""

    def sync(self, routes: Mapping[ipaddress.IPv4Network, ipaddress.IPv4Address]) -> None: ...


def forwarding(state: CloudState, table_id: str) -> Forwarding:
    """destination -> next-hop address for the table's Available Custom entries pointing at running instances."""
    result: Forwarding = {}
    with state.locked() as now:
        table = state.route_tables.get(table_id)
        if table is None:
            return result
        for entry in table.entries.values():
            if entry.entry_type != "Custom" or entry.next_hop_type != "Instance" or entry.status(now) != "Available":
                continue
            instance = state.instances.get(entry.next_hop_id)
            if instance is None or instance.status != "Running" or not instance.private_ip:
                continue
            destination = ipaddress.ip_network(entry.destination)
            if isinstance(destination, ipaddress.IPv4Network):
                result[destination] = ipaddress.IPv4Address(instance.private_ip)
    return result


class RouterSync:
    """Follows one route table into a ``RouteSink`` from a background thread."""

    def __init__(self, state: CloudState, table_id: str, sink: RouteSink, *, interval: float = 0.05) -> None:
        self.state = state
        self.table_id = table_id
        self.sink = sink
        self.interval = interval
        self.syncs = 0
        self._applied: Forwarding | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"router-sync-{table_id}", daemon=True)

    def start(self) -> RouterSync:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def sync_once(self) -> bool:
        """Hand the current view to the sink if it changed; True when it did."""
        view = forwarding(self.state, self.table_id)
        if view == self._applied:
            return False
        self.sink.sync(view)
        self._applied = view
        self.syncs += 1
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception:
                log.exception("router sync of %s failed; retrying", self.table_id)
                self._applied = None
            self._stop.wait(self.interval)
