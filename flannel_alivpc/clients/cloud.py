"""Builds the cloud clients from flags and environment: one call for every subcommand.

Region: the ``--region`` flag, else the metadata service. Endpoint: the
``--api-endpoint`` flag, else env ``ALIYUN_API_ENDPOINT``, else the SDK's own
resolution (over HTTPS). Credentials: a key passed in (the network config's
Backend keys, as flannel's old ali-vpc backend took them), else
``ACCESS_KEY_ID``/``ACCESS_KEY_SECRET``
(or the ``ALIBABA_CLOUD_*`` names) from the environment, else the RAM role of
the instance, read from the metadata service.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from flannel_alivpc.clients.aliyun_sdk import DEFAULT_RETRY, AliyunApi
from flannel_alivpc.clients.credentials import (
    CredentialProvider,
    RamRoleCredentials,
    StaticCredentials,
    credentials_from_env,
)
from flannel_alivpc.clients.ecs import EcsClient
from flannel_alivpc.clients.metadata import MetadataClient
from flannel_alivpc.clients.quotas import QuotaCenterClient
from flannel_alivpc.clients.vpc import VpcClient
from flannel_alivpc.core.cloud import DEFAULT_METADATA_URL
from flannel_alivpc.core.errors import ConfigError, MetadataError
from flannel_alivpc.core.retry import RetryPolicy

ENDPOINT_ENV = "ALIYUN_API_ENDPOINT"


@dataclass(frozen=True)
class CloudConfig:
    region: str | None = None
    api_endpoint: str | None = None
    metadata_url: str = DEFAULT_METADATA_URL
    ram_role: str | None = None
    """RAM role to use when the environment has no access key; ``None``: the one attached."""
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    metadata_timeout: float = 2.0
    retry: RetryPolicy = DEFAULT_RETRY
    ram_refresh_margin: float = 900.0
    """Refresh RAM role credentials when less than max(this, a quarter of their lifetime) remains."""
    access_key: StaticCredentials | None = field(default=None, repr=False)
    """A key from the network config (flannel's old ali-vpc Backend keys); wins over the environment, as there."""


@dataclass(frozen=True)
class Cloud:
    metadata: MetadataClient
    vpc: VpcClient
    ecs: EcsClient
    api: AliyunApi
    quotas: QuotaCenterClient
    """Quota Center reads; the region to ask about is ``api.region``."""


def build_cloud(config: CloudConfig, env: Mapping[str, str] = os.environ) -> Cloud:
    """The clients for ``config``; raises ``ConfigError`` when something needed is missing.

    Contacts the metadata service only when the region is not configured;
    credentials are fetched lazily, on the first API call.
    """
    metadata = MetadataClient(config.metadata_url, timeout=config.metadata_timeout)
    region = config.region
    if not region:
        try:
            region = metadata.region_id()
        except MetadataError as error:
            raise ConfigError(f"no --region given and the metadata service could not tell it: {error}") from None
    credentials: CredentialProvider | None = config.access_key or credentials_from_env(env)
    if credentials is None:
        credentials = RamRoleCredentials(metadata, config.ram_role, min_refresh_margin=config.ram_refresh_margin)
    endpoint = config.api_endpoint or env.get(ENDPOINT_ENV) or None
    api = AliyunApi(region, endpoint, credentials, connect_timeout=config.connect_timeout,
                    read_timeout=config.read_timeout, retry=config.retry)
    return Cloud(metadata=metadata, vpc=VpcClient(api), ecs=EcsClient(api), api=api, quotas=QuotaCenterClient(api))
