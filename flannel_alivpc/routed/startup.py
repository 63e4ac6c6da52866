"""Start-up steps that wait out network failures and give up on everything else.

A step (read the network config, ask the metadata service who we are, list
the route tables) is retried only while it fails at the network level: etcd
or the cloud API unreachable, the metadata service not answering. Retries back
off up to a cap, and the log gets one line when a failure starts or changes
and one when it clears, not one per attempt. Any other error (credentials
refused, a permission missing, a bad value) propagates at once, so the daemon
ends with rc 2 and the error's sentence instead of retrying what no retry can
fix.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

from flannel_alivpc.core.errors import EtcdUnavailable, MetadataError, MetadataNotFound, RetryableCloudError
from flannel_alivpc.core.retry import RetryPolicy, backoff_delay

log = logging.getLogger(__name__)

T = TypeVar("T")

STARTUP_BACKOFF = RetryPolicy(max_attempts=1, base_delay=1.0, max_delay=30.0, jitter="equal")
"""1 s doubling to 30 s; ``max_attempts`` is unused: a start-up step waits as long as it has to."""


def network_failure(error: BaseException) -> bool:
    """etcd, the cloud API or the metadata service could not be reached (or answered 5xx/throttled)."""
    if isinstance(error, MetadataNotFound):
        return False
    return isinstance(error, (EtcdUnavailable, RetryableCloudError, MetadataError))


def wait_until_ready(step: Callable[[], T], *, what: str, stop: threading.Event,
                     transient: Callable[[BaseException], bool] = network_failure,
                     policy: RetryPolicy = STARTUP_BACKOFF) -> T | None:
    """``step()``'s result, retrying while it fails with a ``transient`` error; ``None`` once ``stop`` is set.

    ``what`` names the step in the log (``"the network config"``).
    """
    rng = random.Random()
    failures = 0
    last = ""
    while not stop.is_set():
        try:
            result = step()
        except Exception as error:
            if not transient(error):
                raise
            failures += 1
            delay = backoff_delay(failures, policy, rng)
            if str(error) != last:
                last = str(error)
                log.error("waiting for %s: %s (retrying with backoff up to %.0fs; logged again only if the "
                          "error changes)", what, error, policy.max_delay)
            stop.wait(delay)
            continue
        if failures:
            log.info("%s: available after %d failed attempt%s", what, failures, "" if failures == 1 else "s")
        return result
    return None
