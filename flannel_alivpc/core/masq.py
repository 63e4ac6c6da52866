"""flannel's iptables rules (--ip-masq, --iptables-forward-rules) and the iptables-restore input that keeps them.

The rules are flannel's (pkg/trafficmngr/iptables), each in its own chain
jumped to from a built-in chain, every rule carrying flannel's comment:

* ``FLANNEL-POSTRTG`` in the nat table, from POSTROUTING, "flanneld masq":
  1. packets kube-proxy marked for masquerading (0x4000) are left to kube-proxy;
  2. pod-to-pod traffic inside the cluster network is never masqueraded;
  3. traffic from outside the network to this node's pods is left alone;
  4. pod traffic leaving the network (except multicast) is masqueraded;
  5. traffic from outside entering the network through this node is masqueraded;
  (``--random-fully`` on both MASQUERADE rules unless --ip-masq-fully-random-disable
  or the iptables binary predates it);
* ``FLANNEL-FWD`` in the filter table, from FORWARD, "flanneld forward":
  accept everything from and to the cluster network, so pods talk where
  FORWARD's policy is DROP (Docker >= 1.13 sets it).

Rules are written as ``iptables-save`` prints them, so a chain can be
compared with what the kernel has and rewritten only when it differs. The
rewrite replaces the whole chain in one ``iptables-restore --noflush``, which
also drops rules left from a previous network or subnet, and keeps exactly one
jump. A missing jump is appended, as flannel appends it (``-A``). Pure:
``flannel_alivpc.clients.iptables`` runs the commands.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from flannel_alivpc.core.network import IPv4Network

MASQ_CHAIN = "FLANNEL-POSTRTG"
MASQ_COMMENT = "flanneld masq"
FORWARD_CHAIN = "FLANNEL-FWD"
FORWARD_COMMENT = "flanneld forward"
KUBE_PROXY_MARK = "0x4000/0x4000"


def _comment(text: str) -> str:
    return f'-m comment --comment "{text}"'


@dataclass(frozen=True)
class FlannelChain:
    """One of flannel's chains: where it lives, what jumps to it, and its rules in order."""

    table: str
    chain: str
    parent: str
    """The built-in chain holding the jump."""
    comment: str
    rules: tuple[str, ...]
    """Each as ``iptables-save`` prints it after ``-A <chain>``."""

    @property
    def jump(self) -> str:
        """The rule in ``parent`` (without ``-A <parent>``)."""
        return f"{_comment(self.comment)} -j {self.chain}"

    def restore_lines(self, save_output: str) -> list[str]:
        """iptables-restore lines (inside ``*<table>`` … ``COMMIT``) making ``save_output`` carry this chain.

        Empty when nothing needs to change.
        """
        current = chain_rules(save_output, self.chain)
        jumps = [rule for rule in chain_rules(save_output, self.parent) if _same(rule, self.jump)]
        chain_ok = chain_exists(save_output, self.chain) and len(current) == len(self.rules) and all(
            _same(a, b) for a, b in zip(current, self.rules, strict=True))
        if chain_ok and len(jumps) == 1:
            return []
        # With --noflush, declaring the chain creates it if needed and empties it: a full rewrite.
        lines = [f":{self.chain} - [0:0]"]
        lines.extend(f"-A {self.chain} {rule}" for rule in self.rules)
        if not jumps:
            lines.append(f"-A {self.parent} {self.jump}")
        lines.extend(f"-D {self.parent} {self.jump}" for _ in jumps[1:])
        return lines


def masq_chain(network: IPv4Network, subnet: IPv4Network, *, random_fully: bool) -> FlannelChain:
    """``FLANNEL-POSTRTG``: flannel's --ip-masq rules for this node's ``subnet`` of ``network``."""
    comment = _comment(MASQ_COMMENT)
    masquerade = "-j MASQUERADE --random-fully" if random_fully else "-j MASQUERADE"
    return FlannelChain("nat", MASQ_CHAIN, "POSTROUTING", MASQ_COMMENT, (
        f"-m mark --mark {KUBE_PROXY_MARK} {comment} -j RETURN",
        f"-s {subnet} -d {network} {comment} -j RETURN",
        f"-s {network} -d {subnet} {comment} -j RETURN",
        f"! -s {network} -d {subnet} {comment} -j RETURN",
        f"-s {network} ! -d 224.0.0.0/4 {comment} {masquerade}",
        f"! -s {network} -d {network} {comment} {masquerade}",
    ))


def forward_chain(network: IPv4Network) -> FlannelChain:
    """``FLANNEL-FWD``: flannel's --iptables-forward-rules, accepting traffic from and to ``network``."""
    comment = _comment(FORWARD_COMMENT)
    return FlannelChain("filter", FORWARD_CHAIN, "FORWARD", FORWARD_COMMENT, (
        f"-s {network} {comment} -j ACCEPT",
        f"-d {network} {comment} -j ACCEPT",
    ))


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


def restore_input(table: str, save_output: str, chains: list[FlannelChain]) -> str | None:
    """One iptables-restore transaction for ``table`` putting ``chains`` (all of that table) in place.

    None when nothing needs to change.
    """
    lines = [line for chain in chains for line in chain.restore_lines(save_output)]
    if not lines:
        return None
    return "\n".join([f"*{table}", *lines, "COMMIT"]) + "\n"
