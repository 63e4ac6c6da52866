"""SLB API 2014-05-15 through the official SDK: load balancers, listeners, backends, health,
tags, certificates, ACLs, error codes with their HTTP statuses, and persistence."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient

from flannel_alivpc.emulator import slb_api
from flannel_alivpc.emulator.server import Emulator, Topology
from flannel_alivpc.emulator.state import Settings
from tests.conftest import EMULATOR_AK, EMULATOR_SECRET
from tests.emulator.sdk import REGION, Cloud, sdk_request

SLB_PACKAGE = "aliyunsdkslb.request.v20140515"


def slb(cloud: Cloud, action: str, **params: Any) -> dict[str, Any]:
    return cloud.call(sdk_request(SLB_PACKAGE, action, **params))


def slb_error(cloud: Cloud, action: str, **params: Any) -> tuple[int, str, str]:
    """(HTTP status, Code, Message) of a call that must fail."""
    error: ServerException = cloud.fail(sdk_request(SLB_PACKAGE, action, **params))
    return error.get_http_status(), error.get_error_code(), error.get_error_msg()


def create_lb(cloud: Cloud, **params: Any) -> str:
    lb_id: str = slb(cloud, "CreateLoadBalancer", **params)["LoadBalancerId"]
    return lb_id


def attribute(cloud: Cloud, lb_id: str) -> dict[str, Any]:
    return slb(cloud, "DescribeLoadBalancerAttribute", LoadBalancerId=lb_id)


def backends_json(*items: dict[str, Any]) -> str:
    return json.dumps(list(items))


def tags_json(**tags: str) -> str:
    return json.dumps([{"TagKey": k, "TagValue": v} for k, v in tags.items()])


def health(cloud: Cloud, lb_id: str, **params: Any) -> dict[tuple[str, int], str]:
    body = slb(cloud, "DescribeHealthStatus", LoadBalancerId=lb_id, **params)
    servers = body["BackendServers"]["BackendServer"]
    return {(s["ServerId"], s["ListenerPort"]): s["ServerHealthStatus"] for s in servers}


def add_classic_instance(cloud: Cloud, hostname: str) -> str:
    instance_id: str = cloud.admin("POST", "instances", {"hostname": hostname, "network_type": "classic"})[
        "instance_id"]
    return instance_id


@pytest.fixture(scope="module")
def certificate() -> dict[str, Any]:
    """A self-signed certificate and its key, made with cryptography (an SDK dependency)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc.example.test")])
    not_after = datetime.datetime(2034, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(4242).not_valid_before(datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))
            .not_valid_after(not_after).sign(key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    return {
        "cert": cert.public_bytes(pem).decode(),
        "key": key.private_bytes(pem, pkcs8, serialization.NoEncryption()).decode(),
        "encrypted_key": key.private_bytes(pem, pkcs8, serialization.BestAvailableEncryption(b"pw")).decode(),
        "der": cert.public_bytes(serialization.Encoding.DER),
    }


def upload_certificate(cloud: Cloud, certificate: dict[str, Any]) -> str:
    body = slb(cloud, "UploadServerCertificate", ServerCertificate=certificate["cert"],
               PrivateKey=certificate["key"], ServerCertificateName="web")
    cert_id: str = body["ServerCertificateId"]
    return cert_id


# -- load balancers ----------------------------------------------------------------------


def test_internet_load_balancer_create_and_describe(cloud: Cloud) -> None:
    body = slb(cloud, "CreateLoadBalancer", LoadBalancerName="svc-a", LoadBalancerSpec="slb.s2.small",
               InternetChargeType="paybybandwidth", Bandwidth=20, PayType="PayOnDemand",
               MasterZoneId="cn-hangzhou-b", SlaveZoneId="cn-hangzhou-c")
    assert body["LoadBalancerId"].startswith("lb-emu")
    assert ipaddress.ip_address(body["Address"]) in ipaddress.ip_network("198.18.0.0/15")
    assert (body["NetworkType"], body["VpcId"], body["VSwitchId"]) == ("classic", "", "")
    assert body["AddressIPVersion"] == "ipv4"

    attr = attribute(cloud, body["LoadBalancerId"])
    assert attr["LoadBalancerId"] == body["LoadBalancerId"]
    assert attr["LoadBalancerName"] == "svc-a"
    assert attr["LoadBalancerStatus"] == "active"
    assert attr["AddressType"] == "internet"
    assert attr["Address"] == body["Address"]
    assert attr["LoadBalancerSpec"] == "slb.s2.small"
    assert attr["InternetChargeType"] == "paybybandwidth"
    assert attr["Bandwidth"] == 20
    assert attr["PayType"] == "PayOnDemand"
    assert (attr["MasterZoneId"], attr["SlaveZoneId"]) == ("cn-hangzhou-b", "cn-hangzhou-c")
    assert attr["RegionId"] == REGION
    assert attr["DeleteProtection"] == "off"
    assert attr["EndTime"] == "2999-09-08T16:00:00Z"
    # Both spellings of the listener block are present, even without listeners.
    assert attr["ListenerPortsAndProtocal"] == {"ListenerPortAndProtocal": []}
    assert attr["ListenerPortsAndProtocol"] == {"ListenerPortAndProtocol": []}
    assert attr["ListenerPorts"] == {"ListenerPort": []}
    assert attr["BackendServers"] == {"BackendServer": []}

    second = create_lb(cloud)
    assert attribute(cloud, second)["Address"] != body["Address"]


def test_vpc_intranet_load_balancer_takes_an_address_of_its_vswitch(cloud: Cloud, topology: Topology) -> None:
    body = slb(cloud, "CreateLoadBalancer", VpcId=topology.vpc_id, VSwitchId=topology.vswitch_id)
    attr = attribute(cloud, body["LoadBalancerId"])
    assert (attr["AddressType"], attr["NetworkType"]) == ("intranet", "vpc")
    assert (attr["VpcId"], attr["VSwitchId"]) == (topology.vpc_id, topology.vswitch_id)
    assert attr["MasterZoneId"] == cloud.emulator.state.vswitches[topology.vswitch_id].zone
    address = ipaddress.ip_address(attr["Address"])
    assert address in ipaddress.ip_network("192.168.0.0/20")
    instance_ips = {i.private_ip for i in cloud.emulator.state.instances.values()}
    assert attr["Address"] not in instance_ips
    # An instance made afterwards does not collide with the load balancer.
    later = cloud.admin("POST", "instances", {"hostname": "late", "vswitch_id": topology.vswitch_id})
    assert later["private_ip"] != attr["Address"]

    fixed = slb(cloud, "CreateLoadBalancer", AddressType="intranet", VSwitchId=topology.vswitch_id,
                Address="192.168.1.200")
    assert fixed["Address"] == "192.168.1.200"
    assert fixed["VpcId"] == topology.vpc_id
    assert slb_error(cloud, "CreateLoadBalancer", AddressType="intranet", VSwitchId=topology.vswitch_id,
                     Address="192.168.1.200") == (400, "InvalidParameter", "The vpc Ip is exist.")
    assert slb_error(cloud, "CreateLoadBalancer", AddressType="intranet", VSwitchId=topology.vswitch_id,
                     Address="10.9.9.9")[:2] == (400, "InvalidParameter")


def test_classic_intranet_load_balancer(cloud: Cloud) -> None:
    classic = add_classic_instance(cloud, "old-node")
    body = slb(cloud, "CreateLoadBalancer", AddressType="intranet")
    assert body["NetworkType"] == "classic"
    assert ipaddress.ip_address(body["Address"]) in ipaddress.ip_network("10.0.0.0/8")
    assert body["Address"] != cloud.emulator.state.instances[classic].private_ip
    assert attribute(cloud, body["LoadBalancerId"])["AddressType"] == "intranet"


def test_client_token_makes_create_idempotent(cloud: Cloud) -> None:
    first = slb(cloud, "CreateLoadBalancer", LoadBalancerName="svc-t", ClientToken="token-1")
    again = slb(cloud, "CreateLoadBalancer", LoadBalancerName="svc-t", ClientToken="token-1")
    assert again["LoadBalancerId"] == first["LoadBalancerId"]
    assert again["Address"] == first["Address"]
    listed = slb(cloud, "DescribeLoadBalancers", LoadBalancerName="svc-t")
    assert listed["TotalCount"] == 1
    other = slb(cloud, "CreateLoadBalancer", LoadBalancerName="svc-t", ClientToken="token-2")
    assert other["LoadBalancerId"] != first["LoadBalancerId"]
    assert slb(cloud, "DescribeLoadBalancers", LoadBalancerName="svc-t")["TotalCount"] == 2


def test_create_rejects_bad_input(cloud: Cloud, topology: Topology) -> None:
    assert slb_error(cloud, "CreateLoadBalancer", VSwitchId="vsw-nope")[:2] == (400, "ServiceUnavailable")
    assert slb_error(cloud, "CreateLoadBalancer", AddressType="intranet", VpcId=topology.vpc_id) == (
        400, "MissingParameter",
        'The input parameter "VSwitchId" that is mandatory for processing this request is not supplied.')
    assert slb_error(cloud, "CreateLoadBalancer", AddressType="intranet", VSwitchId=topology.vswitch_id,
                     InternetChargeType="paybybandwidth")[:2] == (400, "ActionNotAllowed")
    assert slb_error(cloud, "CreateLoadBalancer", LoadBalancerSpec="slb.huge")[:2] == (400, "InvalidParameter")
    assert slb_error(cloud, "CreateLoadBalancer", Bandwidth=6000)[1:] == (
        "InvalidParameter", "The specified Bandwidth is invalid.")
    too_many = [{"Key": f"k{n}", "Value": "v"} for n in range(11)]
    assert slb_error(cloud, "CreateLoadBalancer", Tags=too_many)[:2] == (400, "TagCountLimit")
    assert slb(cloud, "DescribeLoadBalancers")["TotalCount"] == 0


@pytest.mark.parametrize("action", ["DescribeLoadBalancerAttribute", "DeleteLoadBalancer", "SetLoadBalancerName",
                                    "DescribeHealthStatus", "AddTags", "StartLoadBalancerListener"])
def test_unknown_load_balancer(cloud: Cloud, action: str) -> None:
    params = {"SetLoadBalancerName": {"LoadBalancerName": "x"}, "AddTags": {"Tags": tags_json(a="b")},
              "StartLoadBalancerListener": {"ListenerPort": 80}}.get(action, {})
    status, code, _ = slb_error(cloud, action, LoadBalancerId="lb-emunothere", **params)
    assert (status, code) == (404, "InvalidLoadBalancerId.NotFound")


def test_delete_protection_refuses_delete_until_turned_off(cloud: Cloud) -> None:
    lb_id = create_lb(cloud, DeleteProtection="on")
    assert attribute(cloud, lb_id)["DeleteProtection"] == "on"
    assert slb_error(cloud, "DeleteLoadBalancer", LoadBalancerId=lb_id) == (
        400, "OperationDenied.DeleteProtectionIsOn",
        "The loadbalancer can't be deleted due to DeleteProtection is enabled.")
    assert attribute(cloud, lb_id)["LoadBalancerId"] == lb_id
    slb(cloud, "SetLoadBalancerDeleteProtection", LoadBalancerId=lb_id, DeleteProtection="off")
    slb(cloud, "DeleteLoadBalancer", LoadBalancerId=lb_id)
    assert slb_error(cloud, "DescribeLoadBalancerAttribute", LoadBalancerId=lb_id)[:2] == (
        404, "InvalidLoadBalancerId.NotFound")
    assert slb(cloud, "DescribeLoadBalancers")["TotalCount"] == 0


def test_name_status_and_specs_change(cloud: Cloud, topology: Topology) -> None:
    lb_id = create_lb(cloud, LoadBalancerName="before")
    slb(cloud, "SetLoadBalancerName", LoadBalancerId=lb_id, LoadBalancerName="after")
    slb(cloud, "SetLoadBalancerStatus", LoadBalancerId=lb_id, LoadBalancerStatus="inactive")
    spec = slb(cloud, "ModifyLoadBalancerInstanceSpec", LoadBalancerId=lb_id, LoadBalancerSpec="slb.s3.medium")
    assert isinstance(spec["OrderId"], int)
    slb(cloud, "ModifyLoadBalancerInternetSpec", LoadBalancerId=lb_id, InternetChargeType="paybybandwidth",
        Bandwidth=50)
    attr = attribute(cloud, lb_id)
    assert (attr["LoadBalancerName"], attr["LoadBalancerStatus"]) == ("after", "inactive")
    assert (attr["LoadBalancerSpec"], attr["InternetChargeType"], attr["Bandwidth"]) == (
        "slb.s3.medium", "paybybandwidth", 50)
    assert slb_error(cloud, "SetLoadBalancerStatus", LoadBalancerId=lb_id, LoadBalancerStatus="locked")[:2] == (
        400, "InvalidParameter")
    assert slb_error(cloud, "ModifyLoadBalancerInstanceSpec", LoadBalancerId=lb_id,
                     LoadBalancerSpec="slb.s9.giant")[:2] == (400, "InvalidParameter")
    intranet = create_lb(cloud, VSwitchId=topology.vswitch_id)
    assert slb_error(cloud, "ModifyLoadBalancerInternetSpec", LoadBalancerId=intranet,
                     InternetChargeType="paybybandwidth")[:2] == (400, "ActionNotAllowed")


# -- listeners ------------------------------------------------------------------------------


def test_listener_lifecycle(cloud: Cloud) -> None:
    lb_id = create_lb(cloud)
    slb(cloud, "CreateLoadBalancerTCPListener", LoadBalancerId=lb_id, ListenerPort=80, BackendServerPort=30080,
        Bandwidth=-1, Description="k8s/80/web/default/c1")
    described = slb(cloud, "DescribeLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=80)
    assert (described["Status"], described["ListenerPort"], described["BackendServerPort"]) == ("stopped", 80, 30080)
    attr = attribute(cloud, lb_id)
    assert attr["ListenerPorts"] == {"ListenerPort": [80]}
    assert attr["ListenerPortsAndProtocal"] == {
        "ListenerPortAndProtocal": [{"ListenerPort": 80, "ListenerProtocal": "tcp"}]}
    assert attr["ListenerPortsAndProtocol"]["ListenerPortAndProtocol"] == [
        {"ListenerPort": 80, "ListenerProtocol": "tcp", "ListenerForward": "off", "ForwardPort": 0,
         "Description": "k8s/80/web/default/c1"}]

    slb(cloud, "StartLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=80)
    assert slb(cloud, "DescribeLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id,
               ListenerPort=80)["Status"] == "running"
    slb(cloud, "StopLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=80, ListenerProtocol="tcp")
    assert slb(cloud, "DescribeLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id,
               ListenerPort=80)["Status"] == "stopped"
    slb(cloud, "DeleteLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=80)
    assert slb_error(cloud, "DescribeLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=80) == (
        404, "ListenerNotFound", "You have not created a listener for the specified port of the load balancer.")
    assert slb_error(cloud, "StartLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=80)[:2] == (
        404, "ListenerNotFound")
    assert attribute(cloud, lb_id)["ListenerPortsAndProtocol"] == {"ListenerPortAndProtocol": []}


def test_listener_ports_protocols_and_duplicates(cloud: Cloud) -> None:
    lb_id = create_lb(cloud)
    slb(cloud, "CreateLoadBalancerTCPListener", LoadBalancerId=lb_id, ListenerPort=53, BackendServerPort=30053)
    # UDP may share a port with TCP.
    slb(cloud, "CreateLoadBalancerUDPListener", LoadBalancerId=lb_id, ListenerPort=53, BackendServerPort=30054)
    assert slb_error(cloud, "CreateLoadBalancerTCPListener", LoadBalancerId=lb_id, ListenerPort=53,
                     BackendServerPort=1) == (400, "ListenerAlreadyExists",
                                              "A listener with the specified port already exists")
    assert slb_error(cloud, "CreateLoadBalancerHTTPListener", LoadBalancerId=lb_id, ListenerPort=53,
                     BackendServerPort=1, StickySession="off", HealthCheck="off")[:2] == (
        400, "ListenerAlreadyExists")
    # Two listeners on the port: the protocol must be named.
    status, code, message = slb_error(cloud, "StartLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=53)
    assert (status, code) == (400, "MissingParameter") and "ListenerProtocol" in message
    slb(cloud, "StartLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=53, ListenerProtocol="udp")
    assert slb(cloud, "DescribeLoadBalancerUDPListenerAttribute", LoadBalancerId=lb_id,
               ListenerPort=53)["Status"] == "running"
    assert slb(cloud, "DescribeLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id,
               ListenerPort=53)["Status"] == "stopped"
    assert slb_error(cloud, "DescribeLoadBalancerHTTPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=53)[:2] \
        == (400, "UnsupportedOperationonfixedprotocalport")
    assert slb_error(cloud, "CreateLoadBalancerTCPListener", LoadBalancerId=lb_id, ListenerPort=70000,
                     BackendServerPort=1) == (400, "InvalidParameter", "The specified port is not valid.")
    status, code, message = slb_error(cloud, "CreateLoadBalancerTCPListener", LoadBalancerId=lb_id, ListenerPort=81)
    assert (status, code) == (400, "MissingParameter") and "BackendServerPort" in message
    attr = attribute(cloud, lb_id)
    assert attr["ListenerPortsAndProtocol"]["ListenerPortAndProtocol"][0]["ListenerProtocol"] == "tcp"
    assert [p["ListenerProtocal"] for p in attr["ListenerPortsAndProtocal"]["ListenerPortAndProtocal"]] == [
        "tcp", "udp"]


def test_listener_limit(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    assert slb_api.LISTENER_LIMIT == 50
    monkeypatch.setattr(slb_api, "LISTENER_LIMIT", 3)
    lb_id = create_lb(cloud)
    for port in (1, 2, 3):
        slb(cloud, "CreateLoadBalancerTCPListener", LoadBalancerId=lb_id, ListenerPort=port, BackendServerPort=port)
    assert slb_error(cloud, "CreateLoadBalancerTCPListener", LoadBalancerId=lb_id, ListenerPort=4,
                     BackendServerPort=4)[:2] == (400, "ListenerNumberOverLimit")


def test_tcp_attributes_stored_with_defaults_and_both_spellings(cloud: Cloud) -> None:
    lb_id = create_lb(cloud)
    # Create takes the lower-case healthCheckInterval ...
    slb(cloud, "CreateLoadBalancerTCPListener", LoadBalancerId=lb_id, ListenerPort=443, BackendServerPort=30443,
        healthCheckInterval=7, Scheduler="rr", PersistenceTimeout=30, HealthCheckConnectPort=-520)
    tcp = slb(cloud, "DescribeLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=443)
    assert tcp["HealthCheckInterval"] == 7
    assert (tcp["Scheduler"], tcp["PersistenceTimeout"]) == ("rr", 30)
    assert (tcp["HealthCheck"], tcp["HealthyThreshold"], tcp["UnhealthyThreshold"]) == ("on", 3, 3)
    assert (tcp["Bandwidth"], tcp["HealthCheckType"], tcp["HealthCheckConnectTimeout"]) == (-1, "tcp", 5)
    assert tcp["HealthCheckConnectPort"] == 30443  # -520: the backend port
    assert tcp["EstablishedTimeout"] == 900
    assert "healthCheckInterval" not in tcp
    # ... and Set the upper-case HealthCheckInterval; untouched attributes stay.
    slb(cloud, "SetLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=443,
        HealthCheckInterval=9, HealthCheckSwitch="off", EstablishedTimeout=60)
    tcp = slb(cloud, "DescribeLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=443)
    assert (tcp["HealthCheckInterval"], tcp["HealthCheck"], tcp["EstablishedTimeout"]) == (9, "off", 60)
    assert (tcp["Scheduler"], tcp["PersistenceTimeout"]) == ("rr", 30)
    assert slb_error(cloud, "SetLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=443,
                     HealthyThreshold=11)[:2] == (400, "InvalidParameter")
    assert slb_error(cloud, "SetLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=443,
                     Scheduler="random")[:2] == (400, "InvalidParameter")
    assert slb_error(cloud, "SetLoadBalancerUDPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=443,
                     Scheduler="wrr")[:2] == (400, "UnsupportedOperationonfixedprotocalport")


def test_udp_lower_case_health_check_names(cloud: Cloud) -> None:
    lb_id = create_lb(cloud)
    slb(cloud, "CreateLoadBalancerUDPListener", LoadBalancerId=lb_id, ListenerPort=514, BackendServerPort=30514,
        healthCheckReq="ping", healthCheckExp="pong", healthCheckInterval=4)
    udp = slb(cloud, "DescribeLoadBalancerUDPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=514)
    assert (udp["HealthCheckReq"], udp["HealthCheckExp"], udp["HealthCheckInterval"]) == ("ping", "pong", 4)
    slb(cloud, "SetLoadBalancerUDPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=514, healthCheckReq="hi",
        HealthCheckInterval=6)
    udp = slb(cloud, "DescribeLoadBalancerUDPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=514)
    assert (udp["HealthCheckReq"], udp["HealthCheckExp"], udp["HealthCheckInterval"]) == ("hi", "pong", 6)


def test_http_listener_rules_and_defaults(cloud: Cloud) -> None:
    lb_id = create_lb(cloud)
    status, code, message = slb_error(cloud, "CreateLoadBalancerHTTPListener", LoadBalancerId=lb_id,
                                      ListenerPort=80, BackendServerPort=30080, HealthCheck="off")
    assert (status, code) == (400, "MissingParameter") and "StickySession" in message
    status, code, message = slb_error(cloud, "CreateLoadBalancerHTTPListener", LoadBalancerId=lb_id,
                                      ListenerPort=80, BackendServerPort=30080, HealthCheck="off",
                                      StickySession="on", StickySessionType="insert")
    assert (status, code) == (400, "MissingParameter") and "CookieTimeout" in message
    assert slb_error(cloud, "CreateLoadBalancerHTTPListener", LoadBalancerId=lb_id, ListenerPort=80,
                     BackendServerPort=30080, HealthCheck="maybe", StickySession="off")[:2] == (400, "InvalidParameter")
    slb(cloud, "CreateLoadBalancerHTTPListener", LoadBalancerId=lb_id, ListenerPort=80, BackendServerPort=30080,
        HealthCheck="on", StickySession="on", StickySessionType="insert", CookieTimeout=600,
        HealthCheckURI="/healthz", HealthCheckHttpCode="http_2xx,http_3xx", XForwardedFor_proto="on")
    http = slb(cloud, "DescribeLoadBalancerHTTPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=80)
    assert (http["HealthCheck"], http["StickySession"], http["StickySessionType"], http["CookieTimeout"]) == (
        "on", "on", "insert", 600)
    assert (http["HealthCheckURI"], http["HealthCheckHttpCode"]) == ("/healthz", "http_2xx,http_3xx")
    assert (http["XForwardedFor"], http["XForwardedFor_proto"], http["XForwardedFor_SLBIP"]) == ("on", "on", "off")
    assert (http["Status"], http["Bandwidth"], http["HealthCheckTimeout"]) == ("stopped", -1, 5)
    slb(cloud, "SetLoadBalancerHTTPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=80, StickySession="off",
        IdleTimeout=30)
    http = slb(cloud, "DescribeLoadBalancerHTTPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=80)
    assert (http["StickySession"], http["IdleTimeout"], http["HealthCheckURI"]) == ("off", 30, "/healthz")


def test_https_listener_needs_an_existing_certificate(cloud: Cloud, certificate: dict[str, Any]) -> None:
    lb_id = create_lb(cloud)
    https = {"LoadBalancerId": lb_id, "ListenerPort": 443, "BackendServerPort": 30443, "HealthCheck": "off",
             "StickySession": "off"}
    status, code, message = slb_error(cloud, "CreateLoadBalancerHTTPSListener", **https)
    assert (status, code) == (400, "MissingParameter") and "ServerCertificateId" in message
    assert slb_error(cloud, "CreateLoadBalancerHTTPSListener", ServerCertificateId="cert-emunothere", **https) == (
        404, "ServerCertificateId.NotFound", "The specified ServerCertificateId does not exist.")
    cert_id = upload_certificate(cloud, certificate)
    slb(cloud, "CreateLoadBalancerHTTPSListener", ServerCertificateId=cert_id, **https)
    described = slb(cloud, "DescribeLoadBalancerHTTPSListenerAttribute", LoadBalancerId=lb_id, ListenerPort=443)
    assert (described["ServerCertificateId"], described["EnableHttp2"], described["Status"]) == (
        cert_id, "on", "stopped")
    assert slb_error(cloud, "SetLoadBalancerHTTPSListenerAttribute", LoadBalancerId=lb_id, ListenerPort=443,
                     ServerCertificateId="cert-emunothere")[:2] == (404, "ServerCertificateId.NotFound")
    assert slb_error(cloud, "DeleteServerCertificate", ServerCertificateId=cert_id)[:2] == (
        400, "CertificateAndPrivateKeyIsRefered")
    slb(cloud, "DeleteLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=443)
    slb(cloud, "DeleteServerCertificate", ServerCertificateId=cert_id)
    assert slb(cloud, "DescribeServerCertificates")["ServerCertificates"]["ServerCertificate"] == []
    assert slb_error(cloud, "DeleteServerCertificate", ServerCertificateId=cert_id)[:2] == (
        404, "ServerCertificateId.NotFound")


def test_server_certificates(cloud: Cloud, certificate: dict[str, Any]) -> None:
    body = slb(cloud, "UploadServerCertificate", ServerCertificate=certificate["cert"], PrivateKey=certificate["key"],
               ServerCertificateName="web")
    digest = hashlib.sha1(certificate["der"]).hexdigest()
    assert body["Fingerprint"] == ":".join(digest[i:i + 2] for i in range(0, 40, 2))
    assert (body["CommonName"], body["ServerCertificateName"], body["RegionId"]) == ("svc.example.test", "web", REGION)
    assert body["ExpireTime"] == "2034-01-02T03:04:05Z"
    expires = datetime.datetime(2034, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert body["ExpireTimeStamp"] == int(expires.timestamp()) * 1000
    listed = slb(cloud, "DescribeServerCertificates", ServerCertificateId=body["ServerCertificateId"])
    [cert] = listed["ServerCertificates"]["ServerCertificate"]
    assert (cert["ServerCertificateId"], cert["Fingerprint"]) == (body["ServerCertificateId"], body["Fingerprint"])
    assert slb(cloud, "DescribeServerCertificates", ServerCertificateId="cert-emuother")[
        "ServerCertificates"]["ServerCertificate"] == []
    assert slb_error(cloud, "UploadServerCertificate", ServerCertificate="not a pem",
                     PrivateKey=certificate["key"]) == (
        400, "InvalidParameter", "The specified parameter ServerCertificate format is error.")
    assert slb_error(cloud, "UploadServerCertificate", ServerCertificate=certificate["cert"],
                     PrivateKey=certificate["encrypted_key"])[:2] == (400, "PrivateKeyEncryption")
    assert slb_error(cloud, "UploadServerCertificate", ServerCertificate=certificate["cert"])[:2] == (
        400, "InvalidParameter")


def test_describe_load_balancer_listeners_pages_with_next_token(cloud: Cloud) -> None:
    first, second = create_lb(cloud), create_lb(cloud)
    for port in (80, 81, 82):
        slb(cloud, "CreateLoadBalancerTCPListener", LoadBalancerId=first, ListenerPort=port, BackendServerPort=port)
    slb(cloud, "CreateLoadBalancerUDPListener", LoadBalancerId=first, ListenerPort=80, BackendServerPort=80)
    slb(cloud, "CreateLoadBalancerHTTPListener", LoadBalancerId=second, ListenerPort=8080, BackendServerPort=30080,
        HealthCheck="off", StickySession="off", Description="web")
    seen: list[tuple[str, int, str]] = []
    token = ""
    pages = 0
    while True:
        params: dict[str, Any] = {"LoadBalancerIds": [first, second], "MaxResults": 2}
        if token:
            params["NextToken"] = token
        body = slb(cloud, "DescribeLoadBalancerListeners", **params)
        assert body["TotalCount"] == 5 and body["MaxResults"] == 2
        seen += [(item["LoadBalancerId"], item["ListenerPort"], item["ListenerProtocol"]) for item in body["Listeners"]]
        pages += 1
        token = body["NextToken"]
        if not token:
            break
    assert pages == 3
    assert sorted(seen) == sorted([(first, 80, "tcp"), (first, 80, "udp"), (first, 81, "tcp"), (first, 82, "tcp"),
                                   (second, 8080, "http")])
    only = slb(cloud, "DescribeLoadBalancerListeners", LoadBalancerIds=[second])["Listeners"]
    assert [(item["ListenerPort"], item["Status"], item["Description"]) for item in only] == [(8080, "stopped", "web")]
    assert only[0]["HTTPListenerConfig"]["StickySession"] == "off"
    assert only[0]["BackendServerPort"] == 30080
    udp = slb(cloud, "DescribeLoadBalancerListeners", ListenerProtocol="udp")["Listeners"]
    assert [(item["LoadBalancerId"], item["ListenerPort"]) for item in udp] == [(first, 80)]
    assert "UDPListenerConfig" in udp[0]


# -- backend servers and health ---------------------------------------------------------


def test_backend_servers_add_set_remove(cloud: Cloud, topology: Topology) -> None:
    lb_id = create_lb(cloud, VSwitchId=topology.vswitch_id)
    one, two, three = topology.instance_ids
    added = slb(cloud, "AddBackendServers", LoadBalancerId=lb_id, BackendServers=backends_json(
        {"ServerId": one, "Weight": "50"}, {"serverId": two, "weight": 100, "type": "ecs"}))
    assert added["LoadBalancerId"] == lb_id
    assert [(b["ServerId"], b["Weight"], b["Type"]) for b in added["BackendServers"]["BackendServer"]] == [
        (one, 50, "ecs"), (two, 100, "ecs")]
    listed = attribute(cloud, lb_id)["BackendServers"]["BackendServer"]
    assert listed[0]["ServerIp"] == cloud.emulator.state.instances[one].private_ip
    assert listed[0]["VpcId"] == topology.vpc_id

    # SetBackendServers changes attached servers only; three stays out.
    changed = slb(cloud, "SetBackendServers", LoadBalancerId=lb_id, BackendServers=backends_json(
        {"ServerId": two, "Weight": 0}, {"ServerId": three, "Weight": 10}))
    assert [(b["ServerId"], b["Weight"]) for b in changed["BackendServers"]["BackendServer"]] == [(one, 50), (two, 0)]
    # Adding an attached server again updates it instead of duplicating it.
    slb(cloud, "AddBackendServers", LoadBalancerId=lb_id, BackendServers=backends_json({"ServerId": one, "Weight": 70}))
    assert [(b["ServerId"], b["Weight"]) for b in attribute(cloud, lb_id)["BackendServers"]["BackendServer"]] == [
        (one, 70), (two, 0)]
    removed = slb(cloud, "RemoveBackendServers", LoadBalancerId=lb_id, BackendServers=json.dumps([one]))
    assert [b["ServerId"] for b in removed["BackendServers"]["BackendServer"]] == [two]
    filtered = slb(cloud, "DescribeLoadBalancers", ServerId=two)["LoadBalancers"]["LoadBalancer"]
    assert [lb["LoadBalancerId"] for lb in filtered] == [lb_id]
    assert slb(cloud, "DescribeLoadBalancers", ServerId=one)["TotalCount"] == 0


def test_backend_server_errors(cloud: Cloud, topology: Topology) -> None:
    lb_id = create_lb(cloud, VSwitchId=topology.vswitch_id)
    one = topology.instance_ids[0]
    assert slb_error(cloud, "AddBackendServers", LoadBalancerId=lb_id,
                     BackendServers=backends_json({"ServerId": "i-emunothere"})) == (
        404, "InvalidServerId.NotFound", "The specified ServerId does not exist.")
    many = backends_json(*({"ServerId": one} for _ in range(21)))
    assert slb_error(cloud, "AddBackendServers", LoadBalancerId=lb_id, BackendServers=many)[:2] == (
        400, "TooManyBackendServers")
    for weight in (101, -1, "heavy"):
        assert slb_error(cloud, "AddBackendServers", LoadBalancerId=lb_id,
                         BackendServers=backends_json({"ServerId": one, "Weight": weight})) == (
            400, "InvalidWeight.Malformed", "A specified weight is not valid.")
    assert slb_error(cloud, "AddBackendServers", LoadBalancerId=lb_id, BackendServers="{not json")[:2] == (
        400, "InvalidParameter")
    classic = add_classic_instance(cloud, "classic-1")
    assert slb_error(cloud, "AddBackendServers", LoadBalancerId=lb_id,
                     BackendServers=backends_json({"ServerId": classic})) == (
        400, "InvalidParameter", "The specified load balancer does not support the network type of the ECS instance.")
    cloud.admin("PATCH", f"instances/{topology.instance_ids[1]}", {"status": "Stopped"})
    assert slb_error(cloud, "AddBackendServers", LoadBalancerId=lb_id,
                     BackendServers=backends_json({"ServerId": topology.instance_ids[1]}))[:2] == (
        400, "ObtainIpFail")
    assert attribute(cloud, lb_id)["BackendServers"]["BackendServer"] == []

    # An internet load balancer takes classic or VPC instances, but not both at once.
    internet = create_lb(cloud)
    slb(cloud, "AddBackendServers", LoadBalancerId=internet, BackendServers=backends_json({"ServerId": one}))
    assert slb_error(cloud, "AddBackendServers", LoadBalancerId=internet,
                     BackendServers=backends_json({"ServerId": classic})) == (
        400, "InvalidBackendServers.Inconsistent",
        "All BackendServers on one Specified LoadBalancer have to be in the same vpc or all classic")


def test_health_status_follows_listener_check_and_instance(cloud: Cloud, topology: Topology) -> None:
    lb_id = create_lb(cloud, VSwitchId=topology.vswitch_id)
    one, two = topology.instance_ids[:2]
    slb(cloud, "AddBackendServers", LoadBalancerId=lb_id,
        BackendServers=backends_json({"ServerId": one}, {"ServerId": two}))
    slb(cloud, "CreateLoadBalancerTCPListener", LoadBalancerId=lb_id, ListenerPort=80, BackendServerPort=30080)
    slb(cloud, "CreateLoadBalancerHTTPListener", LoadBalancerId=lb_id, ListenerPort=8080, BackendServerPort=30081,
        HealthCheck="off", StickySession="off")
    # Stopped listeners: nothing is checked.
    assert set(health(cloud, lb_id).values()) == {"unavailable"}
    for port in (80, 8080):
        slb(cloud, "StartLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=port)
    assert health(cloud, lb_id) == {(one, 80): "normal", (two, 80): "normal",
                                    (one, 8080): "unavailable", (two, 8080): "unavailable"}
    body = slb(cloud, "DescribeHealthStatus", LoadBalancerId=lb_id, ListenerPort=80)
    first = body["BackendServers"]["BackendServer"][0]
    assert (first["ServerId"], first["Port"], first["ListenerPort"], first["Protocol"], first["Type"]) == (
        one, 30080, 80, "tcp", "ecs")
    assert first["ServerIp"] == cloud.emulator.state.instances[one].private_ip

    cloud.admin("PATCH", f"instances/{two}", {"status": "Stopped"})
    assert health(cloud, lb_id, ListenerPort=80) == {(one, 80): "normal", (two, 80): "abnormal"}
    # The admin API can fail a health check of a running instance, and clear it again.
    assert cloud.admin("PATCH", f"load-balancers/{lb_id}/health", {one: "abnormal"}) == {
        "health_overrides": {one: "abnormal"}}
    assert health(cloud, lb_id, ListenerPort=80)[(one, 80)] == "abnormal"
    assert health(cloud, lb_id, ListenerPort=8080)[(one, 8080)] == "unavailable"
    cloud.admin("PATCH", f"load-balancers/{lb_id}/health", {one: None})
    assert health(cloud, lb_id, ListenerPort=80)[(one, 80)] == "normal"

    slb(cloud, "SetLoadBalancerHTTPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=8080, HealthCheck="on")
    assert health(cloud, lb_id, ListenerPort=8080) == {(one, 8080): "normal", (two, 8080): "abnormal"}
    slb(cloud, "StopLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=80)
    assert set(health(cloud, lb_id, ListenerPort=80).values()) == {"unavailable"}
    assert slb_error(cloud, "DescribeHealthStatus", LoadBalancerId=lb_id, ListenerPort=9999)[:2] == (
        404, "CheckedListenerNotFound")


def test_admin_health_rejects_unknown_targets(cloud: Cloud, topology: Topology) -> None:
    lb_id = create_lb(cloud, VSwitchId=topology.vswitch_id)
    one = topology.instance_ids[0]
    assert "no load balancer" in cloud.admin("PATCH", "load-balancers/lb-emunothere/health", {one: "abnormal"},
                                             expect=404)["error"]
    assert "not a backend" in cloud.admin("PATCH", f"load-balancers/{lb_id}/health", {one: "abnormal"},
                                          expect=400)["error"]
    slb(cloud, "AddBackendServers", LoadBalancerId=lb_id, BackendServers=backends_json({"ServerId": one}))
    assert "health must be" in cloud.admin("PATCH", f"load-balancers/{lb_id}/health", {one: "sick"},
                                           expect=400)["error"]


# -- tags, filters, paging -----------------------------------------------------------------


def test_tags_add_remove_filter_and_limit(cloud: Cloud) -> None:
    svc = create_lb(cloud, LoadBalancerName="svc", Tags=[{"Key": "kubernetes.do.not.delete", "Value": "svc"},
                                                         {"Key": "ack.aliyun.com", "Value": "c1"}])
    other = create_lb(cloud, LoadBalancerName="other", Tags=[{"Key": "ack.aliyun.com", "Value": "c1"}])
    create_lb(cloud, LoadBalancerName="untagged")
    found = slb(cloud, "DescribeLoadBalancers", Tags=tags_json(**{"kubernetes.do.not.delete": "svc"}))
    assert [lb["LoadBalancerId"] for lb in found["LoadBalancers"]["LoadBalancer"]] == [svc]
    assert found["LoadBalancers"]["LoadBalancer"][0]["Tags"]["Tag"] == [
        {"TagKey": "kubernetes.do.not.delete", "TagValue": "svc"}, {"TagKey": "ack.aliyun.com", "TagValue": "c1"}]
    # Every given tag must match.
    both = tags_json(**{"kubernetes.do.not.delete": "svc", "ack.aliyun.com": "c2"})
    assert slb(cloud, "DescribeLoadBalancers", Tags=both)["TotalCount"] == 0
    cluster = slb(cloud, "DescribeLoadBalancers", Tags=tags_json(**{"ack.aliyun.com": "c1"}))
    assert {lb["LoadBalancerId"] for lb in cluster["LoadBalancers"]["LoadBalancer"]} == {svc, other}
    # Tag.N.Key/Value filter too (the SDK's set_Tags is the JSON one, so set them by hand).
    request = sdk_request(SLB_PACKAGE, "DescribeLoadBalancers")
    request.add_query_param("Tag.1.Key", "ack.aliyun.com")
    request.add_query_param("Tag.1.Value", "c1")
    request.add_query_param("Tag.2.Key", "kubernetes.do.not.delete")
    assert [lb["LoadBalancerId"] for lb in cloud.call(request)["LoadBalancers"]["LoadBalancer"]] == [svc]

    slb(cloud, "AddTags", LoadBalancerId=other, Tags=tags_json(team="net", **{"ack.aliyun.com": "c9"}))
    slb(cloud, "RemoveTags", LoadBalancerId=svc, Tags=json.dumps([{"TagKey": "kubernetes.do.not.delete"}]))
    assert slb(cloud, "DescribeLoadBalancers", Tags=tags_json(**{"kubernetes.do.not.delete": "svc"}))[
        "TotalCount"] == 0
    tags = slb(cloud, "DescribeTags")["TagSets"]["TagSet"]
    assert tags == [{"TagKey": "ack.aliyun.com", "TagValue": "c1", "InstanceCount": 1},
                    {"TagKey": "ack.aliyun.com", "TagValue": "c9", "InstanceCount": 1},
                    {"TagKey": "team", "TagValue": "net", "InstanceCount": 1}]
    distinct = slb(cloud, "DescribeTags", DistinctKey=True)["TagSets"]["TagSet"]
    assert [(t["TagKey"], t["InstanceCount"]) for t in distinct] == [("ack.aliyun.com", 2), ("team", 1)]
    assert [t["TagValue"] for t in slb(cloud, "DescribeTags", LoadBalancerId=other)["TagSets"]["TagSet"]] == [
        "c9", "net"]

    nine = tags_json(**{f"extra{n}": "x" for n in range(9)})  # 2 + 9 > 10
    assert slb_error(cloud, "AddTags", LoadBalancerId=other, Tags=nine) == (
        400, "TagCountLimit", "Tags count limit exceeded.")
    assert len(attribute(cloud, other)["Tags"]["Tag"]) == 2
    slb(cloud, "AddTags", LoadBalancerId=other, Tags=tags_json(**{f"extra{n}": "x" for n in range(8)}, team="x"))
    assert len(attribute(cloud, other)["Tags"]["Tag"]) == 10
    assert slb_error(cloud, "AddTags", LoadBalancerId=other, Tags="[{\"TagValue\": \"v\"}]")[:2] == (
        400, "InvalidParameter")


def test_describe_filters_and_paging(cloud: Cloud, topology: Topology) -> None:
    internet = [create_lb(cloud, LoadBalancerName=f"pub-{n}") for n in range(4)]
    vpc_lb = create_lb(cloud, LoadBalancerName="inner", VSwitchId=topology.vswitch_id)

    def ids(**params: Any) -> list[str]:
        body = slb(cloud, "DescribeLoadBalancers", **params)
        return [lb["LoadBalancerId"] for lb in body["LoadBalancers"]["LoadBalancer"]]

    assert ids(LoadBalancerId=f"{internet[0]},{vpc_lb}") == [internet[0], vpc_lb]
    assert ids(LoadBalancerName="pub-2") == [internet[2]]
    assert ids(AddressType="intranet") == [vpc_lb]
    assert ids(NetworkType="classic") == internet
    assert ids(VpcId=topology.vpc_id) == [vpc_lb]
    assert ids(AddressType="internet", LoadBalancerName="inner") == []

    pages = [slb(cloud, "DescribeLoadBalancers", PageSize=2, PageNumber=n) for n in (1, 2, 3)]
    assert [(p["TotalCount"], p["PageNumber"], p["PageSize"]) for p in pages] == [(5, 1, 2), (5, 2, 2), (5, 3, 2)]
    paged = [lb["LoadBalancerId"] for p in pages for lb in p["LoadBalancers"]["LoadBalancer"]]
    assert paged == [*internet, vpc_lb]
    summary = pages[0]["LoadBalancers"]["LoadBalancer"][0]
    assert {"LoadBalancerId", "LoadBalancerName", "LoadBalancerStatus", "Address", "AddressType", "NetworkType",
            "VpcId", "VSwitchId", "RegionId", "CreateTime", "CreateTimeStamp", "PayType", "Tags"} <= set(summary)
    assert slb(cloud, "DescribeLoadBalancers", PageSize=100)["PageSize"] == 100
    assert slb_error(cloud, "DescribeLoadBalancers", PageSize=101)[:2] == (400, "InvalidParameter")
    assert slb_error(cloud, "DescribeLoadBalancers", Tags="not json")[:2] == (400, "InvalidParameter")


# -- access control lists ----------------------------------------------------------------


def test_access_control_lists(cloud: Cloud) -> None:
    acl_id = slb(cloud, "CreateAccessControlList", AclName="office")["AclId"]
    assert acl_id.startswith("acl-emu")
    entries = json.dumps([{"entry": "10.0.0.0/24", "comment": "lan"}, {"entry": "192.168.1.1"}])
    slb(cloud, "AddAccessControlListEntry", AclId=acl_id, AclEntrys=entries)
    assert slb_error(cloud, "AddAccessControlListEntry", AclId=acl_id,
                     AclEntrys=json.dumps([{"entry": "10.0.0.0/24"}]))[:2] == (400, "AclEntryIllegal")
    assert slb_error(cloud, "AddAccessControlListEntry", AclId=acl_id,
                     AclEntrys=json.dumps([{"entry": "10.0.0.1/24"}]))[:2] == (400, "AclEntryIllegal")
    listed = slb(cloud, "DescribeAccessControlLists")
    assert listed["TotalCount"] == 1
    assert [(a["AclId"], a["AclName"], a["AddressIPVersion"]) for a in listed["Acls"]["Acl"]] == [
        (acl_id, "office", "ipv4")]

    lb_id = create_lb(cloud)
    tcp = {"LoadBalancerId": lb_id, "ListenerPort": 22, "BackendServerPort": 30022}
    status, code, message = slb_error(cloud, "CreateLoadBalancerTCPListener", AclStatus="on", AclType="white", **tcp)
    assert (status, code) == (400, "MissingParameter") and "AclId" in message
    assert slb_error(cloud, "CreateLoadBalancerTCPListener", AclStatus="on", AclType="white",
                     AclId="acl-emunothere", **tcp)[:2] == (400, "AclNotExist")
    slb(cloud, "CreateLoadBalancerTCPListener", AclStatus="on", AclType="white", AclId=acl_id, **tcp)
    described = slb(cloud, "DescribeLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=22)
    assert (described["AclStatus"], described["AclType"], described["AclId"]) == ("on", "white", acl_id)

    attr = slb(cloud, "DescribeAccessControlListAttribute", AclId=acl_id)
    assert (attr["AclId"], attr["AclName"]) == (acl_id, "office")
    assert attr["AclEntrys"]["AclEntry"] == [{"AclEntryIP": "10.0.0.0/24", "AclEntryComment": "lan"},
                                             {"AclEntryIP": "192.168.1.1/32", "AclEntryComment": ""}]
    assert attr["RelatedListeners"]["RelatedListener"] == [
        {"LoadBalancerId": lb_id, "ListenerPort": 22, "Protocol": "tcp", "AclType": "white"}]
    assert slb_error(cloud, "DeleteAccessControlList", AclId=acl_id)[:2] == (400, "AclInUse")

    slb(cloud, "RemoveAccessControlListEntry", AclId=acl_id, AclEntrys=entries)
    assert slb(cloud, "DescribeAccessControlListAttribute", AclId=acl_id)["AclEntrys"]["AclEntry"] == []
    assert slb_error(cloud, "RemoveAccessControlListEntry", AclId=acl_id, AclEntrys=entries)[:2] == (
        400, "AclEntryEmpty")
    slb(cloud, "DeleteLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=22)
    slb(cloud, "DeleteAccessControlList", AclId=acl_id)
    assert slb_error(cloud, "DescribeAccessControlListAttribute", AclId=acl_id)[:2] == (400, "AclNotExist")
    assert slb(cloud, "DescribeAccessControlLists")["Acls"]["Acl"] == []


# -- persistence ---------------------------------------------------------------------------


def test_state_file_round_trip(tmp_path: Path, certificate: dict[str, Any]) -> None:
    state_file = str(tmp_path / "cloud.json")

    def start() -> tuple[Emulator, Cloud]:
        emulator = Emulator(settings=Settings(route_delay=0.0), access_key_id=EMULATOR_AK,
                            access_key_secret=EMULATOR_SECRET, state_file=state_file)
        emulator.start()
        return emulator, Cloud(emulator, AcsClient(EMULATOR_AK, EMULATOR_SECRET, REGION))

    emulator, cloud = start()
    try:
        topology = emulator.bootstrap(instances=1)
        lb_id = create_lb(cloud, VSwitchId=topology.vswitch_id, LoadBalancerName="kept", ClientToken="t-1",
                          Tags=[{"Key": "k", "Value": "v"}])
        slb(cloud, "CreateLoadBalancerTCPListener", LoadBalancerId=lb_id, ListenerPort=80, BackendServerPort=30080,
            healthCheckInterval=5)
        slb(cloud, "StartLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=80)
        slb(cloud, "AddBackendServers", LoadBalancerId=lb_id,
            BackendServers=backends_json({"ServerId": topology.instance_ids[0], "Weight": 30}))
        cloud.admin("PATCH", f"load-balancers/{lb_id}/health", {topology.instance_ids[0]: "abnormal"})
        cert_id = upload_certificate(cloud, certificate)
        acl_id = slb(cloud, "CreateAccessControlList", AclName="kept")["AclId"]
        slb(cloud, "AddAccessControlListEntry", AclId=acl_id, AclEntrys=json.dumps([{"entry": "10.1.0.0/16"}]))
        before = attribute(cloud, lb_id)
    finally:
        emulator.stop()

    emulator, cloud = start()
    try:
        after = attribute(cloud, lb_id)
        for key in ("LoadBalancerName", "Address", "VSwitchId", "ListenerPortsAndProtocol", "BackendServers", "Tags"):
            assert after[key] == before[key], key
        listener = slb(cloud, "DescribeLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=80)
        assert (listener["Status"], listener["HealthCheckInterval"]) == ("running", 5)
        assert health(cloud, lb_id) == {(topology.instance_ids[0], 80): "abnormal"}
        # The client token still leads to the same load balancer.
        assert create_lb(cloud, VSwitchId=topology.vswitch_id, ClientToken="t-1") == lb_id
        assert [c["ServerCertificateId"] for c in
                slb(cloud, "DescribeServerCertificates")["ServerCertificates"]["ServerCertificate"]] == [cert_id]
        acl = slb(cloud, "DescribeAccessControlListAttribute", AclId=acl_id)
        assert acl["AclEntrys"]["AclEntry"] == [{"AclEntryIP": "10.1.0.0/16", "AclEntryComment": ""}]
        assert isinstance(emulator.state.extensions["load_balancers"][lb_id].listeners[0], slb_api.Listener)
    finally:
        emulator.stop()
