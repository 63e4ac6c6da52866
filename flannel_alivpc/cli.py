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
from flannel_alivpc.core import flags, logfmt
from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.installer import add_parser as _add_install_parser
from flannel_alivpc.routed.config import (
    CONNECTION_FLAGS,
    DAEMON_FLAGS,
    FLAG_SOURCES,
    REFUSED_FLAGS,
    DaemonConfig,
    check_local_files,
    config_from_args,
)
from flannel_alivpc.slb.cli import add_parser as _add_slb_parser

log = logging.getLogger("flannel-alivpc")


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


def _checked_config(args: argparse.Namespace) -> DaemonConfig:
    config = config_from_args(args)
    check_local_files(config, args)
    return config


def _run_daemon(args: argparse.Namespace) -> int:
    config = _checked_config(args)
    from flannel_alivpc.routed.daemon import run_daemon

    return run_daemon(config)


def _run_routes(args: argparse.Namespace) -> int:
    from flannel_alivpc.routed.inspect import run_routes

    return run_routes(_checked_config(args), vpc_id=args.vpc_id, output=args.output, check=args.check,
                      out=sys.stdout, env=os.environ)


def _run_leases(args: argparse.Namespace) -> int:
    from flannel_alivpc.routed.inspect import run_leases

    return run_leases(_checked_config(args), output=args.output, out=sys.stdout)


# routed.inspect.OUTPUT_FORMATS, spelled out: importing inspect here would load the etcd client on every run.
OUTPUT_FORMATS = ("table", "wide", "json", "yaml")
OUTPUT_HELP = "table (default), wide (every column), json or yaml (durations in seconds)"


def _add_inspect_parsers(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[argparse.ArgumentParser]:
    routes = subparsers.add_parser(
        "routes", help="show each route table's flannel entries beside the leases",
        description="List every flannel entry of each route table with its state: ok, pending, missing, "
        "stale, wrong-next-hop. Read-only. --check exits 3 on drift, 0 when clean.",
        allow_abbrev=False)
    flags.add_flags(routes, CONNECTION_FLAGS)
    routes.add_argument("--vpc-id", default=None, help="VPC to inspect (default: this instance's, from metadata)")
    routes.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="table", help=OUTPUT_HELP)
    routes.add_argument("--check", action="store_true", help="exit 3 when any entry is not ok")
    routes.set_defaults(func=_run_routes)
    leases = subparsers.add_parser("leases", help="list the flannel subnet leases in etcd",
                                   description="List the subnet leases in etcd, malformed ones included. Read-only.",
                                   allow_abbrev=False)
    flags.add_flags(leases, CONNECTION_FLAGS)
    leases.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="table", help=OUTPUT_HELP)
    leases.set_defaults(func=_run_leases)
    return [routes, leases]


def _run_demo(args: argparse.Namespace) -> int:
    if args.slb:
        from flannel_alivpc.testbed.slb_demo import run_slb_demo

        return run_slb_demo(nodes=args.nodes, keep=args.keep)
    if args.dataplane:
        from flannel_alivpc.testbed.dataplane_demo import run_dataplane_demo

        return run_dataplane_demo(nodes=args.nodes, keep=args.keep)
    from flannel_alivpc.testbed.demo import run_demo

    return run_demo(nodes=args.nodes, route_delay=args.route_delay, keep=args.keep, kube=args.kube)


def _add_demo_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser(
        "demo", help="see the whole thing work on one machine (emulator + etcd + simulated nodes)",
        description="Start the cloud emulator, a real etcd and N simulated nodes (each the real daemon in its "
        "own process), show the route table converging, a node leaving and its route removed.")
    demo.add_argument("--nodes", type=int, default=3, help="simulated nodes (default 3)")
    demo.add_argument("--route-delay", type=float, default=1.0,
                      help="seconds a route entry stays Pending in the emulator (default 1)")
    demo.add_argument("--keep", action="store_true", help="leave everything running and print how to inspect it")
    kind = demo.add_mutually_exclusive_group()
    kind.add_argument("--dataplane", action="store_true",
                      help="(root) real packets: a mixed VPC/classic cluster in network namespaces, TCP between "
                           "pods through the route table and VXLAN")
    kind.add_argument("--kube", action="store_true",
                      help="kube mode: leases are Nodes' podCIDRs on the kube-apiserver stand-in (--kube-subnet-mgr), "
                           "with their NetworkUnavailable conditions")
    kind.add_argument("--slb", action="store_true",
                      help="the SLB controller: a Service of type LoadBalancer gets an SLB, is edited to https:443 "
                           "and deleted (kube-apiserver stand-in + emulator)")
    demo.set_defaults(func=_run_demo)


class CommandParser(argparse.ArgumentParser):
    """argparse, plus the one CLI model: each level resolves its own flags from argv, env and defaults.

    The daemon's flags sit on the top level (``flannel-alivpc --iface eth0``);
    a subcommand that shares some of them (``routes``, ``leases``) takes them
    before or after its name; anything given at a level that does not use it is
    refused with a sentence, and every error shows the usage of the level the
    user was typing at.
    """

    env: Mapping[str, str] = os.environ
    level_flags: Mapping[str | None, Sequence[flags.Flag]] = {}
    commands: Mapping[str, argparse.ArgumentParser] = {}
    go_names: frozenset[str] = frozenset()

    # Narrower than argparse's overloads: this parser always makes its own namespace.
    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: None = None) -> argparse.Namespace:
        words = sys.argv[1:] if args is None else args
        parsed, extras = self.parse_known_args(flags.go_spelling(words, self.go_names))
        command: str | None = getattr(parsed, "command", None)
        level = self.commands.get(command, self) if command else self
        if extras:
            level.error(f"unrecognized arguments: {' '.join(extras)}{self._hint(extras, command)}")
        before = flags.given_before(parsed)
        own = self.level_flags.get(command, ())
        for field in before:
            if field not in {flag.field for flag in own}:
                option = next(flag.option for flag in DAEMON_FLAGS if flag.field == field)
                level.error(f"{option} is a flag of the route daemon (flannel-alivpc without a command); "
                            f"`{command}` does not take it before its name (see flannel-alivpc {command} --help)")
        sources = flags.resolve(parsed, own, self.env, level.error, before)
        setattr(parsed, FLAG_SOURCES, sources)
        return parsed

    @staticmethod
    def _hint(extras: Sequence[str], command: str | None) -> str:
        daemon_only = {flag.option for flag in DAEMON_FLAGS} - {flag.option for flag in CONNECTION_FLAGS}
        misplaced = [word.split("=")[0] for word in extras if word.split("=")[0] in daemon_only]
        if command and misplaced:
            return f" ({misplaced[0]} is a flag of the route daemon, flannel-alivpc without a command)"
        return ""


def _add_global_flags(parser: argparse.ArgumentParser) -> None:
    """--log-level, --log-format, -v and --version: the same at every level."""
    flags.add_flags(parser, logfmt.LOG_FLAGS)
    parser.add_argument("--version", action="version", version=f"flannel-alivpc {__version__}")


def build_parser(env: Mapping[str, str] | None = None) -> CommandParser:
    parser = CommandParser(
        prog="flannel-alivpc", allow_abbrev=False,
        usage="%(prog)s [FLAGS]            run the route daemon\n"
              "       %(prog)s COMMAND [FLAGS]    see the commands below",
        description="Without a command: run the route daemon (flannel leases in etcd -> VPC route entries), "
        "with flanneld's flags. Every flag can also be set as env FLANNELD_<FLAG>, e.g. FLANNELD_ETCD_ENDPOINTS; "
        "a flag on the command line wins.")
    _add_global_flags(parser)
    daemon = parser.add_argument_group("route daemon (flanneld's flags; -flag as in Go works too)")
    flags.add_flags(daemon, DAEMON_FLAGS, stored_as=flags.BEFORE)
    flags.add_refusals(parser, REFUSED_FLAGS)
    parser.set_defaults(func=_run_daemon)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", prog="flannel-alivpc",
                                       parser_class=argparse.ArgumentParser)
    _add_emulator_parser(subparsers)
    _add_demo_parser(subparsers)
    _add_install_parser(subparsers)
    _add_slb_parser(subparsers)
    _add_inspect_parsers(subparsers)
    for sub in subparsers.choices.values():
        _add_global_flags(sub)
    parser.env = os.environ if env is None else env
    parser.commands = dict(subparsers.choices)
    parser.go_names = frozenset({"version", *(f.name for f in (*DAEMON_FLAGS, *logfmt.LOG_FLAGS)),
                                 *(name for f in REFUSED_FLAGS for name in (f.name, *f.aliases))})
    connection = (*CONNECTION_FLAGS, *logfmt.LOG_FLAGS)
    parser.level_flags = {None: (*DAEMON_FLAGS, *logfmt.LOG_FLAGS), "routes": connection, "leases": connection,
                          **{name: logfmt.LOG_FLAGS for name in subparsers.choices if name not in ("routes", "leases")}}
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logfmt.configure(args.log_level, args.log_format, args.v)
    try:
        result: int = args.func(args)
    except ConfigError as error:
        log.error("%s", error)
        return 2
    return result
