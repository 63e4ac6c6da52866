"""flannel's iptables rules on this node: --ip-masq and --iptables-forward-rules (see ``core.masq``).

Installed at start-up (before subnet.env is written, as flannel does) and
then checked every --iptables-resync seconds (flannel's default 5): per table
one ``iptables-save``, and one ``iptables-restore --noflush`` rewriting the
chains that differ (someone flushed FORWARD, a rule was deleted, a previous
subnet's rules are still there).
"""

from __future__ import annotations

import logging

from flannel_alivpc.clients.iptables import Iptables
from flannel_alivpc.core.masq import FlannelChain, forward_chain, masq_chain, restore_input
from flannel_alivpc.core.network import IPv4Network

log = logging.getLogger(__name__)

DEFAULT_RESYNC = 5
"""flanneld's --iptables-resync default, in seconds."""


def flannel_chains(iptables: Iptables, network: IPv4Network, subnet: IPv4Network, *, ip_masq: bool,
                   forward_rules: bool, random_fully_disable: bool) -> list[FlannelChain]:
    """The chains flanneld would install with these flags, in the order it installs them (masq first)."""
    chains = []
    if ip_masq:
        chains.append(masq_chain(network, subnet, random_fully=iptables.random_fully and not random_fully_disable))
    if forward_rules:
        chains.append(forward_chain(network))
    return chains


class IptablesRules:
    """Keeps ``chains`` in place; ``ensure`` is one pass (a ReconcileLoop pass)."""

    def __init__(self, iptables: Iptables, chains: list[FlannelChain]) -> None:
        self.iptables = iptables
        self.chains = chains
        self.rewrites: dict[str, int] = {}

    def ensure(self) -> float | None:
        tables: dict[str, list[FlannelChain]] = {}
        for chain in self.chains:
            tables.setdefault(chain.table, []).append(chain)
        for table, chains in tables.items():
            saved = self.iptables.save(table)
            text = restore_input(table, saved, chains)
            if text is None:
                continue
            self.iptables.restore(text)
            for chain in chains:
                if chain.restore_lines(saved):
                    count = self.rewrites[chain.chain] = self.rewrites.get(chain.chain, 0) + 1
                    log.info("iptables: wrote %s in the %s table (%d rules, jump from %s)%s", chain.chain, table,
                             len(chain.rules), chain.parent, "" if count == 1 else ": it had drifted")
        return None
