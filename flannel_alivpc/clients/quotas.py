"""Typed Quota Center (API 2020-05-10) calls: the route-entry quota of a VPC route table.

The VPC API has no quota read; the Quota Center holds it as the VPC quota
``vpc_quota_route_entrys_num`` ("the maximum number of custom route entries in
each route table", 200 by default, raised in the Quota Center), one value per
region. Quota Center has one central endpoint (``quotas.aliyuncs.com``) for
every region, so the region is a parameter of the read, not of the endpoint.
RAM action: ``quotas:GetProductQuota``.
"""

from __future__ import annotations

import math
from typing import Any

from flannel_alivpc.core.cloud import ApiCaller
from flannel_alivpc.core.errors import PermanentCloudError

ROUTE_ENTRY_QUOTA = "vpc_quota_route_entrys_num"
"""The Quota Center's code (``QuotaActionCode``) of the custom route entries a route table may hold."""


def _whole_number(value: Any, what: str, request_id: str) -> int:
    """``value`` as a non-negative whole number, else a ``PermanentCloudError`` naming ``what`` and the value."""
    # bool is an int in Python, but not a number in JSON.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        shown = "missing" if value is None else f"{value!r} ({type(value).__name__}), not a number"
        raise PermanentCloudError(f"the Quota Center answered without a usable {what}: it is {shown}",
                                  code="InvalidResponse", action="GetProductQuota", request_id=request_id)
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise PermanentCloudError(f"the Quota Center answered {what} {value!r}: not a non-negative whole number",
                                  code="InvalidResponse", action="GetProductQuota", request_id=request_id)
    return int(value)


class QuotaCenterClient:
    """Quota Center 2020-05-10 reads over an ``ApiCaller`` (``clients.aliyun_sdk.AliyunApi``)."""

    def __init__(self, api: ApiCaller) -> None:
        self.api = api

    def route_entry_quota(self, region: str) -> int:
        """The custom route entries each route table of ``region`` may hold (``TotalQuota``).

        Raises ``PermanentCloudError`` (code ``InvalidResponse``) when the answer
        carries no quota object, a quota for another code, or a ``TotalQuota``
        that is missing, not a number or not a whole non-negative number; the
        API's own refusals come as the usual ``CloudError`` classes.
        """
        answer = self.api.call("quotas", "GetProductQuota", {
            "ProductCode": "vpc",
            "QuotaActionCode": ROUTE_ENTRY_QUOTA,
            "Dimensions": [{"Key": "regionId", "Value": region}],
        })
        request_id = str(answer.get("RequestId") or "")
        quota = answer.get("Quota")
        if not isinstance(quota, dict):
            raise PermanentCloudError(f"the Quota Center answered without a Quota object for {ROUTE_ENTRY_QUOTA} "
                                      f"in {region}", code="InvalidResponse", action="GetProductQuota",
                                      request_id=request_id)
        code = quota.get("QuotaActionCode")
        if code is not None and code != ROUTE_ENTRY_QUOTA:
            raise PermanentCloudError(f"the Quota Center answered for quota {code!r} instead of {ROUTE_ENTRY_QUOTA}",
                                      code="InvalidResponse", action="GetProductQuota", request_id=request_id)
        return _whole_number(quota.get("TotalQuota"), "Quota.TotalQuota", request_id)
