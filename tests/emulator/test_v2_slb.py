"""SLB API 2014-05-15 through the V2 SDK (alibabacloud_slb20140515): load balancers, listeners of each
protocol, backends and health, tags, certificates, ACLs and errors, read back through the SDK's models.
Every answer is also checked against its model (``CloudV2.call``)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from flannel_alivpc.emulator.server import Emulator, Topology
from tests.emulator.sdk_v2 import CloudV2


@pytest.fixture
def sdk(emulator: Emulator) -> CloudV2:
    return CloudV2(emulator)


@pytest.fixture(scope="module")
def certificate() -> dict[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "v2.example.test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))
            .not_valid_after(datetime.datetime(2034, 1, 1, tzinfo=datetime.timezone.utc)).sign(key, hashes.SHA256()))
    return {"cert": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()}


def _lb(sdk: CloudV2, **params: Any) -> str:
    lb_id: str = sdk.slb("CreateLoadBalancer", **params).model.load_balancer_id
    return lb_id


def test_load_balancer_lifecycle(sdk: CloudV2, topology: Topology) -> None:
    created = sdk.slb("CreateLoadBalancer", LoadBalancerName="svc-a", AddressType="intranet",
                      VSwitchId=topology.vswitch_id).model
    assert created.load_balancer_id.startswith("lb-")
    assert (created.vpc_id, created.network_type, created.address_ipversion) == (topology.vpc_id, "vpc", "ipv4")
    [listed] = sdk.slb("DescribeLoadBalancers", LoadBalancerName="svc-a").model.load_balancers.load_balancer
    assert (listed.load_balancer_id, listed.address, listed.load_balancer_status) == (
        created.load_balancer_id, created.address, "active")
    sdk.slb("SetLoadBalancerName", LoadBalancerId=created.load_balancer_id, LoadBalancerName="svc-b")
    sdk.slb("SetLoadBalancerStatus", LoadBalancerId=created.load_balancer_id, LoadBalancerStatus="inactive")
    spec = sdk.slb("ModifyLoadBalancerInstanceSpec", LoadBalancerId=created.load_balancer_id,
                   LoadBalancerSpec="slb.s3.medium").model
    assert isinstance(spec.order_id, int)
    attr = sdk.slb("DescribeLoadBalancerAttribute", LoadBalancerId=created.load_balancer_id).model
    assert (attr.load_balancer_name, attr.load_balancer_status, attr.load_balancer_spec) == (
        "svc-b", "inactive", "slb.s3.medium")
    sdk.slb("SetLoadBalancerDeleteProtection", LoadBalancerId=created.load_balancer_id, DeleteProtection="on")
    assert sdk.fail("slb", "DeleteLoadBalancer", LoadBalancerId=created.load_balancer_id).code == \
        "OperationDenied.DeleteProtectionIsOn"
    sdk.slb("SetLoadBalancerDeleteProtection", LoadBalancerId=created.load_balancer_id, DeleteProtection="off")
    sdk.slb("DeleteLoadBalancer", LoadBalancerId=created.load_balancer_id)
    assert sdk.slb("DescribeLoadBalancers").model.total_count == 0
    error = sdk.fail("slb", "DescribeLoadBalancerAttribute", LoadBalancerId=created.load_balancer_id)
    assert error.code == "InvalidLoadBalancerId.NotFound"
    assert error.data is not None and error.data["HostId"] == "slb.aliyuncs.com"


def test_listeners_of_each_protocol(sdk: CloudV2, certificate: dict[str, str]) -> None:
    lb_id = _lb(sdk)
    cert_id = sdk.slb("UploadServerCertificate", ServerCertificate=certificate["cert"],
                      PrivateKey=certificate["key"], ServerCertificateName="web").model.server_certificate_id
    sdk.slb("CreateLoadBalancerTCPListener", LoadBalancerId=lb_id, ListenerPort=443, BackendServerPort=30443,
            Bandwidth=-1, Scheduler="rr", PersistenceTimeout=30, ProxyProtocolV2Enabled=True)
    sdk.slb("CreateLoadBalancerUDPListener", LoadBalancerId=lb_id, ListenerPort=53, BackendServerPort=30053,
            Bandwidth=-1)
    sdk.slb("CreateLoadBalancerHTTPListener", LoadBalancerId=lb_id, ListenerPort=80, BackendServerPort=30080,
            Bandwidth=-1, HealthCheck="on", StickySession="on", StickySessionType="insert", CookieTimeout=600,
            HealthCheckURI="/healthz")
    sdk.slb("CreateLoadBalancerHTTPSListener", LoadBalancerId=lb_id, ListenerPort=8443, BackendServerPort=30443,
            Bandwidth=-1, HealthCheck="off", StickySession="off", ServerCertificateId=cert_id)

    tcp = sdk.slb("DescribeLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=443).model
    assert (tcp.scheduler, tcp.persistence_timeout, tcp.status, tcp.proxy_protocol_v2enabled) == (
        "rr", 30, "stopped", True)
    udp = sdk.slb("DescribeLoadBalancerUDPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=53).model
    assert (udp.backend_server_port, udp.health_check) == (30053, "on")
    http = sdk.slb("DescribeLoadBalancerHTTPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=80).model
    assert (http.sticky_session_type, http.cookie_timeout, http.health_check_uri) == ("insert", 600, "/healthz")
    https = sdk.slb("DescribeLoadBalancerHTTPSListenerAttribute", LoadBalancerId=lb_id, ListenerPort=8443).model
    assert (https.server_certificate_id, https.enable_http_2) == (cert_id, "on")

    sdk.slb("SetLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=443, Bandwidth=-1,
            Scheduler="wlc", HealthCheckSwitch="off")
    tcp = sdk.slb("DescribeLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id, ListenerPort=443).model
    assert (tcp.scheduler, tcp.health_check) == ("wlc", "off")
    sdk.slb("StartLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=443)
    assert sdk.slb("DescribeLoadBalancerTCPListenerAttribute", LoadBalancerId=lb_id,
                   ListenerPort=443).model.status == "running"
    listed = sdk.slb("DescribeLoadBalancerListeners", LoadBalancerId=[lb_id]).model
    assert sorted((item.listener_port, item.listener_protocol) for item in listed.listeners) == [
        (53, "udp"), (80, "http"), (443, "tcp"), (8443, "https")]
    error = sdk.fail("slb", "CreateLoadBalancerTCPListener", LoadBalancerId=lb_id, ListenerPort=443,
                     BackendServerPort=1, Bandwidth=-1)
    assert (error.status_code, error.code) == (400, "ListenerAlreadyExists")
    sdk.slb("StopLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=443)
    sdk.slb("DeleteLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=8443)
    assert sdk.fail("slb", "DeleteServerCertificate", ServerCertificateId="cert-emunothere").code == \
        "ServerCertificateId.NotFound"
    sdk.slb("DeleteServerCertificate", ServerCertificateId=cert_id)
    assert sdk.slb("DescribeServerCertificates").model.server_certificates.server_certificate == []


def test_backends_and_health(sdk: CloudV2, topology: Topology) -> None:
    lb_id = _lb(sdk, VSwitchId=topology.vswitch_id, AddressType="intranet")
    one, two, _ = topology.instance_ids
    added = sdk.slb("AddBackendServers", LoadBalancerId=lb_id, BackendServers=json.dumps(
        [{"ServerId": one, "Weight": 50}, {"ServerId": two, "Weight": 100}])).model
    assert [(b.server_id, b.type) for b in added.backend_servers.backend_server] == [(one, "ecs"), (two, "ecs")]
    sdk.slb("SetBackendServers", LoadBalancerId=lb_id, BackendServers=json.dumps([{"ServerId": two, "Weight": 0}]))
    attr = sdk.slb("DescribeLoadBalancerAttribute", LoadBalancerId=lb_id).model
    assert [(b.server_id, b.weight) for b in attr.backend_servers.backend_server] == [(one, 50), (two, 0)]
    sdk.slb("CreateLoadBalancerTCPListener", LoadBalancerId=lb_id, ListenerPort=80, BackendServerPort=30080,
            Bandwidth=-1)
    sdk.slb("StartLoadBalancerListener", LoadBalancerId=lb_id, ListenerPort=80)
    health = sdk.slb("DescribeHealthStatus", LoadBalancerId=lb_id).model.backend_servers.backend_server
    assert {(h.server_id, h.listener_port, h.port) for h in health} == {(one, 80, 30080), (two, 80, 30080)}
    assert all(h.server_health_status in ("normal", "abnormal", "unavailable") for h in health)
    sdk.slb("RemoveBackendServers", LoadBalancerId=lb_id, BackendServers=json.dumps([{"ServerId": two}]))
    attr = sdk.slb("DescribeLoadBalancerAttribute", LoadBalancerId=lb_id).model
    assert [b.server_id for b in attr.backend_servers.backend_server] == [one]
    error = sdk.fail("slb", "AddBackendServers", LoadBalancerId=lb_id,
                     BackendServers=json.dumps([{"ServerId": one, "Weight": 101}]))
    assert (error.status_code, error.code) == (400, "InvalidWeight.Malformed")


def test_tags(sdk: CloudV2) -> None:
    first, second = _lb(sdk), _lb(sdk)
    sdk.slb("AddTags", LoadBalancerId=first, Tags=json.dumps([{"TagKey": "kubernetes.do.not.delete",
                                                                "TagValue": "svc-a"}]))
    sdk.slb("AddTags", LoadBalancerId=second, Tags=json.dumps([{"TagKey": "team", "TagValue": "net"}]))
    tags = sdk.slb("DescribeTags").model.tag_sets.tag_set
    assert sorted((t.tag_key, t.tag_value, t.instance_count) for t in tags) == [
        ("kubernetes.do.not.delete", "svc-a", 1), ("team", "net", 1)]
    found = sdk.slb("DescribeLoadBalancers",
                    Tags=json.dumps([{"TagKey": "team", "TagValue": "net"}])).model.load_balancers.load_balancer
    assert [lb.load_balancer_id for lb in found] == [second]
    assert [t.tag_key for t in found[0].tags.tag] == ["team"]
    sdk.slb("RemoveTags", LoadBalancerId=second, Tags=json.dumps([{"TagKey": "team", "TagValue": "net"}]))
    assert [t.tag_key for t in sdk.slb("DescribeTags").model.tag_sets.tag_set] == ["kubernetes.do.not.delete"]


def test_access_control_lists(sdk: CloudV2) -> None:
    acl_id = sdk.slb("CreateAccessControlList", AclName="office").model.acl_id
    sdk.slb("AddAccessControlListEntry", AclId=acl_id,
            AclEntrys=json.dumps([{"entry": "10.0.0.0/8", "comment": "lan"}]))
    attr = sdk.slb("DescribeAccessControlListAttribute", AclId=acl_id).model
    assert [(e.acl_entry_ip, e.acl_entry_comment) for e in attr.acl_entrys.acl_entry] == [("10.0.0.0/8", "lan")]
    assert [a.acl_id for a in sdk.slb("DescribeAccessControlLists").model.acls.acl] == [acl_id]
    assert sdk.fail("slb", "AddAccessControlListEntry", AclId=acl_id,
                    AclEntrys=json.dumps([{"entry": "10.0.0.1/24"}])).code == "AclEntryIllegal"
    sdk.slb("RemoveAccessControlListEntry", AclId=acl_id, AclEntrys=json.dumps([{"entry": "10.0.0.0/8"}]))
    sdk.slb("DeleteAccessControlList", AclId=acl_id)
    assert sdk.slb("DescribeAccessControlLists").model.acls.acl == []
