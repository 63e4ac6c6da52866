"""SLB controller benchmark: time to converge, API calls per Service, steady-state API load.

Setup (all on loopback, in one process): the cloud emulator with ``--nodes``
running instances, the kube-apiserver stand-in with a Node for each, and
``--services`` Services of type LoadBalancer with ``--ports`` TCP ports each,
all created before the controller starts. The controller (the real one,
through the official Kubernetes client and the Alibaba Cloud SDK) then starts
and the clock runs until every Service has its SLB: all listeners running,
every node attached, the address in ``status.loadBalancer.ingress``.

Measured:

* time to converge;
* SLB API calls per Service, against the minimum: one lookup for a
  leftover SLB (DescribeLoadBalancers), CreateLoadBalancer, a create and a start
  per listener, and ceil(nodes / 20) AddBackendServers -- 1 read + (1 + 2 x ports
  + ceil(nodes / 20)) writes;
* Kubernetes API writes per Service (finalizer, status, Events);
* steady state: SLB API calls per minute while nothing changes, over
  ``--idle-window`` seconds with ``--resync`` seconds between passes, and the same
  rate scaled to the controller's default resync interval (300 s).

Run: .venv/bin/python benchmarks/slb_convergence.py [--services 200] [--ports 3] [--nodes 50]
Prints a table, then one JSON document.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_name, None)

from flannel_alivpc.clients.aliyun_sdk import AliyunApi  # noqa: E402
from flannel_alivpc.clients.credentials import StaticCredentials  # noqa: E402
from flannel_alivpc.clients.kube import KubeClient  # noqa: E402
from flannel_alivpc.clients.slb import SlbClient  # noqa: E402
from flannel_alivpc.emulator import slb_api  # noqa: E402
from flannel_alivpc.emulator.server import Emulator  # noqa: E402
from flannel_alivpc.emulator.state import Settings  # noqa: E402
from flannel_alivpc.slb.controller import CloudAccess, ControllerSettings, ServiceController  # noqa: E402
from flannel_alivpc.testbed.kube_apiserver import KubeApiServer  # noqa: E402

REGION = "cn-hangzhou"
AK, SECRET = "bench-ak", "bench-secret"
DEFAULT_RESYNC = 300.0


def _slb_calls(emulator: Emulator) -> dict[str, int]:
    counters = emulator.faults.counters()
    return {action: sum(outcomes.values()) for action, outcomes in counters.items()}


def _converged(kube: KubeApiServer, emulator: Emulator, *, ports: int, nodes: int) -> int:
    """How many Services have their full SLB and show its address."""
    with emulator.state.lock:
        by_name = {lb.tags.get("kubernetes.do.not.delete"): lb for lb in slb_api.balancers(emulator.state).values()}
        done = 0
        for svc in kube.objects("v1", "services"):
            lb = by_name.get(("a" + svc["metadata"]["uid"].replace("-", ""))[:32])
            if lb is None or len(lb.listeners) != ports or len(lb.backends) != nodes:
                continue
            if any(item.status != "running" for item in lb.listeners):
                continue
            ingress = svc.get("status", {}).get("loadBalancer", {}).get("ingress") or []
            if [i.get("ip") for i in ingress] == [lb.address]:
                done += 1
    return done


def run(args: argparse.Namespace) -> dict[str, Any]:
    emulator = Emulator(settings=Settings(route_delay=0.0), access_key_id=AK, access_key_secret=SECRET)
    emulator.start()
    kube = KubeApiServer(tokens={"bench": "controller", "admin": "admin"}).start()
    controller: ServiceController | None = None
    try:
        topology = emulator.bootstrap(instances=args.nodes)
        with tempfile.TemporaryDirectory(prefix="bench-slb-") as tmp:
            controller_config = kube.write_kubeconfig(Path(tmp) / "controller", token="bench")
            nodes_res = kube.resource("v1", "nodes")
            services_res = kube.resource("v1", "services")
            for n, instance_id in enumerate(topology.instance_ids):
                kube.create(nodes_res, "", {
                    "metadata": {"name": f"node-{n}"}, "spec": {"providerID": f"{REGION}.{instance_id}"},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
            for n in range(args.services):
                kube.create(services_res, "default", {
                    "metadata": {"name": f"svc-{n}"},
                    "spec": {"type": "LoadBalancer", "ports": [
                        {"name": f"p{p}", "port": 80 + p, "protocol": "TCP"} for p in range(args.ports)]}})
            api = AliyunApi(REGION, emulator.endpoint, StaticCredentials(AK, SECRET))
            kube_client = KubeClient.connect(str(controller_config))
            settings = ControllerSettings(region=REGION, cluster_id="bench", workers=args.workers,
                                          resync_interval=args.resync)
            controller = ServiceController(kube_client, CloudAccess(lambda region: SlbClient(api, region)), settings)
            emulator.faults.reset_counters()
            kube_requests_before = len(kube.requests)
            started = time.monotonic()
            controller.start()
            deadline = started + args.timeout
            while _converged(kube, emulator, ports=args.ports, nodes=args.nodes) < args.services:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not converged after {args.timeout}s: {controller.stats}")
                time.sleep(0.05)
            converge = time.monotonic() - started
            create_calls = _slb_calls(emulator)
            requests = kube.requests[kube_requests_before:]
            kube_writes = sum(1 for r in requests if r.method != "GET")
            # Steady state: nothing changes; every pass is a resync.
            time.sleep(min(2.0, args.resync / 2))
            emulator.faults.reset_counters()
            idle_start = time.monotonic()
            time.sleep(args.idle_window)
            idle = time.monotonic() - idle_start
            idle_calls = _slb_calls(emulator)
            stats = controller.stats
    finally:
        if controller is not None:
            controller.stop()
            controller.kube.close()
        kube.stop()
        emulator.stop()
    reads = {a: c for a, c in create_calls.items() if a.startswith("Describe")}
    writes = {a: c for a, c in create_calls.items() if not a.startswith("Describe")}
    min_writes = 1 + 2 * args.ports + math.ceil(args.nodes / 20)
    min_total = 1 + min_writes
    idle_total = sum(idle_calls.values())
    per_minute = idle_total / idle * 60
    return {
        "services": args.services, "ports": args.ports, "nodes": args.nodes, "workers": args.workers,
        "converge_seconds": round(converge, 2),
        "slb_calls_total": sum(create_calls.values()),
        "slb_calls_per_service": round(sum(create_calls.values()) / args.services, 2),
        "slb_writes_per_service": round(sum(writes.values()) / args.services, 2),
        "slb_reads_per_service": round(sum(reads.values()) / args.services, 2),
        "min_calls_per_service": min_total, "min_writes_per_service": min_writes,
        "calls_vs_min": round(sum(create_calls.values()) / args.services / min_total, 3),
        "kube_writes_per_service": round(kube_writes / args.services, 2),
        "calls_by_action": create_calls,
        "passes": stats.passes, "failed_passes": stats.failures,
        "resync_seconds": args.resync, "idle_window_seconds": round(idle, 1),
        "idle_calls_by_action": idle_calls,
        "steady_calls_per_minute": round(per_minute, 1),
        "steady_calls_per_minute_at_default_resync": round(per_minute * args.resync / DEFAULT_RESYNC, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--ports", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--resync", type=float, default=20.0, help="resync interval during the idle window")
    parser.add_argument("--idle-window", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    result = run(args)
    rows = [
        ("Services x ports, nodes", f"{args.services} x {args.ports}, {args.nodes}"),
        ("time to converge", f"{result['converge_seconds']} s ({args.workers} workers)"),
        ("SLB calls per Service", f"{result['slb_calls_per_service']} (minimum {result['min_calls_per_service']}, "
                                  f"x{result['calls_vs_min']})"),
        ("  writes / reads", f"{result['slb_writes_per_service']} (minimum {result['min_writes_per_service']}) / "
                             f"{result['slb_reads_per_service']}"),
        ("Kubernetes writes per Service", str(result["kube_writes_per_service"])),
        ("passes (failed)", f"{result['passes']} ({result['failed_passes']})"),
        ("steady SLB calls/min", f"{result['steady_calls_per_minute']} at resync {args.resync:.0f} s"),
        ("  at the default resync", f"{result['steady_calls_per_minute_at_default_resync']} at 300 s"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
