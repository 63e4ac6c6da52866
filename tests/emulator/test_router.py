"""The vRouter's forwarding view of a route table, and the loop that hands it to a router."""

from __future__ import annotations

import time
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network

import pytest

from flannel_alivpc.emulator.router import RouterSync, forwarding
from flannel_alivpc.emulator.server import Emulator, Topology


class Sink:
    def __init__(self, fail: int = 0) -> None:
        self.views: list[dict[IPv4Network, IPv4Address]] = []
        self.fail = fail

    def sync(self, routes: Mapping[IPv4Network, IPv4Address]) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("router busy")
        self.views.append(dict(routes))


def test_only_available_instance_entries_of_running_instances_forward(emulator: Emulator,
                                                                      topology: Topology) -> None:
    state = emulator.state
    first, second, third = (state.instances[i] for i in topology.instance_ids)
    table = topology.route_table_id
    state.add_custom_entry(table, "10.244.1.0/24", "Instance", first.instance_id)
    state.add_custom_entry(table, "10.244.2.0/24", "Instance", second.instance_id)
    state.add_custom_entry(table, "10.244.3.0/24", "Instance", third.instance_id)
    state.add_custom_entry(table, "0.0.0.0/0", "NatGateway", "ngw-1")
    pending = state.add_custom_entry(table, "10.244.4.0/24", "Instance", first.instance_id)
    pending.ready_at = time.time() + 3600
    third.status = "Stopped"
    assert forwarding(state, table) == {IPv4Network("10.244.1.0/24"): IPv4Address(first.private_ip),
                                        IPv4Network("10.244.2.0/24"): IPv4Address(second.private_ip)}
    assert forwarding(state, "vtb-nonexistent") == {}


def test_sink_gets_the_view_on_change_only_and_again_after_a_failure(emulator: Emulator,
                                                                     topology: Topology) -> None:
    state = emulator.state
    instance = state.instances[topology.instance_ids[0]]
    sink = Sink()
    sync = RouterSync(state, topology.route_table_id, sink)
    assert sync.sync_once() is True and sink.views == [{}]
    assert sync.sync_once() is False
    state.add_custom_entry(topology.route_table_id, "10.244.1.0/24", "Instance", instance.instance_id)
    assert sync.sync_once() is True
    assert sink.views[-1] == {IPv4Network("10.244.1.0/24"): IPv4Address(instance.private_ip)}
    failing = Sink(fail=1)
    looped = RouterSync(state, topology.route_table_id, failing, interval=0.01).start()
    try:
        deadline = time.monotonic() + 5
        while not failing.views and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        looped.stop()
    assert failing.views == [sink.views[-1]]


@pytest.mark.parametrize("status", ["Pending", "Deleting"])
def test_changing_entries_do_not_forward(emulator: Emulator, topology: Topology, status: str) -> None:
    state = emulator.state
    entry = state.add_custom_entry(topology.route_table_id, "10.244.9.0/24", "Instance", topology.instance_ids[0])
    if status == "Pending":
        entry.ready_at = time.time() + 3600
    else:
        entry.delete_at = time.time() + 3600
    assert forwarding(state, topology.route_table_id) == {}
