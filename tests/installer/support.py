"""A fake machine for the installer tests: a temporary root and a recording runner that answers like a host.

``FakeHost`` answers the commands the installer runs the way a fresh Ubuntu
machine would and applies their effects under the temporary root: modprobe
creates /sys/module/<name>, ``kubeadm init`` writes the kubeconfigs and makes a
real etcd CA (openssl), openssl itself runs for real, ``kubectl apply -f -``
stores Secrets that ``kubectl get secret`` then returns. Everything is still
recorded, in order, by the ``RecordingRunner``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flannel_alivpc.core.secrets import Secret
from flannel_alivpc.emulator.server import Emulator
from flannel_alivpc.installer.options import AccessKey, Options
from flannel_alivpc.installer.runner import CommandResult, RecordingRunner, SubprocessRunner

UBUNTU = 'PRETTY_NAME="Ubuntu 24.04 LTS"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n'
ROCKY = 'PRETTY_NAME="Rocky Linux 9.4"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n'
TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
SWAPS_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
TOKEN = "abcdef.0123456789abcdef"
CA_HASH = "sha256:" + "3f" * 32

READ_ONLY = (
    ("containerd", "--version"), ("systemctl", "is-active"), ("kubeadm", "version"), ("kubelet", "--version"),
    ("kubectl", "version"), ("openssl", "verify"), ("iptables", "-t"), ("ip", "-j"),
)
"""Command prefixes that only read (``kubectl ... get``/``diff`` are recognised separately)."""


def is_read_only(argv: tuple[str, ...]) -> bool:
    if argv[0] == "kubectl":
        return any(word in ("get", "diff", "version") for word in argv)
    if argv[:2] == ("iptables", "-t"):
        return "-S" in argv
    return any(argv[:len(prefix)] == prefix for prefix in READ_ONLY)


def make_root(root: Path, *, os_release: str = UBUNTU, swap: bool = False) -> Path:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text(os_release)
    (root / "etc/fstab").write_text("UUID=1 / ext4 defaults 0 1\n" + ("/swapfile none swap sw 0 0\n" if swap else ""))
    (root / "proc/net").mkdir(parents=True, exist_ok=True)
    (root / "proc/net/tcp").write_text(TCP_HEADER)
    (root / "proc/net/tcp6").write_text(TCP_HEADER)
    (root / "proc/swaps").write_text(SWAPS_HEADER + ("/swapfile file 1048572 0 -2\n" if swap else ""))
    return root


def listen_on(root: Path, port: int) -> None:
    with (root / "proc/net/tcp").open("a") as handle:
        handle.write(f"   0: 00000000:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1\n")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def every_file_text(root: Path) -> Iterator[tuple[Path, str]]:
    for path in root.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes().decode(errors="replace")


class FakeHost:
    """Answers as a fresh machine and applies the commands' effects under ``root``."""

    def __init__(self, root: Path, runner: RecordingRunner, *, kubeadm_version: str = "v1.34.2",
                 master_ip: str = "192.168.0.1") -> None:
        self.root = root
        self.master_ip = master_ip
        self.runner = runner
        self.kubeadm_version = kubeadm_version
        self.packages: set[str] = set()
        self.secrets: dict[str, dict[str, str]] = {}
        self.applied_manifest: str | None = None
        self.real = SubprocessRunner()
        runner.on(self.answer)

    def path(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")

    def _ok(self, argv: tuple[str, ...], stdout: str = "") -> CommandResult:
        return CommandResult(argv, 0, stdout)

    def _missing(self, argv: tuple[str, ...]) -> CommandResult:
        return CommandResult(argv, 127, "", f"{argv[0]}: command not found")

    def answer(self, argv: tuple[str, ...], input: str | None) -> CommandResult | None:
        name = argv[0]
        if name == "modprobe":
            self.path(f"/sys/module/{argv[1]}").mkdir(parents=True, exist_ok=True)
            if argv[1] == "br_netfilter":
                self.path("/proc/sys/net/bridge").mkdir(parents=True, exist_ok=True)
        elif name == "sysctl" and argv[1] == "-p":
            for line in Path(argv[2]).read_text().splitlines():
                if "=" in line and not line.startswith("#"):
                    key, value = (part.strip() for part in line.split("=", 1))
                    target = self.path("/proc/sys/" + key.replace(".", "/"))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(value + "\n")
        elif name == "swapoff":
            self.path("/proc/swaps").write_text(self.path("/proc/swaps").read_text().splitlines()[0] + "\n")
        elif name in ("apt-get", "yum") and "install" in argv:
            self.packages.update(a for a in argv[argv.index("install") + 1:] if not a.startswith("-"))
        elif name == "containerd":
            return self._ok(argv, "containerd 1.7.24") if {"containerd", "containerd.io"} & self.packages \
                else self._missing(argv)
        elif argv[:2] == ("systemctl", "is-active"):
            return self._ok(argv) if {"containerd", "containerd.io"} & self.packages \
                else CommandResult(argv, 3)
        elif name in ("kubeadm", "kubelet", "kubectl") and name not in self.packages:
            return self._missing(argv)
        elif argv[:2] == ("kubeadm", "version"):
            return self._ok(argv, self.kubeadm_version + "\n")
        elif argv[:2] == ("kubeadm", "init"):
            self._init()
        elif argv[:2] == ("kubeadm", "join"):
            self._write("/etc/kubernetes/kubelet.conf", "kind: Config\n")
        elif argv[:2] == ("kubeadm", "token"):
            return self._ok(argv, f"kubeadm join {self.master_ip}:6443 --token {TOKEN} "
                                  f"--discovery-token-ca-cert-hash {CA_HASH} \n")
        elif argv[:2] == ("kubeadm", "reset"):
            for leftover in ("/etc/kubernetes/admin.conf", "/etc/kubernetes/kubelet.conf"):
                self.path(leftover).unlink(missing_ok=True)
        elif name == "openssl":
            return self.real.run(argv, input=input, check=False)
        elif name == "gpg":
            Path(argv[argv.index("-o") + 1]).write_bytes(b"keyring")
        elif name == "kubectl":
            return self._kubectl(argv, input)
        return None

    def _write(self, host_path: str, text: str) -> None:
        target = self.path(host_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def _init(self) -> None:
        self._write("/etc/kubernetes/admin.conf", "kind: Config\n")
        self._write("/etc/kubernetes/kubelet.conf", "kind: Config\n")
        self._write("/etc/kubernetes/manifests/etcd.yaml", "kind: Pod\n")
        pki = self.path("/etc/kubernetes/pki/etcd")
        pki.mkdir(parents=True, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(pki / "ca.key"),
                        "-out", str(pki / "ca.crt"), "-subj", "/CN=etcd-ca", "-days", "2"],
                       check=True, capture_output=True)

    def _kubectl(self, argv: tuple[str, ...], input: str | None) -> CommandResult:
        words = list(argv)
        if "get" in words and "secret" in words:
            name = words[words.index("secret") + 1]
            if name not in self.secrets:
                return CommandResult(argv, 1, "", f'Error from server (NotFound): secrets "{name}" not found')
            data = {k: base64.b64encode(v.encode()).decode() for k, v in self.secrets[name].items()}
            return self._ok(argv, json.dumps({"kind": "Secret", "data": data}))
        if "apply" in words and words[words.index("-f") + 1] == "-":
            document = json.loads(input or "{}")
            self.secrets[document["metadata"]["name"]] = dict(document["stringData"])
            return self._ok(argv, f"secret/{document['metadata']['name']} configured")
        if "apply" in words:
            self.applied_manifest = Path(words[words.index("-f") + 1]).read_text()
            return self._ok(argv)
        if "diff" in words:
            current = Path(words[words.index("-f") + 1]).read_text()
            return CommandResult(argv, 0 if current == self.applied_manifest else 1)
        return self._ok(argv)


def master_options(emulator: Emulator, instance_id: str, root: Path, **overrides: Any) -> Options:
    values: dict[str, Any] = {
        "node_type": "master", "root": str(root),
        "access_key": emulator_key(emulator),
        "metadata_url": f"{emulator.endpoint}/meta/{instance_id}", "api_endpoint": emulator.endpoint,
        "command_line": "flannel-alivpc install --node-type master",
    }
    values.update(overrides)
    return Options(**values)


def emulator_key(emulator: Emulator) -> AccessKey:
    return AccessKey(emulator.access_key_id, Secret(emulator.access_key_secret), "environment")


def private_ip(emulator: Emulator, instance_id: str) -> str:
    return str(emulator.state.instances[instance_id].private_ip)


def files_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777
