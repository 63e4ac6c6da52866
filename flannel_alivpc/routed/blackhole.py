"""``--ip-blackhole-route``: a blackhole route for this node's own subnet, kept in place like flanneld keeps it.

flanneld adds ``blackhole <subnet>`` when the main table has none for that
destination and checks again every --iptables-resync seconds. It is meant for
CNI setups without a bridge (Canal: one /32 route per pod), where traffic for
an unused pod address would otherwise leave by the default route.

One difference, on purpose: flanneld adds it with metric 0, so on a node with
a bridge CNI it either fails (cni0's subnet route is there first: EEXIST every
5 s) or, worse, wins over the route cni0 gets later and cuts every pod off.
Ours has the lowest priority (``BLACKHOLE_METRIC``): per-pod routes and a
bridge's subnet route always win, and only what nothing else claims is dropped.
"""

from __future__ import annotations

import logging

from flannel_alivpc.clients.netlink import BlackholeOp, Netlink
from flannel_alivpc.core.network import IPv4Network

log = logging.getLogger(__name__)

BLACKHOLE_METRIC = 0xFFFFFFFF


class BlackholeRoute:
    """Keeps ``blackhole <subnet>`` in the main table; ``ensure`` is one pass (a ReconcileLoop pass)."""

    def __init__(self, netlink: Netlink, subnet: IPv4Network) -> None:
        self.netlink = netlink
        self.subnet = subnet
        self.additions = 0

    def ensure(self) -> float | None:
        if self.subnet in self.netlink.blackhole_routes():
            return None
        self.netlink.apply_one(BlackholeOp("add", self.subnet, metric=BLACKHOLE_METRIC))
        self.additions += 1
        log.info("ip-blackhole-route: added blackhole %s (metric %d)%s", self.subnet, BLACKHOLE_METRIC,
                 "" if self.additions == 1 else ": it had been removed")
        return None
