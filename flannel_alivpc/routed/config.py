"""The route daemon's flags, named as flannel names them, each also settable as FLANNELD_<FLAG>.

Secrets have no flags: the etcd password comes from FLANNELD_ETCD_PASSWORD or
a file, access keys from ACCESS_KEY_ID/ACCESS_KEY_SECRET (or the RAM role),
so none of them shows in a process listing.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from flannel_alivpc.clients.cloud_flags import add_cloud_flags
from flannel_alivpc.core.cloud import DEFAULT_METADATA_URL
from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.core.network import DEFAULT_PREFIX
from flannel_alivpc.core.secrets import Secret

DEFAULT_ETCD_ENDPOINTS = "http://127.0.0.1:4001,http://127.0.0.1:2379"
DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"


@dataclass(frozen=True)
class DaemonConfig:
    etcd_endpoints: list[str]
    etcd_prefix: str = DEFAULT_PREFIX
    etcd_cafile: str | None = None
    etcd_certfile: str | None = None
    etcd_keyfile: str | None = None
    etcd_username: str | None = None
    etcd_password: Secret | None = field(default=None, repr=False)
    iface: list[str] = field(default_factory=list)
    iface_regex: list[str] = field(default_factory=list)
    public_ip: str | None = None
    subnet_file: str = DEFAULT_SUBNET_FILE
    renew_margin_minutes: int = 60
    ip_masq: bool = False
    healthz_ip: str = "0.0.0.0"
    healthz_port: int = 0
    metadata_url: str = DEFAULT_METADATA_URL
    api_endpoint: str | None = None
    region: str | None = None
    route_table_ids: list[str] = field(default_factory=list)
    resync_interval: float = 60.0
    writer_lock_ttl: int = 15


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by the daemon and the inspection commands (etcd and cloud access)."""
    parser.add_argument("--etcd-endpoints", default=DEFAULT_ETCD_ENDPOINTS,
                        help="comma-separated etcd endpoints (default %(default)s)")
    parser.add_argument("--etcd-prefix", default=DEFAULT_PREFIX, help="etcd prefix (default %(default)s)")
    parser.add_argument("--etcd-cafile", default=None, help="CA bundle to verify etcd's certificate")
    parser.add_argument("--etcd-certfile", default=None, help="client certificate for etcd")
    parser.add_argument("--etcd-keyfile", default=None, help="client key for etcd")
    parser.add_argument("--etcd-username", default=None,
                        help="etcd user (the password comes from env FLANNELD_ETCD_PASSWORD)")
    add_cloud_flags(parser)
    parser.add_argument("--route-table-ids", default="",
                        help="comma-separated route tables to manage (default: every table of the VPC)")


def add_daemon_flags(parser: argparse.ArgumentParser) -> None:
    add_connection_flags(parser)
    parser.add_argument("--iface", action="append", default=[],
                        help="interface (name or IP) to use; repeatable, first match wins")
    parser.add_argument("--iface-regex", action="append", default=[],
                        help="regex matched against interface names and IPs after --iface")
    parser.add_argument("--public-ip", default=None, help="IP other nodes reach this node at (lease PublicIP)")
    parser.add_argument("--subnet-file", default=DEFAULT_SUBNET_FILE, help="where subnet.env is written")
    parser.add_argument("--subnet-lease-renew-margin", type=int, default=60,
                        help="renew the lease this many minutes before it expires (1..1439)")
    parser.add_argument("--ip-masq", action="store_true", help="masquerade traffic leaving the pod network")
    parser.add_argument("--healthz-ip", default="0.0.0.0", help="address for /healthz and /metrics")
    parser.add_argument("--healthz-port", type=int, default=0, help="port for /healthz and /metrics (0: off)")
    parser.add_argument("--resync-interval", type=float, default=60.0,
                        help="seconds between full resyncs of the route tables (jittered)")
    parser.add_argument("--writer-lock-ttl", type=int, default=15,
                        help="seconds after which another node takes over a dead writer's route tables")


def apply_env_defaults(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """flannel's FLANNELD_<FLAG> environment variables become flag defaults."""
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "version"):
            continue
        flag = max(action.option_strings, key=len).lstrip("-")
        value = env.get("FLANNELD_" + flag.upper().replace("-", "_"))
        if value is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            action.default = value.lower() in ("1", "true", "yes")
        elif isinstance(action, argparse._AppendAction):
            action.default = [v for v in value.split(",") if v]
        elif action.type is int:
            action.default = int(value)
        elif action.type is float:
            action.default = float(value)
        else:
            action.default = value


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def config_from_args(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> DaemonConfig:
    margin = getattr(args, "subnet_lease_renew_margin", 60)
    if getattr(args, "writer_lock_ttl", 15) < 3:
        raise ConfigError("--writer-lock-ttl must be at least 3 seconds")
    if not 1 <= margin <= 1439:
        raise ConfigError("--subnet-lease-renew-margin must be between 1 and 1439 minutes")
    password = env.get("FLANNELD_ETCD_PASSWORD")
    endpoints = split_list(args.etcd_endpoints)
    if not endpoints:
        raise ConfigError("--etcd-endpoints is empty; give at least one etcd URL")
    return DaemonConfig(
        etcd_endpoints=endpoints,
        etcd_prefix=args.etcd_prefix.rstrip("/") or DEFAULT_PREFIX,
        etcd_cafile=args.etcd_cafile, etcd_certfile=args.etcd_certfile, etcd_keyfile=args.etcd_keyfile,
        etcd_username=args.etcd_username, etcd_password=Secret(password) if password else None,
        iface=list(getattr(args, "iface", [])), iface_regex=list(getattr(args, "iface_regex", [])),
        public_ip=getattr(args, "public_ip", None),
        subnet_file=getattr(args, "subnet_file", DEFAULT_SUBNET_FILE),
        renew_margin_minutes=margin,
        ip_masq=getattr(args, "ip_masq", False),
        healthz_ip=getattr(args, "healthz_ip", "0.0.0.0"),
        healthz_port=getattr(args, "healthz_port", 0),
        metadata_url=args.metadata_url.rstrip("/"),
        api_endpoint=args.api_endpoint or env.get("ALIYUN_API_ENDPOINT") or None,
        region=args.region,
        route_table_ids=split_list(args.route_table_ids),
        resync_interval=getattr(args, "resync_interval", 60.0),
        writer_lock_ttl=getattr(args, "writer_lock_ttl", 15),
    )
