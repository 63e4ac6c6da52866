"""Typed SLB (Classic Load Balancer, API 2014-05-15) calls over an ``ApiCaller``.

The SLB controller's one boundary to the load balancers: every call it makes
is a method here, taking and returning ``core.loadbalancer`` values. It knows
the API's quirks so that callers do not:

* listener attributes go in and come out under their ``Describe*`` names; the
  request names differ by protocol and action (TCP/UDP take ``HealthCheckSwitch``
  for ``HealthCheck``, and their *create* actions spell the interval
  ``healthCheckInterval``);
* tag filters and backend server lists are JSON strings;
* backend servers are added and removed 20 per call (the API's limit);
* listener lists are paged with ``NextToken``;
* values are normalised to strings for comparison (``3`` and ``"3"`` agree).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from flannel_alivpc.core.cloud import ApiCaller
from flannel_alivpc.core.errors import NotFoundCloudError
from flannel_alivpc.core.loadbalancer import BackendServer, ListenerInfo, LoadBalancerInfo

BACKEND_BATCH = 20
LISTENER_PAGE = 100
LB_PAGE = 100
PROTOCOLS = ("tcp", "udp", "http", "https")

# Keys of DescribeLoadBalancerListeners rows that are not listener attributes.
_ROW_KEYS = {"LoadBalancerId", "ListenerPort", "ListenerProtocol", "BackendServerPort", "Status", "AclIds",
             "Tags", "VServerGroupId"}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def request_names(protocol: str, *, create: bool) -> dict[str, str]:
    """Describe name -> request parameter name, where they differ."""
    if protocol in ("tcp", "udp"):
        names = {"HealthCheck": "HealthCheckSwitch"}
        if create:
            names["HealthCheckInterval"] = "healthCheckInterval"
        return names
    return {}


def _info(data: Mapping[str, Any]) -> LoadBalancerInfo:
    tags_box = data.get("Tags")
    tag_list = tags_box.get("Tag") if isinstance(tags_box, dict) else tags_box
    tags = {str(t.get("TagKey")): _text(t.get("TagValue")) for t in tag_list or () if isinstance(t, dict)}
    try:
        bandwidth = int(data.get("Bandwidth") or 0)
    except (TypeError, ValueError):
        bandwidth = 0
    return LoadBalancerInfo(
        load_balancer_id=str(data.get("LoadBalancerId") or ""), name=_text(data.get("LoadBalancerName")),
        address=_text(data.get("Address")), address_type=_text(data.get("AddressType")),
        network_type=_text(data.get("NetworkType")), vpc_id=_text(data.get("VpcId")),
        vswitch_id=_text(data.get("VSwitchId")), internet_charge_type=_text(data.get("InternetChargeType")),
        bandwidth=bandwidth, spec=_text(data.get("LoadBalancerSpec")), status=_text(data.get("LoadBalancerStatus")),
        delete_protection=_text(data.get("DeleteProtection")) or "off", tags=tags,
    )


def _listener(row: Mapping[str, Any]) -> ListenerInfo:
    protocol = str(row.get("ListenerProtocol") or "").lower()
    attributes = {k: _text(v) for k, v in row.items() if k not in _ROW_KEYS and not isinstance(v, (dict, list))}
    config = row.get(f"{protocol.upper()}ListenerConfig")
    if isinstance(config, dict):
        attributes.update({k: _text(v) for k, v in config.items()
                           if k not in _ROW_KEYS and not isinstance(v, (dict, list))})
    if "HealthCheckSwitch" in attributes and "HealthCheck" not in attributes:
        attributes["HealthCheck"] = attributes["HealthCheckSwitch"]
    return ListenerInfo(port=int(row.get("ListenerPort") or 0), protocol=protocol,
                        backend_port=int(row.get("BackendServerPort") or 0), status=_text(row.get("Status")),
                        attributes=attributes)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class SlbClient:
    """SLB actions in one region over ``api`` (``clients.aliyun_sdk.AliyunApi``)."""

    def __init__(self, api: ApiCaller, region: str) -> None:
        self.api = api
        self.region = region

    def __repr__(self) -> str:
        return f"SlbClient(region={self.region!r})"

    def _call(self, action: str, params: Mapping[str, object]) -> dict[str, Any]:
        return self.api.call("slb", action, {"RegionId": self.region, **params})

    # -- load balancers ------------------------------------------------------------------------

    def find(self, *, tags: Mapping[str, str] | None = None, load_balancer_id: str | None = None,
             name: str | None = None) -> list[LoadBalancerInfo]:
        """Load balancers matching every filter given (all pages)."""
        params: dict[str, object] = {"PageSize": LB_PAGE}
        if tags:
            params["Tags"] = json.dumps([{"TagKey": k, "TagValue": v} for k, v in tags.items()])
        if load_balancer_id:
            params["LoadBalancerId"] = load_balancer_id
        if name:
            params["LoadBalancerName"] = name
        found: list[LoadBalancerInfo] = []
        number = 1
        while True:
            answer = self._call("DescribeLoadBalancers", {**params, "PageNumber": number})
            box = answer.get("LoadBalancers")
            rows = box.get("LoadBalancer") if isinstance(box, dict) else None
            page = [_info(row) for row in rows or () if isinstance(row, dict)]
            found.extend(page)
            if not page or len(found) >= int(answer.get("TotalCount") or 0):
                return found
            number += 1

    def describe(self, load_balancer_id: str) -> tuple[LoadBalancerInfo, tuple[BackendServer, ...]] | None:
        """Attributes and backend servers of one load balancer; ``None`` if it does not exist."""
        try:
            answer = self._call("DescribeLoadBalancerAttribute", {"LoadBalancerId": load_balancer_id})
        except NotFoundCloudError:
            return None
        box = answer.get("BackendServers")
        rows = box.get("BackendServer") if isinstance(box, dict) else None
        backends = tuple(
            BackendServer(server_id=str(row.get("ServerId") or ""), weight=int(row.get("Weight") or 0),
                          description=_text(row.get("Description")))
            for row in rows or () if isinstance(row, dict))
        return _info(answer), backends

    def listeners(self, load_balancer_id: str) -> list[ListenerInfo]:
        found: list[ListenerInfo] = []
        token = ""
        while True:
            params: dict[str, object] = {"LoadBalancerId": [load_balancer_id], "MaxResults": LISTENER_PAGE}
            if token:
                params["NextToken"] = token
            answer = self._call("DescribeLoadBalancerListeners", params)
            rows = answer.get("Listeners")
            found.extend(_listener(row) for row in rows or () if isinstance(row, dict))
            token = _text(answer.get("NextToken"))
            if not token:
                return found

    def create(self, *, name: str, client_token: str, tags: Mapping[str, str], address_type: str,
               charge_type: str | None, bandwidth: int | None, spec: str | None, vswitch_id: str | None,
               vpc_id: str | None = None) -> LoadBalancerInfo:
        """Create a load balancer; the same ``client_token`` returns the same one again."""
        params: dict[str, object] = {
            "LoadBalancerName": name, "ClientToken": client_token, "AddressType": address_type,
            "InternetChargeType": charge_type, "Bandwidth": bandwidth, "LoadBalancerSpec": spec,
            "VSwitchId": vswitch_id, "VpcId": vpc_id,
            "Tag": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        answer = self._call("CreateLoadBalancer", params)
        return LoadBalancerInfo(
            load_balancer_id=str(answer.get("LoadBalancerId") or ""), name=name,
            address=_text(answer.get("Address")), address_type=address_type,
            network_type=_text(answer.get("NetworkType")), vpc_id=_text(answer.get("VpcId")),
            vswitch_id=_text(answer.get("VSwitchId")), internet_charge_type=charge_type or "",
            bandwidth=bandwidth or 0, spec=spec or "", status="active", tags=dict(tags))

    def delete(self, load_balancer_id: str) -> None:
        """Delete; a load balancer that is already gone is success."""
        with contextlib.suppress(NotFoundCloudError):
            self._call("DeleteLoadBalancer", {"LoadBalancerId": load_balancer_id})

    def set_delete_protection(self, load_balancer_id: str, on: bool) -> None:
        self._call("SetLoadBalancerDeleteProtection",
                   {"LoadBalancerId": load_balancer_id, "DeleteProtection": "on" if on else "off"})

    def modify_internet_spec(self, load_balancer_id: str, *, charge_type: str, bandwidth: int | None) -> None:
        self._call("ModifyLoadBalancerInternetSpec", {"LoadBalancerId": load_balancer_id,
                                                      "InternetChargeType": charge_type, "Bandwidth": bandwidth})

    def modify_spec(self, load_balancer_id: str, spec: str) -> None:
        self._call("ModifyLoadBalancerInstanceSpec", {"LoadBalancerId": load_balancer_id, "LoadBalancerSpec": spec})

    # -- listeners -------------------------------------------------------------------------------

    def _listener_params(self, protocol: str, attributes: Mapping[str, str], *, create: bool) -> dict[str, object]:
        names = request_names(protocol, create=create)
        return {names.get(k, k): v for k, v in attributes.items()}

    def create_listener(self, load_balancer_id: str, *, protocol: str, port: int, backend_port: int,
                        attributes: Mapping[str, str]) -> None:
        params = {"LoadBalancerId": load_balancer_id, "ListenerPort": port, "BackendServerPort": backend_port,
                  **self._listener_params(protocol, attributes, create=True)}
        self._call(f"CreateLoadBalancer{protocol.upper()}Listener", params)

    def set_listener(self, load_balancer_id: str, *, protocol: str, port: int,
                     attributes: Mapping[str, str]) -> None:
        params = {"LoadBalancerId": load_balancer_id, "ListenerPort": port,
                  **self._listener_params(protocol, attributes, create=False)}
        self._call(f"SetLoadBalancer{protocol.upper()}ListenerAttribute", params)

    def start_listener(self, load_balancer_id: str, *, port: int, protocol: str) -> None:
        self._call("StartLoadBalancerListener", {"LoadBalancerId": load_balancer_id, "ListenerPort": port,
                                                 "ListenerProtocol": protocol})

    def delete_listener(self, load_balancer_id: str, *, port: int, protocol: str) -> None:
        """Delete; a listener that is already gone is success."""
        with contextlib.suppress(NotFoundCloudError):
            self._call("DeleteLoadBalancerListener", {"LoadBalancerId": load_balancer_id, "ListenerPort": port,
                                                      "ListenerProtocol": protocol})

    # -- backend servers ------------------------------------------------------------------------

    @staticmethod
    def _servers(servers: Sequence[BackendServer]) -> str:
        return json.dumps([{"ServerId": s.server_id, "Weight": s.weight, "Type": "ecs",
                            "Description": s.description} for s in servers])

    def add_backends(self, load_balancer_id: str, servers: Sequence[BackendServer]) -> None:
        for chunk in _chunks(servers, BACKEND_BATCH):
            self._call("AddBackendServers",
                       {"LoadBalancerId": load_balancer_id, "BackendServers": self._servers(chunk)})

    def set_backend_weights(self, load_balancer_id: str, servers: Sequence[BackendServer]) -> None:
        for chunk in _chunks(servers, BACKEND_BATCH):
            self._call("SetBackendServers",
                       {"LoadBalancerId": load_balancer_id, "BackendServers": self._servers(chunk)})

    def remove_backends(self, load_balancer_id: str, server_ids: Sequence[str]) -> None:
        for chunk in _chunks(list(server_ids), BACKEND_BATCH):
            body = json.dumps([{"ServerId": s, "Type": "ecs"} for s in chunk])
            self._call("RemoveBackendServers", {"LoadBalancerId": load_balancer_id, "BackendServers": body})
