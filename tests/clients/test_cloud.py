"""build_cloud: region, endpoint and credentials from flags, environment and metadata."""

from __future__ import annotations

import pytest

from flannel_alivpc.clients.cloud import CloudConfig, build_cloud
from flannel_alivpc.clients.credentials import RamRoleCredentials, StaticCredentials
from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.emulator.server import Emulator, Topology
from tests.clients.helpers import Admin, closed_port


def test_keys_from_env_region_from_metadata(emulator: Emulator, topology: Topology) -> None:
    config = CloudConfig(metadata_url=f"{emulator.endpoint}/meta/{topology.instance_ids[0]}")
    env = {"ACCESS_KEY_ID": emulator.access_key_id, "ACCESS_KEY_SECRET": emulator.access_key_secret,
           "ALIYUN_API_ENDPOINT": emulator.endpoint}
    cloud = build_cloud(config, env)
    assert cloud.api.region == "cn-hangzhou"
    assert (cloud.api.protocol, cloud.api.host) == ("http", emulator.endpoint.removeprefix("http://"))
    assert isinstance(cloud.api._credentials, StaticCredentials)
    identity = cloud.metadata.identity()
    assert cloud.vpc.describe_vpc(identity.vpc_id or "").cidr == identity.vpc_cidr
    assert len(cloud.ecs.describe_instances(vpc_id=identity.vpc_id)) == 3


def test_ram_role_when_env_has_no_keys(emulator: Emulator, topology: Topology, admin: Admin) -> None:
    instance = admin("POST", "instances", {"hostname": "role-node", "ram_role": "k8s-node"})
    config = CloudConfig(region="cn-hangzhou", api_endpoint=emulator.endpoint,
                         metadata_url=f"{emulator.endpoint}/meta/{instance['instance_id']}")
    cloud = build_cloud(config, {})
    assert isinstance(cloud.api._credentials, RamRoleCredentials)
    assert cloud.vpc.describe_vpc(topology.vpc_id).vpc_id == topology.vpc_id
    assert (cloud.api.active_access_key_id or "").startswith("STS.")


def test_flag_endpoint_wins_and_https_by_default(emulator: Emulator) -> None:
    env = {"ACCESS_KEY_ID": "a", "ACCESS_KEY_SECRET": "b", "ALIYUN_API_ENDPOINT": "http://127.0.0.1:1"}
    cloud = build_cloud(CloudConfig(region="cn-beijing", api_endpoint="vpc.example.internal:8443",
                                    metadata_url=f"http://127.0.0.1:{closed_port()}"), env)
    assert (cloud.api.protocol, cloud.api.host) == ("https", "vpc.example.internal:8443")
    cloud = build_cloud(CloudConfig(region="cn-beijing", metadata_url=f"http://127.0.0.1:{closed_port()}"),
                        {"ACCESS_KEY_ID": "a", "ACCESS_KEY_SECRET": "b"})
    assert (cloud.api.protocol, cloud.api.host) == ("https", None)


def test_config_errors(emulator: Emulator) -> None:
    with pytest.raises(ConfigError, match="ACCESS_KEY_SECRET"):
        build_cloud(CloudConfig(region="cn-hangzhou", metadata_url=f"http://127.0.0.1:{closed_port()}"),
                    {"ACCESS_KEY_ID": "a"})
    dead = CloudConfig(metadata_url=f"http://127.0.0.1:{closed_port()}", metadata_timeout=0.5)
    with pytest.raises(ConfigError, match="no --region given"):
        build_cloud(dead, {"ACCESS_KEY_ID": "a", "ACCESS_KEY_SECRET": "b"})
