"""What the operator asked for: node type, discovery, credentials, CIDRs, versions, mirrors.

Everything is checked here, before anything runs, and a bad value is a
``ConfigError`` that names the flag, what is wrong with it and what to do.

The access key: ``--key-id``/``--key-secret`` are accepted for the 2017
guide's command line, but anything on a command line shows in ``ps`` and in
the shell history, so they draw a warning; the intended sources are the
environment (``ACCESS_KEY_ID``/``ACCESS_KEY_SECRET``, or the
``ALIBABA_CLOUD_*`` names) or ``--key-file`` (mode 0600, ``KEY=VALUE`` lines).
The secret lives in a ``Secret`` object that prints as ``***``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from flannel_alivpc.core.cloud import DEFAULT_METADATA_URL
from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.core.secrets import Secret
from flannel_alivpc.installer.manifests import BACKENDS, DEFAULT_POD_CIDR, DEFAULT_SERVICE_CIDR, SUBNET_MANAGERS

NODE_TYPES = {"m": "master", "master": "master", "n": "node", "node": "node", "d": "down", "down": "down"}
API_SERVER_PORT = 6443
LEGACY_DISCOVERY_PORT = 9898
MIN_KUBERNETES_MINOR = 31
"""kubeadm's v1beta4 config API, which the installer writes, needs kubeadm 1.31 or later."""
DEFAULT_KUBERNETES_VERSION = "1.34"
DEFAULT_PACKAGE_MIRROR = "https://pkgs.k8s.io/core:/stable:"
DEFAULT_IMAGE_REPOSITORY = "registry.k8s.io"
RESERVED_CIDR = ipaddress.IPv4Network("100.64.0.0/10")
KEY_ENV_PAIRS = (("ACCESS_KEY_ID", "ACCESS_KEY_SECRET"),
                 ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"))
_TOKEN = re.compile(r"^([a-z0-9]{6})[.:]([a-z0-9]{16})$")
_CA_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class AccessKey:
    key_id: str
    secret: Secret = field(repr=False)
    source: str
    """Where it came from, for messages: ``environment``, ``--key-file FILE`` or ``command line``."""

    def __repr__(self) -> str:
        return f"AccessKey(key_id={self.key_id!r}, secret=***, source={self.source!r})"


@dataclass(frozen=True)
class Discovery:
    """How a worker finds the cluster: kubeadm's bootstrap token, API server and CA hash.

    The guide's form ``token://<id>:<secret>@<host>:9898`` (kubeadm 1.6's discovery
    service) and the modern ``token://<id>.<secret>@<host>:6443?ca-cert-hash=sha256:...``
    are both read; ``token://`` alone means "generate one" (on a master).
    """

    token_id: str = ""
    token_secret: Secret | None = field(default=None, repr=False)
    host: str = ""
    port: int = API_SERVER_PORT
    ca_cert_hash: str = ""

    @property
    def empty(self) -> bool:
        return not self.token_id

    @property
    def token(self) -> str:
        """``<id>.<secret>``: the bootstrap token as kubeadm takes it."""
        return f"{self.token_id}.{self.token_secret.reveal()}" if self.token_secret else ""

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self) -> str:
        query = f"?ca-cert-hash={self.ca_cert_hash}" if self.ca_cert_hash else ""
        return f"token://{self.token}@{self.endpoint}{query}"


def parse_discovery(value: str, warn: Callable[[str], None]) -> Discovery:
    if not value or value in ("token://", "token:"):
        return Discovery()
    parts = urlsplit(value)
    if parts.scheme != "token":
        raise ConfigError(f"--discovery {value.split('@')[-1]!r}: expected token://<id>.<secret>@<host>:<port>"
                          f"?ca-cert-hash=sha256:<hash> (the master install prints it)")
    credentials, _, hostport = parts.netloc.rpartition("@")
    match = _TOKEN.match(credentials)
    if not match:
        raise ConfigError("--discovery: the token must be 6 and 16 lower-case letters or digits, "
                          "<id>.<secret> (or the guide's <id>:<secret>); get one with "
                          "`kubeadm token create --print-join-command` on the master")
    host, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    if not host:
        raise ConfigError("--discovery: no API server address after '@': token://<id>.<secret>@<host>:6443")
    port = API_SERVER_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"--discovery: {port_text!r} is not a port number")
        port = int(port_text)
    if port == LEGACY_DISCOVERY_PORT:
        warn(f"--discovery names port {LEGACY_DISCOVERY_PORT}, kubeadm 1.6's discovery service, which no "
             f"longer exists: joining through the API server on port {API_SERVER_PORT}")
        port = API_SERVER_PORT
    query = parse_qs(parts.query)
    ca_hash = (query.get("ca-cert-hash") or [""])[0]
    return Discovery(token_id=match.group(1), token_secret=Secret(match.group(2)), host=host, port=port,
                     ca_cert_hash=ca_hash)


def _file_values(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            raise ConfigError(f"--key-file {path}: line {number} is not KEY=VALUE "
                              f"(expected ACCESS_KEY_ID=... and ACCESS_KEY_SECRET=...)")
        values[name.strip()] = value.strip().strip("'\"")
    return values


def load_access_key(
    *,
    key_id_arg: str | None,
    key_secret_arg: str | None,
    key_file: str | None,
    env: Mapping[str, str],
    warn: Callable[[str], None],
) -> AccessKey | None:
    """The access key from argv, ``--key-file`` or the environment (first found wins), or ``None``."""
    if key_id_arg or key_secret_arg:
        if key_secret_arg:
            warn("--key-secret on the command line is visible to every user in `ps` and stays in your shell "
                 "history: put it in the environment (ACCESS_KEY_SECRET) or a 0600 --key-file instead, "
                 "and rotate this key if the machine is shared")
        if not (key_id_arg and key_secret_arg):
            given, missing = ("--key-id", "--key-secret") if key_id_arg else ("--key-secret", "--key-id")
            raise ConfigError(f"{given} is given but {missing} is not: give both, or neither and set "
                              f"ACCESS_KEY_ID/ACCESS_KEY_SECRET in the environment")
        return AccessKey(key_id_arg, Secret(key_secret_arg), "command line")
    if key_file:
        path = Path(key_file)
        try:
            mode = path.stat().st_mode
        except OSError as error:
            raise ConfigError(f"--key-file {key_file}: cannot read it ({error.strerror})") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warn(f"--key-file {key_file} can be read by other users (mode {stat.S_IMODE(mode):04o}): "
                 f"chmod 600 {key_file}")
        values = _file_values(path)
        for id_name, secret_name in KEY_ENV_PAIRS:
            if values.get(id_name) and values.get(secret_name):
                return AccessKey(values[id_name], Secret(values[secret_name]), f"--key-file {key_file}")
        raise ConfigError(f"--key-file {key_file} has no ACCESS_KEY_ID and ACCESS_KEY_SECRET lines")
    for id_name, secret_name in KEY_ENV_PAIRS:
        key_id = env.get(id_name, "").strip()
        secret = env.get(secret_name, "").strip()
        if key_id and secret:
            return AccessKey(key_id, Secret(secret), "environment")
        if key_id or secret:
            present, missing = (id_name, secret_name) if key_id else (secret_name, id_name)
            raise ConfigError(f"{present} is set but {missing} is not: set both (or neither)")
    return None


def parse_cidr(flag: str, value: str) -> ipaddress.IPv4Network:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        raise ConfigError(f"{flag} {value!r} is not an IPv4 network like 172.16.0.0/16 ({error})") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise ConfigError(f"{flag} {value!r}: only IPv4 is supported")
    return network


def parse_kubernetes_version(value: str) -> str:
    """``1.34`` (or ``v1.34``, ``1.34.2``) -> ``1.34``; at least 1.31 (kubeadm's v1beta4)."""
    match = re.match(r"^v?1\.(\d+)(\.\d+)?$", value.strip())
    if not match:
        raise ConfigError(f"--kubernetes-version {value!r}: expected a version like {DEFAULT_KUBERNETES_VERSION}")
    minor = int(match.group(1))
    if minor < MIN_KUBERNETES_MINOR:
        raise ConfigError(f"--kubernetes-version {value}: the installer writes kubeadm's v1beta4 config, which "
                          f"needs Kubernetes 1.{MIN_KUBERNETES_MINOR} or later")
    return f"1.{minor}"


@dataclass(frozen=True)
class Options:
    node_type: str
    """``master``, ``node`` or ``down``."""
    root: str = "/"
    dry_run: bool = False
    yes: bool = False
    access_key: AccessKey | None = None
    ram_role: bool = False
    discovery: Discovery = field(default_factory=Discovery)
    region: str | None = None
    metadata_url: str = DEFAULT_METADATA_URL
    api_endpoint: str | None = None
    pod_cidr: str = DEFAULT_POD_CIDR
    service_cidr: str = DEFAULT_SERVICE_CIDR
    backend: str | None = None
    """``ali-vpc`` or ``vxlan``; ``None``: ali-vpc on a VPC, vxlan on the classic network."""
    subnet_manager: str = "kube"
    """``kube`` (the Nodes' podCIDRs, no etcd access for any node) or ``etcd`` (flannel's etcd registry)."""
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
    package_mirror: str = DEFAULT_PACKAGE_MIRROR
    image_repository: str = DEFAULT_IMAGE_REPOSITORY
    registry_mirror: str | None = None
    image: str = ""
    cni_plugin_image: str = ""
    cloud_provider: str = "external"
    slb_controller: bool = False
    etcd_endpoints: str = "https://127.0.0.1:2379"
    etcd_prefix: str = "/coreos.com/network"
    etcd_cafile: str = "/etc/kubernetes/pki/etcd/ca.crt"
    etcd_certfile: str = "/etc/kubernetes/pki/apiserver-etcd-client.crt"
    etcd_keyfile: str = "/etc/kubernetes/pki/apiserver-etcd-client.key"
    command_line: str = ""
    """The command as typed, the key secret masked: the retry hint repeats it."""

    def __post_init__(self) -> None:
        if self.node_type not in ("master", "node", "down"):
            raise ConfigError(f"--node-type {self.node_type!r}: use master, node or down")
        pods = parse_cidr("--pod-cidr", self.pod_cidr)
        services = parse_cidr("--service-cidr", self.service_cidr)
        if pods.overlaps(services):
            raise ConfigError(f"--pod-cidr {pods} and --service-cidr {services} overlap: pick disjoint ranges")
        for flag, network in (("--pod-cidr", pods), ("--service-cidr", services)):
            if network.overlaps(RESERVED_CIDR):
                raise ConfigError(f"{flag} {network} overlaps {RESERVED_CIDR}, which Alibaba Cloud reserves "
                                  f"for its own services: pick another range")
        if pods.prefixlen > 22:
            raise ConfigError(f"--pod-cidr {pods} is too small: flannel gives each node a /24, "
                              f"so use a /22 or larger (/16 is usual)")
        if self.backend is not None and self.backend not in BACKENDS:
            raise ConfigError(f"--backend {self.backend!r}: use {' or '.join(BACKENDS)}")
        if self.subnet_manager not in SUBNET_MANAGERS:
            raise ConfigError(f"--subnet-manager {self.subnet_manager!r}: use {' or '.join(SUBNET_MANAGERS)}")
        if self.cloud_provider not in ("external", "none"):
            raise ConfigError(f"--cloud-provider {self.cloud_provider!r}: use external or none")
        if not self.metadata_url.startswith(("http://", "https://")):
            raise ConfigError(f"--metadata-url {self.metadata_url!r} must start with http:// or https://")
        if self.node_type == "master" and self.access_key is None and not self.ram_role:
            raise ConfigError("a master needs the access key the cluster will use: set ACCESS_KEY_ID and "
                              "ACCESS_KEY_SECRET in the environment (or --key-file FILE), or pass --ram-role "
                              "when every node has a RAM role holding manifests/ram-policy.json")
        if self.node_type == "node" and self.discovery.empty:
            raise ConfigError("a node needs --discovery token://<id>.<secret>@<master>:6443?ca-cert-hash=sha256:"
                              "<hash>: the master install prints it at the end (or run `kubeadm token create "
                              "--print-join-command` on the master)")
        if self.node_type == "node" and not _CA_HASH.match(self.discovery.ca_cert_hash):
            raise ConfigError("--discovery has no valid ca-cert-hash: without it the node cannot tell the real "
                              "master from an impostor. Add ?ca-cert-hash=sha256:<64 hex digits> as printed "
                              "by the master install")

    @property
    def pod_network(self) -> ipaddress.IPv4Network:
        return parse_cidr("--pod-cidr", self.pod_cidr)

    @property
    def service_network(self) -> ipaddress.IPv4Network:
        return parse_cidr("--service-cidr", self.service_cidr)


def environment_default(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    value = env.get(name)
    return value if value else default


def running_as_root() -> bool:
    return os.geteuid() == 0
