"""Operator commands: ``flannel-alivpc routes`` and ``flannel-alivpc leases``.

``routes`` lists every flannel entry of each managed route table beside the
leases, with its state (ok, pending, missing, stale, wrong-next-hop, adopting,
conflict, unmanaged, unresolved, overflow) and why, and the path a peer takes
to each lease's node (the route table, or VXLAN for the overflow its writer
published when the table was full), using the same ownership rules and planner
as the daemon; ``--check`` exits 3 when
anything is not ok, 0 when the tables match the leases. Read-only: neither
command writes to etcd or the cloud.

Both print what kubectl's ``-o`` would: ``table`` (the columns that matter),
``wide`` (all of them), ``json`` or ``yaml`` (the same data, durations in
seconds). Tables show durations as kubectl shows ages (``5m3s``, ``23h``, ``2d``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import yaml

from flannel_alivpc.core.errors import ConfigError, MetadataError
from flannel_alivpc.core.routes import (
    HEALTHY_STATES,
    RouteState,
    RouteStatus,
    TableOverflow,
    desired_routes,
    legacy_address,
    plan_routes,
)
from flannel_alivpc.routed.config import DaemonConfig
from flannel_alivpc.routed.daemon import connect_cloud, open_lease_source
from flannel_alivpc.routed.lease_source import LeaseSource
from flannel_alivpc.routed.leases import LeaseSnapshot
from flannel_alivpc.routed.legacy_leases import LegacyLeaseResolver

EXIT_DRIFT = 3
OUTPUT_FORMATS = ("table", "wide", "json", "yaml")
"""The values of ``-o``/``--output``, named as kubectl names them."""


def load_leases(source: LeaseSource, timeout: float = 10.0) -> LeaseSnapshot:
    """One complete view of the leases (the daemon's watcher, stopped after its first sync)."""
    source.start_watching(lambda: None, expirations=True)
    if not source.wait_in_sync(timeout):
        raise ConfigError(f"could not list the leases from {source.description} within {timeout:.0f}s; "
                          f"is it reachable?")
    return source.snapshot()


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
            "vtep_mac": str(lease.attrs.backend_field("VtepMAC") or "-"),
            "expires_in": None if lease.expiration is None else round(lease.expiration - now),
        })
    for key, reason in sorted(snapshot.malformed.items()):
        rows.append({"subnet": key, "public_ip": "-", "backend": "MALFORMED", "instance": "-",
                     "network_type": "-", "vtep_mac": "-", "expires_in": None, "reason": reason})
    return rows


def human_duration(seconds: float) -> str:
    """A duration the way kubectl prints ages: exact while short, coarser as it grows (90s, 5m3s, 3h20m, 2d)."""
    total = max(0, int(seconds))
    minutes, hours, days = total // 60, total // 3600, total // 86400
    if total < 120:
        return f"{total}s"
    if minutes < 10:
        return f"{minutes}m{total % 60}s" if total % 60 else f"{minutes}m"
    if minutes < 3 * 60:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 2 * 365:
        return f"{days}d"
    years = days // 365
    if years < 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def _expiry(seconds: Any) -> str:
    if seconds is None:
        return "never"  # a key without an etcd lease
    return "expired" if seconds < 0 else human_duration(seconds)


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    wide_only: bool = False
    show: Callable[[Any], str] | None = None
    """How a cell shows its value (default ``str``; ``None`` values show as ``-``)."""

    def cell(self, row: Mapping[str, Any]) -> str:
        value = row.get(self.key)
        if self.show is not None:
            return self.show(value)
        return "-" if value is None or value == "" else str(value)


LEASE_COLUMNS = (
    Column("SUBNET", "subnet"), Column("PUBLIC IP", "public_ip"), Column("BACKEND", "backend"),
    Column("INSTANCE", "instance"), Column("EXPIRES", "expires_in", show=_expiry),
    Column("NETWORK TYPE", "network_type", wide_only=True), Column("VTEP MAC", "vtep_mac", wide_only=True),
    Column("REASON", "reason", wide_only=True),
)
ROUTE_COLUMNS = (
    Column("DESTINATION", "destination"), Column("STATE", "state"), Column("PATH", "path"),
    Column("LEASE INSTANCE", "lease_instance"),
    Column("NEXT HOP", "next_hop"), Column("ENTRY STATUS", "entry_status", wide_only=True),
    Column("REASON", "reason", wide_only=True),
)


def write_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, wide: bool, out: TextIO) -> None:
    shown = [c for c in columns if wide or not c.wide_only]
    cells = [[c.cell(row) for c in shown] for row in rows]
    widths = [max([len(c.header)] + [len(line[n]) for line in cells]) for n, c in enumerate(shown)]
    for line in [[c.header for c in shown], *cells]:
        out.write("   ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip() + "\n")


def write_data(data: Any, *, output: str, out: TextIO) -> None:
    """``-o json`` or ``-o yaml``: the rows as they are, keys in column order."""
    if output == "yaml":
        out.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1 << 16))
    else:
        out.write(json.dumps(data, indent=2) + "\n")


def _check_output(output: str) -> None:
    if output not in OUTPUT_FORMATS:
        raise ConfigError(f"--output {output!r}: use one of {', '.join(OUTPUT_FORMATS)}")


def run_leases(config: DaemonConfig, *, output: str, out: TextIO) -> int:
    _check_output(output)
    source = open_lease_source(config, os.environ, own_node=False)
    try:
        rows = _lease_rows(load_leases(source))
    finally:
        source.close()
    if output in ("json", "yaml"):
        write_data(rows, output=output, out=out)
    else:
        write_table(rows, LEASE_COLUMNS, wide=output == "wide", out=out)
    return 0


@dataclass(frozen=True)
class TableView:
    table_id: str
    statuses: tuple[RouteStatus, ...]
    overflow: TableOverflow = field(default_factory=TableOverflow)
    """What the table's writer published: the leases reached over VXLAN for lack of room, and the quota."""

    @property
    def clean(self) -> bool:
        return all(s.state in HEALTHY_STATES for s in self.statuses)


def collect_route_views(config: DaemonConfig, vpc_id: str | None, env: Mapping[str, str]) -> list[TableView]:
    source = open_lease_source(config, env, own_node=False)
    try:
        network = source.read_network_config()
        snapshot = load_leases(source)
        cluster_id = source.existing_cluster_id()
        cloud = connect_cloud(config, env, network)
        if not vpc_id:
            try:
                vpc_id = cloud.metadata.vpc_id()
            except MetadataError as error:
                raise ConfigError(f"cannot tell which VPC to inspect ({error}); pass --vpc-id") from None
        table_ids = config.route_table_ids or [t.table_id for t in cloud.vpc.list_route_tables(vpc_id)]
        published = {table_id: source.read_route_overflow(table_id) or TableOverflow() for table_id in table_ids}
    finally:
        source.close()
    leases = list(snapshot.leases.values())
    addresses = [a for a in map(legacy_address, leases) if a is not None]
    legacy = LegacyLeaseResolver(cloud.ecs, vpc_id).resolve(addresses) if addresses else {}
    desired = desired_routes(leases, vpc_id=vpc_id, legacy_instances=legacy)
    views = []
    for table_id in table_ids:
        overflow = published[table_id]
        entries = cloud.vpc.list_route_entries(table_id)
        # Published leases that hold an entry are on their way into the table (not Available yet), unless
        # they are moving off it (trimmed): only those are overflow for the plan.
        held = {e.destination for e in entries}
        plan = plan_routes(table_id=table_id, desired=desired, actual=entries, network=network.network,
                           in_sync=True, cluster_id=cluster_id, protected=snapshot.malformed_subnets(),
                           overflow=[s for s in overflow.subnets if str(s) not in held or s in overflow.moving])
        views.append(TableView(table_id, plan.statuses, overflow))
    return views


def peer_path(status: RouteStatus, overflow: TableOverflow) -> str | None:
    """How peers reach the lease's node: ``vxlan`` while it is in the published overflow, else the table."""
    if status.destination in overflow.subnets:
        return "vxlan"
    if status.desired_instance is not None and status.state in (RouteState.OK, RouteState.ADOPTING):
        return "route-table"
    return None


def _route_rows(view: TableView) -> list[dict[str, Any]]:
    rows = []
    for s in view.statuses:
        path = peer_path(s, view.overflow)
        reason = s.reason
        if path == "vxlan" and s.state is not RouteState.OVERFLOW:
            reason = "in the overflow until its entry is Available: reached over VXLAN meanwhile"
        rows.append({"destination": str(s.destination), "state": s.state.value, "path": path,
                     "lease_instance": s.desired_instance, "next_hop": s.actual_instance,
                     "entry_status": s.entry_status, "reason": reason or None})
    return rows


def render_routes(views: list[TableView], *, output: str, out: TextIO) -> None:
    _check_output(output)
    if output in ("json", "yaml"):
        write_data([{"route_table_id": v.table_id, "clean": v.clean, "quota": v.overflow.quota,
                     "overflow": [str(s) for s in v.overflow.subnets],
                     "moving": [str(s) for s in v.overflow.moving], "routes": _route_rows(v)} for v in views],
                   output=output, out=out)
        return
    for view in views:
        counts: dict[str, int] = {}
        for s in view.statuses:
            counts[s.state.value] = counts.get(s.state.value, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no flannel routes"
        if view.overflow.subnets:
            quota = f"quota {view.overflow.quota}" if view.overflow.quota is not None else "quota reached"
            moving = f"; {len(view.overflow.moving)} moving off the table" if view.overflow.moving else ""
            summary += (f" ({quota}: {len(view.overflow.subnets)} nodes reached over VXLAN until the quota is "
                        f"raised{moving})")
        out.write(f"route table {view.table_id}: {summary}\n")
        if view.statuses:
            write_table(_route_rows(view), ROUTE_COLUMNS, wide=output == "wide", out=out)
            if output == "table" and any(s.reason for s in view.statuses):
                out.write("(some entries need attention: -o wide shows why)\n")
        out.write("\n")


def run_routes(config: DaemonConfig, *, vpc_id: str | None, output: str, check: bool, out: TextIO,
               env: Mapping[str, str]) -> int:
    views = collect_route_views(config, vpc_id, env)
    render_routes(views, output=output, out=out)
    if check and not all(v.clean for v in views):
        return EXIT_DRIFT
    return 0

