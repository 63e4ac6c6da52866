"""The ECS instance metadata service for one emulated instance.

Scalar items are plain text; directories list their children one per line
with a trailing ``/`` for sub-directories; unknown items answer 404. On the
classic network the VPC items (vpc-id, vswitch-id, vpc-cidr-block,
vswitch-cidr-block) do not exist, as on real classic instances.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from flannel_alivpc.emulator.state import CloudState, Instance, iso_time

Answer = tuple[int, str, str]  # status, content type, body
_TEXT = "text/plain"
_NOT_FOUND: Answer = (404, "text/html", "<html><body><h1>404 Not Found</h1></body></html>")


def _tree(state: CloudState, inst: Instance) -> dict[str, Any]:
    """The instance's metadata as nested dicts; leaves are strings."""
    meta: dict[str, Any] = {
        "instance-id": inst.instance_id,
        "region-id": inst.region,
        "zone-id": inst.zone,
        "private-ipv4": inst.private_ip,
        "network-type": inst.network_type,
        "mac": inst.mac,
        "hostname": inst.hostname,
        "image-id": "ubuntu_22_04_x64",
        "serial-number": inst.instance_id.replace("i-", "sn-"),
        "owner-account-id": "1234567890123456",
        "source-address": "http://mirrors.cloud.aliyuncs.com",
        "instance": {"instance-type": inst.instance_type},
    }
    if inst.public_ip:
        meta["eipv4"] = inst.public_ip
    if inst.network_type == "vpc":
        vsw = state.vswitches[inst.vswitch_id]
        vpc = state.vpcs[inst.vpc_id]
        meta.update({
            "vpc-id": vpc.vpc_id,
            "vswitch-id": vsw.vswitch_id,
            "vpc-cidr-block": vpc.cidr,
            "vswitch-cidr-block": vsw.cidr,
        })
        net = ipaddress.ip_network(vsw.cidr)
        # The vSwitch gateway is the third address from the top (x.x.x.253 in a /24).
        gateway = str(net.broadcast_address - 2)
        meta["network"] = {"interfaces": {"macs": {inst.mac: {
            "network-interface-id": inst.instance_id.replace("i-", "eni-"),
            "netmask": str(net.netmask),
            "vswitch-cidr-block": vsw.cidr,
            "vpc-cidr-block": vpc.cidr,
            "private-ipv4s": json.dumps([inst.private_ip]),
            "vswitch-id": vsw.vswitch_id,
            "vpc-id": vpc.vpc_id,
            "primary-ip-address": inst.private_ip,
            "gateway": gateway,
        }}}}
    if inst.ram_role:
        meta["ram"] = {"security-credentials": {inst.ram_role: None}}
    return meta


def _identity_document(inst: Instance) -> str:
    return json.dumps({
        "zone-id": inst.zone, "serial-number": inst.instance_id.replace("i-", "sn-"),
        "instance-id": inst.instance_id, "region-id": inst.region, "private-ipv4": inst.private_ip,
        "owner-account-id": "1234567890123456", "mac": inst.mac, "image-id": "ubuntu_22_04_x64",
        "instance-type": inst.instance_type,
    })


def _credentials(state: CloudState, role: str) -> str:
    key = state.issue_sts(role)
    assert key.expires_at is not None
    return json.dumps({
        "AccessKeyId": key.access_key_id,
        "AccessKeySecret": key.secret,
        "SecurityToken": key.security_token,
        "Expiration": iso_time(key.expires_at),
        "LastUpdated": iso_time(key.expires_at - state.settings.sts_ttl),
        "Code": "Success",
    })


def answer(state: CloudState, inst: Instance, path: str) -> Answer:
    """Answer ``path`` (relative to ``/latest/``) for ``inst``."""
    if path in ("", "/"):
        return 200, _TEXT, "dynamic/\nmeta-data/\nuser-data"
    if path == "user-data":
        return _NOT_FOUND
    if path.rstrip("/") == "dynamic/instance-identity/document":
        return 200, "application/json", _identity_document(inst)
    if path.rstrip("/") == "dynamic":
        return 200, _TEXT, "instance-identity/"
    if path.rstrip("/") == "dynamic/instance-identity":
        return 200, _TEXT, "document"
    if not path.startswith("meta-data"):
        return _NOT_FOUND
    parts = [p for p in path[len("meta-data"):].split("/") if p]
    # One doc page writes "Ram/" capitalised; the SDK uses "ram/": accept both.
    if parts and parts[0] == "Ram":
        parts[0] = "ram"
    node: Any = _tree(state, inst)
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            return _NOT_FOUND
        if parts[:2] == ["ram", "security-credentials"] and i == 2:
            return 200, "application/json", _credentials(state, part)
        node = node[part]
    if isinstance(node, dict):
        lines = [f"{k}/" if isinstance(v, dict) else k for k, v in node.items()]
        return 200, _TEXT, "\n".join(lines)
    return 200, _TEXT, str(node)
