"""The kernel's network configuration through netlink: the only module importing pyroute2.

Callers get plain dataclasses and named errors; netlink messages and pyroute2
objects never leave this module.

* Links and addresses (a handful of calls per pass) go through pyroute2's
  ``IPRoute``.
* Neighbours, FDB entries and routes (thousands of entries with 1000 peers)
  go through one raw NETLINK_ROUTE socket with messages packed here: ``apply``
  sends a whole batch in a few ``send`` calls and matches every ack to its
  request, and the dumps are parsed without building pyroute2 objects. With
  pyroute2's per-call API, 3000 writes take about 3 s; batched, about 0.1 s.

Semantics every caller can rely on:

* writes are *replace* (create or overwrite): applying the same state twice is
  harmless, and a crash at any point is repaired by the next pass;
* deletes are idempotent: "no such entry" counts as success;
* every kernel refusal is a ``NetlinkError`` subclass chosen by errno
  (``DeviceNotFound``, ``AlreadyExists``, ``NotFound``, ``PermissionDenied``,
  ``InvalidArgument``, ``Unreachable``), carrying the errno and what was asked.

``Netlink(netns="name")`` works on another namespace's tables (the test bed);
the daemon uses its own (``Netlink()``).
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import ipaddress
import os
import re
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as _Pyroute2Error

from flannel_alivpc.clients.netns import run_in_namespace, write_sysctl
from flannel_alivpc.core.errors import ConfigError, FlannelAliVpcError

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network
IPv4Interface = ipaddress.IPv4Interface

_AF_INET = 2
AF_BRIDGE = 7

# rtnetlink message types, flags and attribute numbers (linux/rtnetlink.h, linux/neighbour.h)
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_RTM_NEWROUTE, _RTM_DELROUTE, _RTM_GETROUTE = 24, 25, 26
_RTM_NEWNEIGH, _RTM_DELNEIGH, _RTM_GETNEIGH = 28, 29, 30
_NLM_F_REQUEST = 0x1
_NLM_F_MULTI = 0x2
_NLM_F_ACK = 0x4
_NLM_F_DUMP_INTR = 0x10
_NLM_F_DUMP = 0x300
_NLM_F_REPLACE = 0x100
_NLM_F_EXCL = 0x200
_NLM_F_CREATE = 0x400
_NETLINK_CAP_ACK = 10
_SOL_NETLINK = 270
_NDA_DST, _NDA_LLADDR = 1, 2
_RTA_DST, _RTA_OIF, _RTA_GATEWAY, _RTA_PRIORITY, _RTA_PREFSRC, _RTA_TABLE = 1, 4, 5, 6, 7, 15
_NTF_SELF = 0x02
_RTN_UNICAST = 1
RTN_BLACKHOLE = 6

NUD_PERMANENT = 0x80
RTNH_F_ONLINK = 0x4
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
_RT_SCOPE_NOWHERE = 255

_HEADER = struct.Struct("=IHHII")
_NDMSG = struct.Struct("=BBHiHBB")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_ERRNO = struct.Struct("=i")

_BATCH = 200
"""Requests per send: their acks (16+20 bytes each with NETLINK_CAP_ACK) fit the receive buffer easily."""
_DUMP_RETRIES = 5


# -- errors --------------------------------------------------------------------------------


class NetlinkError(FlannelAliVpcError):
    """The kernel refused a netlink request."""

    def __init__(self, message: str, *, errno: int = 0, operation: str = "") -> None:
        super().__init__(message)
        self.errno = errno
        self.operation = operation


class DeviceNotFound(NetlinkError):
    """ENODEV: the interface named or indexed in the request does not exist."""


class AlreadyExists(NetlinkError):
    """EEXIST: an exclusive create met an existing object."""


class NotFound(NetlinkError):
    """ENOENT/ESRCH/EADDRNOTAVAIL: the entry to change or delete does not exist."""


class PermissionDenied(NetlinkError):
    """EPERM/EACCES: the process lacks CAP_NET_ADMIN (run as root or grant the capability)."""


class InvalidArgument(NetlinkError):
    """EINVAL/EOPNOTSUPP/EAFNOSUPPORT/ERANGE: the kernel rejected the request's contents."""


class Unreachable(NetlinkError):
    """ENETUNREACH/EHOSTUNREACH: a gateway or next hop cannot be reached."""


_ERRNO_CLASSES: dict[int, type[NetlinkError]] = {
    errno_codes.ENODEV: DeviceNotFound,
    errno_codes.EEXIST: AlreadyExists,
    errno_codes.ENOENT: NotFound,
    errno_codes.ESRCH: NotFound,
    errno_codes.EADDRNOTAVAIL: NotFound,
    errno_codes.EPERM: PermissionDenied,
    errno_codes.EACCES: PermissionDenied,
    errno_codes.EINVAL: InvalidArgument,
    errno_codes.EOPNOTSUPP: InvalidArgument,
    errno_codes.EAFNOSUPPORT: InvalidArgument,
    errno_codes.ERANGE: InvalidArgument,
    errno_codes.ENETUNREACH: Unreachable,
    errno_codes.EHOSTUNREACH: Unreachable,
}


def error_from_errno(code: int, operation: str) -> NetlinkError:
    """The named error for a kernel errno (``NetlinkError`` itself for the rest)."""
    cls = _ERRNO_CLASSES.get(code, NetlinkError)
    name = errno_codes.errorcode.get(code, f"errno {code}")
    hint = "; this needs CAP_NET_ADMIN (run as root)" if cls is PermissionDenied else ""
    return cls(f"{operation}: {os.strerror(code)} ({name}){hint}", errno=code, operation=operation)


def _wrap(error: _Pyroute2Error, operation: str) -> NetlinkError:
    return error_from_errno(int(error.code or 0), operation)


# -- plain data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    mtu: int
    ipv4: tuple[ipaddress.IPv4Address, ...]

    @property
    def primary_ipv4(self) -> ipaddress.IPv4Address | None:
        return self.ipv4[0] if self.ipv4 else None


@dataclass(frozen=True)
class VxlanInfo:
    """The VXLAN attributes of a link (what flannel compares before reusing a device)."""

    vni: int
    port: int
    local: IPv4Address | None
    link: int | None
    learning: bool
    gbp: bool


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str
    mtu: int
    mac: str
    up: bool
    master: int | None = None
    vxlan: VxlanInfo | None = None


@dataclass(frozen=True)
class VxlanDeviceSpec:
    name: str
    vni: int
    port: int
    local: IPv4Address | None
    link_index: int | None
    mac: str
    mtu: int
    learning: bool = False
    gbp: bool = False


@dataclass(frozen=True)
class Neighbour:
    """An IPv4 neighbour (ARP) entry."""

    ifindex: int
    ip: IPv4Address
    mac: str | None
    state: int

    @property
    def permanent(self) -> bool:
        return bool(self.state & NUD_PERMANENT)


@dataclass(frozen=True)
class FdbEntry:
    """A forwarding-database entry of a VXLAN (or bridge) device: MAC -> remote VTEP."""

    ifindex: int
    mac: str
    dst: IPv4Address | None
    state: int
    flags: int


@dataclass(frozen=True)
class Route:
    dst: IPv4Network
    gateway: IPv4Address | None
    oif: int | None
    onlink: bool
    table: int
    protocol: int
    scope: int


# Batched operations: what ``apply`` takes. Each is a replace or an idempotent delete.


@dataclass(frozen=True)
class NeighbourOp:
    action: str  # "replace" | "delete"
    ifindex: int
    ip: IPv4Address
    mac: str = ""

    def describe(self) -> str:
        return f"{self.action} neighbour {self.ip} lladdr {self.mac or '-'} dev #{self.ifindex}"


@dataclass(frozen=True)
class FdbOp:
    action: str  # "replace" | "delete"
    ifindex: int
    mac: str
    dst: IPv4Address

    def describe(self) -> str:
        return f"{self.action} fdb {self.mac} dst {self.dst} dev #{self.ifindex}"


@dataclass(frozen=True)
class RouteOp:
    action: str  # "replace" | "delete"
    dst: IPv4Network
    gateway: IPv4Address | None = None
    oif: int | None = None
    onlink: bool = False
    table: int = RT_TABLE_MAIN
    protocol: int = RTPROT_BOOT

    def describe(self) -> str:
        via = f" via {self.gateway}" if self.gateway else ""
        dev = f" dev #{self.oif}" if self.oif else ""
        return f"{self.action} route {self.dst}{via}{dev}{' onlink' if self.onlink else ''}"


@dataclass(frozen=True)
class BlackholeOp:
    """``ip route add|del blackhole <dst>`` in the main table (flannel's --ip-blackhole-route).

    "add" is exclusive, as flannel's RouteAdd: it fails with ``AlreadyExists``
    when a route with the same destination and metric is there.
    """

    action: str  # "add" | "delete"
    dst: IPv4Network
    metric: int = 0
    protocol: int = RTPROT_BOOT

    def describe(self) -> str:
        return f"{self.action} route blackhole {self.dst} metric {self.metric}"


Op = NeighbourOp | FdbOp | RouteOp | BlackholeOp


@dataclass(frozen=True)
class RouteLookup:
    """What ``ip route get <destination>`` answers: the route the kernel would use right now."""

    destination: IPv4Address
    gateway: IPv4Address | None
    oif: int | None
    source: IPv4Address | None
    type: int

    @property
    def on_link(self) -> bool:
        """A unicast route without a gateway: the destination is on a directly connected subnet."""
        return self.type == _RTN_UNICAST and self.gateway is None

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def normalize_mac(value: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` in lower case; ValueError for anything else."""
    mac = value.strip().lower().replace("-", ":")
    if not _MAC.match(mac):
        raise ValueError(f"{value!r} is not a MAC address")
    return mac


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


# -- the raw side: message packing ------------------------------------------------------------


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _message(msg_type: int, flags: int, seq: int, body: bytes) -> bytes:
    return _HEADER.pack(_HEADER.size + len(body), msg_type, flags, seq, 0) + body


_WRITE = _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_REPLACE
_DELETE = _NLM_F_REQUEST | _NLM_F_ACK


def _encode(op: Op, seq: int) -> bytes:
    if isinstance(op, BlackholeOp):
        if op.action not in ("add", "delete"):
            raise ValueError(f"unknown action {op.action!r} in {op}")
        add = op.action == "add"
        body = _RTMSG.pack(_AF_INET, op.dst.prefixlen, 0, 0, RT_TABLE_MAIN, op.protocol if add else 0,
                           RT_SCOPE_UNIVERSE if add else _RT_SCOPE_NOWHERE, RTN_BLACKHOLE, 0)
        body += _attr(_RTA_DST, op.dst.network_address.packed) + _attr(_RTA_PRIORITY, _U32.pack(op.metric))
        flags = _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_EXCL if add else _DELETE
        return _message(_RTM_NEWROUTE if add else _RTM_DELROUTE, flags, seq, body)
    replace = op.action == "replace"
    if op.action not in ("replace", "delete"):
        raise ValueError(f"unknown action {op.action!r} in {op}")
    if isinstance(op, NeighbourOp):
        body = _NDMSG.pack(_AF_INET, 0, 0, op.ifindex, NUD_PERMANENT, 0, _RTN_UNICAST)
        body += _attr(_NDA_DST, op.ip.packed)
        if replace:
            body += _attr(_NDA_LLADDR, _mac_bytes(op.mac))
        return _message(_RTM_NEWNEIGH if replace else _RTM_DELNEIGH, _WRITE if replace else _DELETE, seq, body)
    if isinstance(op, FdbOp):
        # bridge fdb replace <mac> dev <vxlan> dst <ip> self permanent
        body = _NDMSG.pack(AF_BRIDGE, 0, 0, op.ifindex, NUD_PERMANENT, _NTF_SELF, 0)
        body += _attr(_NDA_LLADDR, _mac_bytes(op.mac)) + _attr(_NDA_DST, op.dst.packed)
        return _message(_RTM_NEWNEIGH if replace else _RTM_DELNEIGH, _WRITE if replace else _DELETE, seq, body)
    scope = RT_SCOPE_UNIVERSE if op.gateway is not None or not op.oif else RT_SCOPE_LINK
    table = op.table if op.table < 256 else 252  # RT_TABLE_COMPAT; the real id goes in RTA_TABLE
    if replace:
        body = _RTMSG.pack(_AF_INET, op.dst.prefixlen, 0, 0, table, op.protocol, scope, _RTN_UNICAST,
                           RTNH_F_ONLINK if op.onlink else 0)
    else:
        # Scope "nowhere" and protocol 0 match any route with this destination, gateway and link.
        body = _RTMSG.pack(_AF_INET, op.dst.prefixlen, 0, 0, table, 0, _RT_SCOPE_NOWHERE, 0, 0)
    body += _attr(_RTA_TABLE, _U32.pack(op.table)) + _attr(_RTA_DST, op.dst.network_address.packed)
    if op.gateway is not None:
        body += _attr(_RTA_GATEWAY, op.gateway.packed)
    if op.oif:
        body += _attr(_RTA_OIF, _U32.pack(op.oif))
    return _message(_RTM_NEWROUTE if replace else _RTM_DELROUTE, _WRITE if replace else _DELETE, seq, body)


def _attrs(data: bytes, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            return
        yield kind & 0x3FFF, data[offset + _RTATTR.size:offset + length]
        offset += (length + 3) & ~3


def _decode_neigh(data: bytes, offset: int, end: int) -> tuple[int, int, int, int, dict[int, bytes]]:
    family, _, _, ifindex, state, flags, _ = _NDMSG.unpack_from(data, offset)
    return family, ifindex, state, flags, dict(_attrs(data, offset + _NDMSG.size, end))


_DELETE_TOLERATED = (errno_codes.ENOENT, errno_codes.ESRCH, errno_codes.EADDRNOTAVAIL)


class _RawSocket:
    """One NETLINK_ROUTE socket for batched writes and fast dumps."""

    def __init__(self, netns: str | None) -> None:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
            sock.bind((0, 0))
            return sock

        self._sock = run_in_namespace(netns, make)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE (root)
        except OSError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        with contextlib.suppress(OSError):
            # Error acks then carry only the header of the failed request, not all of it.
            self._sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _receive(self) -> Iterator[tuple[int, int, int, bytes, int, int]]:
        """Messages of one recv: (type, flags, seq, data, body offset, end)."""
        data = self._sock.recv(1 << 20)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, msg_type, flags, seq, _ = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                break
            yield msg_type, flags, seq, data, offset + _HEADER.size, offset + length
            offset += (length + 3) & ~3

    def apply(self, ops: Sequence[Op]) -> list[NetlinkError | None]:
        results: list[NetlinkError | None] = [None] * len(ops)
        for start in range(0, len(ops), _BATCH):
            chunk = ops[start:start + _BATCH]
            pending: dict[int, int] = {}
            payload = bytearray()
            for position, op in enumerate(chunk, start):
                seq = self._next_seq()
                pending[seq] = position
                payload += _encode(op, seq)
            self._sock.send(bytes(payload))
            while pending:
                for msg_type, _, seq, data, body, _ in self._receive():
                    if msg_type != _NLMSG_ERROR or seq not in pending:
                        continue
                    position = pending.pop(seq)
                    code = -_ERRNO.unpack_from(data, body)[0]
                    op = ops[position]
                    if code and not (op.action == "delete" and code in _DELETE_TOLERATED):
                        results[position] = error_from_errno(code, op.describe())
        return results

    def lookup_routes(self, destinations: Sequence[IPv4Address]) -> list[RouteLookup | NetlinkError]:
        """One RTM_GETROUTE per destination (``ip route get``), sent in batches; an answer or an error each."""
        results: list[RouteLookup | NetlinkError | None] = [None] * len(destinations)
        for start in range(0, len(destinations), _BATCH):
            pending: dict[int, int] = {}
            payload = bytearray()
            for position in range(start, min(start + _BATCH, len(destinations))):
                seq = self._next_seq()
                pending[seq] = position
                body = _RTMSG.pack(_AF_INET, 32, 0, 0, 0, 0, 0, 0, 0)
                payload += _message(_RTM_GETROUTE, _NLM_F_REQUEST, seq,
                                    body + _attr(_RTA_DST, destinations[position].packed))
            self._sock.send(bytes(payload))
            while pending:
                for msg_type, _, seq, data, body_at, end in self._receive():
                    if seq not in pending:
                        continue
                    position = pending.pop(seq)
                    destination = destinations[position]
                    if msg_type == _NLMSG_ERROR:
                        code = -_ERRNO.unpack_from(data, body_at)[0]
                        results[position] = error_from_errno(code or errno_codes.EINVAL, f"route get {destination}")
                        continue
                    rtm_type = _RTMSG.unpack_from(data, body_at)[7]
                    attrs = dict(_attrs(data, body_at + _RTMSG.size, end))
                    gateway, source = attrs.get(_RTA_GATEWAY), attrs.get(_RTA_PREFSRC)
                    results[position] = RouteLookup(
                        destination=destination, gateway=IPv4Address(gateway) if gateway else None,
                        oif=_U32.unpack(attrs[_RTA_OIF])[0] if _RTA_OIF in attrs else None,
                        source=IPv4Address(source) if source else None, type=rtm_type)
        return [result for result in results if result is not None]

    def dump(self, msg_type: int, body: bytes, what: str) -> list[tuple[int, bytes, int, int]]:
        """All answers of one dump request: (type, data, body offset, end); retried when interrupted."""
        for _ in range(_DUMP_RETRIES):
            seq = self._next_seq()
            self._sock.send(_message(msg_type, _NLM_F_REQUEST | _NLM_F_DUMP, seq, body))
            answers: list[tuple[int, bytes, int, int]] = []
            interrupted = False
            done = False
            while not done:
                for kind, flags, answer_seq, data, start, end in self._receive():
                    if answer_seq != seq:
                        continue
                    if flags & _NLM_F_DUMP_INTR:
                        interrupted = True
                    if kind == _NLMSG_DONE:
                        done = True
                        break
                    if kind == _NLMSG_ERROR:
                        code = -_ERRNO.unpack_from(data, start)[0]
                        if code:
                            raise error_from_errno(code, f"dump {what}")
                        done = True
                        break
                    answers.append((kind, data, start, end))
            if not interrupted:
                return answers
        raise NetlinkError(f"dump {what}: the table kept changing during {_DUMP_RETRIES} attempts",
                           operation=f"dump {what}")


# -- the connection ------------------------------------------------------------------------------


def _get(msg: Any, name: str) -> Any:
    value = msg.get(name)
    return value if value is not None else msg.get_attr(name)


@dataclass
class Netlink:
    """One connection to the kernel tables of a network namespace (the caller's when ``netns`` is None).

    Not for concurrent use by several threads (a lock serialises callers).
    """

    netns: str | None = None
    _ipr: Any = field(default=None, init=False, repr=False)
    _raw: _RawSocket | None = field(default=None, init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None
            if self._raw is not None:
                self._raw.close()
                self._raw = None

    @property
    def _route(self) -> Any:
        if self._ipr is None:
            self._ipr = IPRoute(netns=self.netns) if self.netns else IPRoute()
        return self._ipr

    @property
    def _socket(self) -> _RawSocket:
        if self._raw is None:
            self._raw = _RawSocket(self.netns)
        return self._raw

    def _call(self, operation: str, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            try:
                return getattr(self._route, method)(*args, **kwargs)
            except _Pyroute2Error as error:
                raise _wrap(error, operation) from None

    # -- links ------------------------------------------------------------------------------------

    @staticmethod
    def _link(msg: Any) -> Link:
        info = _get(msg, "IFLA_LINKINFO")
        kind = ""
        vxlan = None
        if info is not None:
            kind = str(info.get_attr("IFLA_INFO_KIND") or "")
            data = info.get_attr("IFLA_INFO_DATA")
            if kind == "vxlan" and data is not None:
                local = data.get_attr("IFLA_VXLAN_LOCAL")
                lower = data.get_attr("IFLA_VXLAN_LINK")
                vxlan = VxlanInfo(vni=int(data.get_attr("IFLA_VXLAN_ID") or 0),
                                  port=int(data.get_attr("IFLA_VXLAN_PORT") or 0),
                                  local=IPv4Address(local) if local else None,
                                  link=int(lower) if lower else None,
                                  learning=bool(data.get_attr("IFLA_VXLAN_LEARNING")),
                                  gbp=data.get_attr("IFLA_VXLAN_GBP") is not None)
        master = _get(msg, "IFLA_MASTER")
        return Link(index=int(msg["index"]), name=str(_get(msg, "IFLA_IFNAME")), kind=kind,
                    mtu=int(_get(msg, "IFLA_MTU") or 0), mac=str(_get(msg, "IFLA_ADDRESS") or ""),
                    up=bool(msg["flags"] & 1), master=int(master) if master else None, vxlan=vxlan)

    def link(self, name: str) -> Link | None:
        """The link called ``name``, or None.

        One RTM_GETLINK for that name (pyroute2's ``get_links(ifname=...)`` would
        dump every link and filter here: 60 ms on a node with 100 pods).
        """
        try:
            found = self._call(f"get link {name}", "link", "get", ifname=name)
        except DeviceNotFound:
            return None
        return self._link(found[0]) if found else None

    def link_by_index(self, index: int) -> Link | None:
        try:
            found = self._call(f"get link #{index}", "link", "get", index=index)
        except DeviceNotFound:
            return None
        return self._link(found[0]) if found else None

    def links(self) -> list[Link]:
        return [self._link(msg) for msg in self._call("dump links", "get_links")]

    def create_vxlan(self, spec: VxlanDeviceSpec) -> Link:
        """Create a VXLAN device (down); raises ``AlreadyExists`` when the name is taken."""
        kwargs: dict[str, Any] = {"ifname": spec.name, "kind": "vxlan", "vxlan_id": spec.vni,
                                  "vxlan_port": spec.port, "vxlan_learning": 1 if spec.learning else 0,
                                  "address": spec.mac, "mtu": spec.mtu}
        if spec.local is not None:
            kwargs["vxlan_local"] = str(spec.local)
        if spec.link_index:
            kwargs["vxlan_link"] = spec.link_index
        if spec.gbp:
            kwargs["vxlan_gbp"] = True
        self._call(f"create vxlan device {spec.name} (vni {spec.vni})", "link", "add", **kwargs)
        link = self.link(spec.name)
        if link is None:
            raise DeviceNotFound(f"vxlan device {spec.name} vanished right after it was created",
                                 errno=errno_codes.ENODEV, operation="create vxlan")
        return link

    def create_bridge(self, name: str, *, mtu: int | None = None) -> Link:
        kwargs: dict[str, Any] = {"ifname": name, "kind": "bridge"}
        if mtu:
            kwargs["mtu"] = mtu
        self._call(f"create bridge {name}", "link", "add", **kwargs)
        return self._must(name)

    def create_veth(self, name: str, peer: str, *, peer_netns: str | None = None) -> Link:
        """A veth pair: ``name`` here, ``peer`` here or in namespace ``peer_netns``."""
        peer_spec: dict[str, Any] = {"ifname": peer}
        if peer_netns:
            peer_spec["net_ns_fd"] = peer_netns
        self._call(f"create veth {name}/{peer}", "link", "add", ifname=name, kind="veth", peer=peer_spec)
        return self._must(name)

    def _must(self, name: str) -> Link:
        link = self.link(name)
        if link is None:
            raise DeviceNotFound(f"link {name} does not exist", errno=errno_codes.ENODEV, operation=f"get {name}")
        return link

    def set_link(self, index: int, *, up: bool | None = None, mtu: int | None = None, mac: str | None = None,
                 master: int | None = None) -> None:
        kwargs: dict[str, Any] = {"index": index}
        if up is not None:
            kwargs["state"] = "up" if up else "down"
        if mtu is not None:
            kwargs["mtu"] = mtu
        if mac is not None:
            kwargs["address"] = mac
        if master is not None:
            kwargs["master"] = master
        self._call(f"set link #{index} {kwargs}", "link", "set", **kwargs)

    def delete_link(self, name: str) -> bool:
        """Delete link ``name``; False when it did not exist (idempotent)."""
        link = self.link(name)
        if link is None:
            return False
        try:
            self._call(f"delete link {name}", "link", "del", index=link.index)
        except (DeviceNotFound, NotFound):
            return False
        return True

    def write_sysctl(self, key: str, value: str | int) -> None:
        """A net.* sysctl of this connection's namespace (e.g. ``net/ipv6/conf/flannel.1/accept_ra``)."""
        write_sysctl(key, value, netns=self.netns)

    # -- addresses ----------------------------------------------------------------------------------

    def addresses(self, index: int) -> list[IPv4Interface]:
        result = []
        for msg in self._call(f"dump addresses of #{index}", "get_addr", family=_AF_INET, index=index):
            local = _get(msg, "IFA_LOCAL") or _get(msg, "IFA_ADDRESS")
            if local:
                result.append(IPv4Interface(f"{local}/{msg['prefixlen']}"))
        return result

    def add_address(self, index: int, address: IPv4Interface) -> None:
        """Add ``address`` to link ``index``; already present is fine."""
        with contextlib.suppress(AlreadyExists):
            self._call(f"add address {address} to #{index}", "addr", "add", index=index,
                       address=str(address.ip), prefixlen=address.network.prefixlen)

    def delete_address(self, index: int, address: IPv4Interface) -> None:
        """Remove ``address`` from link ``index``; already absent is fine."""
        with contextlib.suppress(NotFound, DeviceNotFound):
            self._call(f"delete address {address} from #{index}", "addr", "del", index=index,
                       address=str(address.ip), prefixlen=address.network.prefixlen)

    # -- neighbours, fdb, routes (raw, batched) ----------------------------------------------------------

    def apply(self, ops: Sequence[Op]) -> list[NetlinkError | None]:
        """Send ``ops`` in order (batched); one result per op: None on success, else the error.

        Deletes of entries that do not exist succeed. A failed op does not stop
        the ones after it; callers decide what a failure means for the others.
        """
        if not ops:
            return []
        with self._lock:
            return self._socket.apply(ops)

    def apply_one(self, op: Op) -> None:
        error = self.apply([op])[0]
        if error is not None:
            raise error

    def lookup_routes(self, destinations: Sequence[IPv4Address]) -> list[RouteLookup | NetlinkError]:
        """``ip route get`` for each destination, batched: the route the kernel would use, or why there is none."""
        if not destinations:
            return []
        with self._lock:
            return self._socket.lookup_routes(destinations)

    def blackhole_routes(self) -> list[IPv4Network]:
        """Destinations of the blackhole routes in the main table."""
        with self._lock:
            answers = self._socket.dump(_RTM_GETROUTE, _RTMSG.pack(_AF_INET, 0, 0, 0, 0, 0, 0, 0, 0), "routes")
        result = []
        for _, data, start, end in answers:
            family, dst_len, _, _, rtm_table, _, _, rtm_type, _ = _RTMSG.unpack_from(data, start)
            if family != _AF_INET or rtm_type != RTN_BLACKHOLE:
                continue
            attrs = dict(_attrs(data, start + _RTMSG.size, end))
            table = _U32.unpack(attrs[_RTA_TABLE])[0] if _RTA_TABLE in attrs else rtm_table
            if table == RT_TABLE_MAIN:
                result.append(IPv4Network((IPv4Address(attrs.get(_RTA_DST, b"\0\0\0\0")), dst_len)))
        return result

    def neighbours(self, ifindex: int | None = None) -> list[Neighbour]:
        """IPv4 neighbour entries (of one link when ``ifindex`` is given)."""
        with self._lock:
            answers = self._socket.dump(_RTM_GETNEIGH, _NDMSG.pack(_AF_INET, 0, 0, 0, 0, 0, 0), "neighbours")
        result = []
        for _, data, start, end in answers:
            family, index, state, _, attrs = _decode_neigh(data, start, end)
            if family != _AF_INET or (ifindex is not None and index != ifindex) or _NDA_DST not in attrs:
                continue
            lladdr = attrs.get(_NDA_LLADDR)
            result.append(Neighbour(ifindex=index, ip=IPv4Address(attrs[_NDA_DST]),
                                    mac=_mac_text(lladdr) if lladdr and len(lladdr) == 6 else None, state=state))
        return result

    def fdb(self, ifindex: int | None = None) -> list[FdbEntry]:
        """Forwarding-database entries (of one device when ``ifindex`` is given); IPv4 remotes only."""
        with self._lock:
            answers = self._socket.dump(_RTM_GETNEIGH, _NDMSG.pack(AF_BRIDGE, 0, 0, 0, 0, 0, 0), "fdb")
        result = []
        for _, data, start, end in answers:
            family, index, state, flags, attrs = _decode_neigh(data, start, end)
            if family != AF_BRIDGE or (ifindex is not None and index != ifindex):
                continue
            lladdr = attrs.get(_NDA_LLADDR)
            if not lladdr or len(lladdr) != 6:
                continue
            dst = attrs.get(_NDA_DST)
            result.append(FdbEntry(ifindex=index, mac=_mac_text(lladdr),
                                   dst=IPv4Address(dst) if dst and len(dst) == 4 else None,
                                   state=state, flags=flags))
        return result

    def routes(self, *, oif: int | None = None, table: int | None = RT_TABLE_MAIN,
               protocol: int | None = None) -> list[Route]:
        """IPv4 unicast routes, filtered by output link, table (None: all) and protocol."""
        with self._lock:
            answers = self._socket.dump(_RTM_GETROUTE, _RTMSG.pack(_AF_INET, 0, 0, 0, 0, 0, 0, 0, 0), "routes")
        result = []
        for _, data, start, end in answers:
            family, dst_len, _, _, rtm_table, proto, scope, rtm_type, flags = _RTMSG.unpack_from(data, start)
            if family != _AF_INET or rtm_type != _RTN_UNICAST:
                continue
            attrs = dict(_attrs(data, start + _RTMSG.size, end))
            route_table = _U32.unpack(attrs[_RTA_TABLE])[0] if _RTA_TABLE in attrs else rtm_table
            route_oif = _U32.unpack(attrs[_RTA_OIF])[0] if _RTA_OIF in attrs else None
            if (table is not None and route_table != table) or (oif is not None and route_oif != oif) \
                    or (protocol is not None and proto != protocol):
                continue
            dst = attrs.get(_RTA_DST, b"\0\0\0\0")
            gateway = attrs.get(_RTA_GATEWAY)
            result.append(Route(dst=IPv4Network((IPv4Address(dst), dst_len)),
                                gateway=IPv4Address(gateway) if gateway else None, oif=route_oif,
                                onlink=bool(flags & RTNH_F_ONLINK), table=route_table, protocol=proto,
                                scope=scope))
        return result


# -- change notifications ------------------------------------------------------------------------------------

_RTNLGRP_LINK = 1
_RTNLGRP_NEIGH = 3
_RTNLGRP_IPV4_ROUTE = 7
_RTM_NEWLINK, _RTM_DELLINK = 16, 17
_IFINFOMSG = struct.Struct("=BxHiII")
_IFLA_IFNAME = 3


@dataclass(frozen=True)
class KernelEvent:
    """One change the kernel announced: a neighbour, FDB entry or IPv4 route added/changed or removed."""

    kind: str  # "link" | "neighbour" | "fdb" | "route"
    action: str  # "new" | "del"
    ifindex: int | None
    key: str
    """The link's name, the neighbour's IP, the FDB entry's MAC, or the route's destination."""
    value: str | None
    """The neighbour's MAC, the FDB entry's remote, the route's gateway."""


class NetlinkMonitor:
    """Link, neighbour, FDB and route changes as the kernel multicasts them (``ip monitor``), in one namespace.

    ``links`` and ``tables`` choose what to follow: link changes, and/or
    neighbour, FDB and IPv4 route changes.
    """

    def __init__(self, netns: str | None = None, *, links: bool = False, tables: bool = True) -> None:
        groups = (1 << (_RTNLGRP_LINK - 1)) if links else 0
        if tables:
            groups |= (1 << (_RTNLGRP_NEIGH - 1)) | (1 << (_RTNLGRP_IPV4_ROUTE - 1))

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
            sock.bind((0, groups))
            return sock

        self._sock = run_in_namespace(netns, make)
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)
        self._pending: list[KernelEvent] = []

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> NetlinkMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next(self, timeout: float | None = None) -> KernelEvent | None:
        """The next event, or None when none came within ``timeout`` seconds."""
        while not self._pending:
            self._sock.settimeout(timeout)
            try:
                data = self._sock.recv(1 << 20)
            except TimeoutError:
                return None
            self._pending.extend(_events(data))
        return self._pending.pop(0)


def _events(data: bytes) -> Iterator[KernelEvent]:
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, msg_type, _, _, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            return
        start, end = offset + _HEADER.size, offset + length
        offset += (length + 3) & ~3
        if msg_type in (_RTM_NEWLINK, _RTM_DELLINK):
            _, _, index, _, _ = _IFINFOMSG.unpack_from(data, start)
            name = dict(_attrs(data, start + _IFINFOMSG.size, end)).get(_IFLA_IFNAME, b"").rstrip(b"\0")
            yield KernelEvent("link", "new" if msg_type == _RTM_NEWLINK else "del", index, name.decode(), None)
        elif msg_type in (_RTM_NEWNEIGH, _RTM_DELNEIGH):
            family, index, _, _, attrs = _decode_neigh(data, start, end)
            action = "new" if msg_type == _RTM_NEWNEIGH else "del"
            lladdr = attrs.get(_NDA_LLADDR)
            mac = _mac_text(lladdr) if lladdr and len(lladdr) == 6 else None
            dst = attrs.get(_NDA_DST)
            ip = str(IPv4Address(dst)) if dst and len(dst) == 4 else None
            if family == AF_BRIDGE and mac:
                yield KernelEvent("fdb", action, index, mac, ip)
            elif family == _AF_INET and ip:
                yield KernelEvent("neighbour", action, index, ip, mac)
        elif msg_type in (_RTM_NEWROUTE, _RTM_DELROUTE):
            family, dst_len, *_ = _RTMSG.unpack_from(data, start)
            if family != _AF_INET:
                continue
            attrs = dict(_attrs(data, start + _RTMSG.size, end))
            dst = attrs.get(_RTA_DST, b"\0\0\0\0")
            gateway = attrs.get(_RTA_GATEWAY)
            oif = _U32.unpack(attrs[_RTA_OIF])[0] if _RTA_OIF in attrs else None
            yield KernelEvent("route", "new" if msg_type == _RTM_NEWROUTE else "del", oif,
                              str(IPv4Network((IPv4Address(dst), dst_len))),
                              str(IPv4Address(gateway)) if gateway else None)


# -- the external interface (flannel's --iface / --iface-regex) --------------------------------------------


def list_interfaces() -> list[Interface]:
    """Every link with its IPv4 addresses, in index order."""
    with IPRoute() as ipr:
        addresses: dict[int, list[ipaddress.IPv4Address]] = {}
        for addr in ipr.get_addr(family=_AF_INET):
            value = _get(addr, "IFA_LOCAL") or _get(addr, "IFA_ADDRESS")
            if value:
                addresses.setdefault(addr["index"], []).append(ipaddress.IPv4Address(value))
        result = []
        for link in ipr.get_links():
            index = link["index"]
            result.append(Interface(name=str(_get(link, "IFLA_IFNAME")), index=index,
                                    mtu=int(_get(link, "IFLA_MTU") or 1500),
                                    ipv4=tuple(addresses.get(index, []))))
        return sorted(result, key=lambda i: i.index)


def default_route_interface() -> Interface:
    """The interface of the IPv4 default route (flannel's choice when no --iface is given)."""
    with IPRoute() as ipr:
        routes = ipr.get_default_routes(family=_AF_INET)
        indexes = [_get(r, "RTA_OIF") for r in routes]
    interfaces = {i.index: i for i in list_interfaces()}
    for index in indexes:
        if index in interfaces:
            return interfaces[index]
    raise ConfigError("no IPv4 default route to pick the external interface from; pass --iface")


def _with_primary(iface: Interface, address: ipaddress.IPv4Address) -> Interface:
    """``iface`` with ``address`` first: the address that chose the interface is the one to use."""
    return Interface(iface.name, iface.index, iface.mtu, (address, *(ip for ip in iface.ipv4 if ip != address)))


def interface_reaching(target: str, interfaces: list[Interface] | None = None) -> Interface:
    """The interface ``ip route get <target>`` goes out of, with the route's source address first.

    flannel's --iface-can-reach (GetInterfaceBySpecificIPRouting): the kernel's
    own choice, so policy routing, metrics and more specific routes all count.
    """
    try:
        destination = ipaddress.IPv4Address(target)
    except ValueError:
        raise ConfigError(f"--iface-can-reach {target!r} is not an IPv4 address; give an address this node "
                          "must reach over the external interface, e.g. another node's IP") from None
    with Netlink() as netlink:
        answer = netlink.lookup_routes([destination])[0]
    if isinstance(answer, NetlinkError):
        raise ConfigError(f"--iface-can-reach {destination}: no route to it ({answer}); check the node's routes "
                          "or choose the interface with --iface") from None
    by_index = {i.index: i for i in (interfaces if interfaces is not None else list_interfaces())}
    iface = by_index.get(answer.oif or -1)
    if iface is None:
        raise ConfigError(f"--iface-can-reach {destination}: the route to it has no output interface "
                          f"(type {answer.type}); choose the interface with --iface")
    if answer.source is not None:
        return _with_primary(iface, answer.source)
    if not iface.ipv4:
        raise ConfigError(f"--iface-can-reach {destination}: interface {iface.name} has no IPv4 address")
    return iface


def select_interface(names_or_ips: list[str], regexes: list[str], can_reach: str | None = None) -> Interface:
    """flannel's --iface, --iface-regex and --iface-can-reach rules, in that order; the first match wins.

    With none of them, the interface of the default route.
    """
    interfaces = list_interfaces()
    for wanted in names_or_ips:
        for iface in interfaces:
            if wanted in (str(ip) for ip in iface.ipv4):
                return _with_primary(iface, ipaddress.IPv4Address(wanted))
            if iface.name == wanted and iface.ipv4:
                return iface
    for pattern in regexes:
        compiled = re.compile(pattern)
        for iface in interfaces:
            if iface.ipv4 and (compiled.search(iface.name) or any(compiled.search(str(ip)) for ip in iface.ipv4)):
                return iface
    if can_reach:
        return interface_reaching(can_reach, interfaces)
    if names_or_ips or regexes:
        wanted_text = ", ".join(names_or_ips + [f"/{r}/" for r in regexes])
        raise ConfigError(f"no interface with an IPv4 address matches {wanted_text}; "
                          f"available: {', '.join(i.name for i in interfaces)}")
    return default_route_interface()
