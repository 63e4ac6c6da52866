"""flanneld's iptables rules on a node: --ip-masq, --iptables-forward-rules (FLANNEL-FWD) and the blackhole route.

Needs the iptables commands (skipped without them: install the iptables package).
"""

from __future__ import annotations

import shutil
import time
from ipaddress import IPv4Network

import pytest

from flannel_alivpc.clients.netlink import BlackholeOp, Netlink
from flannel_alivpc.core.masq import chain_rules, forward_chain, masq_chain
from flannel_alivpc.testbed.dataplane import SERVICE_IP, DataplaneCluster, DataplaneNode, http_get, run_in, tcp_echo
from tests.dataplane.support import all_connected, needs_root, wait

pytestmark = [*needs_root, pytest.mark.skipif(shutil.which("iptables-restore") is None,
                                              reason="iptables is not installed")]


def test_ip_masq_rules_are_flannels_idempotent_and_effective(dataplane: DataplaneCluster) -> None:
    dataplane.start_dataplane(classic=3)
    masq, plain, plain_random = dataplane.dp_nodes
    masq.extra_args = ["--ip-masq"]
    plain_random.extra_args = ["--ip-masq", "--ip-masq-fully-random-disable"]
    dataplane.start_all()
    dataplane.wait_for_subnets(dataplane.dp_nodes)
    all_connected(dataplane)
    network = dataplane.subnet_of(masq).supernet(new_prefix=16)
    expected = masq_chain(network, dataplane.subnet_of(masq), random_fully=True)

    def nat() -> str:
        return run_in(masq.netns, "iptables-save", "-t", "nat")

    assert chain_rules(nat(), expected.chain) == list(expected.rules)
    assert chain_rules(nat(), "POSTROUTING") == [expected.jump]
    # --ip-masq-fully-random-disable: MASQUERADE without --random-fully (iptables here has it).
    assert chain_rules(run_in(plain_random.netns, "iptables-save", "-t", "nat"), expected.chain) == list(
        masq_chain(network, dataplane.subnet_of(plain_random), random_fully=False).rules)
    assert masq.subnet_env["FLANNEL_IPMASQ"] == "true" and plain.subnet_env["FLANNEL_IPMASQ"] == "false"
    # Pod-to-pod traffic is not masqueraded: the other pod sees the pod's own address.
    assert plain.pods[0].echo is not None and masq.pods[0].ip in plain.pods[0].echo.peers
    # Traffic leaving the pod network is: the metadata service sees the node's address and answers
    # with its instance id. The pod of the node without --ip-masq gets no answer (nothing routes
    # the reply back to a classic node's pod subnet).
    assert http_get(masq.pods[0].netns, SERVICE_IP, "/latest/meta-data/instance-id") == (200, masq.instance_id)
    assert http_get(plain.pods[0].netns, SERVICE_IP, "/latest/meta-data/instance-id", timeout=1.0) is None
    # A restart changes nothing (no duplicate rules, no second jump).
    dataplane.restart_node(masq)
    wait(dataplane, lambda: "acquired lease" in masq.log().rsplit("signal 15", 1)[-1], "daemon did not restart")
    time.sleep(0.5)
    assert chain_rules(nat(), expected.chain) == list(expected.rules)
    assert chain_rules(nat(), "POSTROUTING") == [expected.jump]
    # Someone deletes a rule: the periodic check (--iptables-resync, 5 s) puts the chain back.
    run_in(masq.netns, "iptables", "-w", "-t", "nat", "-D", expected.chain, "2")
    assert len(chain_rules(nat(), expected.chain)) == len(expected.rules) - 1
    wait(dataplane, lambda: chain_rules(nat(), expected.chain) == list(expected.rules),
         "masquerade chain not repaired", timeout=15)


def test_flannel_fwd_lets_pod_traffic_through_a_forward_policy_of_drop(dataplane: DataplaneCluster) -> None:
    dataplane.start_dataplane(classic=3)
    nodes = dataplane.dp_nodes
    for node in nodes:
        # What Docker >= 1.13 does to every node it runs on.
        dataplane.iptables(node, "-P", "FORWARD", "DROP")
        node.extra_args = ["--iptables-resync", "1"]
    first, second, without = nodes
    without.extra_args += ["--iptables-forward-rules=false"]
    dataplane.start_all()
    dataplane.wait_for_subnets(nodes)
    network = dataplane.subnet_of(first).supernet(new_prefix=16)
    expected = forward_chain(network)

    def filter_table(node: DataplaneNode) -> str:
        return run_in(node.netns, "iptables-save", "-t", "filter")

    # Exactly flanneld's chain and one jump, appended to FORWARD.
    for node in (first, second):
        assert chain_rules(filter_table(node), expected.chain) == list(expected.rules)
        assert chain_rules(filter_table(node), "FORWARD") == [expected.jump]
    assert expected.chain not in filter_table(without)
    pods = {node.hostname: node.pods[0] for node in nodes}
    result = dataplane.wait_connected([pods["cls1"], pods["cls2"]])
    assert all(result.values()), f"{result}\n{dataplane.diagnose()}"
    # The node that was told not to install them drops its pods' traffic, both ways.
    assert not tcp_echo(pods["cls1"].netns, pods["cls3"].ip, timeout=1.0)
    assert not tcp_echo(pods["cls3"].netns, pods["cls2"].ip, timeout=1.0)
    # A firewall reload flushes FORWARD: within --iptables-resync the jump is back, and so is the traffic.
    dataplane.iptables(first, "-F", "FORWARD")
    assert not tcp_echo(pods["cls2"].netns, pods["cls1"].ip, timeout=1.0)
    wait(dataplane, lambda: chain_rules(filter_table(first), "FORWARD") == [expected.jump],
         "FORWARD jump not restored", timeout=10)
    assert tcp_echo(pods["cls2"].netns, pods["cls1"].ip)


def test_blackhole_route_for_the_own_subnet_kept_and_harmless_to_a_bridge(dataplane: DataplaneCluster) -> None:
    dataplane.start_dataplane(classic=2)
    node = dataplane.dp_nodes[0]
    node.extra_args = ["--ip-blackhole-route", "--iptables-resync", "1"]
    dataplane.start_all()
    dataplane.wait_for_subnets(dataplane.dp_nodes)
    subnet = dataplane.subnet_of(node)

    def blackholes() -> list[IPv4Network]:
        with Netlink(netns=node.netns) as nl:
            return nl.blackhole_routes()

    wait(dataplane, lambda: blackholes() == [subnet], "no blackhole route for the node's subnet")
    # cni0's own subnet route still wins (ours has the lowest priority): the pods are reachable.
    all_connected(dataplane)
    with Netlink(netns=node.netns) as nl:
        nl.apply_one(BlackholeOp("delete", subnet))
    wait(dataplane, lambda: blackholes() == [subnet], "blackhole route not restored", timeout=10)
    with Netlink(netns=dataplane.dp_nodes[1].netns) as nl:
        assert nl.blackhole_routes() == []  # only where the flag was given
