"""Operator commands: ``flannel-alivpc routes`` and ``flannel-alivpc leases``.

``routes`` lists every flannel entry of each managed route table beside the
leases, with its state (ok, pending, missing, stale, wrong-next-hop, adopting,
conflict, unmanaged, unresolved) and why, using
the same ownership rules and planner as the daemon; ``--check`` exits 3 when
anything is not ok, 0 when the tables match the leases. Read-only: neither
command writes to etcd or the cloud.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.core.errors import ConfigError, MetadataError
from flannel_alivpc.core.routes import HEALTHY_STATES, RouteStatus, desired_routes, legacy_address, plan_routes
from flannel_alivpc.routed.config import DaemonConfig
from flannel_alivpc.routed.daemon import connect_cloud, connect_etcd
from flannel_alivpc.routed.leases import LeaseSnapshot, LeaseWatcher, read_cluster_id, read_network_config
from flannel_alivpc.routed.legacy_leases import LegacyLeaseResolver

EXIT_DRIFT = 3


def load_leases(etcd: EtcdClient, prefix: str, timeout: float = 10.0) -> LeaseSnapshot:
    """One complete listing of the leases (the daemon's watcher, stopped after its first sync)."""
    watcher = LeaseWatcher(etcd, prefix, lambda: None).start()
    try:
        if not watcher.wait_in_sync(timeout):
            raise ConfigError(f"could not list the leases under {prefix}/subnets within {timeout:.0f}s; "
                              f"is etcd reachable at {', '.join(etcd.endpoints)}?")
        return watcher.snapshot()
    finally:
        watcher.stop()


def _lease_rows(snapshot: LeaseSnapshot) -> list[dict[str, Any]]:
    rows = []
    now = time.time()
    for subnet, lease in sorted(snapshot.leases.items(), key=lambda item: int(item[0].network_address)):
        rows.append({
            "subnet": str(subnet),
            "public_ip": str(lease.attrs.public_ip),
            "backend": lease.attrs.backend_type or "-",
            "instance": lease.attrs.instance_id or "-",
            "network_type": str(lease.attrs.backend_field("NetworkType") or "-"),
            "expires_in": None if lease.expiration is None else round(lease.expiration - now),
        })
    for key, reason in sorted(snapshot.malformed.items()):
        rows.append({"subnet": key, "public_ip": "-", "backend": "MALFORMED", "instance": "-",
                     "network_type": "-", "expires_in": None, "reason": reason})
    return rows


def _print_table(rows: list[dict[str, Any]], columns: list[str], out: TextIO) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, "-") if r.get(c) is not None else "-")) for r in rows])
              for c in columns}
    out.write("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip() + "\n")
    for row in rows:
        cells = [str(row.get(c) if row.get(c) is not None else "-").ljust(widths[c]) for c in columns]
        out.write("  ".join(cells).rstrip() + "\n")


def run_leases(config: DaemonConfig, *, output: str, out: TextIO) -> int:
    etcd = connect_etcd(config)
    try:
        rows = _lease_rows(load_leases(etcd, config.etcd_prefix))
    finally:
        etcd.close()
    if output == "json":
        out.write(json.dumps(rows, indent=2) + "\n")
    else:
        _print_table(rows, ["subnet", "public_ip", "backend", "instance", "network_type", "expires_in"], out)
    return 0


@dataclass(frozen=True)
class TableView:
    table_id: str
    statuses: tuple[RouteStatus, ...]

    @property
    def clean(self) -> bool:
        return all(s.state in HEALTHY_STATES for s in self.statuses)


def collect_route_views(config: DaemonConfig, vpc_id: str | None, env: Mapping[str, str]) -> list[TableView]:
    etcd = connect_etcd(config)
    try:
        network = read_network_config(etcd, config.etcd_prefix)
        snapshot = load_leases(etcd, config.etcd_prefix)
        cluster_id = read_cluster_id(etcd, config.etcd_prefix)
    finally:
        etcd.close()
    cloud = connect_cloud(config, env, network)
    if not vpc_id:
        try:
            vpc_id = cloud.metadata.vpc_id()
        except MetadataError as error:
            raise ConfigError(f"cannot tell which VPC to inspect ({error}); pass --vpc-id") from None
    table_ids = config.route_table_ids or [t.table_id for t in cloud.vpc.list_route_tables(vpc_id)]
    leases = list(snapshot.leases.values())
    addresses = [a for a in map(legacy_address, leases) if a is not None]
    legacy = LegacyLeaseResolver(cloud.ecs, vpc_id).resolve(addresses) if addresses else {}
    desired = desired_routes(leases, vpc_id=vpc_id, legacy_instances=legacy)
    views = []
    for table_id in table_ids:
        plan = plan_routes(table_id=table_id, desired=desired, actual=cloud.vpc.list_route_entries(table_id),
                           network=network.network, in_sync=True, cluster_id=cluster_id,
                           protected=snapshot.malformed_subnets())
        views.append(TableView(table_id, plan.statuses))
    return views


def render_routes(views: list[TableView], *, output: str, out: TextIO) -> None:
    if output == "json":
        out.write(json.dumps([{
            "route_table_id": v.table_id,
            "clean": v.clean,
            "routes": [{"destination": str(s.destination), "state": s.state.value,
                        "lease_instance": s.desired_instance, "next_hop": s.actual_instance,
                        "entry_status": s.entry_status, "reason": s.reason or None} for s in v.statuses],
        } for v in views], indent=2) + "\n")
        return
    for view in views:
        rows = [{"destination": str(s.destination), "state": s.state.value,
                 "lease_instance": s.desired_instance, "next_hop": s.actual_instance,
                 "entry_status": s.entry_status, "reason": s.reason or None} for s in view.statuses]
        counts: dict[str, int] = {}
        for s in view.statuses:
            counts[s.state.value] = counts.get(s.state.value, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no flannel routes"
        out.write(f"route table {view.table_id}: {summary}\n")
        if rows:
            _print_table(rows, ["destination", "state", "lease_instance", "next_hop", "entry_status", "reason"], out)
        out.write("\n")


def run_routes(config: DaemonConfig, *, vpc_id: str | None, output: str, check: bool, out: TextIO,
               env: Mapping[str, str]) -> int:
    views = collect_route_views(config, vpc_id, env)
    render_routes(views, output=output, out=out)
    if check and not all(v.clean for v in views):
        return EXIT_DRIFT
    return 0

