"""Bounded retries with exponential backoff and jitter, shared by every remote client: the API generators and
raters, and the YouTube collector (pvllm.data.collect.youtube).

The SDKs' own retries are switched off (``max_retries=0`` for openai, no ``retry_options`` for google-genai)
so that one policy, visible in config and in the request log, decides every retry.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from pvllm.utils.secrets import redact_text

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class RemoteCallError(RuntimeError):
    """A request that failed for good (after retries, or not retryable); the message names the item."""


class AuthError(RemoteCallError):
    """401/403: every later request fails too, so generation stops instead of recording per-item errors."""


class MalformedReplyError(ValueError):
    """The server answered 2xx but the body is not the API's reply shape (retried: usually transient)."""


class EmptyReplyError(ValueError):
    """A well-formed reply without text (blocked, empty candidates): not retried, recorded as the error."""


@dataclass(frozen=True)
class Failure:
    """How a caught exception is handled: ``retryable``, ``fatal`` (auth), a short ``reason`` for logs."""

    retryable: bool
    reason: str
    fatal: bool = False
    retry_after_s: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; before try n+1 sleep ``min(max_delay, initial * exp_base**n)`` scaled by a
    random factor in ``[1 - jitter, 1]`` (so concurrent workers do not retry in lockstep), or the server's
    ``Retry-After`` when that is longer (still capped by ``max_delay_s``)."""

    attempts: int = 5
    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0
    exp_base: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be >= 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("RetryPolicy.jitter must be in [0, 1]")

    def delay(self, retry_index: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        base = min(self.max_delay_s, self.initial_delay_s * self.exp_base**retry_index)
        d = base * (1.0 - self.jitter * rng.random())
        if retry_after_s is not None:
            d = max(d, min(retry_after_s, self.max_delay_s))
        return d


def call_with_retry(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    classify: Callable[[BaseException], Failure],
    what: str,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
    reraise: bool = False,
    on_retry: Callable[[BaseException, Failure], None] | None = None,
) -> T:
    """Run ``fn`` under ``policy``; raise ``RemoteCallError``/``AuthError`` naming ``what`` when it gives up.

    ``reraise``: give up by raising the caught exception itself (a caller that tells its kinds apart, e.g. the
    YouTube collector's skip reasons; it redacts what it shows). ``on_retry``: called before each retry."""
    rng = rng or random.Random()
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Exception as e:  # classified below; nothing is swallowed
            f = classify(e)
            if reraise and (f.fatal or not f.retryable or attempt + 1 >= policy.attempts):
                raise
            # a server may echo the key (e.g. "Incorrect API key provided: sk-..."): the reason is redacted,
            # and the SDK's exception (with its unredacted message and request) is not chained
            f = replace(f, reason=redact_text(f.reason))
            if f.fatal:
                raise AuthError(f"{what}: {f.reason}") from None
            if not f.retryable:
                raise RemoteCallError(f"{what}: {f.reason}") from None
            if attempt + 1 >= policy.attempts:
                raise RemoteCallError(f"{what}: {f.reason} (gave up after {policy.attempts} attempts)") from None
            d = policy.delay(attempt, rng, f.retry_after_s)
            if on_retry is not None:
                on_retry(e, f)
            log.warning(
                "%s: %s (attempt %d/%d), retrying in %.2fs", what, f.reason, attempt + 1, policy.attempts, d
            )
            sleep(d)
    raise AssertionError("unreachable")


class RateLimiter:
    """At most ``requests_per_minute`` request starts per minute (evenly spaced), shared across threads."""

    def __init__(self, requests_per_minute: float | None):
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


def map_concurrent(fn: Callable[[T], R], items: Iterable[T], max_concurrency: int) -> list[R]:
    """``[fn(x) for x in items]`` with at most ``max_concurrency`` calls in flight; order kept."""
    items = list(items)
    if max_concurrency <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(max_concurrency, len(items))) as pool:
        return list(pool.map(fn, items))


def retry_policy_from(cfg: RetryPolicy | dict[str, Any] | None) -> RetryPolicy:
    """Accept a RetryPolicy, a plain/OmegaConf mapping of its fields, or None (defaults)."""
    if cfg is None:
        return RetryPolicy()
    if isinstance(cfg, RetryPolicy):
        return cfg
    return RetryPolicy(**dict(cfg))


class RemoteCalls:
    """One remote backend's call discipline, shared by its generators and raters: every attempt waits for
    the rate limiter, failures are retried by ``policy`` (backoff + jitter), at most ``max_concurrency``
    requests in flight."""

    def __init__(self, retry: RetryPolicy | dict[str, Any] | None, max_concurrency: int,
                 requests_per_minute: float | None, classify: Callable[[BaseException], Failure]):
        self.policy = retry_policy_from(retry)
        self.max_concurrency = int(max_concurrency)
        self.rate = RateLimiter(requests_per_minute)  # also spaces retries
        self.classify = classify
        self._rng = random.Random()

    def call(self, fn: Callable[[], R], what: str) -> R:
        """``fn()`` with rate limiting and bounded retries; raises RemoteCallError naming ``what``."""

        def attempt() -> R:
            self.rate.acquire()
            return fn()

        return call_with_retry(attempt, policy=self.policy, classify=self.classify, what=what, rng=self._rng)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        return map_concurrent(fn, items, self.max_concurrency)
