"""MetadataClient against the emulator's metadata service, on VPC and classic instances."""

from __future__ import annotations

import socket
import time

import pytest

from flannel_alivpc.clients.metadata import MetadataClient
from flannel_alivpc.core.cloud import DEFAULT_METADATA_URL, InstanceIdentity
from flannel_alivpc.core.errors import MetadataError, MetadataNotFound
from flannel_alivpc.emulator.server import Emulator, Topology
from tests.clients.helpers import Admin, closed_port


def test_vpc_instance_identity(emulator: Emulator, topology: Topology) -> None:
    instance = emulator.state.instances[topology.instance_ids[0]]
    client = MetadataClient(f"{emulator.endpoint}/meta/{instance.instance_id}")
    assert client.instance_id() == instance.instance_id
    assert client.region_id() == "cn-hangzhou"
    assert client.private_ipv4() == instance.private_ip
    assert client.vpc_id() == topology.vpc_id
    assert client.vswitch_id() == topology.vswitch_id
    assert client.vpc_cidr_block() == "192.168.0.0/16"
    assert client.vswitch_cidr_block() == "192.168.0.0/20"
    assert client.identity() == InstanceIdentity(
        instance_id=instance.instance_id, region_id="cn-hangzhou", zone_id=instance.zone,
        private_ipv4=instance.private_ip, network_type="vpc", hostname="node-1", vpc_id=topology.vpc_id,
        vswitch_id=topology.vswitch_id, vpc_cidr="192.168.0.0/16", vswitch_cidr="192.168.0.0/20",
    )
    # Paths starting with "/" are relative to the service root.
    assert instance.instance_id in client.get("/latest/dynamic/instance-identity/document")


def test_classic_instance_has_no_vpc_items(emulator: Emulator, topology: Topology, admin: Admin) -> None:
    created = admin("POST", "instances", {"hostname": "old-box", "network_type": "classic"})
    client = MetadataClient(f"{emulator.endpoint}/meta/{created['instance_id']}")
    assert client.network_type() == "classic"
    with pytest.raises(MetadataNotFound, match="'vpc-id'"):
        client.vpc_id()
    with pytest.raises(MetadataNotFound):
        client.vswitch_cidr_block()
    identity = client.identity()
    assert identity.network_type == "classic" and identity.hostname == "old-box"
    assert identity.private_ipv4 == created["private_ip"]
    assert (identity.vpc_id, identity.vswitch_id, identity.vpc_cidr, identity.vswitch_cidr) == (None,) * 4


def test_missing_item_names_the_path(emulator: Emulator, topology: Topology) -> None:
    client = MetadataClient(f"{emulator.endpoint}/meta/{topology.instance_ids[0]}")
    with pytest.raises(MetadataNotFound) as info:
        client.get("no/such-item")
    assert "'no/such-item'" in str(info.value) and info.value.http_status == 404


def test_closed_port_fails_fast_and_clearly() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    client = MetadataClient(url, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(MetadataError) as info:
        client.instance_id()
    assert time.monotonic() - started < 2
    assert not isinstance(info.value, MetadataNotFound)
    message = str(info.value)
    assert url in message and "is this an ECS instance? set --metadata-url" in message


def test_silent_service_times_out() -> None:
    with socket.socket() as server:  # accepts connections (backlog) but never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        client = MetadataClient(f"http://127.0.0.1:{port}", timeout=0.2, retries=1)
        started = time.monotonic()
        with pytest.raises(MetadataError, match=r"did not answer within 0\.2 s"):
            client.region_id()
        assert time.monotonic() - started < 2


def test_default_url_is_only_a_constant() -> None:
    assert DEFAULT_METADATA_URL == "http://100.100.100.200"
    with pytest.raises(ValueError):
        MetadataClient("100.100.100.200")
