"""Master and node installs against a fake host: rendered files under a temporary --root,
commands through a recording runner, identity and vSwitches from the emulator, net-conf.json
in a real etcd."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.core.errors import ConfigError, EtcdAuthError
from flannel_alivpc.core.secrets import Secret
from flannel_alivpc.emulator.server import Emulator, Topology
from flannel_alivpc.installer.etcd_access import is_confined
from flannel_alivpc.installer.options import Discovery, Options, parse_discovery
from flannel_alivpc.installer.plan import STATE_FILE, Reporter
from flannel_alivpc.installer.run import run_install
from flannel_alivpc.installer.runner import CommandResult, RecordingRunner
from flannel_alivpc.testbed.etcd_server import EtcdServer
from tests.installer.support import (
    CA_HASH,
    ROCKY,
    TOKEN,
    FakeHost,
    every_file_text,
    files_mode,
    is_read_only,
    listen_on,
    make_root,
    master_options,
    private_ip,
    snapshot,
)

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run() -> Run:
    def go(options: Options, runner: RecordingRunner, etcd: EtcdServer | None = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        factory = (lambda **auth: EtcdClient(etcd.endpoint, **auth)) if etcd is not None else None
        code = run_install(options, runner, Reporter(out, err), env={}, etcd_factory=factory)
        return code, out.getvalue(), err.getvalue()
    return go


def test_master_install_renders_runs_and_resumes(emulator: Emulator, topology: Topology, etcd_server: EtcdServer,
                                                 tmp_path: Path, run: Run) -> None:
    instance = topology.instance_ids[0]
    root = make_root(tmp_path / "root", swap=True)
    runner = RecordingRunner()
    host = FakeHost(root, runner, master_ip=private_ip(emulator, instance))
    options = master_options(emulator, instance, root, subnet_manager="etcd")

    code, out, err = run(options, runner, etcd_server)
    assert code == 0, out + err
    commands = runner.commands
    expected_order = ["modprobe br_netfilter", "swapoff -a", "apt-get install -y containerd",
                      "apt-get install -y kubelet kubeadm kubectl", f"kubeadm init --config {root}/etc/flannel-alivpc",
                      "openssl x509 -req", "apply -f -", f"apply -f {root}/etc/flannel-alivpc/manifests.yaml",
                      "kubeadm token create --print-join-command"]
    positions = [next(i for i, c in enumerate(commands) if want in c) for want in expected_order]
    assert positions == sorted(positions), commands

    # the kubeadm config: current API, external cloud provider, provider-id, CIDRs; private
    config_path = root / "etc/flannel-alivpc/kubeadm.yaml"
    assert files_mode(config_path) == 0o600
    init, cluster, kubelet = yaml.safe_load_all(config_path.read_text())
    assert init["apiVersion"] == cluster["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert init["kind"] == "InitConfiguration" and cluster["kind"] == "ClusterConfiguration"
    extra = {a["name"]: a["value"] for a in init["nodeRegistration"]["kubeletExtraArgs"]}
    assert extra == {"cloud-provider": "external", "provider-id": f"cn-hangzhou.{instance}"}
    assert init["nodeRegistration"]["name"] == "node-1"
    assert init["localAPIEndpoint"]["advertiseAddress"] == private_ip(emulator, instance)
    assert "bootstrapTokens" not in init  # token:// (empty): kubeadm generates one
    assert cluster["networking"] == {"podSubnet": "172.16.0.0/16", "serviceSubnet": "172.19.0.0/20",
                                     "dnsDomain": "cluster.local"}
    assert cluster["kubernetesVersion"] == "v1.34.2"
    assert "apiServer" not in cluster  # kube-apiserver has no --cloud-provider since 1.33
    assert {"name": "cloud-provider", "value": "external"} in cluster["controllerManager"]["extraArgs"]
    assert kubelet["cgroupDriver"] == "systemd"

    # host settings, runtime config, package repository
    assert (root / "etc/sysctl.d/99-flannel-alivpc.conf").read_text().count("= 1") == 3
    assert (root / "etc/modules-load.d/flannel-alivpc.conf").read_text().split("\n")[1:4] == \
        ["br_netfilter", "overlay", "vxlan"]
    assert "# disabled by flannel-alivpc" in (root / "etc/fstab").read_text()
    assert 'SystemdCgroup = true' in (root / "etc/containerd/config.toml").read_text()
    sources = (root / "etc/apt/sources.list.d/kubernetes.list").read_text()
    assert "https://pkgs.k8s.io/core:/stable:/v1.34/deb/ /" in sources

    # net-conf.json in etcd, the etcd client certificate really signed by the cluster's etcd CA
    root_password = (root / "etc/flannel-alivpc/pki/etcd-root-password").read_text().strip()
    assert files_mode(root / "etc/flannel-alivpc/pki/etcd-root-password") == 0o600
    with EtcdClient(etcd_server.endpoint, username="root", password=Secret(root_password)) as etcd:
        kv = etcd.get("/coreos.com/network/config")
        assert kv is not None and json.loads(kv.value) == {"Network": "172.16.0.0/16",
                                                           "Backend": {"Type": "ali-vpc"}}
        # etcd authentication is on; the daemons' user (the certificate's CN) may use the prefix only.
        assert is_confined(etcd, "/coreos.com/network")
    with EtcdClient(etcd_server.endpoint) as anonymous, pytest.raises(EtcdAuthError):
        anonymous.get("/coreos.com/network/config")
    assert root_password not in out + err
    pki = root / "etc/flannel-alivpc/pki"
    subprocess.run(["openssl", "verify", "-CAfile", str(root / "etc/kubernetes/pki/etcd/ca.crt"),
                    str(pki / "etcd-client.crt")], check=True, capture_output=True)
    assert files_mode(pki / "etcd-client.key") == 0o600
    assert host.secrets["flannel-alivpc-etcd"]["tls.crt"] == (pki / "etcd-client.crt").read_text()

    # the access key: in the Secret (through stdin), nowhere else
    secret = emulator.access_key_secret
    assert host.secrets["flannel-alivpc-credentials"] == {"access-key-id": emulator.access_key_id,
                                                          "access-key-secret": secret}
    assert not [c for c in runner.calls if secret in " ".join(c.argv)]
    assert [c.argv[-3:] for c in runner.calls if c.input and secret in c.input] == [("apply", "-f", "-")]
    assert secret not in out + err
    assert not [p for p, text in every_file_text(root) if secret in text]

    # the manifests carry this cluster's values
    docs = {d["kind"]: d for d in yaml.safe_load_all(host.applied_manifest or "")}
    env = {e["name"]: e for e in docs["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    endpoints = env["FLANNELD_ETCD_ENDPOINTS"]["valueFrom"]["secretKeyRef"]
    assert host.secrets[endpoints["name"]][endpoints["key"]] == f"https://{private_ip(emulator, instance)}:2379"
    assert env["FLANNELD_ETCD_PREFIX"]["value"] == "/coreos.com/network"
    assert "net-conf.json" not in docs["ConfigMap"]["data"]  # the daemons read it from etcd (above)
    assert "Deployment" not in docs  # the SLB controller only with --slb-controller

    # the join command, ready for a node
    assert f"--discovery 'token://{TOKEN}@{private_ip(emulator, instance)}:6443?ca-cert-hash={CA_HASH}'" in out
    state = json.loads((root / STATE_FILE.lstrip("/")).read_text())
    assert state["node_type"] == "master" and state["settings"]["pod_cidr"] == "172.16.0.0/16"
    assert "manifests" in state["completed"]

    # a second run finds everything done and changes nothing (it only prints a fresh join command)
    before = snapshot(root)
    runner.calls.clear()
    code, out, err = run(options, runner, etcd_server)
    assert code == 0, out + err
    assert out.count("already done") + out.count("passed") == 12
    changing = [c.command for c in runner.calls if not is_read_only(c.argv)]
    assert changing == [f"kubeadm token create --print-join-command --kubeconfig {root}/etc/kubernetes/admin.conf"]
    after = snapshot(root)
    after.pop(STATE_FILE.lstrip("/"))
    before.pop(STATE_FILE.lstrip("/"))
    assert after == before


def test_kube_mode_master_gives_no_node_an_etcd_credential(emulator: Emulator, topology: Topology,
                                                           etcd_server: EtcdServer, tmp_path: Path, run: Run) -> None:
    """The default: leases are podCIDRs; net-conf.json in the ConfigMap; nothing of etcd reaches any node."""
    instance = topology.instance_ids[0]
    root = make_root(tmp_path / "root")
    runner = RecordingRunner()
    host = FakeHost(root, runner, master_ip=private_ip(emulator, instance))
    code, out, err = run(master_options(emulator, instance, root), runner, etcd_server)
    assert code == 0, out + err
    assert not [c for c in runner.commands if "openssl x509" in c]  # no etcd client certificate is made
    assert "flannel-alivpc-etcd" not in host.secrets
    with EtcdClient(etcd_server.endpoint) as etcd:
        assert etcd.get("/coreos.com/network/config") is None
    docs = [d for d in yaml.safe_load_all(host.applied_manifest or "") if d]
    by_kind = {d["kind"]: d for d in docs}
    daemon = by_kind["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    assert "--kube-subnet-mgr" in daemon["args"]
    assert not [e for e in daemon["env"] if e["name"].startswith("FLANNELD_ETCD")]
    assert json.loads(by_kind["ConfigMap"]["data"]["net-conf.json"]) == {"Network": "172.16.0.0/16",
                                                                        "Backend": {"Type": "ali-vpc"}}
    # kubeadm assigns the podCIDRs from the same range (--allocate-node-cidrs with podSubnet).
    _, cluster, _ = yaml.safe_load_all((root / "etc/flannel-alivpc/kubeadm.yaml").read_text())
    assert cluster["networking"]["podSubnet"] == "172.16.0.0/16"
    roles = [d for d in docs if d["kind"] in ("ClusterRole", "Role") and d["metadata"]["name"] == "flannel-alivpc"]
    assert {r["kind"] for r in roles} == {"ClusterRole", "Role"}


def test_dry_run_prints_the_plan_and_changes_nothing(emulator: Emulator, topology: Topology, tmp_path: Path,
                                                    run: Run) -> None:
    root = make_root(tmp_path / "root", swap=True)
    runner = RecordingRunner()
    FakeHost(root, runner)
    before = snapshot(root)
    code, out, err = run(master_options(emulator, topology.instance_ids[0], root, dry_run=True,
                                        subnet_manager="etcd"), runner)
    assert code == 0, out + err
    assert snapshot(root) == before
    assert not [c.command for c in runner.calls if not is_read_only(c.argv)]
    assert "[1/13] preflight: passed" in out
    assert "[6/13] kubeadm-init: would run" in out
    assert f"kubeadm init --config {root}/etc/flannel-alivpc/kubeadm.yaml" in out
    assert "swapoff -a" in out and "apt-get install -y containerd" in out
    assert out.rstrip().endswith("dry run: nothing was changed")


def test_failing_step_stops_with_command_output_and_retry_then_resumes(
        emulator: Emulator, topology: Topology, etcd_server: EtcdServer, tmp_path: Path, run: Run) -> None:
    root = make_root(tmp_path / "root")
    runner = RecordingRunner()
    FakeHost(root, runner)
    failing = True

    def kubeadm_init(argv: tuple[str, ...], input: str | None) -> CommandResult | None:
        if failing and argv[:2] == ("kubeadm", "init"):
            return CommandResult(argv, 1, "[init] Using Kubernetes version: v1.34.2\n",
                                 "[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: contents are not set to 1\n")
        return None

    runner.on(kubeadm_init)
    options = master_options(emulator, topology.instance_ids[0], root, subnet_manager="etcd")
    code, out, err = run(options, runner, etcd_server)
    assert code == 1
    assert "step 'kubeadm-init'" in err
    assert f"command: `kubeadm init --config {root}/etc/flannel-alivpc/kubeadm.yaml` exited with status 1" in err
    assert "[ERROR FileContent--proc-sys-net-ipv4-ip_forward]" in err
    assert "to retry" in err and "flannel-alivpc install --node-type master" in err
    assert not runner.ran("openssl")  # nothing after the failed step ran
    state = json.loads((root / STATE_FILE.lstrip("/")).read_text())
    assert "kubeadm-config" in state["completed"] and "kubeadm-init" not in state["completed"]

    failing = False
    runner.calls.clear()
    code, out, err = run(options, runner, etcd_server)
    assert code == 0, out + err
    assert "resuming: 5 of 13 steps were done by an earlier run" in out
    assert runner.ran("kubeadm", "init") and not runner.ran("apt-get")


def test_a_rerun_must_repeat_the_recorded_settings(emulator: Emulator, topology: Topology, tmp_path: Path,
                                                   run: Run) -> None:
    root = make_root(tmp_path / "root")
    state = root / STATE_FILE.lstrip("/")
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"node_type": "master", "settings": {"pod_cidr": "10.244.0.0/16"},
                                 "completed": {"preflight": "x"}}))
    with pytest.raises(ConfigError, match=r"--pod-cidr 172.16.0.0/16 differs from 10.244.0.0/16"):
        run(master_options(emulator, topology.instance_ids[0], root), RecordingRunner())
    with pytest.raises(ConfigError, match="set up as a master"):
        run(Options(node_type="node", root=str(root), discovery=Discovery(
            TOKEN[:6], parse_discovery(f"token://{TOKEN}@h:6443", print).token_secret, "h", 6443, CA_HASH)),
            RecordingRunner())


def test_preflight_names_every_problem(emulator: Emulator, tmp_path: Path, run: Run) -> None:
    topology = emulator.bootstrap(instances=1, vpc_cidr="172.16.0.0/12", vswitch_cidr="172.16.0.0/20")
    root = make_root(tmp_path / "root", os_release='ID=gentoo\nPRETTY_NAME="Gentoo Linux"\n')
    listen_on(root, 6443)
    runner = RecordingRunner()
    code, out, err = run(master_options(emulator, topology.instance_ids[0], root, dry_run=True), runner)
    assert code == 1
    assert "preflight: would fail" in out
    assert "unsupported system 'Gentoo Linux'" in out
    assert "TCP port 6443 is already in use" in out
    assert "--pod-cidr 172.16.0.0/16 overlaps VPC" in out and "overlaps vSwitch" in out
    assert "free ranges here: --pod-cidr 10.244.0.0/16 --service-cidr 10.96.0.0/12" in out
    assert "fix the problems above" in out

    code, out, err = run(master_options(emulator, topology.instance_ids[0], root), runner)
    assert code == 1 and "step 'preflight'" in err and "TCP port 6443" in err
    assert not (root / STATE_FILE.lstrip("/")).exists()  # nothing was started


def test_a_machine_of_another_cluster_is_refused(emulator: Emulator, topology: Topology, tmp_path: Path,
                                                 run: Run) -> None:
    root = make_root(tmp_path / "root")
    (root / "etc/kubernetes").mkdir()
    (root / "etc/kubernetes/kubelet.conf").write_text("kind: Config\n")
    code, out, _ = run(master_options(emulator, topology.instance_ids[0], root, dry_run=True), RecordingRunner())
    assert code == 1 and "already belongs to a cluster (/etc/kubernetes/kubelet.conf exists)" in out


def test_node_joins_with_the_token_in_a_private_file(emulator: Emulator, topology: Topology, tmp_path: Path,
                                                     run: Run) -> None:
    root = make_root(tmp_path / "root", os_release=ROCKY)
    runner = RecordingRunner()
    FakeHost(root, runner)
    warnings: list[str] = []
    discovery = parse_discovery(f"token://abcdef:0123456789abcdef@192.168.0.1:9898?ca-cert-hash={CA_HASH}",
                                warnings.append)
    assert warnings and "9898" in warnings[0]
    instance = topology.instance_ids[1]
    options = Options(node_type="node", root=str(root), discovery=discovery,
                      metadata_url=f"{emulator.endpoint}/meta/{instance}",
                      package_mirror="https://mirrors.aliyun.com/kubernetes-new/core/stable")
    code, out, err = run(options, runner)
    assert code == 0, out + err
    (join,) = yaml.safe_load_all((root / "etc/flannel-alivpc/kubeadm.yaml").read_text())
    assert join["kind"] == "JoinConfiguration"
    assert join["discovery"]["bootstrapToken"] == {"apiServerEndpoint": "192.168.0.1:6443", "token": TOKEN,
                                                   "caCertHashes": [CA_HASH]}
    assert {"name": "provider-id", "value": f"cn-hangzhou.{instance}"} in \
        join["nodeRegistration"]["kubeletExtraArgs"]
    assert runner.ran("kubeadm", "join", "--config")
    assert not [c for c in runner.calls if "0123456789abcdef" in " ".join(c.argv)]
    assert runner.ran("yum", "install", "-y", "kubelet", "kubeadm", "kubectl", "--disableexcludes=kubernetes")
    repo = (root / "etc/yum.repos.d/kubernetes.repo").read_text()
    assert "baseurl=https://mirrors.aliyun.com/kubernetes-new/core/stable/v1.34/rpm/" in repo
    assert (root / "etc/yum.repos.d/docker-ce.repo").exists()
    assert not runner.ran("kubectl") and "join-command" not in out


def test_classic_network_gets_the_vxlan_backend(emulator: Emulator, topology: Topology, tmp_path: Path,
                                                run: Run) -> None:
    classic = emulator.state.create_instance(hostname="iZClassic01Z", network_type="classic")
    root = make_root(tmp_path / "root")
    runner = RecordingRunner()
    code, out, err = run(master_options(emulator, classic.instance_id, root, dry_run=True, subnet_manager="etcd",
                                        region="cn-hangzhou"), runner)
    assert code == 0, out + err
    assert "classic network" in out and "backend vxlan" in out
    assert '"Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}' in out
    assert "node izclassic01z" in out  # ECS hostnames carry capitals; Node names may not
