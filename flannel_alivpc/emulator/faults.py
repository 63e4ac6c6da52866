"""Injected faults per API action, and request counters per action and outcome.

A fault rule applies to one action name, or to every action with ``"*"``. The
rule for the exact action wins over ``"*"``. Rule fields (all optional)::

    {"throttle": {"rate": 5, "burst": 5},      # token bucket -> 400 Throttling.User
     "error": {"code": "ServiceUnavailable",     # injected error
               "status": 503, "message": "...",
               "count": 3,                       # the next 3 requests, or
               "probability": 0.2},              # each request with this chance
     "latency": 0.25,                            # seconds added before answering
     "drop": {"count": 1, "probability": 0.0}}   # close the connection, no answer
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from flannel_alivpc.emulator.errors import INTERNAL_ERROR, SERVICE_UNAVAILABLE, THROTTLED, ApiError

_DEFAULT_MESSAGES = {
    INTERNAL_ERROR[0]: INTERNAL_ERROR[1],
    SERVICE_UNAVAILABLE[0]: SERVICE_UNAVAILABLE[1],
    THROTTLED[0]: THROTTLED[1],
    "Throttling": THROTTLED[1],
    "TaskConflict": "The operation is too frequent, please wait a moment and try again.",
    "IncorrectRouteEntryStatus": "Some route entry status blocked this operation.",
    "OperationConflict": "Request was denied due to conflict with a previous request.",
    "Forbidden.RAM": "User not authorized to operate on the specified resource.",
}


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = field(default_factory=time.monotonic)

    def take(self) -> bool:
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens = self.burst
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class FaultRule:
    bucket: TokenBucket | None = None
    error: dict[str, Any] | None = None
    error_left: int | None = None
    latency: float = 0.0
    drop_left: int | None = None
    drop_probability: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> FaultRule:
        """Build a rule; a ``ValueError`` names the field that is wrong."""
        if not isinstance(raw, dict):
            raise ValueError(f"a fault rule must be a JSON object, got {raw!r}")
        unknown = set(raw) - {"throttle", "error", "latency", "drop"}
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}; use throttle, error, latency, drop")
        rule = cls(raw=raw)
        if "throttle" in raw:
            throttle = _object(raw, "throttle")
            rate = _number(throttle, "rate", "throttle.rate", required=True)
            rule.bucket = TokenBucket(rate=rate, burst=_number(throttle, "burst", "throttle.burst", max(rate, 1)))
        if "error" in raw:
            error = dict(_object(raw, "error"))
            error.setdefault("code", SERVICE_UNAVAILABLE[0])
            error["status"] = int(_number(error, "status", "error.status", 503))
            if not 400 <= error["status"] <= 599:
                raise ValueError("error.status: must be an HTTP error status (400..599)")
            error.setdefault("message", _DEFAULT_MESSAGES.get(error["code"], "Injected fault."))
            error["probability"] = _number(error, "probability", "error.probability", 1.0)
            rule.error = error
            rule.error_left = int(_number(error, "count", "error.count")) if "count" in error else None
        rule.latency = _number(raw, "latency", "latency", 0.0)
        if "drop" in raw:
            drop = _object(raw, "drop")
            rule.drop_left = int(_number(drop, "count", "drop.count")) if "count" in drop else None
            rule.drop_probability = _number(drop, "probability", "drop.probability",
                                            1.0 if "count" not in drop else 0.0)
        return rule


def _object(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw[name]
    if not isinstance(value, dict):
        raise ValueError(f"{name}: must be a JSON object, got {value!r}")
    return value


def _number(raw: dict[str, Any], key: str, name: str, default: float = 0.0, *, required: bool = False) -> float:
    if key not in raw:
        if required:
            raise ValueError(f"{name}: missing")
        return default
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name}: must be a non-negative number, got {value!r}")
    return float(value)


class DropConnection(Exception):
    """The server closes the connection without answering."""


class FaultInjector:
    """Applies fault rules and counts every request's outcome."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, FaultRule] = {}
        self._counters: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._rng = rng or random.Random()

    def set_rules(self, rules: dict[str, dict[str, Any]], *, replace: bool = False) -> None:
        parsed = {action: FaultRule.parse(raw) for action, raw in rules.items()}
        with self._lock:
            if replace:
                self._rules = {}
            self._rules.update(parsed)

    def clear(self) -> None:
        with self._lock:
            self._rules = {}

    def rules(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {action: rule.raw for action, rule in self._rules.items()}

    def before(self, action: str) -> float:
        """Decide the fate of one request; returns the latency to add.

        Raises ``DropConnection`` or ``ApiError`` when a rule says so.
        """
        with self._lock:
            rule = self._rules.get(action) or self._rules.get("*")
            if rule is None:
                return 0.0
            if rule.drop_left is not None and rule.drop_left > 0:
                rule.drop_left -= 1
                raise DropConnection()
            if rule.drop_left is None and rule.drop_probability and self._rng.random() < rule.drop_probability:
                raise DropConnection()
            if rule.bucket is not None and not rule.bucket.take():
                raise ApiError(400, *THROTTLED)
            if rule.error is not None:
                fire = False
                if rule.error_left is not None:
                    if rule.error_left > 0:
                        rule.error_left -= 1
                        fire = True
                else:
                    fire = self._rng.random() < rule.error["probability"]
                if fire:
                    raise ApiError(rule.error["status"], str(rule.error["code"]), str(rule.error["message"]))
            return rule.latency

    def count(self, action: str, outcome: str) -> None:
        with self._lock:
            self._counters[action][outcome] += 1

    def counters(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {action: dict(outcomes) for action, outcomes in self._counters.items()}

    def reset_counters(self) -> None:
        with self._lock:
            self._counters.clear()
