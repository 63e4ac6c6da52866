"""Steps that make or join the cluster and deploy flannel-alivpc into it."""

from __future__ import annotations

import base64
import json
import secrets
import shlex
from typing import Any

from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.core.network import parse_network_config
from flannel_alivpc.core.secrets import Secret
from flannel_alivpc.installer import manifests
from flannel_alivpc.installer.context import (
    ADMIN_KUBECONFIG,
    CONFIG_DIR,
    ETCD_ROOT_PASSWORD,
    KUBELET_KUBECONFIG,
    Context,
)
from flannel_alivpc.installer.etcd_access import KUBEADM_CLIENTS, confine_to_prefix, is_confined, prefix_range
from flannel_alivpc.installer.host import CONTAINERD_SOCKET, KubernetesPackages
from flannel_alivpc.installer.options import API_SERVER_PORT, Discovery
from flannel_alivpc.installer.plan import Status, StepBlocked
from flannel_alivpc.installer.runner import CommandFailed

KUBEADM_API = "kubeadm.k8s.io/v1beta4"
KUBEADM_CONFIG = f"{CONFIG_DIR}/kubeadm.yaml"
MANIFEST_FILE = f"{CONFIG_DIR}/manifests.yaml"
PKI_DIR = f"{CONFIG_DIR}/pki"
ETCD_CLIENT_KEY = f"{PKI_DIR}/etcd-client.key"
ETCD_CLIENT_CERT = f"{PKI_DIR}/etcd-client.crt"
ETCD_CLIENT_CSR = f"{PKI_DIR}/etcd-client.csr"
ETCD_CLIENT_EXT = f"{PKI_DIR}/etcd-client.ext"
ETCD_CA_CERT = "/etc/kubernetes/pki/etcd/ca.crt"
ETCD_CA_KEY = "/etc/kubernetes/pki/etcd/ca.key"
ETCD_CLIENT_NAME = "flannel-alivpc"


def _args(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    """v1beta4 extra arguments: a list of {name, value}."""
    return [{"name": name, "value": value} for name, value in pairs]


def node_registration(ctx: Context) -> dict[str, Any]:
    kubelet = [("provider-id", ctx.provider_id)]
    if ctx.options.cloud_provider == "external":
        # The node starts tainted node.cloudprovider.kubernetes.io/uninitialized until a
        # cloud node controller (the Alibaba Cloud CCM) initialises it.
        kubelet.insert(0, ("cloud-provider", "external"))
    return {"name": ctx.node_name, "criSocket": CONTAINERD_SOCKET, "kubeletExtraArgs": _args(kubelet)}


def kubernetes_version(ctx: Context) -> str:
    """The installed kubeadm's own version when it is the wanted minor, else kubeadm's stable label."""
    version = KubernetesPackages().installed_version(ctx)
    wanted = ctx.options.kubernetes_version
    return version if version.startswith(f"v{wanted}.") else f"stable-{wanted}"


def kubeadm_documents(ctx: Context) -> list[dict[str, Any]]:
    opts = ctx.options
    if opts.node_type == "node":
        discovery = opts.discovery
        return [{
            "apiVersion": KUBEADM_API,
            "kind": "JoinConfiguration",
            "discovery": {"bootstrapToken": {"apiServerEndpoint": discovery.endpoint, "token": discovery.token,
                                             "caCertHashes": [discovery.ca_cert_hash]}},
            "nodeRegistration": node_registration(ctx),
        }]
    identity = ctx.identity()
    init: dict[str, Any] = {"apiVersion": KUBEADM_API, "kind": "InitConfiguration"}
    if not opts.discovery.empty:
        init["bootstrapTokens"] = [{"token": opts.discovery.token, "ttl": "24h0m0s",
                                    "usages": ["signing", "authentication"],
                                    "groups": ["system:bootstrappers:kubeadm:default-node-token"]}]
    init["localAPIEndpoint"] = {"advertiseAddress": identity.private_ipv4, "bindPort": API_SERVER_PORT}
    init["nodeRegistration"] = node_registration(ctx)
    controller_args = [("configure-cloud-routes", "false")]
    if opts.cloud_provider == "external":
        controller_args.insert(0, ("cloud-provider", "external"))
    cluster: dict[str, Any] = {
        "apiVersion": KUBEADM_API,
        "kind": "ClusterConfiguration",
        "kubernetesVersion": kubernetes_version(ctx),
        "imageRepository": opts.image_repository,
        "networking": {"podSubnet": opts.pod_cidr, "serviceSubnet": opts.service_cidr,
                       "dnsDomain": "cluster.local"},
        # kube-apiserver takes no cloud-provider flag any more (removed in 1.33).
        "controllerManager": {"extraArgs": _args(controller_args)},
    }
    kubelet = {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
               "cgroupDriver": "systemd"}
    return [init, cluster, kubelet]


def render_kubeadm_config(ctx: Context) -> str:
    return manifests.dump_yaml(kubeadm_documents(ctx), [
        "kubeadm configuration written by flannel-alivpc install (rewritten on every run).",
        "It may hold a bootstrap token: keep it private (mode 0600)."])


class KubeadmConfig:
    name = "kubeadm-config"
    title = f"write the kubeadm configuration ({KUBEADM_API}: cloud-provider, provider-id, pod and service CIDRs)"
    always = False

    def check(self, ctx: Context) -> Status:
        if ctx.fs.same(KUBEADM_CONFIG, render_kubeadm_config(ctx), mode=0o600):
            return Status(True, KUBEADM_CONFIG)
        return Status(False, f"{KUBEADM_CONFIG} to write")

    def plan(self, ctx: Context) -> list[str]:
        return [f"write {KUBEADM_CONFIG} (mode 0600), provider-id {ctx.provider_id}, node {ctx.node_name}"]

    def apply(self, ctx: Context) -> None:
        ctx.fs.write(KUBEADM_CONFIG, render_kubeadm_config(ctx), mode=0o600)


class KubeadmInit:
    name = "kubeadm-init"
    title = "kubeadm init: the control plane on this machine"
    always = False

    def check(self, ctx: Context) -> Status:
        return Status(ctx.fs.exists(ADMIN_KUBECONFIG), ADMIN_KUBECONFIG if ctx.fs.exists(ADMIN_KUBECONFIG) else "")

    def command(self, ctx: Context) -> list[str]:
        return ["kubeadm", "init", "--config", str(ctx.fs.path(KUBEADM_CONFIG))]

    def plan(self, ctx: Context) -> list[str]:
        return [shlex.join(self.command(ctx))]

    def apply(self, ctx: Context) -> None:
        ctx.runner.run(self.command(ctx), timeout=1200)


class KubeadmJoin:
    name = "kubeadm-join"
    title = "kubeadm join: register this machine with the cluster"
    always = False

    def check(self, ctx: Context) -> Status:
        return Status(ctx.fs.exists(KUBELET_KUBECONFIG))

    def command(self, ctx: Context) -> list[str]:
        # The token is in the 0600 config file, not on the command line.
        return ["kubeadm", "join", "--config", str(ctx.fs.path(KUBEADM_CONFIG))]

    def plan(self, ctx: Context) -> list[str]:
        return [shlex.join(self.command(ctx)) + f"  (API server {ctx.options.discovery.endpoint})"]

    def apply(self, ctx: Context) -> None:
        ctx.runner.run(self.command(ctx), timeout=1200)


class EtcdClientCert:
    name = "etcd-client-cert"
    title = "an etcd client certificate for the route daemons, signed by the cluster's etcd CA"
    always = False

    def check(self, ctx: Context) -> Status:
        if not (ctx.fs.exists(ETCD_CLIENT_CERT) and ctx.fs.exists(ETCD_CLIENT_KEY)):
            return Status(False)
        verified = ctx.runner.run(["openssl", "verify", "-CAfile", str(ctx.fs.path(ETCD_CA_CERT)),
                                   str(ctx.fs.path(ETCD_CLIENT_CERT))], check=False)
        return Status(verified.ok, ETCD_CLIENT_CERT if verified.ok else "not signed by the current etcd CA")

    def commands(self, ctx: Context) -> list[list[str]]:
        p = ctx.fs.path
        return [
            ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(p(ETCD_CLIENT_KEY)),
             "-subj", f"/O={ETCD_CLIENT_NAME}/CN={ETCD_CLIENT_NAME}", "-out", str(p(ETCD_CLIENT_CSR))],
            ["openssl", "x509", "-req", "-in", str(p(ETCD_CLIENT_CSR)), "-CA", str(p(ETCD_CA_CERT)),
             "-CAkey", str(p(ETCD_CA_KEY)), "-set_serial", f"0x{secrets.token_hex(16)}", "-days", "3650",
             "-sha256", "-extfile", str(p(ETCD_CLIENT_EXT)), "-out", str(p(ETCD_CLIENT_CERT))],
        ]

    def plan(self, ctx: Context) -> list[str]:
        return [shlex.join(c) for c in self.commands(ctx)]

    def apply(self, ctx: Context) -> None:
        ctx.fs.path(PKI_DIR).mkdir(parents=True, exist_ok=True)
        ctx.fs.path(PKI_DIR).chmod(0o700)
        ctx.fs.write(ETCD_CLIENT_EXT, "keyUsage = critical, digitalSignature, keyEncipherment\n"
                                      "extendedKeyUsage = clientAuth\n")
        for command in self.commands(ctx):
            ctx.runner.run(command)
        if ctx.fs.exists(ETCD_CLIENT_KEY):
            ctx.fs.path(ETCD_CLIENT_KEY).chmod(0o600)


def _secret_data(ctx: Context, name: str) -> dict[str, str] | None:
    """The decoded data of Secret ``name`` in kube-system, ``None`` when it does not exist."""
    result = ctx.runner.run(ctx.kubectl("get", "secret", name, "-n", manifests.NAMESPACE, "-o", "json"),
                            check=False)
    if not result.ok:
        return None
    try:
        data = json.loads(result.stdout).get("data") or {}
        return {str(k): base64.b64decode(str(v)).decode() for k, v in data.items()}
    except (ValueError, AttributeError):
        return None


def _apply_stdin(ctx: Context, document: dict[str, Any]) -> None:
    """``kubectl apply -f -`` with the object on stdin: secrets never touch argv or disk."""
    ctx.runner.run(ctx.kubectl("apply", "-f", "-"), input=json.dumps(document))


class EtcdSecret:
    name = "etcd-secret"
    title = f"store the etcd client certificate as Secret {manifests.NAMESPACE}/{manifests.ETCD_SECRET}"
    always = False

    def _wanted(self, ctx: Context) -> dict[str, str]:
        files = {"ca.crt": ETCD_CA_CERT, "tls.crt": ETCD_CLIENT_CERT, "tls.key": ETCD_CLIENT_KEY}
        values = {key: ctx.fs.read(path) for key, path in files.items()}
        missing = [files[k] for k, v in values.items() if v is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)} missing")
        # kubeadm's etcd listens on the master's address, where every node's daemon reaches it.
        return {manifests.ETCD_ENDPOINTS_KEY: f"https://{ctx.identity().private_ipv4}:2379",
                **{k: v or "" for k, v in values.items()}}

    def check(self, ctx: Context) -> Status:
        if not all(ctx.fs.exists(p) for p in (ETCD_CA_CERT, ETCD_CLIENT_CERT, ETCD_CLIENT_KEY)):
            return Status(False, "after the certificate is made")
        return Status(_secret_data(ctx, manifests.ETCD_SECRET) == self._wanted(ctx))

    def plan(self, ctx: Context) -> list[str]:
        return [shlex.join(ctx.kubectl("apply", "-f", "-")) + "  (the Secret on stdin)"]

    def apply(self, ctx: Context) -> None:
        wanted = self._wanted(ctx)
        _apply_stdin(ctx, manifests.etcd_secret(wanted[manifests.ETCD_ENDPOINTS_KEY], wanted["ca.crt"],
                                                wanted["tls.crt"], wanted["tls.key"]))


class NetworkConfig:
    name = "network-config"
    title = "flannel's network config (net-conf.json) in etcd"
    always = False

    def _key(self, ctx: Context) -> str:
        return ctx.options.etcd_prefix.rstrip("/") + "/config"

    def _wanted(self, ctx: Context) -> str:
        return manifests.net_conf_json(ctx.options.pod_cidr, ctx.backend)

    def check(self, ctx: Context) -> Status:
        key = self._key(ctx)
        if not ctx.etcd_configured():
            return Status(False, "once etcd runs")
        current = ctx.etcd().get(key)
        if current is None:
            return Status(False, f"{key} is not set")
        wanted = self._wanted(ctx)
        try:
            same = json.loads(current.value) == json.loads(wanted)
        except ValueError:
            same = False
        if same:
            return Status(True, key)
        existing = current.value.decode(errors="replace") if isinstance(current.value, bytes) else str(current.value)
        raise StepBlocked(f"etcd key {key} already holds another network config: {existing.strip()}\n"
                          f"It was left as it is: changing the network under running nodes breaks them. Repeat "
                          f"the --pod-cidr/--backend it uses, or, if no node uses it, delete the key and re-run.")

    def plan(self, ctx: Context) -> list[str]:
        return [f"etcd put {self._key(ctx)} {json.dumps(json.loads(self._wanted(ctx)))}"]

    def apply(self, ctx: Context) -> None:
        wanted = self._wanted(ctx)
        parse_network_config(wanted, source="the rendered net-conf.json")
        ctx.etcd().put(self._key(ctx), wanted)


class EtcdAccess:
    name = "etcd-access"
    title = ("confine the route daemons' etcd user to flannel's prefix (etcd RBAC; authentication on, "
             "kubeadm's own clients kept root)")
    always = False

    def check(self, ctx: Context) -> Status:
        if not ctx.etcd_configured():
            return Status(False, "once etcd runs")
        if not ctx.fs.exists(ETCD_ROOT_PASSWORD):
            return Status(False, "etcd authentication is off: the daemons' certificate would read every key")
        confined = is_confined(ctx.etcd(), ctx.options.etcd_prefix)
        return Status(confined, f"user {ETCD_CLIENT_NAME}: {prefix_range(ctx.options.etcd_prefix)} only"
                      if confined else f"role {ETCD_CLIENT_NAME} is missing or grants more than the prefix")

    def plan(self, ctx: Context) -> list[str]:
        prefix = prefix_range(ctx.options.etcd_prefix)
        return [f"etcd user add root (password in {ETCD_ROOT_PASSWORD}, 0600); root role for "
                f"{', '.join(KUBEADM_CLIENTS)}",
                f"etcd role add {ETCD_CLIENT_NAME}: readwrite {prefix} only; user {ETCD_CLIENT_NAME} (the "
                f"daemons' certificate CN) holds it",
                "etcd auth enable"]

    def apply(self, ctx: Context) -> None:
        existing = ctx.fs.read(ETCD_ROOT_PASSWORD)
        password = existing.strip() if existing else secrets.token_urlsafe(24)
        if not existing:
            ctx.fs.write(ETCD_ROOT_PASSWORD, password + "\n", mode=0o600)
        confine_to_prefix(ctx.etcd(), ctx.options.etcd_prefix, root_password=Secret(password),
                          user=ETCD_CLIENT_NAME, root_users=KUBEADM_CLIENTS)
        ctx.reconnect_etcd()


class CloudSecret:
    name = "cloud-secret"
    title = f"store the access key as Secret {manifests.NAMESPACE}/{manifests.CREDENTIALS_SECRET}"
    always = False

    def check(self, ctx: Context) -> Status:
        key = ctx.options.access_key
        if key is None:
            return Status(True, "--ram-role: the pods use the instances' RAM role")
        wanted = {manifests.SECRET_KEY_ID: key.key_id, manifests.SECRET_KEY_SECRET: key.secret.reveal()}
        return Status(_secret_data(ctx, manifests.CREDENTIALS_SECRET) == wanted,
                      f"key {key.key_id} from the {key.source}")

    def plan(self, ctx: Context) -> list[str]:
        return [shlex.join(ctx.kubectl("apply", "-f", "-")) + "  (the Secret on stdin, never on disk or argv)"]

    def apply(self, ctx: Context) -> None:
        key = ctx.options.access_key
        if key is None:
            return
        _apply_stdin(ctx, manifests.credentials_secret(key.key_id, key.secret.reveal()))


def manifest_values(ctx: Context) -> manifests.ManifestValues:
    opts = ctx.options
    return manifests.ManifestValues(
        image=opts.image or manifests.DEFAULT_IMAGE,
        cni_plugin_image=opts.cni_plugin_image or manifests.CNI_PLUGIN_IMAGE,
        pod_cidr=opts.pod_cidr,
        backend=ctx.backend,
        subnet_manager=opts.subnet_manager,
        etcd_prefix=ctx.options.etcd_prefix,
    )


def render_cluster_manifests(ctx: Context) -> str:
    objects = manifests.cluster_objects(manifest_values(ctx), slb_controller=ctx.options.slb_controller)
    return manifests.dump_yaml(objects, ["flannel-alivpc as deployed on this cluster by flannel-alivpc install."])


class Manifests:
    name = "manifests"
    title = "apply the DaemonSet, ConfigMap, RBAC (and SLB controller) with this cluster's values"
    always = False

    def check(self, ctx: Context) -> Status:
        if not ctx.fs.same(MANIFEST_FILE, render_cluster_manifests(ctx)):
            return Status(False, f"{MANIFEST_FILE} to write")
        diff = ctx.runner.run(ctx.kubectl("diff", "-f", str(ctx.fs.path(MANIFEST_FILE))), check=False)
        return Status(diff.returncode == 0, "the cluster matches" if diff.returncode == 0 else "")

    def plan(self, ctx: Context) -> list[str]:
        return [f"write {MANIFEST_FILE}", shlex.join(ctx.kubectl("apply", "-f", str(ctx.fs.path(MANIFEST_FILE))))]

    def apply(self, ctx: Context) -> None:
        ctx.fs.write(MANIFEST_FILE, render_cluster_manifests(ctx))
        ctx.runner.run(ctx.kubectl("apply", "-f", str(ctx.fs.path(MANIFEST_FILE))))


def parse_join_command(text: str) -> Discovery:
    """``kubeadm join HOST:PORT --token T --discovery-token-ca-cert-hash H`` as a Discovery."""
    words = shlex.split(text.strip().splitlines()[-1] if text.strip() else "")
    try:
        endpoint = words[2]
        token = words[words.index("--token") + 1]
        ca_hash = words[words.index("--discovery-token-ca-cert-hash") + 1]
    except (IndexError, ValueError):
        raise ConfigError(f"kubeadm printed a join command this installer cannot read: {text.strip()!r}") from None
    host, _, port = endpoint.rpartition(":")
    token_id, _, token_secret = token.partition(".")
    return Discovery(token_id=token_id, token_secret=Secret(token_secret), host=host,
                     port=int(port) if port.isdigit() else API_SERVER_PORT, ca_cert_hash=ca_hash)


class JoinCommand:
    name = "join-command"
    title = "print the command that joins a node"
    always = True

    def command(self, ctx: Context) -> list[str]:
        return ["kubeadm", "token", "create", "--print-join-command",
                "--kubeconfig", str(ctx.fs.path(ADMIN_KUBECONFIG))]

    def check(self, ctx: Context) -> Status:
        return Status(False)

    def plan(self, ctx: Context) -> list[str]:
        return [shlex.join(self.command(ctx)) + "  (a new bootstrap token, valid 24 h)"]

    def apply(self, ctx: Context) -> None:
        result = ctx.runner.run(self.command(ctx))
        discovery = parse_join_command(result.stdout)
        if discovery.empty or not discovery.ca_cert_hash:
            raise CommandFailed(result, "printed no usable join command")
        say = ctx.report.say
        say("")
        say("The master is ready. To add a node, run this on it as root (the token expires in 24 h;")
        say("`kubeadm token create --print-join-command` here makes a new one):")
        say("")
        say(f"  flannel-alivpc install --node-type node --discovery '{discovery.url()}'")
        say("")
        say("or with kubeadm alone:")
        say(f"  {result.stdout.strip().splitlines()[-1]}")
        say("")
