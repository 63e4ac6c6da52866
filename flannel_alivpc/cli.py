"""The ``flannel-alivpc`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from types import FrameType

from flannel_alivpc import __version__
from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.installer import add_parser as _add_install_parser
from flannel_alivpc.routed.config import add_connection_flags, add_daemon_flags, apply_env_defaults
from flannel_alivpc.slb.cli import add_parser as _add_slb_parser


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def _add_emulator_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "emulator",
        help="run the local Alibaba Cloud API and metadata emulator",
        description="Serve the VPC, ECS and SLB APIs and the ECS metadata service on loopback, "
        "for tests, benchmarks and the demo. Point the daemon at it with --api-endpoint and "
        "--metadata-url.",
    )
    parser.add_argument("--listen", type=_host_port, default=("127.0.0.1", 8080), metavar="HOST:PORT",
                        help="address to serve on (default 127.0.0.1:8080; port 0 picks a free one)")
    parser.add_argument("--instances", type=int, default=0, metavar="N",
                        help="create one VPC, vRouter, route table and vSwitch with N running instances")
    parser.add_argument("--route-delay", type=float, default=2.0, metavar="SECONDS",
                        help="how long route entries stay Pending/Deleting (default 2)")
    parser.add_argument("--route-quota", type=int, default=200, metavar="N",
                        help="custom route entries allowed per route table (default 200)")
    parser.add_argument("--region", default="cn-hangzhou", help="region id (default cn-hangzhou)")
    parser.add_argument("--access-key-id", default="emulator-ak", help="access key id to accept")
    parser.add_argument("--access-key-secret", default=None,
                        help="its secret (default 'emulator-secret'; prefer env EMULATOR_ACCESS_KEY_SECRET)")
    parser.add_argument("--state", metavar="FILE", default=None,
                        help="load the state from FILE if it exists and save every change to it")
    parser.set_defaults(func=_run_emulator)


def _run_emulator(args: argparse.Namespace) -> int:
    from flannel_alivpc.emulator.server import Emulator
    from flannel_alivpc.emulator.state import Settings

    secret = args.access_key_secret or os.environ.get("EMULATOR_ACCESS_KEY_SECRET") or "emulator-secret"
    host, port = args.listen
    emulator = Emulator(
        host=host, port=port,
        settings=Settings(region=args.region, route_delay=args.route_delay, route_quota=args.route_quota),
        access_key_id=args.access_key_id, access_key_secret=secret, state_file=args.state,
    )
    created = emulator.bootstrap(instances=args.instances) if args.instances and not emulator.state.vpcs else None
    # The emulator's own test key is no secret: printing it tells the user how to connect.
    print(f"emulator listening on {emulator.endpoint}", flush=True)
    print(json.dumps({
        "endpoint": emulator.endpoint,
        "metadata_url": emulator.endpoint,
        "region": emulator.state.settings.region,
        "access_key_id": args.access_key_id,
        "access_key_secret": secret,
        "vpc_id": created.vpc_id if created else None,
        "vrouter_id": created.vrouter_id if created else None,
        "route_table_id": created.route_table_id if created else None,
        "vswitch_id": created.vswitch_id if created else None,
        "instances": [
            {"instance_id": i.instance_id, "hostname": i.hostname, "private_ip": i.private_ip,
             "metadata_url": f"{emulator.endpoint}/meta/{i.instance_id}"}
            for i in emulator.state.instances.values()
        ],
    }, indent=2), flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        emulator.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.state.save()
    return 0


def _run_daemon(args: argparse.Namespace) -> int:
    from flannel_alivpc.routed.config import config_from_args
    from flannel_alivpc.routed.daemon import run_daemon

    return run_daemon(config_from_args(args))


def _run_routes(args: argparse.Namespace) -> int:
    from flannel_alivpc.routed.config import config_from_args
    from flannel_alivpc.routed.inspect import run_routes

    return run_routes(config_from_args(args), vpc_id=args.vpc_id, output=args.output, check=args.check,
                      out=sys.stdout, env=os.environ)


def _run_leases(args: argparse.Namespace) -> int:
    from flannel_alivpc.routed.config import config_from_args
    from flannel_alivpc.routed.inspect import run_leases

    return run_leases(config_from_args(args), output=args.output, out=sys.stdout)


def _add_inspect_parsers(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[argparse.ArgumentParser]:
    routes = subparsers.add_parser(
        "routes", help="show each route table's flannel entries beside the leases",
        description="List every flannel entry of each route table with its state: ok, pending, missing, "
        "stale, wrong-next-hop. Read-only. --check exits 3 on drift, 0 when clean.")
    add_connection_flags(routes)
    routes.add_argument("--vpc-id", default=None, help="VPC to inspect (default: this instance's, from metadata)")
    routes.add_argument("--output", choices=["table", "json"], default="table")
    routes.add_argument("--check", action="store_true", help="exit 3 when any entry is not ok")
    routes.set_defaults(func=_run_routes)
    leases = subparsers.add_parser("leases", help="list the flannel subnet leases in etcd",
                                   description="List the subnet leases in etcd, malformed ones included. Read-only.")
    add_connection_flags(leases)
    leases.add_argument("--output", choices=["table", "json"], default="table")
    leases.set_defaults(func=_run_leases)
    return [routes, leases]


def _run_demo(args: argparse.Namespace) -> int:
    if args.dataplane:
        from flannel_alivpc.testbed.dataplane_demo import run_dataplane_demo

        return run_dataplane_demo(nodes=args.nodes, keep=args.keep)
    from flannel_alivpc.testbed.demo import run_demo

    return run_demo(nodes=args.nodes, route_delay=args.route_delay, keep=args.keep)


def _add_demo_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser(
        "demo", help="see the whole thing work on one machine (emulator + etcd + simulated nodes)",
        description="Start the cloud emulator, a real etcd and N simulated nodes (each the real daemon in its "
        "own process), show the route table converging, a node leaving and its route removed.")
    demo.add_argument("--nodes", type=int, default=3, help="simulated nodes (default 3)")
    demo.add_argument("--route-delay", type=float, default=1.0,
                      help="seconds a route entry stays Pending in the emulator (default 1)")
    demo.add_argument("--keep", action="store_true", help="leave everything running and print how to inspect it")
    demo.add_argument("--dataplane", action="store_true",
                      help="(root) real packets: a mixed VPC/classic cluster in network namespaces, TCP between "
                           "pods through the route table and VXLAN")
    demo.set_defaults(func=_run_demo)


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flannel-alivpc",
        description="Without a command: run the route daemon (flannel leases in etcd -> VPC route entries). "
        "Every flag can also be set as env FLANNELD_<FLAG>, e.g. FLANNELD_ETCD_ENDPOINTS.")
    parser.add_argument("--version", action="version", version=f"flannel-alivpc {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_daemon_flags(parser)
    parser.set_defaults(func=_run_daemon)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_emulator_parser(subparsers)
    _add_demo_parser(subparsers)
    _add_install_parser(subparsers)
    _add_slb_parser(subparsers)
    inspectors = _add_inspect_parsers(subparsers)
    for sub in (parser, *inspectors):
        apply_env_defaults(sub, os.environ if env is None else env)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result: int = args.func(args)
    except ConfigError as error:
        logging.getLogger("flannel-alivpc").error("%s", error)
        return 2
    return result
