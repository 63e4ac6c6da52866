"""``--ip-masq``: keeps flannel's masquerade rules in the node's nat table (see ``core.masq``).

Checked at start-up (before subnet.env is written, as flannel does) and then
every ``interval`` seconds (flannel's --iptables-resync, 5 s): a listing of
the nat table, and a rewrite of the chain only when it differs.
"""

from __future__ import annotations

import logging

from flannel_alivpc.clients.iptables import Iptables
from flannel_alivpc.core.masq import MASQ_CHAIN, masq_restore_input, masq_rules
from flannel_alivpc.core.network import IPv4Network

log = logging.getLogger(__name__)

RESYNC_INTERVAL = 5.0


class MasqRules:
    def __init__(self, iptables: Iptables, network: IPv4Network, subnet: IPv4Network) -> None:
        self.iptables = iptables
        self.network = network
        self.subnet = subnet
        self.rules = masq_rules(network, subnet, random_fully=iptables.random_fully)
        self.rewrites = 0

    def ensure(self) -> float | None:
        """One pass: rewrite the chain if it differs from flannel's rules (a ReconcileLoop pass)."""
        restore = masq_restore_input(self.iptables.save("nat"), self.rules)
        if restore is None:
            return None
        self.iptables.restore(restore)
        self.rewrites += 1
        log.info("ip-masq: wrote %s in the nat table (%d rules for network %s, subnet %s)%s", MASQ_CHAIN,
                 len(self.rules), self.network, self.subnet, "" if self.rewrites == 1 else ": it had drifted")
        return None
