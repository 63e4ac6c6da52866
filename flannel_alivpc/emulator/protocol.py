"""Request parameters and the action registry shared by the product modules.

Parameters arrive as strings (the SDK passes every value through ``str()``,
so booleans are ``True``/``False``), lists either as JSON strings or as
``Name.N.Field`` repeat lists numbered from 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flannel_alivpc.emulator.errors import ApiError, invalid_parameter, missing_parameter
from flannel_alivpc.emulator.state import KNOWN_REGIONS, CloudState

VPC_VERSION = "2016-04-28"
ECS_VERSION = "2014-05-26"
SLB_VERSION = "2014-05-15"
QUOTAS_VERSION = "2020-05-10"
# The emulated account, as answers name it in OwnerId (the metadata's owner-account-id).
OWNER_ID = 1234567890123456


@dataclass
class Params:
    values: dict[str, str]
    region: str

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def required(self, name: str) -> str:
        value = self.values.get(name, "")
        if value == "":
            raise missing_parameter(name)
        return value

    def integer(self, name: str, default: int, *, low: int | None = None, high: int | None = None) -> int:
        raw = self.values.get(name, "")
        if raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise invalid_parameter(name, f"{raw!r} is not an integer.") from None
        if low is not None and value < low:
            raise invalid_parameter(name, f"{value} is below {low}.")
        if high is not None and value > high:
            raise invalid_parameter(name, f"{value} is above {high}.")
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        raw = self.values.get(name, "")
        if raw == "":
            return default
        if raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0"):
            return False
        raise invalid_parameter(name, f"{raw!r} is not a boolean.")

    def json_value(self, name: str) -> Any:
        raw = self.values.get(name, "")
        if raw == "":
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise invalid_parameter(name, "It must be a JSON string.") from None

    def repeat_list(self, name: str) -> list[dict[str, str]]:
        """``Name.N.Field`` keys as a list of dicts ordered by N."""
        pattern = re.compile(re.escape(name) + r"\.(\d+)\.(.+)$")
        items: dict[int, dict[str, str]] = {}
        for key, value in self.values.items():
            match = pattern.match(key)
            if match:
                items.setdefault(int(match.group(1)), {})[match.group(2)] = value
        return [items[n] for n in sorted(items)]

    def repeat_values(self, name: str) -> list[str]:
        """``Name.N`` keys as a list ordered by N."""
        pattern = re.compile(re.escape(name) + r"\.(\d+)$")
        items = {int(m.group(1)): v for k, v in self.values.items() if (m := pattern.match(k))}
        return [items[n] for n in sorted(items)]


@dataclass
class Call:
    """One authenticated API call, as a handler sees it."""

    state: CloudState
    params: Params
    now: float
    action: str
    version: str


Handler = Callable[[Call], dict[str, Any]]
# (Version, Action) -> handler. Filled by the product modules at import time.
ACTIONS: dict[tuple[str, str], Handler] = {}
# Resource kinds other products keep in CloudState.extensions, with the class
# whose ``from_json`` rebuilds one item from the state file.
EXTENSION_TYPES: dict[str, Any] = {}
# Actions that change state: the server saves the state file after them.
MUTATING: set[str] = set()


def action(version: str, name: str, *, mutating: bool = False) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ACTIONS[(version, name)] = handler
        if mutating:
            MUTATING.add(name)
        return handler

    return register


def page(
    params: Params, items: Sequence[Any], *, default_size: int = 10, max_size: int = 50
) -> tuple[list[Any], dict[str, int]]:
    """PageNumber/PageSize pagination: the slice and the envelope fields."""
    number = params.integer("PageNumber", 1, low=1)
    size = params.integer("PageSize", default_size, low=1, high=max_size)
    start = (number - 1) * size
    return list(items[start:start + size]), {"TotalCount": len(items), "PageNumber": number, "PageSize": size}


def check_region(call: Call) -> None:
    region = call.params.region
    if region and region not in KNOWN_REGIONS and region != call.state.settings.region:
        raise ApiError(404, "InvalidRegionId.NotFound", "The specified RegionId does not exist.")
