"""``--node-type down``: kubeadm reset, then everything reset leaves behind.

kubeadm reset does not touch the CNI config, flannel's devices (``flannel.<VNI>``,
``cni0``), routes to pod subnets, ``subnet.env``, flannel's iptables chains or
the VPC route entry that sends this node's pod subnet to it. These steps
remove exactly those, each only when it is flannel's:

* links named ``cni0``, ``flannel.<n>`` and ``flannel-v6.<n>``;
* routes of the main table whose destination lies inside the pod network;
* the ``FLANNEL-POSTRTG`` (nat) and ``FLANNEL-FWD`` (filter) chains and the
  rules jumping to them;
* VPC route entries that are ``Custom``, point at this instance and lie inside
  the pod network (the route daemon's ownership rule).

The pod network comes from subnet.env, else from the install's state file; when
neither says, nothing network-wide is deleted (unknown is never a reason to
delete). Links and routes are read and changed with ``ip``, chains with
``iptables``, both through the runner, so a test can run them in a network
namespace.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from dataclasses import dataclass

from flannel_alivpc.core.cloud import RouteEntry
from flannel_alivpc.core.network import parse_lease_value, subnet_key
from flannel_alivpc.core.routes import ROUTE_NAME, entry_cluster, is_node_route
from flannel_alivpc.installer.context import ADMIN_KUBECONFIG, CONFIG_DIR, KUBELET_KUBECONFIG, SUBNET_ENV, Context
from flannel_alivpc.installer.plan import STATE_FILE, Status

FLANNEL_LINK = re.compile(r"^(cni0|flannel\.\d+|flannel-v6\.\d+)$")
CNI_FILES = ("/etc/cni/net.d/10-flannel.conflist", "/var/lib/cni/flannel", "/var/lib/cni/networks/cbr0")
IPTABLES_CHAINS = (("nat", "FLANNEL-POSTRTG"), ("filter", "FLANNEL-FWD"))


class KubeadmReset:
    name = "kubeadm-reset"
    title = "kubeadm reset -f: stop the kubelet, remove the static pods, certificates and kubeconfigs"
    always = False

    def _leftovers(self, ctx: Context) -> list[str]:
        found = [p for p in (ADMIN_KUBECONFIG, KUBELET_KUBECONFIG) if ctx.fs.exists(p)]
        found += [f"/etc/kubernetes/manifests/{n}" for n in ctx.fs.listdir("/etc/kubernetes/manifests")]
        return found

    def check(self, ctx: Context) -> Status:
        left = self._leftovers(ctx)
        return Status(not left, f"{left[0]} exists" if left else "")

    def plan(self, ctx: Context) -> list[str]:
        return ["kubeadm reset -f"]

    def apply(self, ctx: Context) -> None:
        ctx.runner.run(["kubeadm", "reset", "-f"], timeout=600)


class FlannelLease:
    name = "flannel-lease"
    title = "delete this node's subnet lease from etcd"
    always = False

    def _key(self, ctx: Context) -> str | None:
        subnet = ctx.node_subnet()
        return f"{ctx.options.etcd_prefix.rstrip('/')}/subnets/{subnet_key(subnet)}" if subnet else None

    def check(self, ctx: Context) -> Status:
        key = self._key(ctx)
        if key is None:
            return Status(True, "no subnet.env: no lease known")
        if not ctx.etcd_configured():
            return Status(True, f"etcd is not reachable from here: lease {key} stays until it expires (24 h), and "
                                f"until then the route writer keeps this node's VPC route; to end it sooner, run "
                                f"`etcdctl del {key}` where etcd is reachable")
        current = ctx.etcd().get(key)
        if current is None:
            return Status(True, f"{key} is gone")
        owner = parse_lease_value(current.value).instance_id
        if owner and owner != ctx.identity().instance_id:
            return Status(True, f"{key} now belongs to {owner}: left alone")
        return Status(False, key)

    def plan(self, ctx: Context) -> list[str]:
        return [f"etcd delete {self._key(ctx)} (only if it still holds this node's lease)"]

    def apply(self, ctx: Context) -> None:
        key = self._key(ctx)
        if key is None:
            return
        current = ctx.etcd().get(key)
        if current is not None:
            ctx.etcd().compare_and_delete(key, current.value)


class CniFiles:
    name = "cni-config"
    title = "remove flannel's CNI config and IPAM state"
    always = False

    def check(self, ctx: Context) -> Status:
        left = [p for p in CNI_FILES if ctx.fs.exists(p)]
        return Status(not left, ", ".join(left))

    def plan(self, ctx: Context) -> list[str]:
        return [f"remove {p}" for p in CNI_FILES if ctx.fs.exists(p)]

    def apply(self, ctx: Context) -> None:
        for path in CNI_FILES:
            ctx.fs.remove(path)


def _json(ctx: Context, argv: list[str]) -> list[dict[str, object]]:
    result = ctx.runner.run(argv)
    data = json.loads(result.stdout or "[]")
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


class NetworkDevices:
    name = "network-devices"
    title = "delete cni0 and the flannel VXLAN devices"
    always = False

    def _links(self, ctx: Context) -> list[str]:
        return [str(link["ifname"]) for link in _json(ctx, ["ip", "-j", "link", "show"])
                if FLANNEL_LINK.match(str(link.get("ifname", "")))]

    def check(self, ctx: Context) -> Status:
        links = self._links(ctx)
        return Status(not links, ", ".join(links))

    def plan(self, ctx: Context) -> list[str]:
        return [f"ip link delete {name}" for name in self._links(ctx)]

    def apply(self, ctx: Context) -> None:
        for name in self._links(ctx):
            ctx.runner.run(["ip", "link", "delete", name])


@dataclass(frozen=True)
class HostRoute:
    destination: ipaddress.IPv4Network
    spec: tuple[str, ...]
    """What ``ip route del`` needs to name exactly this route."""


class PodRoutes:
    name = "pod-routes"
    title = "delete routes to pod subnets left in the main table"
    always = False

    def _routes(self, ctx: Context) -> list[HostRoute]:
        network = ctx.flannel_network()
        if network is None:
            return []
        found = []
        for route in _json(ctx, ["ip", "-j", "route", "show", "table", "main"]):
            dst = str(route.get("dst", ""))
            if dst == "default":
                continue
            try:
                destination = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32")
            except ValueError:
                continue
            if not destination.subnet_of(network):
                continue
            spec = [str(destination)]
            kind = str(route.get("type", "unicast"))
            if kind != "unicast":
                spec.insert(0, kind)
            if route.get("gateway"):
                spec += ["via", str(route["gateway"])]
            if route.get("dev"):
                spec += ["dev", str(route["dev"])]
            found.append(HostRoute(destination, tuple(spec)))
        return found

    def check(self, ctx: Context) -> Status:
        if ctx.flannel_network() is None:
            return Status(True, "pod network unknown (no subnet.env, no install state): nothing deleted")
        routes = self._routes(ctx)
        return Status(not routes, ", ".join(str(r.destination) for r in routes))

    def plan(self, ctx: Context) -> list[str]:
        return [shlex.join(["ip", "route", "del", *r.spec]) for r in self._routes(ctx)]

    def apply(self, ctx: Context) -> None:
        for route in self._routes(ctx):
            ctx.runner.run(["ip", "route", "del", *route.spec, "table", "main"])


class IptablesRules:
    name = "iptables"
    title = "remove flannel's iptables chains (FLANNEL-POSTRTG, FLANNEL-FWD) and the rules jumping to them"
    always = False

    def _rules(self, ctx: Context) -> list[list[str]] | None:
        """The commands that remove flannel's rules, ``None`` when iptables is not installed."""
        commands: list[list[str]] = []
        for table, chain in IPTABLES_CHAINS:
            listing = ctx.runner.run(["iptables", "-t", table, "-S"], check=False)
            if listing.returncode == 127:
                return None
            if not listing.ok:
                listing = ctx.runner.run(["iptables", "-t", table, "-S"])
            lines = listing.stdout.splitlines()
            for line in lines:
                words = shlex.split(line)
                jumps_to_chain = "-j" in words[:-1] and words[words.index("-j") + 1] == chain
                if len(words) > 2 and words[0] == "-A" and words[1] != chain and jumps_to_chain:
                    commands.append(["iptables", "-t", table, "-D", *words[1:]])
            if f"-N {chain}" in lines:
                commands += [["iptables", "-t", table, "-F", chain], ["iptables", "-t", table, "-X", chain]]
        return commands

    def check(self, ctx: Context) -> Status:
        rules = self._rules(ctx)
        if rules is None:
            return Status(True, "iptables is not installed")
        return Status(not rules)

    def plan(self, ctx: Context) -> list[str]:
        return [shlex.join(c) for c in self._rules(ctx) or []]

    def apply(self, ctx: Context) -> None:
        for command in self._rules(ctx) or []:
            ctx.runner.run(command)


class VpcRouteEntry:
    name = "vpc-route-entry"
    title = "delete this node's route entries from the VPC route tables"
    always = False

    def _entries(self, ctx: Context) -> list[RouteEntry]:
        network = ctx.flannel_network()
        identity = ctx.identity()
        if network is None or not identity.vpc_id:
            return []
        vpc = ctx.cloud().vpc
        found = []
        for table in vpc.list_route_tables(identity.vpc_id):
            found += [e for e in vpc.list_route_entries(table.table_id, entry_type="Custom")
                      if is_node_route(e, network) and e.next_hop_id == identity.instance_id
                      # only entries flannel-alivpc made: a hand-made route to this node stays
                      and (entry_cluster(e) is not None or e.name == ROUTE_NAME)]
        return found

    def check(self, ctx: Context) -> Status:
        if ctx.flannel_network() is None:
            return Status(True, "pod network unknown (no subnet.env, no install state): nothing to look for")
        if not ctx.identity().vpc_id:
            return Status(True, "classic network: no VPC route tables")
        entries = self._entries(ctx)
        return Status(not entries, ", ".join(f"{e.destination} in {e.table_id}" for e in entries))

    def plan(self, ctx: Context) -> list[str]:
        return [f"DeleteRouteEntry {e.table_id} {e.entry_id} ({e.destination} -> {e.next_hop_id})"
                for e in self._entries(ctx)]

    def apply(self, ctx: Context) -> None:
        vpc = ctx.cloud().vpc
        for entry in self._entries(ctx):
            vpc.delete_route_entry(entry.table_id, entry)


class SubnetEnv:
    name = "subnet-env"
    title = f"remove {SUBNET_ENV}"
    always = False

    def check(self, ctx: Context) -> Status:
        return Status(not ctx.fs.exists(SUBNET_ENV))

    def plan(self, ctx: Context) -> list[str]:
        return [f"remove {SUBNET_ENV}"]

    def apply(self, ctx: Context) -> None:
        ctx.fs.remove(SUBNET_ENV)


class InstallerFiles:
    name = "installer-files"
    title = f"remove {CONFIG_DIR} and the install state"
    always = False

    def check(self, ctx: Context) -> Status:
        left = [p for p in (CONFIG_DIR, STATE_FILE) if ctx.fs.exists(p)]
        return Status(not left, ", ".join(left))

    def plan(self, ctx: Context) -> list[str]:
        return [f"remove {p}" for p in (CONFIG_DIR, STATE_FILE) if ctx.fs.exists(p)]

    def apply(self, ctx: Context) -> None:
        ctx.fs.remove(CONFIG_DIR)
        ctx.fs.remove(STATE_FILE)
