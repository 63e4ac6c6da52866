"""``--ip-masq``: flannel's masquerade rules, installed idempotently, doing what they should.

Needs the iptables commands (skipped without them: install the iptables package).
"""

from __future__ import annotations

import shutil
import time

import pytest

from flannel_alivpc.core.masq import JUMP_RULE, MASQ_CHAIN, chain_rules, masq_rules
from flannel_alivpc.testbed.dataplane import SERVICE_IP, DataplaneCluster, http_get, run_in
from tests.dataplane.support import all_connected, needs_root, wait

pytestmark = [*needs_root, pytest.mark.skipif(shutil.which("iptables-restore") is None,
                                              reason="iptables is not installed")]


def test_ip_masq_rules_are_flannels_idempotent_and_effective(dataplane: DataplaneCluster) -> None:
    dataplane.start_dataplane(classic=2)
    masq, plain = dataplane.dp_nodes
    masq.extra_args = ["--ip-masq"]
    dataplane.start_all()
    dataplane.wait_for_subnets(dataplane.dp_nodes)
    all_connected(dataplane)
    network = dataplane.subnet_of(masq).supernet(new_prefix=16)
    expected = masq_rules(network, dataplane.subnet_of(masq), random_fully=True)

    def nat() -> str:
        return run_in(masq.netns, "iptables-save", "-t", "nat")

    assert chain_rules(nat(), MASQ_CHAIN) == expected
    assert chain_rules(nat(), "POSTROUTING") == [JUMP_RULE]
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
    assert chain_rules(nat(), MASQ_CHAIN) == expected
    assert chain_rules(nat(), "POSTROUTING") == [JUMP_RULE]
    # Someone deletes a rule: the periodic check (5 s) puts the chain back.
    run_in(masq.netns, "iptables", "-w", "-t", "nat", "-D", MASQ_CHAIN, "2")
    assert len(chain_rules(nat(), MASQ_CHAIN)) == len(expected) - 1
    wait(dataplane, lambda: chain_rules(nat(), MASQ_CHAIN) == expected, "masquerade chain not repaired", timeout=15)
