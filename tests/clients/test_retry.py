"""core.retry: backoff bounds and the retry loop (pure, no I/O)."""

from __future__ import annotations

import random

import pytest

from flannel_alivpc.core.errors import PermanentCloudError, RetryableCloudError
from flannel_alivpc.core.retry import RetryPolicy, backoff_delay, retry_call


class FixedRng:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=4.0, jitter="full")
    top = [backoff_delay(n, policy, FixedRng(1.0)) for n in range(1, 8)]
    assert top == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert backoff_delay(3, policy, FixedRng(0.0)) == 0.0
    # Huge attempt numbers do not overflow.
    assert backoff_delay(10_000, policy, FixedRng(1.0)) == 4.0


def test_equal_jitter_stays_in_the_upper_half() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=1.0, max_delay=30.0, jitter="equal")
    rng = random.Random(7)
    for attempt in range(1, 6):
        cap = min(30.0, 2.0 ** (attempt - 1))
        for _ in range(50):
            assert cap / 2 <= backoff_delay(attempt, policy, rng) <= cap


def test_full_jitter_spreads_over_the_whole_range() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=1.0, jitter="full")
    rng = random.Random(3)
    samples = [backoff_delay(1, policy, rng) for _ in range(200)]
    assert min(samples) < 0.1 and max(samples) > 0.9 and all(0 <= s <= 1 for s in samples)


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=-1)
    with pytest.raises(ValueError):
        backoff_delay(0, RetryPolicy(), FixedRng(0.5))


def test_retry_call_retries_retryable_errors_then_succeeds() -> None:
    outcomes: list[Exception | str] = [RetryableCloudError("busy"), RetryableCloudError("busy"), "done"]
    sleeps: list[float] = []
    retries: list[int] = []

    def fn() -> str:
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    policy = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=10.0, jitter="full")
    result = retry_call(fn, policy, sleep=sleeps.append, rng=FixedRng(1.0),
                        on_retry=lambda attempt, error, delay: retries.append(attempt))
    assert result == "done"
    assert sleeps == [1.0, 2.0]
    assert retries == [1, 2]


def test_retry_call_does_not_retry_permanent_errors() -> None:
    calls = []

    def fn() -> None:
        calls.append(1)
        raise PermanentCloudError("no")

    with pytest.raises(PermanentCloudError):
        retry_call(fn, RetryPolicy(max_attempts=5), sleep=lambda s: None)
    assert len(calls) == 1


def test_retry_call_gives_up_after_max_attempts_with_the_last_error() -> None:
    calls = []

    def fn() -> None:
        calls.append(1)
        raise RetryableCloudError(f"attempt {len(calls)}")

    with pytest.raises(RetryableCloudError, match="attempt 3"):
        retry_call(fn, RetryPolicy(max_attempts=3), sleep=lambda s: None)
    assert len(calls) == 3


def test_retry_call_custom_predicate() -> None:
    calls = []

    def fn() -> int:
        calls.append(1)
        if len(calls) < 2:
            raise KeyError("flaky")
        return len(calls)

    assert retry_call(fn, RetryPolicy(max_attempts=2), sleep=lambda s: None,
                      is_retryable=lambda e: isinstance(e, KeyError)) == 2
