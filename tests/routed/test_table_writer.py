"""The route table writer against the emulator: a writer that loses its lock mid-pass stops at its next step,
and a quota lowered below what the table holds moves the excess to VXLAN, make-before-break.

A long pass (many batches, each settling for the route delay) must not run
to its end beside the new writer once this node is deposed.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network

from flannel_alivpc.clients.vpc import VpcClient
from flannel_alivpc.core.network import Lease, LeaseAttrs
from flannel_alivpc.core.routes import ProgrammedOverflow, TableOverflow
from flannel_alivpc.emulator.server import Emulator, Topology
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


class MemoryOverflowStore:
    """The lease source's overflow side as the writer sees it, kept in memory: publications and confirmations."""

    def __init__(self) -> None:
        self.published: list[TableOverflow] = []
        self.confirmations: dict[IPv4Network, ProgrammedOverflow] = {}

    def read_route_overflow(self, table_id: str) -> TableOverflow | None:
        return self.published[-1] if self.published else None

    def publish_route_overflow(self, table_id: str, overflow: TableOverflow) -> None:
        self.published.append(overflow)

    def overflow_programmed(self) -> Mapping[IPv4Network, ProgrammedOverflow]:
        return dict(self.confirmations)


def vpc_node_leases(emulator: Emulator, topo: Topology, count: int) -> dict[IPv4Network, Lease]:
    """``count`` instances in the VPC with leases as our daemons publish them (InstanceId, VtepMAC)."""
    leases: dict[IPv4Network, Lease] = {}
    for n in range(1, count + 1):
        inst = emulator.state.create_instance(hostname=f"n{n}", vswitch_id=topo.vswitch_id)
        subnet = IPv4Network(f"10.244.{n}.0/24")
        leases[subnet] = Lease(subnet, LeaseAttrs(IPv4Address(inst.private_ip), "ali-vpc", {
            "InstanceId": inst.instance_id, "NetworkType": "vpc", "VpcId": topo.vpc_id, "VNI": 1,
            "VtepMAC": f"02:00:00:00:00:{n:02x}"}))
    return leases


def test_a_quota_lowered_below_the_table_moves_the_excess_to_vxlan_only_once_every_node_confirms(
        emulator: Emulator) -> None:
    topo = emulator.bootstrap(instances=0)
    leases = vpc_node_leases(emulator, topo, 6)
    snapshot = LeaseSnapshot(leases=leases, malformed={}, revision=1, in_sync=True, connected=True)
    api = make_api(emulator)
    store = MemoryOverflowStore()
    settings = emulator.state.settings
    settings.route_quota = 10
    now = [0.0]
    writer = TableWriter(table_id=topo.route_table_id, vpc_id=topo.vpc_id, network=IPv4Network("10.244.0.0/16"),
                         api=VpcClient(api), snapshot=lambda: snapshot, cluster_id="c1", overflow_store=store,
                         read_quota=lambda: settings.route_quota, probe_interval=60.0, confirm_wait=0.2,
                         clock=lambda: now[0])
    table = emulator.state.route_tables[topo.route_table_id]

    def routed() -> set[str]:
        return {e.destination for e in table.entries.values() if e.entry_type == "Custom"}

    assert writer.reconcile() is None
    # Room for all: nothing in the overflow (the quota read is published for `routes`).
    assert len(routed()) == 6 and store.published[-1] == TableOverflow((), 10)
    # The quota drops to 4 (a temporary raise expired): the cloud keeps the 6 entries; the writer trims two,
    # highest address first, and publishes them as moving before touching the table.
    settings.route_quota = 4
    now[0] += 60  # the next read is due
    moving = (IPv4Network("10.244.6.0/24"), IPv4Network("10.244.5.0/24"))
    assert writer.reconcile() == 1.0  # waiting for confirmations
    assert len(routed()) == 6
    assert store.published[-1] == TableOverflow(moving, 4, moving)
    assert set(writer.report.unconfirmed) == {"10.244.6.0/24", "10.244.5.0/24"}
    # Every other node confirms but one: still nothing deleted.
    for subnet, lease in leases.items():
        if subnet not in moving and subnet != IPv4Network("10.244.1.0/24"):
            store.confirmations[subnet] = ProgrammedOverflow(frozenset(moving), lease.attrs.public_ip)
    # The moving nodes confirm each other (each needs the other's path).
    for subnet in moving:
        store.confirmations[subnet] = ProgrammedOverflow(frozenset(moving), leases[subnet].attrs.public_ip)
    # A confirmation left by an earlier holder of 10.244.1.0/24 (another PublicIP) does not count.
    store.confirmations[IPv4Network("10.244.1.0/24")] = ProgrammedOverflow(frozenset(moving),
                                                                           IPv4Address("192.0.2.1"))
    assert writer.reconcile() == 1.0 and len(routed()) == 6
    assert writer.report.unconfirmed["10.244.6.0/24"] == ["10.244.1.0/24"]
    store.confirmations[IPv4Network("10.244.1.0/24")] = ProgrammedOverflow(
        frozenset(moving), leases[IPv4Network("10.244.1.0/24")].attrs.public_ip)
    assert writer.reconcile() == 60.0  # the quota is read (and the queue probed) again in a minute
    assert routed() == {f"10.244.{n}.0/24" for n in range(1, 5)}
    # Still in the overflow, no longer moving; and the split holds across passes.
    assert store.published[-1] == TableOverflow(moving, 4)
    writer.reconcile()
    assert routed() == {f"10.244.{n}.0/24" for n in range(1, 5)} and store.published[-1] == TableOverflow(moving, 4)
    # The quota is raised again: the moved nodes come back, and leave the overflow once Available.
    settings.route_quota = 8
    now[0] += 60
    writer.reconcile()
    assert len(routed()) == 6 and store.published[-1] == TableOverflow((), 8)
    api.close()


def test_a_table_that_holds_more_than_the_quota_read_is_not_trimmed_once_it_took_more(emulator: Emulator) -> None:
    """A quota raised for this table alone does not show in the Quota Center: entries it took beyond the read
    prove the read wrong for this table, and nothing is trimmed on its account."""
    topo = emulator.bootstrap(instances=0)
    leases = vpc_node_leases(emulator, topo, 4)
    snapshot = LeaseSnapshot(leases=dict(list(leases.items())[:2]), malformed={}, revision=1, in_sync=True,
                             connected=True)
    api = make_api(emulator)
    store = MemoryOverflowStore()
    emulator.state.settings.route_quota = 10
    writer = TableWriter(table_id=topo.route_table_id, vpc_id=topo.vpc_id, network=IPv4Network("10.244.0.0/16"),
                         api=VpcClient(api), snapshot=lambda: snapshot, cluster_id="c1", overflow_store=store,
                         read_quota=lambda: 2, probe_interval=0.0)
    table = emulator.state.route_tables[topo.route_table_id]
    writer.reconcile()
    assert len([e for e in table.entries.values() if e.entry_type == "Custom"]) == 2
    # Two more leases: the read says the table is full, so they wait in the overflow; the probe shows room.
    snapshot = LeaseSnapshot(leases=leases, malformed={}, revision=2, in_sync=True, connected=True)
    writer.reconcile()
    writer.reconcile()
    assert len([e for e in table.entries.values() if e.entry_type == "Custom"]) == 4
    assert not store.published or not store.published[-1].moving
    api.close()
