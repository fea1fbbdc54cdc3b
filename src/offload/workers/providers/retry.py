"""The one retry policy of provider calls (the SDKs' own retries are off).

Throttling and transient failures (5xx, timeouts, dropped connections) are retried with
exponential backoff and full jitter, capped; a wait the provider asked for
(`retry-after-ms`, `retry-after`) is honoured up to the same cap. Invalid requests (400,
ValidationException), access errors and anything unclassified are never retried.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from offload.config import Settings
from offload.workers.providers.base import ErrorKind, ProviderError

__all__ = ["RetryPolicy", "call_with_retries", "is_retryable"]

T = TypeVar("T")
_RETRYABLE = (ErrorKind.THROTTLED, ErrorKind.TRANSIENT)


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per provider call and the backoff between them."""

    max_attempts: int = 5
    initial_seconds: float = 1.0
    max_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy configured by `llm_max_attempts` and `llm_retry_*_seconds`."""
        return cls(
            max_attempts=max(1, settings.llm_max_attempts),
            initial_seconds=max(0.0, settings.llm_retry_initial_seconds),
            max_seconds=max(0.0, settings.llm_retry_max_seconds),
        )

    def wait_seconds(
        self, attempt: int, error: BaseException | None, rand: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        asked = error.retry_after if isinstance(error, ProviderError) else None
        if asked is not None:
            return min(asked, self.max_seconds)
        ceiling = min(self.max_seconds, self.initial_seconds * 2 ** (attempt - 1))
        return rand() * ceiling


def is_retryable(error: BaseException) -> bool:
    """True for throttling and transient provider errors."""
    return isinstance(error, ProviderError) and error.kind in _RETRYABLE


def call_with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[ProviderError, int, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Runs `call`, retrying retryable ProviderErrors under `policy`.

    Args:
        call: The provider call.
        policy: Attempts and backoff.
        on_retry: Told (error, attempt that failed, seconds to wait) before each wait.
        sleep: How to wait (tests pass a recorder).

    Raises:
        ProviderError: the last error, when it is not retryable or attempts ran out.
    """

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return policy.wait_seconds(state.attempt_number, error)

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if on_retry and isinstance(error, ProviderError):
            seconds = state.next_action.sleep if state.next_action else 0.0
            on_retry(error, state.attempt_number, seconds)

    retrying = Retrying(
        stop=stop_after_attempt(policy.max_attempts),
        retry=retry_if_exception(is_retryable),
        wait=wait,
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    return retrying(call)
