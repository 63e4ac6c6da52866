"""The route table writer against the emulator: a writer that loses its lock mid-pass stops at its next step.

A long pass (many batches, each settling for the route delay) must not run
to its end beside the new writer once this node is deposed.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from flannel_alivpc.clients.vpc import VpcClient
from flannel_alivpc.core.network import Lease, LeaseAttrs
from flannel_alivpc.emulator.server import Emulator
from flannel_alivpc.routed.leases import LeaseSnapshot
from flannel_alivpc.routed.vpc_routes import BATCH_SIZE, TableWriter
from tests.clients.helpers import make_api


def test_a_deposed_writer_stops_after_the_batch_in_flight(emulator: Emulator) -> None:
    emulator.state.settings.route_delay = 0.2
    topo = emulator.bootstrap(instances=0)
    leases: dict[IPv4Network, Lease] = {}
    for n in range(3 * BATCH_SIZE):
        inst = emulator.state.create_instance(hostname=f"n{n}", vswitch_id=topo.vswitch_id)
        subnet = IPv4Network(f"10.244.{n}.0/24")
        leases[subnet] = Lease(subnet, LeaseAttrs(IPv4Address(inst.private_ip), "ali-vpc", {
            "InstanceId": inst.instance_id, "NetworkType": "vpc", "VpcId": topo.vpc_id}))
    snapshot = LeaseSnapshot(leases=leases, malformed={}, revision=1, in_sync=True, connected=True)
    api = make_api(emulator)
    writer = TableWriter(table_id=topo.route_table_id, vpc_id=topo.vpc_id, network=IPv4Network("10.244.0.0/16"),
                         api=VpcClient(api), snapshot=lambda: snapshot, cluster_id="c1")
    table = emulator.state.route_tables[topo.route_table_id]

    def custom() -> int:
        return sum(1 for e in table.entries.values() if e.entry_type == "Custom")

    def create_calls() -> int:
        return sum(emulator.faults.counters().get("CreateRouteEntries", {}).values())

    # The lock is lost while the first batch settles (the emulator already holds its entries).
    writer.still_writer = lambda: custom() == 0
    writer.reconcile()
    assert (create_calls(), custom()) == (1, BATCH_SIZE)
    # Still the writer: one pass does every remaining batch.
    writer.still_writer = lambda: True
    writer.reconcile()
    assert (create_calls(), custom()) == (3, 3 * BATCH_SIZE)
    api.close()
