"""Every annotation, as the cloud sees it: each one changes the SLB the way it says."""

from __future__ import annotations

from flannel_alivpc.emulator import slb_api
from tests.slb.conftest import LEGACY, REGION, P, SlbBed, wait_for


def _certificate(bed: SlbBed) -> str:
    answer = bed.slb_client().api.call("slb", "UploadServerCertificate", {
        "RegionId": REGION, "AliCloudCertificateId": "cas-1", "AliCloudCertificateName": "web"})
    return str(answer["ServerCertificateId"])


def _acl(bed: SlbBed) -> str:
    answer = bed.slb_client().api.call("slb", "CreateAccessControlList", {"RegionId": REGION, "AclName": "office"})
    return str(answer["AclId"])


def test_the_2017_annotations_under_their_camelcase_names(bed: SlbBed) -> None:
    bed.add_instance_nodes(2)
    cert = _certificate(bed)
    bed.create_service("shop", [(443, "TCP"), (80, "TCP"), (8443, "TCP")], annotations={
        LEGACY + "ProtocolPort": "https:443,http:80",
        LEGACY + "AddressType": "internet",
        LEGACY + "ChargeType": "paybybandwidth",
        LEGACY + "Bandwidth": "60",
        LEGACY + "CertID": cert,
        LEGACY + "HealthCheckFlag": "on",
        LEGACY + "HealthCheckType": "http",
        LEGACY + "HealthCheckURI": "/healthz",
        LEGACY + "HealthCheckConnectPort": "8081",
        LEGACY + "HealthyThreshold": "4",
        LEGACY + "UnhealthyThreshold": "5",
        LEGACY + "HealthCheckInterval": "6",
        LEGACY + "HealthCheckConnectTimeout": "8",
        LEGACY + "HealthCheckTimeout": "7",
        LEGACY + "Region": REGION,
    })
    bed.start_controller()
    wait_for(lambda: bed.converged("shop", ports=3, backends=2))
    lb = bed.lb_for("shop")
    assert lb is not None
    assert (lb.address_type, lb.internet_charge_type, lb.bandwidth, lb.region) == \
        ("internet", "paybybandwidth", 60, REGION)
    listeners = bed.listeners(lb)
    assert set(listeners) == {(443, "https"), (80, "http"), (8443, "tcp")}
    https = listeners[(443, "https")].attributes
    assert https["ServerCertificateId"] == cert and https["Bandwidth"] == 60
    for l7 in (https, listeners[(80, "http")].attributes):
        assert (l7["HealthCheck"], l7["HealthCheckURI"], l7["HealthCheckConnectPort"]) == ("on", "/healthz", 8081)
        assert (l7["HealthyThreshold"], l7["UnhealthyThreshold"], l7["HealthCheckInterval"]) == (4, 5, 6)
        assert l7["HealthCheckTimeout"] == 7
    tcp = listeners[(8443, "tcp")].attributes
    assert (tcp["HealthCheck"], tcp["HealthCheckType"], tcp["HealthCheckURI"]) == ("on", "http", "/healthz")
    assert tcp["HealthCheckConnectTimeout"] == 8


def test_kebab_case_names_and_l7_defaults(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    bed.create_service("web", [(80, "TCP")], annotations={P + "protocol-port": "http:80"})
    bed.create_service("old", [(80, "TCP")], annotations={LEGACY + "protocol-port": "http:80",
                                                          LEGACY + "health-check-flag": "on"})
    bed.start_controller()
    wait_for(lambda: bed.converged("web") and bed.converged("old"))
    web = bed.listeners(bed.lb_for("web"))[(80, "http")].attributes  # type: ignore[arg-type]
    assert web["HealthCheck"] == "off" and web["StickySession"] == "off"  # HealthCheckFlag's 2017 default
    old = bed.listeners(bed.lb_for("old"))[(80, "http")].attributes  # type: ignore[arg-type]
    assert old["HealthCheck"] == "on" and old["HealthCheckURI"] == "/" and old["HealthCheckInterval"] == 2


def test_intranet_slbs_in_a_vpc_and_on_the_classic_network(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    other_vsw = bed.emulator.state.create_vswitch(vpc_id=bed.topology.vpc_id, cidr="192.168.32.0/20").vswitch_id
    bed.create_service("vpc", annotations={LEGACY + "AddressType": "intranet", LEGACY + "SLBNetworkType": "vpc"})
    bed.create_service("pinned", annotations={P + "address-type": "intranet", P + "vswitch-id": other_vsw})
    bed.create_service("classic", annotations={P + "address-type": "intranet", P + "slb-network-type": "classic"})
    bed.start_controller()
    wait_for(lambda: bed.converged("vpc", backends=1) and bed.converged("pinned", backends=1))
    vpc, pinned = bed.lb_for("vpc"), bed.lb_for("pinned")
    assert vpc is not None and pinned is not None
    assert (vpc.address_type, vpc.network_type, vpc.vswitch_id) == ("intranet", "vpc", bed.topology.vswitch_id)
    assert pinned.vswitch_id == other_vsw
    classic = wait_for(lambda: bed.lb_for("classic"))
    assert (classic.address_type, classic.network_type) == ("intranet", "classic")
    # VPC instances cannot serve a classic SLB: the cloud refuses, the controller says so.
    wait_for(lambda: bed.events("classic", "SyncLoadBalancerFailed"))


def test_region_annotation_puts_the_slb_in_that_region(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    bed.create_service("far", annotations={P + "region": "cn-beijing"})
    bed.start_controller()
    lb = wait_for(lambda: bed.lb_for("far"))
    assert lb.region == "cn-beijing"
    wait_for(lambda: bed.ingress("far") == [lb.address])
    # The nodes are in cn-hangzhou: none can be a backend of a cn-beijing SLB.
    wait_for(lambda: bed.events("far", "UnAvailableLoadBalancer"))
    assert lb.backends == []


def test_spec_scheduler_persistence_and_health_check_switch(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    bed.create_service("tcp", [(80, "TCP"), (53, "UDP")], annotations={
        P + "spec": "slb.s1.small", P + "scheduler": "wrr", P + "persistence-timeout": "600",
        P + "health-check-switch": "off"})
    bed.start_controller()
    wait_for(lambda: bed.converged("tcp", ports=2))
    lb = bed.lb_for("tcp")
    assert lb is not None and lb.spec == "slb.s1.small"
    for listener in lb.listeners:
        attrs = listener.attributes
        assert (attrs["Scheduler"], attrs["PersistenceTimeout"], attrs["HealthCheck"]) == ("wrr", 600, "off")
    bed.patch_annotations("tcp", {P + "spec": "slb.s2.small"})
    wait_for(lambda: bed.lb_for("tcp").spec == "slb.s2.small")  # type: ignore[union-attr]


def test_sticky_sessions_acl_and_http_health_details(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    acl = _acl(bed)
    bed.create_service("app", [(80, "TCP"), (81, "TCP")], annotations={
        P + "protocol-port": "http:80,http:81", P + "sticky-session": "on", P + "sticky-session-type": "insert",
        P + "cookie-timeout": "1800", P + "acl-status": "on", P + "acl-id": acl, P + "acl-type": "white",
        P + "health-check-flag": "on", P + "health-check-domain": "app.example.com",
        P + "health-check-httpcode": "http_2xx,http_3xx"})
    bed.start_controller()
    wait_for(lambda: bed.converged("app", ports=2))
    for listener in bed.lb_for("app").listeners:  # type: ignore[union-attr]
        attrs = listener.attributes
        assert (attrs["StickySession"], attrs["StickySessionType"], attrs["CookieTimeout"]) == ("on", "insert", 1800)
        assert (attrs["AclStatus"], attrs["AclId"], attrs["AclType"]) == ("on", acl, "white")
        assert (attrs["HealthCheckDomain"], attrs["HealthCheckHttpCode"]) == ("app.example.com", "http_2xx,http_3xx")
    bed.patch_annotations("app", {P + "sticky-session-type": "server", P + "cookie-timeout": None,
                                  P + "cookie": "SESSION", P + "acl-status": None})
    wait_for(lambda: all(item.attributes["StickySessionType"] == "server" and item.attributes["Cookie"] == "SESSION"
                         and item.attributes["AclStatus"] == "off" for item in bed.lb_for("app").listeners))  # type: ignore[union-attr]


def test_bandwidth_and_charge_type_changes_are_applied_in_place(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    bed.create_service("web")
    bed.start_controller()
    wait_for(lambda: bed.converged("web"))
    lb_id = bed.lb_for("web").load_balancer_id  # type: ignore[union-attr]
    bed.patch_annotations("web", {LEGACY + "ChargeType": "paybybandwidth", LEGACY + "Bandwidth": "80"})

    def applied() -> bool:
        lb = bed.lb_for("web")
        return lb is not None and lb.internet_charge_type == "paybybandwidth" and lb.bandwidth == 80 \
            and lb.listeners[0].attributes["Bandwidth"] == 80

    wait_for(applied)
    assert bed.lb_for("web").load_balancer_id == lb_id  # type: ignore[union-attr]
    assert isinstance(bed.lb_for("web"), slb_api.LoadBalancer)
