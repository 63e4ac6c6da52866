"""Typed ECS API calls: DescribeInstances."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from flannel_alivpc.core.cloud import ApiCaller, Instance

PAGE_SIZE = 100
FILTER_LIMIT = 100
"""Most values the API takes in one ``InstanceIds`` or ``PrivateIpAddresses`` filter."""


def _first_ip(container: Any) -> str:
    if isinstance(container, dict):
        addresses = container.get("IpAddress")
        if isinstance(addresses, list) and addresses:
            return str(addresses[0])
    return ""


def _instance(data: dict[str, Any]) -> Instance:
    vpc = data.get("VpcAttributes") if isinstance(data.get("VpcAttributes"), dict) else {}
    assert isinstance(vpc, dict)
    # VPC instances carry their address in VpcAttributes, classic ones in InnerIpAddress.
    private_ip = _first_ip(vpc.get("PrivateIpAddress")) or _first_ip(data.get("InnerIpAddress"))
    return Instance(
        instance_id=str(data.get("InstanceId") or ""),
        hostname=str(data.get("HostName") or data.get("InstanceName") or ""),
        private_ip=private_ip,
        network_type=str(data.get("InstanceNetworkType") or ""),
        vpc_id=str(vpc.get("VpcId") or ""),
        vswitch_id=str(vpc.get("VSwitchId") or ""),
        zone=str(data.get("ZoneId") or ""),
        status=str(data.get("Status") or ""),
    )


def _chunks(values: Sequence[str] | None) -> list[list[str] | None]:
    if values is None:
        return [None]
    unique = list(dict.fromkeys(values))
    return [unique[i:i + FILTER_LIMIT] for i in range(0, len(unique), FILTER_LIMIT)]


class EcsClient:
    """ECS 2014-05-26 actions over an ``ApiCaller`` (``clients.aliyun_sdk.AliyunApi``)."""

    def __init__(self, api: ApiCaller) -> None:
        self.api = api

    def describe_instances(
        self,
        *,
        instance_ids: Sequence[str] | None = None,
        vpc_id: str | None = None,
        private_ips: Sequence[str] | None = None,
    ) -> list[Instance]:
        """Instances of the region matching every filter given, all pages.

        Id and address lists longer than the API's limit of 100 are split into
        several calls. An empty list matches nothing (no call is made). Unknown
        ids are silently absent from the result, as in the API. ``private_ips``
        matches VPC addresses only.
        """
        if (instance_ids is not None and not instance_ids) or (private_ips is not None and not private_ips):
            return []
        found: dict[str, Instance] = {}
        for ids in _chunks(instance_ids):
            for ips in _chunks(private_ips):
                params: dict[str, object] = {}
                if ids is not None:
                    params["InstanceIds"] = json.dumps(ids)
                if ips is not None:
                    params["PrivateIpAddresses"] = json.dumps(ips)
                if vpc_id:
                    params["VpcId"] = vpc_id
                for item in self._paged(params):
                    instance = _instance(item)
                    found[instance.instance_id] = instance
        return list(found.values())

    def _paged(self, params: dict[str, object]) -> Iterator[dict[str, Any]]:
        number = 1
        seen = 0
        while True:
            answer = self.api.call("ecs", "DescribeInstances", {**params, "PageNumber": number, "PageSize": PAGE_SIZE})
            container = answer.get("Instances")
            items = container.get("Instance") if isinstance(container, dict) else None
            page = [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
            yield from page
            seen += len(page)
            if not page or seen >= int(answer.get("TotalCount") or 0):
                return
            number += 1
