"""``flannel-alivpc slb-controller``: flags, wiring and the run loop.

The cloud flags are the daemon's (``--api-endpoint``, ``--region``,
``--metadata-url``), and so are the credentials: ``ACCESS_KEY_ID``/
``ACCESS_KEY_SECRET`` from the environment, else the instance's RAM role.
Both declare them with ``clients.cloud_flags``.

Only light modules are imported at module level: the main CLI builds
this parser on every run, and the Kubernetes client is slow to import.
"""

from __future__ import annotations

import argparse
import logging
import os

from flannel_alivpc.clients.cloud_flags import add_cloud_flags
from flannel_alivpc.core import flags

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "slb-controller", help="give Services of type LoadBalancer an Alibaba Cloud SLB",
        description="Watch Services of type LoadBalancer and Nodes and keep one Classic Load Balancer per "
        "Service: listeners per port, the eligible nodes' instances as backends, the address in "
        "status.loadBalancer.ingress. Annotations: docs/slb-controller.md. Credentials: ACCESS_KEY_ID/"
        "ACCESS_KEY_SECRET from the environment, else the instance's RAM role.")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None,
                        help="kubeconfig file (default: env KUBECONFIG, else the in-cluster service account)")
    add_cloud_flags(parser)
    parser.add_argument("--cluster-id", default="kubernetes",
                        help="tags the SLBs so this cluster finds them again (default %(default)s)")
    parser.add_argument("--vswitch-id", default="",
                        help="vSwitch for intranet SLBs without a vswitch-id annotation (default: from metadata)")
    parser.add_argument("--workers", type=flags.integer(1), default=4,
                        help="Services reconciled in parallel (default 4)")
    parser.add_argument("--resync-interval", type=flags.number(1, unit="seconds"), default=300.0,
                        help="seconds between full passes over each Service's SLB (jittered; default 300)")
    parser.add_argument("--no-leader-elect", dest="leader_elect", action="store_false",
                        help="run without leader election (one replica only)")
    parser.add_argument("--lease-namespace", default="kube-system", help="namespace of the election Lease")
    parser.add_argument("--lease-name", default="flannel-alivpc-slb-controller", help="name of the election Lease")
    parser.add_argument("--lease-duration", type=flags.number(3, unit="seconds"), default=15.0,
                        help="seconds (default 15)")
    parser.add_argument("--identity", default=None, help="this replica's name in the Lease (default hostname_pid)")
    parser.add_argument("--healthz-ip", type=flags.ip_address, default="0.0.0.0",
                        help="address of /healthz, /readyz and /metrics (default %(default)s)")
    parser.add_argument("--healthz-port", type=flags.port, default=0,
                        help="port of /healthz, /readyz and /metrics (default 0: off)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import signal
    import socket
    import threading
    from types import FrameType

    from flannel_alivpc.clients.cloud import CloudConfig, build_cloud
    from flannel_alivpc.clients.kube import KubeClient
    from flannel_alivpc.clients.slb import SlbClient
    from flannel_alivpc.core.errors import ConfigError, MetadataError
    from flannel_alivpc.slb.controller import CloudAccess, ControllerSettings, ServiceController
    from flannel_alivpc.slb.health import HealthServer
    from flannel_alivpc.slb.leader import LeaderElector

    cloud = build_cloud(CloudConfig(region=args.region, api_endpoint=args.api_endpoint,
                                    metadata_url=args.metadata_url.rstrip("/")))
    region = cloud.api.region

    def slb_for(other: str) -> SlbClient:
        if other == region:
            return SlbClient(cloud.api, region)
        return SlbClient(build_cloud(CloudConfig(region=other, api_endpoint=args.api_endpoint,
                                                 metadata_url=args.metadata_url.rstrip("/"))).api, other)

    def default_vswitch() -> str:
        try:
            return cloud.metadata.vswitch_id()
        except MetadataError as error:
            log.warning("no vSwitch from the metadata service (%s); intranet SLBs need --vswitch-id or the "
                        "vswitch-id annotation", error)
            return ""

    kube = KubeClient.connect(args.kubeconfig)
    settings = ControllerSettings(region=region, cluster_id=args.cluster_id, workers=args.workers,
                                  resync_interval=args.resync_interval, vswitch_id=args.vswitch_id)
    elector = None
    if args.leader_elect:
        identity = args.identity or f"{socket.gethostname()}_{os.getpid()}"
        duration = args.lease_duration
        elector = LeaderElector(kube, namespace=args.lease_namespace, name=args.lease_name, identity=identity,
                                lease_duration=duration, renew_deadline=duration * 2 / 3,
                                retry_period=max(0.5, duration / 7))
    controller = ServiceController(kube, CloudAccess(slb_for, ecs=cloud.ecs, default_vswitch=default_vswitch),
                                   settings, elector=elector)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("slb-controller: region %s, cluster id %s, %d workers, resync every %.0fs, %s", region,
             args.cluster_id, args.workers, args.resync_interval,
             "leader election on" if elector else "no leader election")
    health = None
    if args.healthz_port:
        try:
            health = HealthServer(args.healthz_ip, args.healthz_port, health=controller.health,
                                  ready=controller.ready, metrics=controller.metrics,
                                  api_calls=cloud.api.counter.snapshot)
        except OSError as error:
            raise ConfigError(f"cannot serve /healthz on {args.healthz_ip}:{args.healthz_port}: "
                              f"{error.strerror or error}") from None
        health.start()
        log.info("slb-controller: /healthz, /readyz and /metrics on %s:%d", args.healthz_ip, health.port)
    try:
        controller.start()
        while not stopping.wait(1.0):
            pass
    finally:
        if health is not None:
            health.stop()
        controller.stop()
        kube.close()
        cloud.api.close()
    return 0
