"""Typed VPC API calls: VPCs, vSwitches, route tables and route entries.

Every list method follows the API's pagination to the end. Batch methods split
their input into calls of at most ``BATCH_LIMIT`` items (the API's limit).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from flannel_alivpc.core.cloud import (
    ApiCaller,
    BatchFailure,
    BatchResult,
    RouteEntry,
    RouteSpec,
    RouteTable,
    Vpc,
    VSwitch,
)
from flannel_alivpc.core.errors import CloudError, NotFoundCloudError

BATCH_LIMIT = 50
ENTRY_PAGE = 100
TABLE_PAGE = 50
DESTINATION_FILTER_LIMIT = 50


def _items(container: Any, key: str) -> list[Any]:
    """``container[key]`` of a list wrapper such as ``{"VSwitch": [...]}``; ``[]`` when absent."""
    if not isinstance(container, dict):
        return []
    value = container.get(key)
    return value if isinstance(value, list) else []


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    return "" if value is None else str(value)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _route_entry(data: dict[str, Any], table_id: str) -> RouteEntry:
    hops = _items(data.get("NextHops"), "NextHop")
    hop = hops[0] if hops and isinstance(hops[0], dict) else {}
    return RouteEntry(
        table_id=_str(data, "RouteTableId") or table_id,
        entry_id=_str(data, "RouteEntryId"),
        destination=_str(data, "DestinationCidrBlock"),
        entry_type=_str(data, "Type"),
        status=_str(data, "Status"),
        next_hop_type=_str(hop, "NextHopType") or _str(data, "NextHopType"),
        next_hop_id=_str(hop, "NextHopId") or _str(data, "InstanceId"),
        name=_str(data, "RouteEntryName"),
        description=_str(data, "Description"),
    )


def _failures(answer: dict[str, Any]) -> list[BatchFailure]:
    failed = answer.get("FailedRouteEntries")
    if isinstance(failed, dict):  # tolerate the wrapper shape of older answers
        failed = next(iter(failed.values()), [])
    return [
        BatchFailure(destination=_str(item, "DstCidrBlock"), next_hop_id=_str(item, "NextHop"),
                     entry_id=_str(item, "RouteEntryId"), code=_str(item, "FailedCode"),
                     message=_str(item, "FailedMessage"))
        for item in (failed if isinstance(failed, list) else []) if isinstance(item, dict)
    ]


def _id_list(answer: dict[str, Any], key: str) -> list[str]:
    value = answer.get(key)
    if isinstance(value, dict):
        value = next(iter(value.values()), [])
    return [str(v) for v in value] if isinstance(value, list) else []


def _is_gone(code: str) -> bool:
    return code.endswith("NotFound")


class VpcClient:
    """VPC 2016-04-28 actions over an ``ApiCaller`` (``clients.aliyun_sdk.AliyunApi``)."""

    def __init__(self, api: ApiCaller) -> None:
        self.api = api

    # -- reads ---------------------------------------------------------------------

    def describe_vpc(self, vpc_id: str) -> Vpc:
        """The VPC; ``NotFoundCloudError`` when there is none with this id in the region."""
        answer = self.api.call("vpc", "DescribeVpcs", {"VpcId": vpc_id, "PageSize": 50})
        for item in _items(answer.get("Vpcs"), "Vpc"):
            if item.get("VpcId") == vpc_id:
                return Vpc(
                    vpc_id=vpc_id,
                    cidr=_str(item, "CidrBlock"),
                    vrouter_id=_str(item, "VRouterId"),
                    # The inner key repeats the outer name here: {"RouterTableIds": {"RouterTableIds": [...]}}.
                    route_table_ids=tuple(_id_list(item, "RouterTableIds")),
                    vswitch_ids=tuple(_id_list(item, "VSwitchIds")),
                )
        raise NotFoundCloudError(f"VPC {vpc_id} does not exist in this region", code="InvalidVpcId.NotFound",
                                 action="DescribeVpcs", request_id=_str(answer, "RequestId"))

    def _paged(self, action: str, params: dict[str, object], wrapper: str, key: str) -> Iterator[dict[str, Any]]:
        """Every item of a PageNumber/PageSize listing, page after page."""
        number = 1
        seen = 0
        while True:
            answer = self.api.call("vpc", action, {**params, "PageNumber": number, "PageSize": TABLE_PAGE})
            items = [i for i in _items(answer.get(wrapper), key) if isinstance(i, dict)]
            yield from items
            seen += len(items)
            if not items or seen >= int(answer.get("TotalCount") or 0):
                return
            number += 1

    def list_vswitches(self, vpc_id: str) -> list[VSwitch]:
        result = []
        for item in self._paged("DescribeVSwitches", {"VpcId": vpc_id}, "VSwitches", "VSwitch"):
            table = item.get("RouteTable")
            result.append(VSwitch(
                vswitch_id=_str(item, "VSwitchId"), vpc_id=_str(item, "VpcId"), cidr=_str(item, "CidrBlock"),
                zone=_str(item, "ZoneId"),
                route_table_id=_str(table, "RouteTableId") if isinstance(table, dict) else "",
            ))
        return result

    def list_route_tables(self, vpc_id: str) -> list[RouteTable]:
        """Every route table of the VPC (DescribeRouteTableList, all pages)."""
        result = []
        for item in self._paged("DescribeRouteTableList", {"VpcId": vpc_id}, "RouterTableList",
                                "RouterTableListType"):
            result.append(RouteTable(
                table_id=_str(item, "RouteTableId"), vpc_id=_str(item, "VpcId"),
                vrouter_id=_str(item, "RouterId"), table_type=_str(item, "RouteTableType"),
                vswitch_ids=tuple(_id_list(item, "VSwitchIds")),
            ))
        return result

    def list_route_entries(self, table_id: str, *, entry_type: str | None = None,
                           destinations: Sequence[str] | None = None) -> list[RouteEntry]:
        """Every entry of the table (DescribeRouteEntryList, all pages).

        ``entry_type`` keeps only ``Custom`` (or ``System``, ...) entries;
        ``destinations`` only the entries for these CIDRs (an empty sequence
        matches nothing).
        """
        if destinations is None:
            return self._list_entries(table_id, entry_type, None)
        result: list[RouteEntry] = []
        for chunk in _chunks(list(dict.fromkeys(destinations)), DESTINATION_FILTER_LIMIT):
            result.extend(self._list_entries(table_id, entry_type, chunk))
        return result

    def _list_entries(self, table_id: str, entry_type: str | None,
                      destinations: Sequence[str] | None) -> list[RouteEntry]:
        result: list[RouteEntry] = []
        token = ""
        while True:
            params: dict[str, object] = {"RouteTableId": table_id, "MaxResult": ENTRY_PAGE}
            if entry_type:
                params["RouteEntryType"] = entry_type
            if destinations:
                params["DestCidrBlockList"] = list(destinations)
            if token:
                params["NextToken"] = token
            answer = self.api.call("vpc", "DescribeRouteEntryList", params)
            result.extend(_route_entry(item, table_id) for item in _items(answer.get("RouteEntrys"), "RouteEntry")
                          if isinstance(item, dict))
            next_token = _str(answer, "NextToken")
            if not next_token or next_token == token:
                return result
            token = next_token

    # -- writes --------------------------------------------------------------------

    def create_route_entry(self, table_id: str, spec: RouteSpec) -> str:
        """Create one entry; returns its id (empty if the API did not say)."""
        params: dict[str, object] = {
            "RouteTableId": table_id,
            "DestinationCidrBlock": spec.destination,
            "NextHopType": spec.next_hop_type,
            "NextHopId": spec.next_hop_id,
        }
        if spec.name:
            params["RouteEntryName"] = spec.name
        if spec.description:
            params["Description"] = spec.description
        answer = self.api.call("vpc", "CreateRouteEntry", params)
        return _str(answer, "RouteEntryId")

    def delete_route_entry(self, table_id: str, entry: RouteEntry | str) -> bool:
        """Delete one entry by id.

        An entry that does not exist (any ``*NotFound`` answer, e.g.
        ``InvalidRouteEntry.NotFound``) counts as deleted: the call returns
        ``False`` instead of raising, ``True`` when the API accepted the delete.
        """
        entry_id = entry.entry_id if isinstance(entry, RouteEntry) else entry
        try:
            self.api.call("vpc", "DeleteRouteEntry", {"RouteTableId": table_id, "RouteEntryId": entry_id})
        except NotFoundCloudError:
            return False
        return True

    def modify_route_entry(self, table_id: str, entry: RouteEntry, *, name: str, description: str) -> None:
        """Rename an entry and set its description in place (ModifyRouteEntry); its next hop is unchanged."""
        self.api.call("vpc", "ModifyRouteEntry", {"RouteTableId": table_id, "RouteEntryId": entry.entry_id,
                                                  "RouteEntryName": name, "Description": description})

    def create_route_entries(self, table_id: str, specs: Sequence[RouteSpec]) -> BatchResult:
        """Create entries with CreateRouteEntries, at most ``BATCH_LIMIT`` per call.

        Items the API refuses are returned as failures, the rest are created.
        If a call fails as a whole, the error is raised when nothing was created
        yet; after an earlier call went through, the items of that call and of
        the ones not tried are returned as failures with the error's code instead,
        so the caller still learns what was created.
        """
        items: list[dict[str, object]] = [
            {"RouteTableId": table_id, "DstCidrBlock": s.destination, "NextHop": s.next_hop_id,
             "NextHopType": s.next_hop_type, "Name": s.name or None, "Description": s.description or None}
            for s in specs
        ]
        return self._batch("CreateRouteEntries", items)

    def delete_route_entries(self, table_id: str, entries: Sequence[RouteEntry | str]) -> BatchResult:
        """Delete entries by id with DeleteRouteEntries, at most ``BATCH_LIMIT`` per call.

        As with ``delete_route_entry``, an entry that no longer exists counts as
        deleted (it is not reported as a failure). Whole-call failures are
        handled as in ``create_route_entries``.
        """
        items: list[dict[str, object]] = []
        for entry in entries:
            if isinstance(entry, RouteEntry):
                items.append({"RouteTableId": table_id, "RouteEntryId": entry.entry_id,
                              "DstCidrBlock": entry.destination or None})
            else:
                items.append({"RouteTableId": table_id, "RouteEntryId": entry})
        result = self._batch("DeleteRouteEntries", items)
        gone = [f for f in result.failures if _is_gone(f.code)]
        if not gone:
            return result
        return BatchResult(succeeded=result.succeeded + len(gone), created_ids=result.created_ids,
                           failures=tuple(f for f in result.failures if not _is_gone(f.code)))

    def _batch(self, action: str, items: list[dict[str, object]]) -> BatchResult:
        succeeded = 0
        created: list[str] = []
        failures: list[BatchFailure] = []
        chunks = list(_chunks(items, BATCH_LIMIT))
        for index, chunk in enumerate(chunks):
            try:
                answer = self.api.call("vpc", action, {"RouteEntries": list(chunk)})
            except CloudError as error:
                if index == 0:
                    raise
                for rest in chunks[index:]:
                    failures.extend(
                        BatchFailure(destination=str(item.get("DstCidrBlock") or ""),
                                     next_hop_id=str(item.get("NextHop") or ""),
                                     entry_id=str(item.get("RouteEntryId") or ""),
                                     code=error.code or type(error).__name__, message=str(error))
                        for item in rest
                    )
                break
            chunk_failures = _failures(answer)
            failures.extend(chunk_failures)
            count = answer.get("SuccessCount")
            succeeded += int(count) if count is not None else len(chunk) - len(chunk_failures)
            created.extend(_id_list(answer, "RouteEntryIds"))
        return BatchResult(succeeded=succeeded, created_ids=tuple(created), failures=tuple(failures))
