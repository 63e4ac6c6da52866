"""Service annotations that tune the SLB: every name they have had, parsed and checked in one place.

Each setting is looked up under, in this order:

1. ``service.beta.kubernetes.io/alibaba-cloud-loadbalancer-<kebab-name>`` (current),
2. ``service.beta.kubernetes.io/alicloud-loadbalancer-<kebab-name>`` (2018-2020),
3. ``service.beta.kubernetes.io/alicloud-loadbalancer-<CamelName>`` (the 2017 names,
   e.g. ``-ProtocolPort``), and the CamelCase name under the current prefix.

The first one present wins. Missing settings take the 2017 defaults (the
``Setting.default`` column), so removing an annotation sets the value back.
A value that does not parse is a ``Problem`` naming the annotation as the user
wrote it and the value; ``parse_annotations`` returns every problem at once and
no options, and the controller then leaves the SLB as it is.

``review_annotations`` finds what the controller does not read at all: keys
under an Alibaba Cloud prefix that are no setting here (a typo gets the closest
name) and the cloud controller manager's settings this controller does not
implement. They change nothing; the controller reports each once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

PREFIX = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-"
LEGACY_PREFIX = "service.beta.kubernetes.io/alicloud-loadbalancer-"


@dataclass(frozen=True)
class Setting:
    name: str
    """The kebab-case name (suffix of the prefixes)."""
    camel: str | None
    """The 2017 CamelCase name, if the setting had one."""
    default: str
    """The value used when no annotation is present ("" = unset)."""
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("protocol-port", "ProtocolPort", "",
            'listener protocol per port: "https:443,http:80"; other ports use the Service port protocol'),
    Setting("address-type", "AddressType", "internet", "internet or intranet (cannot change after creation)"),
    Setting("slb-network-type", "SLBNetworkType", "",
            "classic or vpc, for intranet SLBs (also read as network-type)"),
    Setting("network-type", None, "", "current name of slb-network-type"),
    Setting("charge-type", "ChargeType", "paybytraffic", "paybytraffic or paybybandwidth"),
    Setting("region", "Region", "", "region of the SLB (default: the controller's region)"),
    Setting("bandwidth", "Bandwidth", "50", "Mbps, 1..5120: the SLB's, and each listener's for paybybandwidth"),
    Setting("cert-id", "CertID", "", "server certificate id, required for HTTPS listeners"),
    Setting("health-check-flag", "HealthCheckFlag", "off", "on or off: health check of HTTP/HTTPS listeners"),
    Setting("health-check-type", "HealthCheckType", "tcp", "tcp or http: health check of TCP listeners"),
    Setting("health-check-uri", "HealthCheckURI", "/", "path checked by HTTP health checks"),
    Setting("health-check-connect-port", "HealthCheckConnectPort", "-520",
            "port checked; -520 means the backend (node) port"),
    Setting("healthy-threshold", "HealthyThreshold", "3", "2..10 successes before a backend is healthy"),
    Setting("unhealthy-threshold", "UnhealthyThreshold", "3", "2..10 failures before a backend is unhealthy"),
    Setting("health-check-interval", "HealthCheckInterval", "2", "seconds between checks, 1..50"),
    Setting("health-check-connect-timeout", "HealthCheckConnectTimeout", "5",
            "seconds, 1..300, TCP/UDP health checks"),
    Setting("health-check-timeout", "HealthCheckTimeout", "5", "seconds, 1..300, HTTP/HTTPS health checks"),
    Setting("health-check-switch", None, "on", "on or off: health check of TCP/UDP listeners"),
    Setting("health-check-domain", None, "", "Host header of HTTP health checks (empty: the backend IP)"),
    Setting("health-check-httpcode", None, "http_2xx", "healthy HTTP codes: http_2xx,http_3xx,http_4xx,http_5xx"),
    Setting("id", None, "", "reuse this existing SLB instead of creating one; it is never deleted"),
    Setting("force-override-listeners", None, "false",
            "true: manage the listeners of a reused SLB (else only its backends)"),
    Setting("spec", None, "", "SLB instance spec, e.g. slb.s1.small (unset: not managed)"),
    Setting("vswitch-id", None, "", "vSwitch of an intranet VPC SLB (default: the controller's)"),
    Setting("backend-label", None, "", 'only nodes with all these labels: "k1=v1,k2=v2"'),
    Setting("remove-unscheduled-backend", None, "off", "on: leave out nodes marked unschedulable"),
    Setting("scheduler", None, "rr", "rr, wrr, wlc, sch or tch"),
    Setting("persistence-timeout", None, "0", "TCP/UDP session persistence, seconds 0..3600 (0: off)"),
    Setting("sticky-session", None, "off", "on or off: HTTP/HTTPS sticky sessions"),
    Setting("sticky-session-type", None, "", "insert (needs cookie-timeout) or server (needs cookie)"),
    Setting("cookie-timeout", None, "", "seconds 1..86400, for sticky-session-type insert"),
    Setting("cookie", None, "", "cookie name, for sticky-session-type server"),
    Setting("acl-status", None, "off", "on or off: access control on the listeners"),
    Setting("acl-id", None, "", "the ACL (required when acl-status is on)"),
    Setting("acl-type", None, "", "white or black (required when acl-status is on)"),
)
BY_NAME = {s.name: s for s in SETTINGS}
PROTOCOLS = ("tcp", "udp", "http", "https")
SCHEDULERS = ("rr", "wrr", "wlc", "sch", "tch")
HTTP_CODES = ("http_2xx", "http_3xx", "http_4xx", "http_5xx")
UNSUPPORTED: tuple[str, ...] = (
    "name", "resource-group-id", "additional-resource-tags", "delete-protection", "modification-protection",
    "instance-charge-type", "master-zoneid", "slave-zoneid", "ip-version", "ip", "external-ip-type", "hostname",
    "preserve-lb-on-delete", "tls-cipher-policy", "http2-enabled", "forward-port", "domain-extensions",
    "idle-timeout", "request-timeout", "established-timeout", "proxy-protocol", "xforwardedfor-proto",
    "xforwardedfor-slbport", "xforwardedfor-clientsrcport", "connection-drain", "connection-drain-timeout",
    "health-check-method", "vgroup-port", "weight", "default-weight", "ignore-weight-update",
    "backend-ip-version", "type", "tunnel-type",
)
"""Settings of the Alibaba Cloud CCM (kebab names under both prefixes) that this controller does not read."""
UNSUPPORTED_KEYS = ("service.beta.kubernetes.io/backend-type",)
"""Whole keys of the CCM, outside the load balancer prefixes, that this controller does not read."""
ALIBABA_PREFIXES = ("service.beta.kubernetes.io/alibaba-cloud-", "service.beta.kubernetes.io/alicloud-")
UNKNOWN_REASON = "UnknownAnnotation"
UNSUPPORTED_REASON = "UnsupportedAnnotation"
_LABEL_KEY = re.compile(r"^([A-Za-z0-9.-]+/)?[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def keys_for(setting: Setting) -> tuple[str, ...]:
    """Every annotation key of a setting, in lookup order."""
    keys = [PREFIX + setting.name, LEGACY_PREFIX + setting.name]
    if setting.camel:
        keys += [LEGACY_PREFIX + setting.camel, PREFIX + setting.camel]
    return tuple(keys)


@dataclass(frozen=True)
class Problem:
    annotation: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"annotation {self.annotation}={self.value!r}: {self.reason}"


@dataclass(frozen=True)
class HealthCheck:
    flag: str = "off"
    switch: str = "on"
    type: str = "tcp"
    uri: str = "/"
    domain: str = ""
    http_code: str = "http_2xx"
    connect_port: int = 0
    """0: the backend port (the 2017 annotation's -520)."""
    healthy_threshold: int = 3
    unhealthy_threshold: int = 3
    interval: int = 2
    connect_timeout: int = 5
    timeout: int = 5


@dataclass(frozen=True)
class Options:
    """Everything the annotations say, checked; defaults where they say nothing."""

    protocol_port: Mapping[int, str] = field(default_factory=dict)
    address_type: str = "internet"
    network_type: str = ""
    charge_type: str = "paybytraffic"
    region: str = ""
    bandwidth: int = 50
    cert_id: str = ""
    health: HealthCheck = HealthCheck()
    reuse_id: str = ""
    force_override: bool = False
    spec: str = ""
    vswitch_id: str = ""
    backend_labels: Mapping[str, str] = field(default_factory=dict)
    remove_unscheduled: bool = False
    scheduler: str = "rr"
    persistence_timeout: int = 0
    sticky_session: str = "off"
    sticky_session_type: str = ""
    cookie_timeout: int = 0
    cookie: str = ""
    acl_status: str = "off"
    acl_id: str = ""
    acl_type: str = ""


class _Reader:
    def __init__(self, annotations: Mapping[str, str]) -> None:
        self.annotations = annotations
        self.problems: list[Problem] = []

    def raw(self, name: str) -> tuple[str, str]:
        """(annotation key as written or the canonical key, value or default)."""
        setting = BY_NAME[name]
        for key in keys_for(setting):
            if key in self.annotations:
                return key, self.annotations[key].strip()
        return PREFIX + name, setting.default

    def present(self, name: str) -> bool:
        return any(key in self.annotations for key in keys_for(BY_NAME[name]))

    def fail(self, key: str, value: str, reason: str) -> None:
        self.problems.append(Problem(key, value, reason))

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        key, value = self.raw(name)
        lowered = value.lower()
        if lowered in choices:
            return lowered
        if value == "" and "" in choices:
            return ""
        self.fail(key, value, f"must be one of {', '.join(c for c in choices if c)}")
        return BY_NAME[name].default

    def integer(self, name: str, low: int, high: int, *, extra: tuple[int, ...] = ()) -> int:
        key, value = self.raw(name)
        try:
            number = int(value)
        except ValueError:
            self.fail(key, value, f"must be an integer {low}..{high}")
            return int(BY_NAME[name].default or 0)
        if not (low <= number <= high or number in extra):
            self.fail(key, value, f"must be between {low} and {high}")
            return int(BY_NAME[name].default or 0)
        return number

    def switch(self, name: str) -> str:
        return self.choice(name, ("on", "off"))


def _protocol_ports(reader: _Reader) -> dict[int, str]:
    key, value = reader.raw("protocol-port")
    result: dict[int, str] = {}
    for item in (part.strip() for part in value.split(",") if part.strip()):
        protocol, sep, port = item.partition(":")
        protocol = protocol.strip().lower()
        if not sep or not port.strip().isdigit() or protocol not in PROTOCOLS:
            reader.fail(key, value, "must be like 'https:443,http:80' (protocols tcp, udp, http, https)")
            return {}
        number = int(port)
        if not 1 <= number <= 65535:
            reader.fail(key, value, f"port {number} is not 1..65535")
            return {}
        result.setdefault(number, protocol)
    return result


def _labels(reader: _Reader) -> dict[str, str]:
    key, value = reader.raw("backend-label")
    labels: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",") if part.strip()):
        name, sep, label_value = item.partition("=")
        if not sep or not _LABEL_KEY.match(name.strip()):
            reader.fail(key, value, "must be like 'k1=v1,k2=v2'")
            return {}
        labels[name.strip()] = label_value.strip()
    return labels


def parse_annotations(annotations: Mapping[str, str]) -> tuple[Options | None, list[Problem]]:
    """The options the annotations ask for, or ``None`` and every problem found."""
    r = _Reader(annotations)
    health = HealthCheck(
        flag=r.switch("health-check-flag"),
        switch=r.switch("health-check-switch"),
        type=r.choice("health-check-type", ("tcp", "http")),
        uri=r.raw("health-check-uri")[1] or "/",
        domain=r.raw("health-check-domain")[1],
        http_code=_http_codes(r),
        connect_port=max(0, r.integer("health-check-connect-port", 1, 65535, extra=(-520, 0))),
        healthy_threshold=r.integer("healthy-threshold", 2, 10),
        unhealthy_threshold=r.integer("unhealthy-threshold", 2, 10),
        interval=r.integer("health-check-interval", 1, 50),
        connect_timeout=r.integer("health-check-connect-timeout", 1, 300),
        timeout=r.integer("health-check-timeout", 1, 300),
    )
    uri_key, uri = r.raw("health-check-uri")
    if not uri.startswith("/"):
        r.fail(uri_key, uri, "must be a path starting with /")
    network_type = r.choice("slb-network-type", ("", "classic", "vpc"))
    if not r.present("slb-network-type"):
        network_type = r.choice("network-type", ("", "classic", "vpc"))
    options = Options(
        protocol_port=_protocol_ports(r),
        address_type=r.choice("address-type", ("internet", "intranet")),
        network_type=network_type,
        charge_type=r.choice("charge-type", ("paybytraffic", "paybybandwidth")),
        region=_identifier(r, "region"),
        bandwidth=r.integer("bandwidth", 1, 5120),
        cert_id=_identifier(r, "cert-id"),
        health=health,
        reuse_id=_identifier(r, "id"),
        force_override=r.choice("force-override-listeners", ("true", "false")) == "true",
        spec=_identifier(r, "spec"),
        vswitch_id=_identifier(r, "vswitch-id"),
        backend_labels=_labels(r),
        remove_unscheduled=r.switch("remove-unscheduled-backend") == "on",
        scheduler=r.choice("scheduler", SCHEDULERS),
        persistence_timeout=r.integer("persistence-timeout", 0, 3600),
        sticky_session=r.switch("sticky-session"),
        sticky_session_type=r.choice("sticky-session-type", ("", "insert", "server")),
        cookie_timeout=r.integer("cookie-timeout", 1, 86400) if r.present("cookie-timeout") else 0,
        cookie=r.raw("cookie")[1],
        acl_status=r.switch("acl-status"),
        acl_id=_identifier(r, "acl-id"),
        acl_type=r.choice("acl-type", ("", "white", "black")),
    )
    _cross_checks(r, options)
    if r.problems:
        return None, r.problems
    return options, []


def _identifier(reader: _Reader, name: str) -> str:
    key, value = reader.raw(name)
    if value and not _ID.match(value):
        reader.fail(key, value, "is not a valid id")
        return ""
    return value


def _http_codes(reader: _Reader) -> str:
    key, value = reader.raw("health-check-httpcode")
    codes = [c.strip().lower() for c in value.split(",") if c.strip()]
    if not codes or any(c not in HTTP_CODES for c in codes):
        reader.fail(key, value, f"must be a comma-separated list of {', '.join(HTTP_CODES)}")
        return "http_2xx"
    return ",".join(codes)


def _cross_checks(r: _Reader, o: Options) -> None:
    """Rules that tie settings together: reported on the annotation that is missing or wrong."""
    if o.sticky_session == "on":
        key, value = r.raw("sticky-session-type")
        if not o.sticky_session_type:
            r.fail(key, value, "is required when sticky-session is on (insert or server)")
        elif o.sticky_session_type == "insert" and not o.cookie_timeout:
            r.fail(*r.raw("cookie-timeout"), "is required when sticky-session-type is insert")
        elif o.sticky_session_type == "server" and not o.cookie:
            r.fail(*r.raw("cookie"), "is required when sticky-session-type is server")
    if o.acl_status == "on":
        if not o.acl_id:
            r.fail(*r.raw("acl-id"), "is required when acl-status is on")
        if not o.acl_type:
            r.fail(*r.raw("acl-type"), "is required when acl-status is on (white or black)")
    if o.address_type == "intranet" and o.charge_type == "paybybandwidth" and r.present("charge-type"):
        r.fail(*r.raw("charge-type"), "an intranet SLB cannot be paybybandwidth")


@dataclass(frozen=True)
class Notice:
    """An annotation the controller does not read: it has no effect, and the user should know."""

    annotation: str
    reason: str
    """The Event reason: ``UnknownAnnotation`` or ``UnsupportedAnnotation``."""
    message: str


_READ_KEYS = frozenset(key for setting in SETTINGS for key in keys_for(setting))
_KNOWN_NAMES = [s.name for s in SETTINGS] + [s.camel for s in SETTINGS if s.camel] + list(UNSUPPORTED)
_LOAD_BALANCER_PREFIXES = (PREFIX, LEGACY_PREFIX)


def _closest(name: str, candidates: list[str], cutoff: float) -> str | None:
    """The candidate most like ``name`` ignoring case (CamelCase and kebab-case spellings alike)."""
    by_lower = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[found[0]] if found else None


def _review(key: str) -> Notice:
    unread = f"annotation {key} has no effect"
    if key in UNSUPPORTED_KEYS:
        return Notice(key, UNSUPPORTED_REASON, f"{unread}: flannel-alivpc's SLB controller does not implement it")
    prefix = next((p for p in _LOAD_BALANCER_PREFIXES if key.startswith(p)), None)
    if prefix is not None:
        name = key[len(prefix):]
        if name in UNSUPPORTED:
            return Notice(key, UNSUPPORTED_REASON,
                          f"{unread}: flannel-alivpc's SLB controller does not implement {name!r}")
        match = _closest(name, _KNOWN_NAMES, cutoff=0.7)
    else:
        # Another Alibaba Cloud key, or a misspelt prefix: compared whole, so the shared
        # prefix must not make any two keys look alike.
        match = _closest(key, sorted(_READ_KEYS) + [PREFIX + n for n in UNSUPPORTED], cutoff=0.95)
        prefix = ""
    if match is None:
        return Notice(key, UNKNOWN_REASON, f"{unread}: it is not an SLB setting flannel-alivpc knows "
                                    f"(docs/slb-controller.md lists them)")
    either = " (not implemented either)" if match in UNSUPPORTED else ""
    return Notice(key, UNKNOWN_REASON, f"{unread}: it is not an SLB setting flannel-alivpc knows; "
                                f"did you mean {prefix}{match}?{either}")


def review_annotations(annotations: Mapping[str, str]) -> list[Notice]:
    """The annotations under an Alibaba Cloud prefix that nothing reads, and the CCM's ones not implemented."""
    return [_review(key) for key in sorted(annotations)
            if key not in _READ_KEYS and (key in UNSUPPORTED_KEYS or key.startswith(ALIBABA_PREFIXES))]
