"""``--node-type down``: the plan, the refusals, and the network clean-up for real in a namespace."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.emulator.server import Emulator, Topology
from flannel_alivpc.installer.options import Options
from flannel_alivpc.installer.plan import STATE_FILE, Reporter
from flannel_alivpc.installer.run import run_install
from flannel_alivpc.installer.runner import CommandResult, NetnsRunner, RecordingRunner, SubprocessRunner
from flannel_alivpc.installer.teardown import IPTABLES_CHAINS
from flannel_alivpc.testbed.etcd_server import EtcdServer
from tests.installer.support import FakeHost, emulator_key, make_root, snapshot

SUBNET_ENV = "FLANNEL_NETWORK=172.16.0.0/16\nFLANNEL_SUBNET=172.16.5.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"


def node_root(root: Path) -> Path:
    make_root(root)
    files = {
        "run/flannel/subnet.env": SUBNET_ENV,
        "etc/cni/net.d/10-flannel.conflist": "{}",
        "etc/cni/net.d/99-other.conflist": "{}",
        "var/lib/cni/flannel/abc": "{}",
        "var/lib/cni/networks/cbr0/172.16.5.2": "abc",
        "etc/kubernetes/kubelet.conf": "kind: Config\n",
        "etc/flannel-alivpc/kubeadm.yaml": "kind: JoinConfiguration\n",
        STATE_FILE.lstrip("/"): json.dumps({"node_type": "node", "settings": {"pod_cidr": "172.16.0.0/16"}}),
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def down_options(emulator: Emulator, instance: str, root: Path, **overrides: object) -> Options:
    values: dict[str, object] = {"node_type": "down", "root": str(root), "yes": True,
                                 "access_key": emulator_key(emulator),
                                 "metadata_url": f"{emulator.endpoint}/meta/{instance}",
                                 "api_endpoint": emulator.endpoint}
    values.update(overrides)
    return Options(**values)  # type: ignore[arg-type]


def run(options: Options, runner: RecordingRunner, etcd: EtcdServer | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    factory = (lambda **auth: EtcdClient(etcd.endpoint, **auth)) if etcd is not None else None
    code = run_install(options, runner, Reporter(out, err), env={}, etcd_factory=factory)
    return code, out.getvalue(), err.getvalue()


def test_down_without_yes_only_shows_the_plan(emulator: Emulator, topology: Topology, tmp_path: Path) -> None:
    root = node_root(tmp_path / "root")
    runner = RecordingRunner()
    runner.respond(["ip", "-j", "link"], stdout=json.dumps([{"ifname": "cni0"}, {"ifname": "eth0"}]))
    runner.respond(["iptables"], returncode=127)
    before = snapshot(root)
    code, out, _ = run(down_options(emulator, topology.instance_ids[0], root, yes=False), runner)
    assert code == 2
    assert snapshot(root) == before
    assert "kubeadm-reset: would run" in out and "ip link delete cni0" in out
    assert "remove /etc/cni/net.d/10-flannel.conflist" in out
    assert "etcd is not reachable from here: lease /coreos.com/network/subnets/172.16.5.0-24 stays" in out
    assert "iptables: already done (iptables is not installed)" in out
    assert out.rstrip().endswith("add --yes to tear this node down")
    assert not runner.ran("kubeadm") and not runner.ran("ip", "link", "delete")


def test_down_on_a_bare_machine_has_nothing_to_do(emulator: Emulator, topology: Topology, tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    runner = RecordingRunner()
    runner.respond(["ip", "-j"], stdout="[]")
    runner.respond(["iptables"], stdout="-P POSTROUTING ACCEPT\n")
    code, out, err = run(down_options(emulator, topology.instance_ids[0], root), runner)
    assert code == 0, out + err
    assert "pod network unknown (no subnet.env, no install state): nothing to look for" in out
    assert [c.argv[:2] for c in runner.calls if not (c.argv[:2] == ("ip", "-j") or "-S" in c.argv)] == []


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create a network namespace")
    name = f"fa-down-{uuid.uuid4().hex[:8]}"
    _sh("ip", "netns", "add", name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def _build_node_network(ns: str, with_iptables: bool) -> None:
    def ip(*args: str) -> None:
        _sh("ip", "-n", ns, *args)

    ip("link", "set", "lo", "up")
    ip("link", "add", "eth0", "type", "veth", "peer", "name", "uplink")
    ip("link", "set", "eth0", "up")
    ip("link", "set", "uplink", "up")
    ip("addr", "add", "192.168.0.10/24", "dev", "eth0")
    ip("link", "add", "cni0", "type", "bridge")
    ip("addr", "add", "172.16.5.1/24", "dev", "cni0")
    ip("link", "set", "cni0", "up")
    ip("link", "add", "flannel.1", "type", "vxlan", "id", "1", "dev", "eth0", "dstport", "8472", "nolearning")
    ip("addr", "add", "172.16.5.0/32", "dev", "flannel.1")
    ip("link", "set", "flannel.1", "up")
    ip("route", "add", "172.16.3.0/24", "via", "172.16.3.0", "dev", "flannel.1", "onlink")
    ip("route", "add", "172.16.9.0/24", "via", "192.168.0.11", "dev", "eth0")  # a direct route to a pod subnet
    ip("route", "add", "blackhole", "172.16.77.0/24")
    ip("route", "add", "10.99.0.0/16", "via", "192.168.0.1", "dev", "eth0")  # not flannel's: stays
    if with_iptables:
        def ipt(*args: str) -> None:
            _sh("ip", "netns", "exec", ns, "iptables", *args)

        ipt("-t", "nat", "-N", "FLANNEL-POSTRTG")
        ipt("-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq", "-j", "FLANNEL-POSTRTG")
        ipt("-t", "nat", "-A", "FLANNEL-POSTRTG", "-s", "172.16.0.0/16", "!", "-d", "224.0.0.0/4", "-m", "comment",
            "--comment", "flanneld masq", "-j", "MASQUERADE")
        ipt("-t", "nat", "-A", "POSTROUTING", "-s", "10.8.0.0/24", "-j", "MASQUERADE")  # someone else's
        ipt("-t", "filter", "-N", "FLANNEL-FWD")
        ipt("-t", "filter", "-A", "FORWARD", "-m", "comment", "--comment", "flanneld forward", "-j", "FLANNEL-FWD")
        ipt("-t", "filter", "-A", "FLANNEL-FWD", "-s", "172.16.0.0/16", "-j", "ACCEPT")


def _ip_json(ns: str, *args: str) -> list[dict[str, object]]:
    out = subprocess.run(["ip", "-n", ns, "-j", *args], check=True, capture_output=True, text=True).stdout
    return list(json.loads(out or "[]"))


@pytest.mark.root
def test_down_cleans_the_node_network_for_real(emulator: Emulator, topology: Topology, etcd_server: EtcdServer,
                                                netns: str, tmp_path: Path) -> None:
    with_iptables = shutil.which("iptables") is not None
    _build_node_network(netns, with_iptables)
    me, other = topology.instance_ids[0], topology.instance_ids[1]
    table = topology.route_table_id
    ours = emulator.state.add_custom_entry(table, "172.16.5.0/24", "Instance", me, name="flannel-alivpc")
    theirs = emulator.state.add_custom_entry(table, "172.16.6.0/24", "Instance", other, name="flannel-alivpc")
    users = emulator.state.add_custom_entry(table, "10.50.0.0/16", "Instance", me)  # outside the pod network
    lease_key = "/coreos.com/network/subnets/172.16.5.0-24"
    with EtcdClient(etcd_server.endpoint) as etcd:
        etcd.put(lease_key, json.dumps({"PublicIP": "192.168.0.10", "PublicIPv6": None, "BackendType": "ali-vpc",
                                        "BackendData": {"InstanceId": me, "NetworkType": "vpc"}}))
    root = node_root(tmp_path / "root")

    # ip and iptables run for real inside the namespace; kubeadm is the fake host's
    runner = RecordingRunner()
    FakeHost(root, runner).packages.update({"kubeadm", "kubelet", "kubectl"})
    inside = NetnsRunner(SubprocessRunner(), netns)

    def in_namespace(argv: tuple[str, ...], input: str | None) -> CommandResult | None:
        return inside.run(argv, input=input, check=False) if argv[0] in ("ip", "iptables") else None

    runner.on(in_namespace)
    code, out, err = run(down_options(emulator, me, root), runner, etcd_server)
    assert code == 0, out + err

    assert runner.ran("kubeadm", "reset", "-f")
    names = {str(link["ifname"]) for link in _ip_json(netns, "link", "show")}
    assert names == {"lo", "eth0", "uplink"}
    routes = {str(r["dst"]) for r in _ip_json(netns, "route", "show", "table", "main")}
    assert routes == {"10.99.0.0/16", "192.168.0.0/24"}
    if with_iptables:
        saved = subprocess.run(["ip", "netns", "exec", netns, "iptables-save"], check=True, capture_output=True,
                               text=True).stdout
        assert "FLANNEL" not in saved and "flanneld" not in saved
        assert "-A POSTROUTING -s 10.8.0.0/24 -j MASQUERADE" in saved
    entries = emulator.state.route_tables[table].entries
    assert ours.entry_id not in entries
    assert theirs.entry_id in entries and users.entry_id in entries
    with EtcdClient(etcd_server.endpoint) as etcd:
        assert etcd.get(lease_key) is None
    assert not (root / "run/flannel/subnet.env").exists()
    assert not (root / "etc/cni/net.d/10-flannel.conflist").exists()
    assert (root / "etc/cni/net.d/99-other.conflist").exists()
    assert not (root / "var/lib/cni/flannel").exists() and not (root / "etc/flannel-alivpc").exists()
    assert not (root / STATE_FILE.lstrip("/")).exists()

    # again: nothing left to do
    runner.calls.clear()
    code, out, err = run(down_options(emulator, me, root), runner, etcd_server)
    assert code == 0, out + err
    assert "would run" not in out and out.count("already done") == 9
    assert not runner.ran("ip", "link", "delete") and not runner.ran("kubeadm")


def test_the_chains_are_the_route_daemons() -> None:
    masq = pytest.importorskip("flannel_alivpc.core.masq")
    assert ("nat", masq.MASQ_CHAIN) in IPTABLES_CHAINS
