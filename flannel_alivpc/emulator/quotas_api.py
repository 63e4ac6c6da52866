"""Quota Center API 2020-05-10: ``GetProductQuota`` for the one quota the project reads.

The quota is VPC's ``vpc_quota_route_entrys_num``, "the maximum number of custom
route entries in each route table", with the dimension ``regionId``. Its value
is the emulator's ``settings.route_quota`` (the same number ``CreateRouteEntry``
enforces; ``PATCH /_emulator/settings`` changes both), answered as the float
``TotalQuota`` the API documents.

Refusals (the exact codes the real Quota Center uses for these cases are not
documented; these follow the usual ``Invalid<Name>.NotFound`` pattern):

* an unknown ``ProductCode``: 404 ``InvalidProductCode.NotFound``;
* an unknown ``QuotaActionCode`` of ``vpc``: 404 ``InvalidQuotaActionCode.NotFound``;
* no ``regionId`` dimension: 400 ``MissingParameter``; another dimension key, or a
  region other than the emulator's (``settings.region``): 400 ``InvalidParameter``.
"""

from __future__ import annotations

from typing import Any

from flannel_alivpc.emulator.errors import ApiError, invalid_parameter, missing_parameter
from flannel_alivpc.emulator.protocol import OWNER_ID, QUOTAS_VERSION, Call, action
from flannel_alivpc.emulator.state import KNOWN_REGIONS

ROUTE_ENTRY_QUOTA = "vpc_quota_route_entrys_num"
# (ProductCode, QuotaActionCode) -> what the answer says about the quota besides its value.
_QUOTAS: dict[tuple[str, str], dict[str, Any]] = {
    ("vpc", ROUTE_ENTRY_QUOTA): {
        "QuotaName": "Maximum number of custom route entries in each route table",
        "QuotaDescription": "The maximum number of custom route entries that can be added to each route table.",
        "QuotaUnit": "Route entries",
        "QuotaCategory": "CommonQuota",
        "QuotaType": "normal",
        "Adjustable": True,
        "Consumable": False,
        "GlobalQuota": False,
        "ApplicableType": "continuous",
        "UnadjustableDetail": "",
    },
}
_PRODUCTS = {product for product, _ in _QUOTAS}


def _region_dimension(call: Call) -> str:
    """The ``regionId`` of ``Dimensions.N.Key``/``Dimensions.N.Value``; it must be the emulator's region."""
    region = ""
    for n, item in enumerate(call.params.repeat_list("Dimensions"), start=1):
        key = item.get("Key", "")
        if key != "regionId":
            raise invalid_parameter(f"Dimensions.{n}.Key",
                                    f"{key!r}: the quota {ROUTE_ENTRY_QUOTA} has the dimension regionId only.")
        region = item.get("Value", "")
        if not region:
            raise missing_parameter(f"Dimensions.{n}.Value")
    if not region:
        raise missing_parameter("Dimensions")
    ours = call.state.settings.region
    if region != ours:
        what = "not the emulator's region" if region in KNOWN_REGIONS else "not a known region"
        raise invalid_parameter("Dimensions", f"regionId {region!r} is {what}: it serves the quotas of {ours} only.")
    return region


@action(QUOTAS_VERSION, "GetProductQuota")
def get_product_quota(call: Call) -> dict[str, Any]:
    product = call.params.required("ProductCode")
    code = call.params.required("QuotaActionCode")
    if product not in _PRODUCTS:
        raise ApiError(404, "InvalidProductCode.NotFound", f"The specified ProductCode {product!r} is not found.")
    described = _QUOTAS.get((product, code))
    if described is None:
        raise ApiError(404, "InvalidQuotaActionCode.NotFound",
                       f"The specified QuotaActionCode {code!r} is not found for product {product}.")
    region = _region_dimension(call)
    return {"Quota": {
        "ProductCode": product,
        "QuotaActionCode": code,
        **described,
        "TotalQuota": float(call.state.settings.route_quota),
        "Dimensions": {"regionId": region},
        "QuotaArn": f"acs:quotas:{region}:{OWNER_ID}:quota/{product}/{code}",
    }}
