"""What every remote LLM judge shares: bounded retries with backoff, a rate limit, bounded concurrency,
and a failed request recorded as None (counted by FICL scoring), never as a score."""

from __future__ import annotations

import abc
import logging
import random
from collections.abc import Callable
from typing import Any

from pvllm.clients.retry import (
    AuthError,
    RateLimiter,
    RemoteCallError,
    call_with_retry,
    map_concurrent,
    retry_policy_from,
)
from pvllm.raters.base import LLMRater

log = logging.getLogger(__name__)


class RemoteLLMRater(LLMRater):
    """Subclasses set ``self.client`` and implement ``_request`` (one prompt -> reply text) and ``classify``."""

    classify: Callable[[BaseException], Any]  # the backend's error classifier (pvllm.clients.*)

    def _init_remote(self, retry: dict[str, Any] | None, max_concurrency: int,
                     requests_per_minute: float | None) -> None:
        self.retry = retry_policy_from(retry)
        self.max_concurrency = int(max_concurrency)
        self.rate = RateLimiter(requests_per_minute)  # also spaces retries, which CachedRater does not see
        # CachedRater (pvllm/raters/cache.py) runs requests with these two: bounded concurrency and rate limit.
        self.requests_per_second = requests_per_minute / 60.0 if requests_per_minute else None
        self._rng = random.Random()

    @abc.abstractmethod
    def _request(self, prompt: str) -> str:
        """One API call; raises the SDK's errors (classified for retry by ``classify``)."""

    def _one(self, item: tuple[int, str]) -> str | None:
        i, prompt = item

        def attempt() -> str:
            self.rate.acquire()
            return self._request(prompt)

        try:
            return call_with_retry(attempt, policy=self.retry, classify=type(self).classify,
                                   what=f"{self.name} prompt {i}", rng=self._rng)
        except AuthError:
            raise
        except RemoteCallError as e:
            log.error("%s", e)
            return None

    def complete(self, prompts: list[str]) -> list[str | None]:
        return map_concurrent(self._one, list(enumerate(prompts)), self.max_concurrency)

    def close(self) -> None:
        self.client.close()
