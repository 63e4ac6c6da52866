"""``flannel-alivpc install``: the command line of the 2017 guide's kubemgr.sh, made safe.

    flannel-alivpc install nice --node-type master --region cn-hangzhou --discovery token://
    flannel-alivpc install --node-type node --discovery 'token://<id>.<secret>@<master>:6443?ca-cert-hash=sha256:<hash>'
    flannel-alivpc install --node-type down --yes

The guide's throwaway first word (``bash -s nice ...``) and its short options
(-t -k -s -r -d) are accepted. Keys come from the environment or --key-file;
--key-id/--key-secret still work but draw a warning.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence

from flannel_alivpc.clients.cloud_flags import add_cloud_flags
from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.installer.manifests import (
    BACKENDS,
    DEFAULT_IMAGE,
    DEFAULT_POD_CIDR,
    DEFAULT_SERVICE_CIDR,
    IMAGE_ENV,
    SUBNET_MANAGERS,
    check_image_reference,
)
from flannel_alivpc.installer.options import (
    DEFAULT_IMAGE_REPOSITORY,
    DEFAULT_KUBERNETES_VERSION,
    DEFAULT_PACKAGE_MIRROR,
    NODE_TYPES,
    Options,
    load_access_key,
    parse_discovery,
    parse_kubernetes_version,
)
from flannel_alivpc.installer.plan import Reporter
from flannel_alivpc.installer.runner import CommandRunner, SubprocessRunner

DISCOVERY_ENV = "FLANNEL_ALIVPC_DISCOVERY"


def _node_type(value: str) -> str:
    try:
        return NODE_TYPES[value.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"{value!r}: use master, node or down (or m, n, d)") from None


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
               env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """Register ``flannel-alivpc install``."""
    environ = os.environ if env is None else env
    parser = subparsers.add_parser(
        "install", help="install Kubernetes with flannel-alivpc on this machine, or tear it down",
        description="Set this ECS instance up as a Kubernetes master or node with flannel-alivpc (kubeadm, "
        "containerd), or tear it down (--node-type down). Every step checks before it acts, so a re-run "
        "resumes; --dry-run shows the plan and changes nothing. Keys: env ACCESS_KEY_ID/ACCESS_KEY_SECRET "
        "or --key-file, never needed on argv.")
    parser.add_argument("legacy_word", nargs="?", metavar="WORD",
                        help="ignored: the throwaway first word of the guide's `bash -s nice ...`")
    parser.add_argument("-t", "--node-type", type=_node_type, required=True, metavar="master|node|down")
    keys = parser.add_argument_group("access key (master; down uses it for the VPC route)")
    keys.add_argument("-k", "--key-id", default=None, help="access key id (prefer env ACCESS_KEY_ID)")
    keys.add_argument("-s", "--key-secret", default=None,
                      help="DISCOURAGED: visible in ps and shell history; use env ACCESS_KEY_SECRET or --key-file")
    keys.add_argument("--key-file", default=None, metavar="FILE",
                      help="file (mode 0600) with ACCESS_KEY_ID=... and ACCESS_KEY_SECRET=... lines")
    keys.add_argument("--ram-role", action="store_true",
                      help="store no key: every node has a RAM role holding manifests/ram-policy.json")
    parser.add_argument("-d", "--discovery", default=environ.get(DISCOVERY_ENV, ""),
                        help="node: token://<id>.<secret>@<master>:6443?ca-cert-hash=sha256:<hash> as printed by "
                        f"the master install (env {DISCOVERY_ENV}); master: token:// (generate) or a token to use")
    cloud = parser.add_argument_group("cloud (the route daemon's flags)")
    add_cloud_flags(cloud, region_short=True)
    # The daemon's FLANNELD_<FLAG> variables count here too.
    from_env = {dest: environ.get(f"FLANNELD_{dest.upper()}") for dest in ("region", "metadata_url", "api_endpoint")}
    parser.set_defaults(**{dest: value for dest, value in from_env.items() if value})
    net = parser.add_argument_group("cluster")
    net.add_argument("--pod-cidr", default=DEFAULT_POD_CIDR, help="pod network (default %(default)s)")
    net.add_argument("--service-cidr", default=DEFAULT_SERVICE_CIDR, help="service network (default %(default)s)")
    net.add_argument("--subnet-manager", choices=SUBNET_MANAGERS, default="kube",
                     help="where the leases live: kube (default: each Node's podCIDR, as kube-flannel.yml; no node "
                          "holds any etcd credential) or etcd (flannel's etcd registry, for clusters with stock "
                          "flanneld etcd nodes)")
    net.add_argument("--backend", choices=BACKENDS, default=None,
                     help="default: ali-vpc on a VPC, vxlan on the classic network")
    net.add_argument("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION,
                     help="minor version of the packages (default %(default)s; 1.31 or later)")
    net.add_argument("--cloud-provider", choices=["external", "none"], default="external",
                     help="external (default): kubelet and controller manager wait for a cloud node controller "
                     "(the Alibaba Cloud CCM); none: no cloud provider (provider-id is set either way)")
    net.add_argument("--slb-controller", action="store_true", help="also deploy the SLB controller")
    mirrors = parser.add_argument_group("mirrors and images")
    mirrors.add_argument("--package-mirror", default=DEFAULT_PACKAGE_MIRROR,
                         help="Kubernetes package repository base (default %(default)s; in China e.g. "
                         "https://mirrors.aliyun.com/kubernetes-new/core/stable)")
    mirrors.add_argument("--image-repository", default=DEFAULT_IMAGE_REPOSITORY,
                         help="registry for the control-plane and pause images (default %(default)s; in China "
                         "e.g. registry.cn-hangzhou.aliyuncs.com/google_containers)")
    mirrors.add_argument("--registry-mirror", default=None, help="a Docker Hub mirror for containerd")
    mirrors.add_argument("--image", default=environ.get(IMAGE_ENV) or "",
                         help=f"flannel-alivpc image (default: env {IMAGE_ENV}, else {DEFAULT_IMAGE})")
    mirrors.add_argument("--cni-plugin-image", default="", help="image that carries the flannel CNI plugin")
    etcd = parser.add_argument_group("etcd (master: where net-conf.json goes; down: where the lease is)")
    etcd.add_argument("--etcd-endpoints", default=environ.get("FLANNELD_ETCD_ENDPOINTS") or "https://127.0.0.1:2379")
    etcd.add_argument("--etcd-prefix", default=environ.get("FLANNELD_ETCD_PREFIX") or "/coreos.com/network")
    etcd.add_argument("--etcd-cafile", default="/etc/kubernetes/pki/etcd/ca.crt")
    etcd.add_argument("--etcd-certfile", default="/etc/kubernetes/pki/apiserver-etcd-client.crt")
    etcd.add_argument("--etcd-keyfile", default="/etc/kubernetes/pki/apiserver-etcd-client.key")
    run = parser.add_argument_group("running")
    run.add_argument("--dry-run", action="store_true", help="print the plan (would run / already done); change nothing")
    run.add_argument("--root", default="/", metavar="DIR",
                     help="read and write every file under DIR instead of / (for inspection and tests; "
                     "commands still run on this machine, so combine it with --dry-run)")
    run.add_argument("--yes", action="store_true", help="down: really tear this node down (else: the plan only)")
    parser.set_defaults(func=run_command)
    return parser


def masked_command_line(argv: Sequence[str]) -> str:
    """``argv`` as a shell command, the key secret replaced: for the retry hint."""
    words = list(argv)
    for index, word in enumerate(words):
        if word in ("-s", "--key-secret") and index + 1 < len(words):
            words[index + 1] = "***"
        elif word.startswith("--key-secret="):
            words[index] = "--key-secret=***"
    return shlex.join(["flannel-alivpc", *words])


def options_from_args(args: argparse.Namespace, env: Mapping[str, str], warn: Callable[[str], None],
                      argv: Sequence[str] = ()) -> Options:
    if args.legacy_word and args.legacy_word.startswith(("token:", "http")):
        raise ConfigError(f"unexpected argument {args.legacy_word!r}: did you mean --discovery {args.legacy_word}?")
    if args.root != "/" and not args.dry_run:
        warn(f"--root {args.root}: files go under it, but the commands (apt-get, kubeadm, kubectl, ...) still "
             f"run on this machine; add --dry-run to only render and inspect")
    access_key = load_access_key(key_id_arg=args.key_id, key_secret_arg=args.key_secret, key_file=args.key_file,
                                 env=env, warn=warn)
    if args.node_type == "node" and access_key is not None and (args.key_id or args.key_file):
        warn("a node does not use the access key: the cluster's Secret, made by the master install, holds it")
    return Options(
        node_type=args.node_type, root=args.root, dry_run=args.dry_run, yes=args.yes,
        access_key=access_key if args.node_type != "node" else None, ram_role=args.ram_role,
        discovery=parse_discovery(args.discovery, warn), region=args.region,
        metadata_url=args.metadata_url.rstrip("/"), api_endpoint=args.api_endpoint,
        pod_cidr=args.pod_cidr, service_cidr=args.service_cidr, backend=args.backend,
        subnet_manager=args.subnet_manager,
        kubernetes_version=parse_kubernetes_version(args.kubernetes_version),
        package_mirror=args.package_mirror, image_repository=args.image_repository.rstrip("/"),
        registry_mirror=args.registry_mirror,
        image=check_image_reference(args.image, f"--image (or env {IMAGE_ENV})") if args.image else "",
        cni_plugin_image=args.cni_plugin_image,
        cloud_provider=args.cloud_provider, slb_controller=args.slb_controller,
        etcd_endpoints=args.etcd_endpoints, etcd_prefix=args.etcd_prefix, etcd_cafile=args.etcd_cafile,
        etcd_certfile=args.etcd_certfile, etcd_keyfile=args.etcd_keyfile,
        command_line=masked_command_line(argv),
    )


runner_factory: Callable[[], CommandRunner] = SubprocessRunner
"""What runs the commands: the real thing; tests put a recording runner here."""


def run_command(args: argparse.Namespace) -> int:
    from flannel_alivpc.installer.run import run_install

    report = Reporter(sys.stdout, sys.stderr)
    options = options_from_args(args, os.environ, report.warn, sys.argv[1:])
    return run_install(options, runner_factory(), report)
