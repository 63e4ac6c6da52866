"""The route daemon's flags and settings: flanneld's command line, checked before anything connects.

``DAEMON_FLAGS`` is the daemon's whole command line: every flag of upstream
flanneld's main.go with its name and default (``FLANNELD_FLAGS`` records the
status of each, refusals with their sentence), plus this project's cloud and
route-table flags. Each is also settable as ``FLANNELD_<FLAG>`` and every value
goes through its flag's converter (``core.flags``), wherever it came from.
``CONNECTION_FLAGS`` are the subset the read-only ``routes`` and ``leases``
commands share.

Secrets: the etcd password is best given as env FLANNELD_ETCD_PASSWORD (or in
a file); ``--etcd-password`` works, as in flanneld, but draws a warning
because argv shows in process listings. Access keys come from
ACCESS_KEY_ID/ACCESS_KEY_SECRET or the RAM role and have no flags.

``check_local_files`` finds the problems no retry can fix (a missing or
unreadable file, a certificate or key that does not parse, a key that does not
match its certificate) before the daemon starts, so it ends with rc 2 and a
sentence instead of retrying.
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from flannel_alivpc.clients.cloud_flags import CLOUD_FLAGS
from flannel_alivpc.core import flags
from flannel_alivpc.core.cloud import DEFAULT_METADATA_URL
from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.core.logfmt import LOG_FLAGS
from flannel_alivpc.core.network import DEFAULT_PREFIX
from flannel_alivpc.core.secrets import Secret

log = logging.getLogger(__name__)

DEFAULT_ETCD_ENDPOINTS = "http://127.0.0.1:4001,http://127.0.0.1:2379"
DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_KUBE_ANNOTATION_PREFIX = "flannel.alpha.coreos.com"
DEFAULT_NET_CONFIG_PATH = "/etc/kube-flannel/net-conf.json"
FLAG_SOURCES = "flag_sources"
"""Attribute of a parsed namespace: field -> where its value came from (``--flag``, ``FLANNELD_FLAG``, ``default``)."""


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
    iface_can_reach: str | None = None
    public_ip: str | None = None
    subnet_file: str = DEFAULT_SUBNET_FILE
    renew_margin_minutes: int = 60
    ip_masq: bool = False
    ip_masq_fully_random_disable: bool = False
    iptables_resync: int = 5
    iptables_forward_rules: bool = True
    ip_blackhole_route: bool = False
    healthz_ip: str = "0.0.0.0"
    healthz_port: int = 0
    kube_subnet_mgr: bool = False
    kube_api_url: str | None = None
    kubeconfig_file: str | None = None
    kube_annotation_prefix: str = DEFAULT_KUBE_ANNOTATION_PREFIX
    net_config_path: str = DEFAULT_NET_CONFIG_PATH
    set_node_network_unavailable: bool = True
    node_name: str | None = None
    pod_namespace: str | None = None
    metadata_url: str = DEFAULT_METADATA_URL
    api_endpoint: str | None = None
    region: str | None = None
    route_table_ids: list[str] = field(default_factory=list)
    resync_interval: float = 60.0
    writer_lock_ttl: int = 15


def _optional(value: str) -> str | None:
    """flanneld's "" default means unset; an empty value is unset here too."""
    return value.strip() or None


def _password(value: str) -> Secret:
    return Secret(value)


ETCD_FLAGS = (
    flags.Flag("etcd-endpoints", flags.comma_list(flags.url("http", "https", default_scheme="http"), allow_empty=False),
               DEFAULT_ETCD_ENDPOINTS.split(","), "comma-separated etcd endpoints", metavar="URLS"),
    flags.Flag("etcd-prefix", flags.non_empty, DEFAULT_PREFIX, "etcd prefix", metavar="PREFIX"),
    flags.Flag("etcd-keyfile", _optional, None, "TLS client key for etcd", metavar="FILE"),
    flags.Flag("etcd-certfile", _optional, None, "TLS client certificate for etcd", metavar="FILE"),
    flags.Flag("etcd-cafile", _optional, None, "CA bundle that verifies etcd's certificate", metavar="FILE"),
    flags.Flag("etcd-username", _optional, None, "etcd user for basic auth", metavar="USER"),
    flags.Flag("etcd-password", _password, None, "etcd password; prefer the env variable, argv shows in ps",
               metavar="PASSWORD"),
)
CONNECTION_FLAGS = (
    *ETCD_FLAGS,
    *CLOUD_FLAGS,
    flags.Flag("route-table-ids", flags.comma_list(flags.non_empty), [],
               "comma-separated route tables to manage (default: every table of the VPC)", metavar="IDS"),
)
"""What the daemon and the read-only ``routes``/``leases`` commands share: etcd and cloud access."""

DAEMON_FLAGS = (
    *CONNECTION_FLAGS,
    flags.Flag("iface", flags.non_empty, [], "interface (name or IP) to use; repeatable, first match wins",
               repeat=True, metavar="IFACE"),
    flags.Flag("iface-regex", flags.regex, [], "regex matched against interface names and IPs after --iface; "
               "repeatable", dest="iface_regex", repeat=True, metavar="REGEX"),
    flags.Flag("iface-can-reach", flags.ip_address, None,
               "use the interface of the route to this IP (as `ip route get IP`)", metavar="IP"),
    flags.Flag("public-ip", flags.ipv4_address, None, "IP other nodes reach this node at (lease PublicIP)",
               metavar="IP"),
    flags.Flag("subnet-file", flags.non_empty, DEFAULT_SUBNET_FILE, "where subnet.env is written", metavar="FILE"),
    flags.Flag("subnet-lease-renew-margin", flags.integer(1, 1439, "minutes"), 60,
               "renew the lease this many minutes before it expires (1 to 1439)", dest="renew_margin_minutes",
               metavar="MINUTES"),
    flags.Flag("ip-masq", flags.go_bool, False, "masquerade traffic leaving the pod network", boolean=True),
    flags.Flag("ip-masq-fully-random-disable", flags.go_bool, False, "MASQUERADE without --random-fully",
               boolean=True),
    flags.Flag("iptables-resync", flags.integer(1, unit="seconds"), 5, "seconds between iptables rule checks",
               metavar="SECONDS"),
    flags.Flag("iptables-forward-rules", flags.go_bool, True,
               "accept the pod network in the FORWARD chain (=false to leave FORWARD alone)", boolean=True),
    flags.Flag("ip-blackhole-route", flags.go_bool, False, "a blackhole route for this node's own subnet",
               boolean=True),
    flags.Flag("healthz-ip", flags.ip_address, "0.0.0.0", "address for /healthz, /readyz and /metrics",
               metavar="IP"),
    flags.Flag("healthz-port", flags.port, 0, "port for /healthz, /readyz and /metrics (0: off)", metavar="PORT"),
    flags.Flag("kube-subnet-mgr", flags.go_bool, False, "take the subnet from the Node's podCIDR instead of etcd",
               boolean=True),
    flags.Flag("kube-api-url", flags.url("http", "https"), None, "Kubernetes API server URL (default: in-cluster)",
               metavar="URL"),
    flags.Flag("kubeconfig-file", _optional, None, "kubeconfig file (default: in-cluster)", metavar="FILE"),
    flags.Flag("kube-annotation-prefix", flags.non_empty, DEFAULT_KUBE_ANNOTATION_PREFIX,
               "prefix of flannel's Node annotations", metavar="PREFIX"),
    flags.Flag("net-config-path", flags.non_empty, DEFAULT_NET_CONFIG_PATH,
               "network config file in --kube-subnet-mgr mode", metavar="FILE"),
    flags.Flag("set-node-network-unavailable", flags.go_bool, True,
               "--kube-subnet-mgr: clear the Node's NetworkUnavailable condition once ready", boolean=True),
    flags.Flag("resync-interval", flags.number(1, unit="seconds"), 60.0,
               "seconds between full resyncs of the route tables (jittered)", metavar="SECONDS"),
    flags.Flag("writer-lock-ttl", flags.integer(3, unit="seconds"), 15,
               "seconds after which another node takes over a dead writer's route tables", metavar="SECONDS"),
)

_KLOG_REASON = ("is a klog option flanneld does not take either (of klog's flags it has -v only); "
                "flannel-alivpc logs to stderr: choose with --log-level and --log-format")
REFUSED_FLAGS = (
    flags.RefusedFlag("public-ipv6", "dual stack is not supported yet: flannel-alivpc leases IPv4 subnets only; "
                      "leave --public-ipv6 out"),
    flags.RefusedFlag("vmodule", "per-file verbosity is a klog feature with no equivalent here; use --log-level"),
    flags.RefusedFlag("log_backtrace_at", "stack traces at a source line are a klog feature with no equivalent "
                      "here; use --log-level debug"),
    flags.RefusedFlag("logtostderr", _KLOG_REASON, aliases=("alsologtostderr", "log_dir", "log_file",
                                                             "stderrthreshold")),
)

_NOT_IN_FLANNELD = frozenset({"metadata-url", "api-endpoint", "region", "route-table-ids", "resync-interval",
                                 "writer-lock-ttl", "log-level", "log-format", "logtostderr"})
ACCEPTED = "accepted"


def flanneld_flags() -> dict[str, str]:
    """Every flag of upstream flanneld's main.go -> ``accepted`` or the sentence it is refused with."""
    table = {flag.name: ACCEPTED for flag in (*DAEMON_FLAGS, *LOG_FLAGS)}
    table["version"] = ACCEPTED
    table.update({flag.name: flag.reason for flag in REFUSED_FLAGS})
    return {name: status for name, status in table.items() if name not in _NOT_IN_FLANNELD}


def config_from_args(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> DaemonConfig:
    """The ``DaemonConfig`` of a parsed command line (the daemon's or an inspection command's)."""
    known = {f.name for f in fields(DaemonConfig)}
    values: dict[str, Any] = {
        flag.field: getattr(args, flag.field) for flag in DAEMON_FLAGS
        if flag.field in known and hasattr(args, flag.field)
    }
    values["etcd_prefix"] = values.get("etcd_prefix", DEFAULT_PREFIX).rstrip("/") or DEFAULT_PREFIX
    values["metadata_url"] = values.get("metadata_url", DEFAULT_METADATA_URL).rstrip("/")
    values["api_endpoint"] = values.get("api_endpoint") or env.get("ALIYUN_API_ENDPOINT") or None
    values["node_name"] = env.get("NODE_NAME") or None
    values["pod_namespace"] = env.get("POD_NAMESPACE") or None
    if getattr(args, FLAG_SOURCES, {}).get("etcd_password") == "--etcd-password":
        log.warning("--etcd-password shows in process listings (ps, /proc/PID/cmdline); prefer env "
                    "FLANNELD_ETCD_PASSWORD")
    return DaemonConfig(**values)


def source_of(args: argparse.Namespace, field_name: str) -> str:
    """Where a value came from, for messages: ``--flag`` or ``FLANNELD_FLAG`` (the flag when unknown)."""
    source = getattr(args, FLAG_SOURCES, {}).get(field_name, "default")
    if source != "default":
        return str(source)
    flag = next((f for f in DAEMON_FLAGS if f.field == field_name), None)
    return flag.option if flag else field_name


def check_local_files(config: DaemonConfig, args: argparse.Namespace) -> None:
    """Refuse, with what to fix, the files no retry can make usable: missing, unreadable, not parsing.

    The certificate and key are loaded the way the TLS connection will load
    them, so a malformed PEM or a key that does not belong to its certificate
    is reported here rather than as an endless connection failure.
    """
    for name in ("etcd_cafile", "etcd_certfile", "etcd_keyfile", "kubeconfig_file"):
        path = getattr(config, name)
        if path:
            _check_readable(path, source_of(args, name))
    if config.etcd_cafile:
        try:
            ssl.create_default_context(cafile=config.etcd_cafile)
        except (ssl.SSLError, ValueError) as error:
            raise ConfigError(f"{source_of(args, 'etcd_cafile')} {config.etcd_cafile}: not a PEM CA certificate "
                              f"({_ssl_reason(error)}); give the CA that signed etcd's certificate") from None
    if config.etcd_certfile and config.etcd_keyfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            # An empty password makes an encrypted key fail instead of prompting on the terminal.
            context.load_cert_chain(config.etcd_certfile, config.etcd_keyfile, password=lambda: b"")
        except ssl.SSLError as error:
            raise ConfigError(f"{source_of(args, 'etcd_certfile')} {config.etcd_certfile} and "
                              f"{source_of(args, 'etcd_keyfile')} {config.etcd_keyfile} do not load as a "
                              f"certificate and its unencrypted key ({_ssl_reason(error)})") from None


def _check_readable(path: str, source: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise ConfigError(f"{source} {path}: no such file; fix the path or mount the file") from None
    except IsADirectoryError:
        raise ConfigError(f"{source} {path}: is a directory, not a file") from None
    except PermissionError:
        raise ConfigError(f"{source} {path}: not readable by this user (uid {os.getuid()}); "
                          "fix its permissions") from None
    except OSError as error:
        raise ConfigError(f"{source} {path}: cannot be read ({error.strerror or error})") from None


def _ssl_reason(error: Exception) -> str:
    reason = getattr(error, "reason", None)
    return str(reason).replace("_", " ").lower() if reason else str(error)
