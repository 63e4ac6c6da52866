"""Route-table quota overflow benchmark: N leases on a table that holds Q, the quota raised, then lowered again.

Three real daemons run in node namespaces of the data-plane test bed (root
needed; nothing outside the namespaces it creates is touched). N-3 more
ali-vpc leases (emulated instances, each with a VXLAN VtepMAC as our
daemons publish) are written to etcd at once and the clock starts; the
emulator's table holds Q custom entries.

* until split: the table holds Q Available entries, the writer has published
  the other N-Q as overflow, and every real daemon's kernel has a
  ``flannel.1`` route to each of them (every pair has a path: the route
  table or VXLAN); compared with the routed-only floor ceil(Q/50) x D (the
  time Q entries take to settle, batch after batch);
* API calls of the whole cluster to get there (CreateRouteEntries, the
  refused ones included, and every call);
* move back: the quota raised to R (default 2Q) through the emulator's
  settings (as a granted quota request), until every lease has its
  Available entry, the overflow is empty and no daemon keeps a VXLAN route
  for them; compared with the floor ceil((N-Q)/50) x D plus up to one resync
  (the writer reads the quota once per resync);
* move out: the quota lowered to Q again (a temporary raise expired), until
  the table holds Q entries, the N-Q it trimmed are published overflow,
  every real daemon has a VXLAN route to each, and no entry is left
  waiting for confirmations; the emulated nodes confirm their VXLAN path as
  soon as a lease is published as moving (the real daemons confirm theirs);
  compared with the same floor.

Run (as root): .venv/bin/python benchmarks/quota_overflow.py [--leases 300] [--quota 200] [--raised 400]
[--route-delay 1]
Prints a table, then one JSON document.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

for _name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
    os.environ.pop(_name, None)

from flannel_alivpc.core.network import LeaseAttrs, subnet_key  # noqa: E402
from flannel_alivpc.core.routes import ProgrammedOverflow, TableOverflow  # noqa: E402
from flannel_alivpc.core.vxlan import random_vtep_mac, vxlan_backend_data  # noqa: E402
from flannel_alivpc.routed.lease_source import overflow_prefix, programmed_prefix  # noqa: E402
from flannel_alivpc.testbed.dataplane import DataplaneCluster, is_root, network_config  # noqa: E402

REAL_NODES = 3
NETWORK = "172.16.0.0/12"


def _calls(cluster: DataplaneCluster) -> dict[str, int]:
    return {action: sum(outcomes.values()) for action, outcomes in cluster.emulator.faults.counters().items()}


def _published(cluster: DataplaneCluster) -> TableOverflow:
    with cluster.etcd_client() as etcd:
        kv = etcd.get(overflow_prefix(cluster.prefix) + cluster.route_table_id)
    return TableOverflow.from_json(kv.value) if kv is not None else TableOverflow()


def _vxlan_routes(cluster: DataplaneCluster) -> list[set[IPv4Network]]:
    return [set(cluster.vxlan_entries(node).routes) for node in cluster.dp_nodes]


def run(leases: int, quota: int, raised_quota: int, route_delay: float, resync: float,
        seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bench-overflow-") as tmp, \
            DataplaneCluster(Path(tmp), route_delay=route_delay, resync_interval=resync) as cluster:
        cluster.start_dataplane(vpc=REAL_NODES, config=json.dumps(
            {**json.loads(network_config("ali-vpc", NETWORK)), "SubnetLen": 24}))
        state = cluster.emulator.state
        state.settings.route_quota = quota
        cluster.start_all()
        cluster.wait_for_subnets(cluster.dp_nodes, timeout=90)
        assert cluster.topology is not None
        taken = {str(cluster.subnet_of(n)) for n in cluster.dp_nodes}
        subnets = (s for s in list(IPv4Network(NETWORK).subnets(new_prefix=24))[1:] if str(s) not in taken)
        fake = [(state.create_instance(hostname=f"bench-{i}", vswitch_id=cluster.topology.vswitch_id), next(subnets))
                for i in range(leases - REAL_NODES)]
        before = _calls(cluster)
        started = time.monotonic()
        with cluster.etcd_client() as etcd:
            for inst, subnet in fake:
                data = {"InstanceId": inst.instance_id, "NetworkType": "vpc", "VpcId": cluster.topology.vpc_id,
                        **vxlan_backend_data(1, random_vtep_mac(rng))}
                etcd.put(f"{cluster.prefix}/subnets/{subnet_key(subnet)}",
                         LeaseAttrs(IPv4Address(inst.private_ip), "ali-vpc", data).to_json(),
                         lease_id=etcd.grant(24 * 3600))
        every = {IPv4Network(str(s)) for s in taken} | {s for _, s in fake}

        def split() -> bool:
            routed = {IPv4Network(d) for d in cluster.instance_routes()}
            overflow = set(_published(cluster).subnets)
            if len(routed) != quota or routed | overflow != every or routed & overflow:
                return False
            return all(overflow - {cluster.subnet_of(n)} <= routes
                       for n, routes in zip(cluster.dp_nodes, _vxlan_routes(cluster), strict=True))

        if not cluster.wait_until(split, 120 + 5 * math.ceil(leases / 50) * route_delay, interval=0.2):
            raise RuntimeError("the split did not converge:\n" + cluster.dp_nodes[0].log()[-3000:])
        split_s = time.monotonic() - started
        after = _calls(cluster)
        raised = time.monotonic()
        state.settings.route_quota = raised_quota

        def back() -> bool:
            routed = {IPv4Network(d) for d in cluster.instance_routes()}
            return routed == every and not _published(cluster).subnets and not any(
                routes & every for routes in _vxlan_routes(cluster))

        if not cluster.wait_until(back, 120 + 5 * math.ceil(leases / 50) * route_delay + resync, interval=0.2):
            raise RuntimeError("the overflow did not move back:\n" + cluster.dp_nodes[0].log()[-3000:])
        back_s = time.monotonic() - raised

        lowered = time.monotonic()
        state.settings.route_quota = quota
        confirmed: list[tuple[IPv4Network, ...]] = [()]
        marks: dict[str, float] = {}

        def out() -> bool:
            published = _published(cluster)
            if published.moving:
                marks.setdefault("published", time.monotonic())
            if published.moving and published.moving != confirmed[0]:
                with cluster.etcd_client() as etcd:
                    for inst, subnet in fake:
                        etcd.put(programmed_prefix(cluster.prefix) + subnet_key(subnet), ProgrammedOverflow(
                            frozenset(published.moving), IPv4Address(inst.private_ip)).to_json())
                confirmed[0] = published.moving
                marks.setdefault("confirmed", time.monotonic())
            routed = {IPv4Network(d) for d in cluster.instance_routes()}
            if len(routed) < len(every):
                marks.setdefault("first_deleted", time.monotonic())
            overflow = set(published.subnets)
            if len(routed) != quota or routed | overflow != every or routed & overflow or published.moving:
                return False
            return all(overflow - {cluster.subnet_of(n)} <= routes
                       for n, routes in zip(cluster.dp_nodes, _vxlan_routes(cluster), strict=True))

        if not cluster.wait_until(out, 120 + 5 * math.ceil(leases / 50) * route_delay + resync, interval=0.2):
            raise RuntimeError("the excess did not move out:\n" + cluster.dp_nodes[0].log()[-3000:])
        out_s = time.monotonic() - lowered
        moved = leases - quota
        return {
            "leases": leases,
            "quota": quota,
            "route_delay_s": route_delay,
            "resync_s": resync,
            "split_s": round(split_s, 3),
            "routed_only_floor_s": math.ceil(quota / 50) * route_delay,
            "split_vs_floor": round(split_s / (math.ceil(quota / 50) * route_delay), 3),
            "create_calls": after.get("CreateRouteEntries", 0) - before.get("CreateRouteEntries", 0),
            "api_calls": sum(after.values()) - sum(before.values()),
            "overflow_nodes": moved,
            "move_back_s": round(back_s, 3),
            "move_back_floor_s": math.ceil(moved / 50) * route_delay,
            "move_out_s": round(out_s, 3),
            # When the writer's quota read saw the change and published the excess as moving, when the
            # emulated nodes had confirmed, when the first entry was gone (all from the quota change).
            "move_out_published_s": round(marks.get("published", lowered) - lowered, 3),
            "move_out_confirmed_s": round(marks.get("confirmed", lowered) - lowered, 3),
            "move_out_first_delete_s": round(marks.get("first_deleted", lowered) - lowered, 3),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leases", type=int, default=300)
    parser.add_argument("--quota", type=int, default=200)
    parser.add_argument("--raised", type=int, default=None, help="the raised quota R (default 2Q)")
    parser.add_argument("--route-delay", type=float, default=1.0, help="emulator route delay D (s)")
    parser.add_argument("--resync", type=float, default=10.0, help="daemon resync interval (s)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not is_root():
        print("the data-plane benchmark builds network namespaces: run it as root", file=sys.stderr)
        return 2
    row = run(args.leases, args.quota, args.raised or 2 * args.quota, args.route_delay, args.resync, args.seed)
    columns = ["leases", "quota", "split_s", "routed_only_floor_s", "split_vs_floor", "create_calls", "api_calls",
               "overflow_nodes", "move_back_s", "move_back_floor_s", "move_out_s"]
    print("  ".join(f"{c:>20}" for c in columns))
    print("  ".join(f"{row[c]!s:>20}" for c in columns))
    print(json.dumps({"benchmark": "quota_overflow", "results": [row]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
