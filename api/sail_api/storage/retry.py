"""Bounded retries with exponential backoff and full jitter, for transient storage errors only.

Why full jitter: many shard Jobs hit the same bucket at once after an outage; randomised delays
spread their retries (AWS architecture blog, "Exponential Backoff and Jitter"). Why bounded: a
phase that cannot reach storage should fail with a clear StorageUnavailable so the operator's
infrastructure retry budget (a fresh Job later) takes over, instead of hanging.

What this module does not do: decide what is transient. The backend passes `is_transient`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a storage operation is retried.

    attempts: total tries of one operation (1 = no retry). Delay before retry n (1-based) is
    uniform in [0, min(max_delay, base_delay * 2**(n-1))].
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0
    total_seconds: float | None = None  # no retry starts once this much time has passed (None: no bound)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"retries.attempts must be >= 1, got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retries.base_delay and retries.max_delay must be >= 0")
        if self.total_seconds is not None and self.total_seconds < 0:
            raise ValueError("retries.total_seconds must be >= 0")


# A reachability probe before compute is spent (`sail run`): two tries within a few seconds, so an
# unreachable endpoint is reported at once instead of after the phase retries and the run's budgets.
PROBE_POLICY = RetryPolicy(attempts=2, base_delay=0.5, max_delay=1.0, total_seconds=5.0)


def build_retry_policy(retries: RetryPolicy | int | None) -> RetryPolicy:
    """Accept a policy, a bare number of attempts, or None (the default policy)."""
    if retries is None:
        return RetryPolicy()
    if isinstance(retries, RetryPolicy):
        return retries
    return RetryPolicy(attempts=int(retries))


def compute_backoff(retry: int, policy: RetryPolicy, unit_random: float) -> float:
    """Delay in seconds before retry number `retry` (1-based); `unit_random` in [0, 1) is the jitter."""
    cap = min(policy.max_delay, policy.base_delay * (2 ** (retry - 1)))
    return cap * unit_random


def run_with_retries(
    operation: Callable[[], T],
    *,
    policy: RetryPolicy,
    is_transient: Callable[[BaseException], bool],
    label: str,
    sleep: Callable[[float], None] = time.sleep,
    unit_random: Callable[[], float] = random.random,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `operation`; retry transient failures up to policy.attempts; re-raise the last error.

    Permanent errors (is_transient False) are raised at once, never retried. With
    policy.total_seconds, no retry starts past that time (counted from the first try).
    """
    start = clock()
    for attempt in range(1, policy.attempts + 1):
        try:
            return operation()
        except Exception as exc:
            if attempt >= policy.attempts or not is_transient(exc):
                raise
            delay = compute_backoff(attempt, policy, unit_random())
            if policy.total_seconds is not None and clock() - start + delay > policy.total_seconds:
                raise
            log.warning(
                "%s failed (attempt %d/%d, %s); retrying in %.2fs",
                label, attempt, policy.attempts, type(exc).__name__, delay,
            )
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")
