"""Capped exponential backoff with jitter, and a small synchronous retry loop.

The delay before retry ``n`` (``n`` = the number of the attempt that just
failed, from 1) is drawn below ``cap = min(max_delay, base_delay * 2 ** (n - 1))``:

* ``full`` jitter: uniform in ``[0, cap]`` -- spreads competing clients best;
* ``equal`` jitter: ``cap / 2`` plus uniform in ``[0, cap / 2]`` -- never
  retries at once, which matters against a throttling gateway.

Randomness and sleeping are passed in, so both are deterministic in tests.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from flannel_alivpc.core.errors import RetryableCloudError

T = TypeVar("T")


class Rng(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure.

    ``max_attempts`` counts every try, the first included: 1 means no retry.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: Literal["full", "equal"] = "equal"

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays must not be negative")
        if self.jitter not in ("full", "equal"):
            raise ValueError(f"jitter must be 'full' or 'equal', got {self.jitter!r}")


NO_RETRY = RetryPolicy(max_attempts=1)

_RNG = random.Random()


def backoff_delay(attempt: int, policy: RetryPolicy, rng: Rng) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    # Cap the exponent too: 2 ** 1000 is fine for ints but not for floats.
    cap = min(policy.max_delay, policy.base_delay * 2.0 ** min(attempt - 1, 62))
    if policy.jitter == "full":
        return cap * rng.random()
    half = cap / 2.0
    return half + half * rng.random()


def _is_retryable_cloud_error(error: BaseException) -> bool:
    return isinstance(error, RetryableCloudError)


def retry_call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    sleep: Callable[[float], object] = time.sleep,
    is_retryable: Callable[[BaseException], bool] = _is_retryable_cloud_error,
    *,
    rng: Rng | None = None,
    on_retry: Callable[[int, Exception, float], None] | None = None,
) -> T:
    """Call ``fn`` until it returns, raises a non-retryable error, or attempts run out.

    The last error is re-raised unchanged. ``on_retry(attempt, error, delay)``
    is told about each retry before the sleep (for logging).
    """
    source = rng if rng is not None else _RNG
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as error:
            if attempt >= policy.max_attempts or not is_retryable(error):
                raise
            delay = backoff_delay(attempt, policy, source)
            if on_retry is not None:
                on_retry(attempt, error, delay)
        sleep(delay)
        attempt += 1
