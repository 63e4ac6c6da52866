"""Steps that prepare the machine: preflight, kernel settings, container runtime, packages."""

from __future__ import annotations

import ipaddress
import platform
from dataclasses import dataclass

from flannel_alivpc.core.errors import CloudError
from flannel_alivpc.installer.context import ADMIN_KUBECONFIG, KUBELET_KUBECONFIG, Context
from flannel_alivpc.installer.options import RESERVED_CIDR, running_as_root
from flannel_alivpc.installer.plan import Status, StepBlocked

MODULES = ("br_netfilter", "overlay", "vxlan")
SYSCTLS = {
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    "net.ipv4.ip_forward": "1",
}
MODULES_FILE = "/etc/modules-load.d/flannel-alivpc.conf"
SYSCTL_FILE = "/etc/sysctl.d/99-flannel-alivpc.conf"
FSTAB = "/etc/fstab"
MASTER_PORTS = (6443, 2379, 2380, 10250, 10257, 10259)
NODE_PORTS = (10250,)
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CONTAINERD_SOCKET = "unix:///run/containerd/containerd.sock"
PAUSE_VERSION = "3.10"
DOCKER_CE_REPO = "/etc/yum.repos.d/docker-ce.repo"
DOCKER_CE_MIRROR = "https://mirrors.aliyun.com/docker-ce/linux/centos"
APT_KEYRING = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
APT_RELEASE_KEY = "/etc/apt/keyrings/kubernetes-release.key"
APT_SOURCE = "/etc/apt/sources.list.d/kubernetes.list"
YUM_REPO = "/etc/yum.repos.d/kubernetes.repo"
KUBE_PACKAGES = ("kubelet", "kubeadm", "kubectl")
CIDR_SUGGESTIONS = (("172.16.0.0/16", "172.19.0.0/20"), ("10.244.0.0/16", "10.96.0.0/12"),
                    ("172.20.0.0/16", "172.21.0.0/20"), ("192.168.0.0/16", "172.31.0.0/20"))
HEADER = "# Written by flannel-alivpc install; it rewrites this file on the next run.\n"


def listening_ports(tables: list[str | None]) -> set[int]:
    """TCP ports in LISTEN state, from the text of /proc/net/tcp and /proc/net/tcp6."""
    ports: set[int] = set()
    for text in tables:
        for line in (text or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def swap_active(text: str | None) -> bool:
    return len([line for line in (text or "").splitlines()[1:] if line.strip()]) > 0


def fstab_without_swap(text: str) -> str:
    lines = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.lstrip().startswith("#") and fields[2] == "swap":
            lines.append(f"# disabled by flannel-alivpc install (kubelet needs swap off): {line}")
        else:
            lines.append(line)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


class Preflight:
    name = "preflight"
    title = "check this machine: root, OS, identity, ports, existing cluster, pod and service CIDRs"
    always = False

    def check(self, ctx: Context) -> Status:
        opts = ctx.options
        problems: list[str] = []
        if ctx.fs.is_real and not running_as_root():
            problems.append("run as root (the installer writes /etc and runs kubeadm): sudo flannel-alivpc install ...")
        os_info = ctx.os_info()
        if os_info.family is None:
            problems.append(f"unsupported system {os_info.pretty!r}: the installer knows apt systems (Debian, "
                            f"Ubuntu) and yum/dnf systems (RHEL family, Alibaba Cloud Linux, Anolis)")
        arch = platform.machine()
        if arch not in ("x86_64", "aarch64"):
            problems.append(f"unsupported architecture {arch}: Kubernetes packages exist for x86_64 and aarch64")
        identity = ctx.identity()
        ours = any(s in ctx.state.completed for s in ("kubeadm-init", "kubeadm-join"))
        existing = [p for p in (ADMIN_KUBECONFIG, KUBELET_KUBECONFIG) if ctx.fs.exists(p)]
        if existing and not ours:
            problems.append(f"this machine already belongs to a cluster ({existing[0]} exists) that this "
                            f"installer did not set up: tear it down first (flannel-alivpc install --node-type "
                            f"down --yes, or kubeadm reset)")
        if not existing:
            wanted = MASTER_PORTS if opts.node_type == "master" else NODE_PORTS
            busy = sorted(set(wanted) & listening_ports([ctx.fs.read("/proc/net/tcp"),
                                                         ctx.fs.read("/proc/net/tcp6")]))
            for port in busy:
                problems.append(f"TCP port {port} is already in use (see `ss -ltnp sport = :{port}`): "
                                f"Kubernetes needs it; stop what listens there")
        if opts.node_type == "master":
            problems.extend(self._cidr_problems(ctx))
        if problems:
            raise StepBlocked("\n".join(f"- {p}" for p in problems))
        where = f"VPC {identity.vpc_id}" if identity.vpc_id else "classic network"
        return Status(True, f"{os_info.pretty}; instance {identity.instance_id} in {ctx.region}, {where}; "
                            f"provider-id {ctx.provider_id}; backend {ctx.backend}", done_word="passed")

    def _cidr_problems(self, ctx: Context) -> list[str]:
        opts = ctx.options
        identity = ctx.identity()
        taken: list[tuple[str, ipaddress.IPv4Network]] = [("the range Alibaba Cloud reserves", RESERVED_CIDR)]
        problems: list[str] = []
        if identity.vpc_id:
            if identity.vpc_cidr:
                taken.append((f"VPC {identity.vpc_id}", ipaddress.IPv4Network(identity.vpc_cidr)))
            try:
                for vsw in ctx.cloud().vpc.list_vswitches(identity.vpc_id):
                    taken.append((f"vSwitch {vsw.vswitch_id}", ipaddress.IPv4Network(vsw.cidr)))
            except CloudError as error:
                problems.append(f"cannot list the vSwitches of VPC {identity.vpc_id} to check the CIDRs: {error} "
                                f"(the access key needs vpc:DescribeVSwitches, see manifests/ram-policy.json)")
        clashes = []
        for flag, network in (("--pod-cidr", opts.pod_network), ("--service-cidr", opts.service_network)):
            for what, other in taken:
                if network.overlaps(other):
                    clashes.append(f"{flag} {network} overlaps {what} ({other})")
        if clashes:
            hint = ""
            for pods, services in CIDR_SUGGESTIONS:
                pair = (ipaddress.IPv4Network(pods), ipaddress.IPv4Network(services))
                if not any(n.overlaps(o) for n in pair for _, o in taken):
                    hint = f"; free ranges here: --pod-cidr {pods} --service-cidr {services}"
                    break
            problems.append("; ".join(clashes) + " (the VPC refuses routes that overlap a vSwitch, and pods "
                            "could not reach those addresses)" + hint)
        return problems

    def plan(self, ctx: Context) -> list[str]:
        return []

    def apply(self, ctx: Context) -> None:
        return None


@dataclass(frozen=True)
class _KernelState:
    missing_modules: tuple[str, ...]
    wrong_sysctls: tuple[str, ...]
    swap_on: bool
    swap_in_fstab: bool
    files_ok: bool


def modules_text() -> str:
    return HEADER + "".join(f"{m}\n" for m in MODULES)


def sysctl_text() -> str:
    return HEADER + "".join(f"{k} = {v}\n" for k, v in SYSCTLS.items())


class HostSettings:
    name = "host-settings"
    title = "kernel modules (br_netfilter, overlay, vxlan), sysctls (bridge netfilter, IP forwarding), swap off"
    always = False

    def _module_loaded(self, ctx: Context, module: str) -> bool:
        if ctx.fs.exists(f"/sys/module/{module}"):
            return True
        loaded = ctx.fs.read("/proc/modules") or ""
        if any(line.split(" ", 1)[0] == module for line in loaded.splitlines()):
            return True
        builtin = ctx.fs.read(f"/lib/modules/{platform.release()}/modules.builtin") or ""
        return any(line.rsplit("/", 1)[-1] == f"{module}.ko" for line in builtin.splitlines())

    def _state(self, ctx: Context) -> _KernelState:
        missing = tuple(m for m in MODULES if not self._module_loaded(ctx, m))
        wrong = tuple(k for k, v in SYSCTLS.items()
                      if (ctx.fs.read("/proc/sys/" + k.replace(".", "/")) or "").strip() != v)
        fstab = ctx.fs.read(FSTAB) or ""
        return _KernelState(
            missing_modules=missing, wrong_sysctls=wrong, swap_on=swap_active(ctx.fs.read("/proc/swaps")),
            swap_in_fstab=fstab_without_swap(fstab) != fstab,
            files_ok=ctx.fs.same(MODULES_FILE, modules_text()) and ctx.fs.same(SYSCTL_FILE, sysctl_text()))

    def check(self, ctx: Context) -> Status:
        s = self._state(ctx)
        todo = [f"load {', '.join(s.missing_modules)}"] if s.missing_modules else []
        todo += [f"set {', '.join(s.wrong_sysctls)}"] if s.wrong_sysctls else []
        todo += ["turn swap off"] if s.swap_on or s.swap_in_fstab else []
        todo += ["write the boot-time settings"] if not s.files_ok else []
        return Status(not todo, "; ".join(todo))

    def plan(self, ctx: Context) -> list[str]:
        s = self._state(ctx)
        lines = [f"write {MODULES_FILE} and {SYSCTL_FILE}"]
        lines += [f"modprobe {m}" for m in s.missing_modules]
        lines.append(f"sysctl -p {SYSCTL_FILE}")
        if s.swap_on:
            lines.append("swapoff -a")
        if s.swap_in_fstab:
            lines.append(f"comment out the swap entries of {FSTAB} (a copy stays in {FSTAB}.flannel-alivpc.bak)")
        return lines

    def apply(self, ctx: Context) -> None:
        s = self._state(ctx)
        ctx.fs.write(MODULES_FILE, modules_text())
        ctx.fs.write(SYSCTL_FILE, sysctl_text())
        for module in s.missing_modules:
            ctx.runner.run(["modprobe", module])
        ctx.runner.run(["sysctl", "-p", str(ctx.fs.path(SYSCTL_FILE))])
        if s.swap_on:
            ctx.runner.run(["swapoff", "-a"])
        if s.swap_in_fstab:
            fstab = ctx.fs.read(FSTAB) or ""
            if not ctx.fs.exists(FSTAB + ".flannel-alivpc.bak"):
                ctx.fs.write(FSTAB + ".flannel-alivpc.bak", fstab)
            ctx.fs.write(FSTAB, fstab_without_swap(fstab))


def containerd_config(image_repository: str) -> str:
    return HEADER + f"""version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image_repository}/pause:{PAUSE_VERSION}"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
"""


def docker_hub_mirror(mirror: str) -> str:
    return HEADER + f"""server = "https://registry-1.docker.io"

[host."{mirror.rstrip('/')}"]
  capabilities = ["pull", "resolve"]
"""


def docker_ce_repo() -> str:
    return HEADER + f"""[docker-ce-stable]
name=Docker CE Stable - $basearch
baseurl={DOCKER_CE_MIRROR}/$releasever/$basearch/stable
enabled=1
gpgcheck=1
gpgkey={DOCKER_CE_MIRROR}/gpg
"""


HUB_HOSTS = "/etc/containerd/certs.d/docker.io/hosts.toml"


class ContainerRuntime:
    name = "container-runtime"
    title = "containerd with the systemd cgroup driver and the pause image from the registry mirror"
    always = False

    def _files(self, ctx: Context) -> dict[str, str]:
        files = {CONTAINERD_CONFIG: containerd_config(ctx.options.image_repository)}
        if ctx.options.registry_mirror:
            files[HUB_HOSTS] = docker_hub_mirror(ctx.options.registry_mirror)
        return files

    def _installed(self, ctx: Context) -> bool:
        return ctx.runner.run(["containerd", "--version"], check=False).ok

    def check(self, ctx: Context) -> Status:
        if not self._installed(ctx):
            return Status(False, "containerd is not installed")
        stale = [path for path, text in self._files(ctx).items() if not ctx.fs.same(path, text)]
        if stale:
            return Status(False, f"{', '.join(stale)} to write")
        if not ctx.runner.run(["systemctl", "is-active", "--quiet", "containerd"], check=False).ok:
            return Status(False, "containerd is not running")
        return Status(True)

    def _install_commands(self, ctx: Context) -> list[list[str]]:
        if ctx.os_info().family == "apt":
            return [["apt-get", "update"], ["apt-get", "install", "-y", "containerd"]]
        return [["yum", "install", "-y", "containerd.io"]]

    def plan(self, ctx: Context) -> list[str]:
        lines = []
        if not self._installed(ctx):
            if ctx.os_info().family == "yum":
                lines.append(f"write {DOCKER_CE_REPO}")
            lines += [" ".join(c) for c in self._install_commands(ctx)]
        lines += [f"write {path}" for path in self._files(ctx)]
        lines += ["systemctl enable --now containerd", "systemctl restart containerd (when its config changed)"]
        return lines

    def apply(self, ctx: Context) -> None:
        if not self._installed(ctx):
            if ctx.os_info().family == "yum":
                ctx.fs.write(DOCKER_CE_REPO, docker_ce_repo())
            for command in self._install_commands(ctx):
                ctx.runner.run(command)
        changed = False
        for path, text in self._files(ctx).items():
            changed = ctx.fs.write(path, text) or changed
        ctx.runner.run(["systemctl", "enable", "--now", "containerd"])
        if changed:
            ctx.runner.run(["systemctl", "restart", "containerd"])


def package_repository(mirror: str, minor: str, family: str) -> str:
    return f"{mirror.rstrip('/')}/v{minor}/{'deb' if family == 'apt' else 'rpm'}/"


def apt_source(mirror: str, minor: str) -> str:
    return HEADER + f"deb [signed-by={APT_KEYRING}] {package_repository(mirror, minor, 'apt')} /\n"


def yum_repo(mirror: str, minor: str) -> str:
    url = package_repository(mirror, minor, "yum")
    return HEADER + f"""[kubernetes]
name=Kubernetes {minor}
baseurl={url}
enabled=1
gpgcheck=1
gpgkey={url}repodata/repomd.xml.key
exclude={' '.join(KUBE_PACKAGES)} cri-tools kubernetes-cni
"""


class KubernetesPackages:
    name = "kubernetes-packages"
    title = "kubeadm, kubelet and kubectl from the package mirror"
    always = False

    def _repo_file(self, ctx: Context) -> tuple[str, str]:
        opts = ctx.options
        if ctx.os_info().family == "apt":
            return APT_SOURCE, apt_source(opts.package_mirror, opts.kubernetes_version)
        return YUM_REPO, yum_repo(opts.package_mirror, opts.kubernetes_version)

    def installed_version(self, ctx: Context) -> str:
        result = ctx.runner.run(["kubeadm", "version", "-o", "short"], check=False)
        return result.stdout.strip() if result.ok else ""

    def check(self, ctx: Context) -> Status:
        version = self.installed_version(ctx)
        wanted = f"v{ctx.options.kubernetes_version}."
        if not version:
            return Status(False, "kubeadm is not installed")
        if not version.startswith(wanted):
            return Status(False, f"kubeadm {version} is installed, {wanted}x is wanted")
        missing = [p for p in ("kubelet", "kubectl")
                   if not ctx.runner.run([p, "--version" if p == "kubelet" else "version", *(
                       () if p == "kubelet" else ("--client",))], check=False).ok]
        if missing:
            return Status(False, f"{', '.join(missing)} missing")
        path, text = self._repo_file(ctx)
        if not ctx.fs.same(path, text):
            return Status(False, f"{path} to write")
        return Status(True, f"kubeadm {version}")

    def _commands(self, ctx: Context) -> list[list[str] | str]:
        """The commands in order; a plain string is "write the repository file here"."""
        opts = ctx.options
        path, _ = self._repo_file(ctx)
        if ctx.os_info().family == "apt":
            url = package_repository(opts.package_mirror, opts.kubernetes_version, "apt")
            return [
                ["apt-get", "update"],
                ["apt-get", "install", "-y", "apt-transport-https", "ca-certificates", "curl", "gpg"],
                ["curl", "-fsSL", "--retry", "3", "-o", str(ctx.fs.path(APT_RELEASE_KEY)), f"{url}Release.key"],
                ["gpg", "--dearmor", "--yes", "-o", str(ctx.fs.path(APT_KEYRING)), str(ctx.fs.path(APT_RELEASE_KEY))],
                # The source names the keyring: written once the keyring exists, or apt-get update fails.
                path,
                ["apt-get", "update"],
                ["apt-get", "install", "-y", *KUBE_PACKAGES],
                ["apt-mark", "hold", *KUBE_PACKAGES],
                ["systemctl", "enable", "kubelet"],
            ]
        return [
            path,
            ["yum", "install", "-y", *KUBE_PACKAGES, "--disableexcludes=kubernetes"],
            ["systemctl", "enable", "kubelet"],
        ]

    def plan(self, ctx: Context) -> list[str]:
        return [f"write {c}" if isinstance(c, str) else " ".join(c) for c in self._commands(ctx)]

    def apply(self, ctx: Context) -> None:
        path, text = self._repo_file(ctx)
        if ctx.os_info().family == "apt":
            ctx.fs.path(APT_KEYRING).parent.mkdir(parents=True, exist_ok=True)
        for command in self._commands(ctx):
            if isinstance(command, str):
                ctx.fs.write(path, text)
            else:
                ctx.runner.run(command)
