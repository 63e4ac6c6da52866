"""flannel's --ip-masq rules, and the iptables-restore input that makes a node carry exactly them.

The rules are flannel's (pkg/trafficmngr/iptables): a ``FLANNEL-POSTRTG``
chain in the nat table, jumped to from POSTROUTING, every rule commented
"flanneld masq":

1. packets kube-proxy marked for masquerading (0x4000) are left to kube-proxy;
2. pod-to-pod traffic inside the cluster network is never masqueraded;
3. traffic from outside the network to this node's pods is left alone;
4. pod traffic leaving the network (except multicast) is masqueraded;
5. traffic from outside entering the network through this node is masqueraded.

Rules are written as ``iptables-save`` prints them, so the chain can be
compared with what the kernel has and rewritten only when it differs. The
rewrite replaces the whole chain in one ``iptables-restore --noflush``, which
also drops rules left from a previous network or subnet, and keeps exactly one
POSTROUTING jump. Pure: ``flannel_alivpc.clients.iptables`` runs the commands.
"""

from __future__ import annotations

import shlex

from flannel_alivpc.core.network import IPv4Network

MASQ_CHAIN = "FLANNEL-POSTRTG"
MASQ_COMMENT = "flanneld masq"
KUBE_PROXY_MARK = "0x4000/0x4000"
_COMMENT = f'-m comment --comment "{MASQ_COMMENT}"'
JUMP_RULE = f"{_COMMENT} -j {MASQ_CHAIN}"
"""The POSTROUTING rule (without ``-A POSTROUTING``)."""


def masq_rules(network: IPv4Network, subnet: IPv4Network, *, random_fully: bool) -> list[str]:
    """The chain's rules in order, each as ``iptables-save`` prints it after ``-A FLANNEL-POSTRTG``."""
    masquerade = "-j MASQUERADE --random-fully" if random_fully else "-j MASQUERADE"
    return [
        f"-m mark --mark {KUBE_PROXY_MARK} {_COMMENT} -j RETURN",
        f"-s {subnet} -d {network} {_COMMENT} -j RETURN",
        f"-s {network} -d {subnet} {_COMMENT} -j RETURN",
        f"! -s {network} -d {subnet} {_COMMENT} -j RETURN",
        f"-s {network} ! -d 224.0.0.0/4 {_COMMENT} {masquerade}",
        f"! -s {network} -d {network} {_COMMENT} {masquerade}",
    ]


def chain_rules(save_output: str, chain: str) -> list[str]:
    """The rules of ``chain`` in an ``iptables-save`` listing, without the ``-A <chain>`` prefix."""
    prefix = f"-A {chain} "
    return [line[len(prefix):].strip() for line in save_output.splitlines() if line.startswith(prefix)]


def chain_exists(save_output: str, chain: str) -> bool:
    return any(line.split()[0] == f":{chain}" for line in save_output.splitlines() if line.startswith(":"))


def _same(rule: str, other: str) -> bool:
    """Rules compared token by token (quoting and spacing aside)."""
    try:
        return shlex.split(rule) == shlex.split(other)
    except ValueError:
        return rule == other


def masq_restore_input(save_output: str, rules: list[str]) -> str | None:
    """iptables-restore input turning the nat table of ``save_output`` into one carrying ``rules``.

    None when nothing needs to change.
    """
    current = chain_rules(save_output, MASQ_CHAIN)
    jumps = [rule for rule in chain_rules(save_output, "POSTROUTING") if _same(rule, JUMP_RULE)]
    chain_ok = chain_exists(save_output, MASQ_CHAIN) and len(current) == len(rules) and all(
        _same(a, b) for a, b in zip(current, rules, strict=True))
    if chain_ok and len(jumps) == 1:
        return None
    lines = ["*nat"]
    # With --noflush, declaring the chain creates it if needed and empties it: a full rewrite.
    lines.append(f":{MASQ_CHAIN} - [0:0]")
    lines.extend(f"-A {MASQ_CHAIN} {rule}" for rule in rules)
    if not jumps:
        lines.append(f"-A POSTROUTING {JUMP_RULE}")
    lines.extend(f"-D POSTROUTING {JUMP_RULE}" for _ in jumps[1:])
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
