"""Every annotation under every name it has had: parsing, defaults, problems (pure)."""

from __future__ import annotations

import pytest

from flannel_alivpc.slb.annotations import LEGACY_PREFIX, PREFIX, SETTINGS, Options, keys_for, parse_annotations

CAMEL_2017 = ("ProtocolPort", "AddressType", "SLBNetworkType", "ChargeType", "Region", "Bandwidth", "CertID",
              "HealthCheckFlag", "HealthCheckType", "HealthCheckURI", "HealthCheckConnectPort", "HealthyThreshold",
              "UnhealthyThreshold", "HealthCheckInterval", "HealthCheckConnectTimeout", "HealthCheckTimeout")


def test_defaults_are_the_2017_ones() -> None:
    options, problems = parse_annotations({})
    assert problems == []
    assert options == Options()
    assert (options.address_type, options.charge_type, options.bandwidth) == ("internet", "paybytraffic", 50)
    health = options.health
    assert (health.flag, health.type, health.uri, health.connect_port) == ("off", "tcp", "/", 0)
    assert (health.healthy_threshold, health.unhealthy_threshold, health.interval) == (3, 3, 2)
    assert (health.connect_timeout, health.timeout) == (5, 5)


def test_every_2017_name_has_a_setting() -> None:
    assert sorted(s.camel for s in SETTINGS if s.camel) == sorted(CAMEL_2017)


# (setting, value, how to read the parsed value, expected)
CASES = [
    ("protocol-port", "https:443,http:80", lambda o: dict(o.protocol_port), {443: "https", 80: "http"}),
    ("address-type", "intranet", lambda o: o.address_type, "intranet"),
    ("slb-network-type", "classic", lambda o: o.network_type, "classic"),
    ("charge-type", "paybybandwidth", lambda o: o.charge_type, "paybybandwidth"),
    ("region", "cn-beijing", lambda o: o.region, "cn-beijing"),
    ("bandwidth", "60", lambda o: o.bandwidth, 60),
    ("cert-id", "cert-123", lambda o: o.cert_id, "cert-123"),
    ("health-check-flag", "on", lambda o: o.health.flag, "on"),
    ("health-check-type", "http", lambda o: o.health.type, "http"),
    ("health-check-uri", "/healthz", lambda o: o.health.uri, "/healthz"),
    ("health-check-connect-port", "8081", lambda o: o.health.connect_port, 8081),
    ("healthy-threshold", "4", lambda o: o.health.healthy_threshold, 4),
    ("unhealthy-threshold", "6", lambda o: o.health.unhealthy_threshold, 6),
    ("health-check-interval", "10", lambda o: o.health.interval, 10),
    ("health-check-connect-timeout", "8", lambda o: o.health.connect_timeout, 8),
    ("health-check-timeout", "9", lambda o: o.health.timeout, 9),
]


@pytest.mark.parametrize("setting,value,read,expected", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("style", ["alibaba-cloud", "alicloud-kebab", "alicloud-camel"])
def test_each_2017_setting_under_each_name(setting: str, value: str, read, expected, style: str) -> None:  # type: ignore[no-untyped-def]
    spec = next(s for s in SETTINGS if s.name == setting)
    key = {"alibaba-cloud": PREFIX + setting, "alicloud-kebab": LEGACY_PREFIX + setting,
           "alicloud-camel": LEGACY_PREFIX + str(spec.camel)}[style]
    options, problems = parse_annotations({key: value})
    assert problems == []
    assert read(options) == expected


def test_network_type_is_also_read_under_its_current_name() -> None:
    options, _ = parse_annotations({PREFIX + "network-type": "vpc"})
    assert options is not None and options.network_type == "vpc"


def test_the_current_name_wins_over_the_legacy_ones() -> None:
    options, _ = parse_annotations({LEGACY_PREFIX + "Bandwidth": "10", PREFIX + "bandwidth": "20",
                                    LEGACY_PREFIX + "bandwidth": "30"})
    assert options is not None and options.bandwidth == 20
    assert keys_for(next(s for s in SETTINGS if s.name == "bandwidth"))[0] == PREFIX + "bandwidth"


def test_the_commonly_asked_settings() -> None:
    options, problems = parse_annotations({
        PREFIX + "id": "lb-123", PREFIX + "force-override-listeners": "true", PREFIX + "spec": "slb.s2.small",
        PREFIX + "backend-label": "pool=a, zone=b", PREFIX + "remove-unscheduled-backend": "on",
        PREFIX + "scheduler": "WRR", PREFIX + "persistence-timeout": "1800", PREFIX + "sticky-session": "on",
        PREFIX + "sticky-session-type": "insert", PREFIX + "cookie-timeout": "600", PREFIX + "acl-status": "on",
        PREFIX + "acl-id": "acl-1", PREFIX + "acl-type": "white", PREFIX + "vswitch-id": "vsw-1",
        PREFIX + "health-check-switch": "off", PREFIX + "health-check-httpcode": "http_2xx,http_3xx",
        PREFIX + "health-check-domain": "example.com",
    })
    assert problems == []
    assert options is not None
    assert (options.reuse_id, options.force_override, options.spec) == ("lb-123", True, "slb.s2.small")
    assert dict(options.backend_labels) == {"pool": "a", "zone": "b"}
    assert options.remove_unscheduled and options.scheduler == "wrr" and options.persistence_timeout == 1800
    assert (options.sticky_session, options.sticky_session_type, options.cookie_timeout) == ("on", "insert", 600)
    assert (options.acl_status, options.acl_id, options.acl_type) == ("on", "acl-1", "white")
    assert options.health.switch == "off" and options.health.http_code == "http_2xx,http_3xx"


def test_health_check_connect_port_minus_520_means_the_backend_port() -> None:
    options, _ = parse_annotations({LEGACY_PREFIX + "HealthCheckConnectPort": "-520"})
    assert options is not None and options.health.connect_port == 0


BAD = [
    (LEGACY_PREFIX + "ProtocolPort", "https443"),
    (LEGACY_PREFIX + "ProtocolPort", "ftp:21"),
    (LEGACY_PREFIX + "AddressType", "public"),
    (LEGACY_PREFIX + "ChargeType", "free"),
    (LEGACY_PREFIX + "Bandwidth", "lots"),
    (LEGACY_PREFIX + "Bandwidth", "0"),
    (LEGACY_PREFIX + "HealthCheckFlag", "maybe"),
    (LEGACY_PREFIX + "HealthCheckType", "icmp"),
    (LEGACY_PREFIX + "HealthCheckURI", "healthz"),
    (LEGACY_PREFIX + "HealthCheckConnectPort", "70000"),
    (LEGACY_PREFIX + "HealthyThreshold", "1"),
    (LEGACY_PREFIX + "UnhealthyThreshold", "11"),
    (LEGACY_PREFIX + "HealthCheckInterval", "0"),
    (LEGACY_PREFIX + "HealthCheckConnectTimeout", "301"),
    (LEGACY_PREFIX + "HealthCheckTimeout", "x"),
    (LEGACY_PREFIX + "SLBNetworkType", "mesh"),
    (PREFIX + "scheduler", "random"),
    (PREFIX + "backend-label", "novalue"),
    (PREFIX + "persistence-timeout", "3601"),
    (PREFIX + "force-override-listeners", "yes"),
    (PREFIX + "id", "lb 1"),
    (PREFIX + "health-check-httpcode", "http_6xx"),
]


@pytest.mark.parametrize("key,value", BAD, ids=[f"{k.rsplit('-', 1)[-1]}={v}" for k, v in BAD])
def test_a_bad_value_is_a_problem_naming_the_annotation_and_the_value(key: str, value: str) -> None:
    options, problems = parse_annotations({key: value})
    assert options is None
    assert [(p.annotation, p.value) for p in problems] == [(key, value)]
    assert key in str(problems[0]) and repr(value) in str(problems[0])


def test_settings_that_need_each_other() -> None:
    _, problems = parse_annotations({PREFIX + "sticky-session": "on"})
    assert [p.annotation for p in problems] == [PREFIX + "sticky-session-type"]
    _, problems = parse_annotations({PREFIX + "sticky-session": "on", PREFIX + "sticky-session-type": "server"})
    assert [p.annotation for p in problems] == [PREFIX + "cookie"]
    _, problems = parse_annotations({PREFIX + "acl-status": "on"})
    assert [p.annotation for p in problems] == [PREFIX + "acl-id", PREFIX + "acl-type"]
    _, problems = parse_annotations({PREFIX + "address-type": "intranet", PREFIX + "charge-type": "paybybandwidth"})
    assert [p.annotation for p in problems] == [PREFIX + "charge-type"]


def test_all_problems_are_reported_at_once() -> None:
    _, problems = parse_annotations({LEGACY_PREFIX + "Bandwidth": "x", LEGACY_PREFIX + "AddressType": "y"})
    assert len(problems) == 2
