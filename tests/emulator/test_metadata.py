"""The ECS metadata service: items, listings, RAM role credentials, hardened mode, caller lookup."""

from __future__ import annotations

import calendar
import http.client
import json
import time
from typing import Any

import pytest
import requests

from flannel_alivpc.emulator.server import Emulator, Topology
from tests.emulator.sdk import Cloud

TOKEN_TTL = "X-aliyun-ecs-metadata-token-ttl-seconds"
TOKEN = "X-aliyun-ecs-metadata-token"


def _text(cloud: Cloud, instance_id: str, path: str, **kwargs: Any) -> str:
    answer = cloud.metadata(instance_id, path, **kwargs)
    assert answer.status_code == 200, (path, answer.status_code, answer.text)
    return answer.text


def _seconds(stamp: str) -> int:
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


def test_scalar_items_of_a_vpc_instance(cloud: Cloud, topology: Topology) -> None:
    inst_id = topology.instance_ids[1]
    inst = cloud.emulator.state.instances[inst_id]
    expected = {
        "instance-id": inst_id,
        "region-id": "cn-hangzhou",
        "zone-id": "cn-hangzhou-g",
        "vpc-id": topology.vpc_id,
        "vswitch-id": topology.vswitch_id,
        "vpc-cidr-block": "192.168.0.0/16",
        "vswitch-cidr-block": "192.168.0.0/20",
        "private-ipv4": inst.private_ip,
        "network-type": "vpc",
        "mac": inst.mac,
        "hostname": "node-2",
        "instance/instance-type": "ecs.g6.large",
        "image-id": "ubuntu_22_04_x64",
        "serial-number": inst_id.replace("i-", "sn-"),
        "owner-account-id": "1234567890123456",
        "source-address": "http://mirrors.cloud.aliyuncs.com",
    }
    for item, value in expected.items():
        answer = cloud.metadata(inst_id, f"meta-data/{item}")
        assert (answer.status_code, answer.text) == (200, value), item
        assert answer.headers["Content-Type"] == "text/plain"
    assert inst.mac.startswith("00:16:3e:")


def test_network_interface_items(cloud: Cloud, topology: Topology) -> None:
    inst_id = topology.instance_ids[0]
    inst = cloud.emulator.state.instances[inst_id]
    base = f"meta-data/network/interfaces/macs/{inst.mac}"
    assert _text(cloud, inst_id, "meta-data/network/interfaces/macs/") == f"{inst.mac}/"
    assert set(_text(cloud, inst_id, base + "/").splitlines()) == {
        "network-interface-id", "netmask", "vswitch-cidr-block", "vpc-cidr-block", "private-ipv4s",
        "vswitch-id", "vpc-id", "primary-ip-address", "gateway"}
    assert _text(cloud, inst_id, base + "/network-interface-id") == inst_id.replace("i-", "eni-")
    # The vSwitch is a /20: mask and gateway follow its size.
    assert _text(cloud, inst_id, base + "/netmask") == "255.255.240.0"
    assert _text(cloud, inst_id, base + "/gateway") == "192.168.15.253"
    assert _text(cloud, inst_id, base + "/vswitch-cidr-block") == "192.168.0.0/20"
    assert _text(cloud, inst_id, base + "/vpc-cidr-block") == "192.168.0.0/16"
    assert json.loads(_text(cloud, inst_id, base + "/private-ipv4s")) == [inst.private_ip]
    assert _text(cloud, inst_id, base + "/primary-ip-address") == inst.private_ip
    assert _text(cloud, inst_id, base + "/vswitch-id") == topology.vswitch_id
    assert _text(cloud, inst_id, base + "/vpc-id") == topology.vpc_id


def test_gateway_of_a_slash_24(cloud: Cloud, topology: Topology) -> None:
    vsw = cloud.admin("POST", "vswitches", {"vpc_id": topology.vpc_id, "cidr": "192.168.20.0/24"})["VSwitchId"]
    inst = cloud.admin("POST", "instances", {"hostname": "n", "vswitch_id": vsw})
    base = f"meta-data/network/interfaces/macs/{inst['mac']}"
    assert _text(cloud, inst["instance_id"], base + "/gateway") == "192.168.20.253"
    assert _text(cloud, inst["instance_id"], base + "/netmask") == "255.255.255.0"


def test_listings(cloud: Cloud, topology: Topology) -> None:
    inst_id = topology.instance_ids[0]
    assert _text(cloud, inst_id, "").splitlines() == ["dynamic/", "meta-data/", "user-data"]
    listing = _text(cloud, inst_id, "meta-data/").splitlines()
    assert {"instance-id", "vpc-id", "mac", "instance/", "network/"} <= set(listing)
    assert "ram/" not in listing  # no role attached
    assert _text(cloud, inst_id, "meta-data") == _text(cloud, inst_id, "meta-data/")
    assert _text(cloud, inst_id, "meta-data/instance/") == "instance-type"
    assert _text(cloud, inst_id, "meta-data/network/") == "interfaces/"
    assert _text(cloud, inst_id, "dynamic/") == "instance-identity/"
    assert _text(cloud, inst_id, "dynamic/instance-identity/") == "document"


def test_identity_document(cloud: Cloud, topology: Topology) -> None:
    inst_id = topology.instance_ids[0]
    inst = cloud.emulator.state.instances[inst_id]
    answer = cloud.metadata(inst_id, "dynamic/instance-identity/document")
    assert answer.headers["Content-Type"] == "application/json"
    doc = answer.json()
    assert doc["instance-id"] == inst_id
    assert (doc["region-id"], doc["zone-id"]) == ("cn-hangzhou", "cn-hangzhou-g")
    assert (doc["private-ipv4"], doc["mac"]) == (inst.private_ip, inst.mac)
    assert doc["instance-type"] == "ecs.g6.large"


def test_not_found(cloud: Cloud, topology: Topology) -> None:
    inst_id = topology.instance_ids[0]
    for path in ("meta-data/no-such-item", "meta-data/instance/no", "meta-data/eipv4", "meta-data/ram/",
                 "user-data", "meta-data/mac/extra", "nothing"):
        assert cloud.metadata(inst_id, path).status_code == 404, path
    assert cloud.metadata("i-unknown", "meta-data/instance-id").status_code == 404
    assert requests.get(f"{cloud.base}/meta/{inst_id}/other", timeout=10).status_code == 404


def test_classic_instance_has_no_vpc_items(cloud: Cloud, topology: Topology) -> None:
    inst = cloud.admin("POST", "instances", {"hostname": "old", "network_type": "classic",
                                             "public_ip": "47.1.2.3"})
    inst_id = inst["instance_id"]
    assert _text(cloud, inst_id, "meta-data/network-type") == "classic"
    assert _text(cloud, inst_id, "meta-data/private-ipv4") == inst["private_ip"]
    assert _text(cloud, inst_id, "meta-data/eipv4") == "47.1.2.3"
    for item in ("vpc-id", "vswitch-id", "vpc-cidr-block", "vswitch-cidr-block", "network/"):
        assert cloud.metadata(inst_id, f"meta-data/{item}").status_code == 404, item


def test_ram_role_credentials(cloud: Cloud, topology: Topology) -> None:
    inst = cloud.admin("POST", "instances", {"hostname": "n", "ram_role": "KubernetesNode"})
    inst_id = inst["instance_id"]
    assert "ram/" in _text(cloud, inst_id, "meta-data/").splitlines()
    assert _text(cloud, inst_id, "meta-data/ram/") == "security-credentials/"
    assert _text(cloud, inst_id, "meta-data/ram/security-credentials/") == "KubernetesNode"
    answer = cloud.metadata(inst_id, "meta-data/ram/security-credentials/KubernetesNode")
    assert answer.headers["Content-Type"] == "application/json"
    creds = answer.json()
    assert set(creds) == {"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration", "LastUpdated", "Code"}
    assert creds["Code"] == "Success"
    assert creds["AccessKeyId"].startswith("STS.")
    assert creds["SecurityToken"]
    assert _seconds(creds["Expiration"]) - _seconds(creds["LastUpdated"]) == 3600
    # One doc page writes "Ram/": the same credentials answer there.
    again = cloud.metadata(inst_id, "meta-data/Ram/security-credentials/KubernetesNode").json()
    assert again["AccessKeyId"] == creds["AccessKeyId"]
    assert cloud.metadata(inst_id, "meta-data/ram/security-credentials/OtherRole").status_code == 404


def test_hardened_mode_token(cloud: Cloud, emulator: Emulator, topology: Topology,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    inst_id = topology.instance_ids[0]
    url = f"{cloud.base}/meta/{inst_id}/latest/api/token"
    answer = requests.put(url, headers={TOKEN_TTL: "60"}, timeout=10)
    assert answer.status_code == 200
    token = answer.text
    assert token
    assert _text(cloud, inst_id, "meta-data/instance-id", headers={TOKEN: token}) == inst_id
    # Normal mode keeps working; a token that was never issued does not.
    assert _text(cloud, inst_id, "meta-data/instance-id") == inst_id
    assert cloud.metadata(inst_id, "meta-data/instance-id", headers={TOKEN: "forged"}).status_code == 401
    # The TTL header is required and bounded; proxied token requests and GETs are refused.
    for ttl in (None, "0", "21601", "abc"):
        headers = {} if ttl is None else {TOKEN_TTL: ttl}
        assert requests.put(url, headers=headers, timeout=10).status_code == 400, ttl
    assert requests.put(url, headers={TOKEN_TTL: "21600"}, timeout=10).status_code == 200
    assert requests.put(url, headers={TOKEN_TTL: "60", "X-Forwarded-For": "10.0.0.1"},
                        timeout=10).status_code == 403
    assert requests.get(url, timeout=10).status_code == 403
    # After its TTL the token is refused.
    now = time.time()
    monkeypatch.setattr(emulator.state, "clock", lambda: now + 61)
    assert cloud.metadata(inst_id, "meta-data/instance-id", headers={TOKEN: token}).status_code == 401


def test_plain_latest_path_answers_for_the_callers_address(cloud: Cloud, topology: Topology) -> None:
    # Nobody has the test's own address yet.
    assert requests.get(f"{cloud.base}/latest", timeout=10).status_code == 404
    answer = requests.get(f"{cloud.base}/latest/meta-data/instance-id", timeout=10)
    assert answer.status_code == 404
    vpc = cloud.admin("POST", "vpcs", {"cidr": "127.0.0.0/8", "name": "loopback"})["VpcId"]
    vsw = cloud.admin("POST", "vswitches", {"vpc_id": vpc, "cidr": "127.0.0.0/24"})["VSwitchId"]
    inst = cloud.admin("POST", "instances", {"hostname": "local", "vswitch_id": vsw, "private_ip": "127.0.0.1"})
    answer = requests.get(f"{cloud.base}/latest/meta-data/instance-id", timeout=10)
    assert (answer.status_code, answer.text) == (200, inst["instance_id"])
    assert requests.get(f"{cloud.base}/latest/meta-data/vswitch-cidr-block", timeout=10).text == "127.0.0.0/24"
    assert requests.get(f"{cloud.base}/latest", timeout=10).text.splitlines() == ["dynamic/", "meta-data/",
                                                                                 "user-data"]
    assert requests.put(f"{cloud.base}/latest/api/token", headers={TOKEN_TTL: "5"}, timeout=10).status_code == 200

    # A caller from another loopback address is a different (unknown) instance.
    host, port = cloud.emulator.address
    conn = http.client.HTTPConnection(host, port, timeout=5, source_address=("127.0.0.2", 0))
    try:
        conn.request("GET", "/latest/meta-data/instance-id")
        assert conn.getresponse().status == 404
    finally:
        conn.close()
