"""Bounded retries with exponential backoff and jitter, only for errors worth retrying."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

T = TypeVar("T")
log = logging.getLogger(__name__)

#: 409: a conflicting write (optimistic concurrency, AlreadyExists racing an apply);
#: 429: the API server's priority-and-fairness or a webhook asked us to slow down;
#: 5xx: the API server, etcd or a webhook is briefly unavailable.
RETRYABLE_STATUS = frozenset({409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Full-jitter backoff; a server's Retry-After wins, within max_delay."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        cap = min(self.max_delay, self.base_delay * 2**attempt)
        return random.uniform(cap / 2, cap)  # noqa: S311 - jitter, not crypto


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, ApiException):
        # 409 AlreadyExists answers a create: trying again cannot change the answer.
        if error.status == 409 and _status_reason(error) == "AlreadyExists":
            return False
        return error.status in RETRYABLE_STATUS
    # A request that timed out or could not connect may succeed next time.
    return isinstance(
        error, (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError)
    )


def asks_to_retry(error: BaseException) -> bool:
    """The API server answered "not now, try again": 429, or a 500 ServerTimeout.

    The ServerTimeout is what the ServiceAccount admission of Kubernetes < 1.24 answers to a
    pod whose service account has no token secret yet ("No API token found for service
    account …, retry after the token is automatically created"): the moments between
    Kubeflow's profile controller creating ``default-editor`` and the token controller
    creating its secret.
    """
    if not isinstance(error, ApiException):
        return False
    return error.status == 429 or (error.status == 500 and _status_reason(error) == "ServerTimeout")


def _retry_after(error: BaseException) -> float | None:
    headers = getattr(error, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def retrying(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    what: str,
    retryable: Callable[[BaseException], bool] = is_retryable,
) -> T:
    """Run ``operation``; on a retryable error wait and try again, at most ``policy.attempts``."""
    for attempt in range(policy.attempts):
        try:
            return await operation()
        except Exception as error:
            if not retryable(error) or attempt == policy.attempts - 1:
                raise
            delay = policy.delay(attempt, _retry_after(error))
            log.warning(
                "%s failed (%s); retry %d/%d in %.2fs",
                what,
                describe(error),
                attempt + 1,
                policy.attempts - 1,
                delay,
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def describe(error: BaseException) -> str:
    """A one-line description of an API error, with the server's message when it has one."""
    if isinstance(error, ApiException):
        return f"HTTP {error.status}: {api_message(error)}"
    if isinstance(error, TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}"


def _status(error: ApiException) -> dict:
    """The Kubernetes ``Status`` object in an error's body, or an empty dict."""
    body: str | bytes | None = error.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        status = json.loads(body) if body else {}
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


def api_status(error: ApiException) -> dict:
    """The Kubernetes ``Status`` an error answered with (``reason``, ``details``), or {}."""
    return _status(error)


def _status_reason(error: ApiException) -> str | None:
    return _status(error).get("reason")


def api_message(error: ApiException) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, else the HTTP reason."""
    message = _status(error).get("message")
    return str(message) if message else str(error.reason or "no message")
