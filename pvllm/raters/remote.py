"""What every remote LLM judge shares: bounded retries with backoff, a rate limit, bounded concurrency,
and a failed request recorded as None (counted by FICL scoring), never as a score."""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import Any

from pvllm.clients.retry import AuthError, RemoteCallError, RemoteCalls
from pvllm.raters.base import LLMRater

log = logging.getLogger(__name__)


class RemoteLLMRater(LLMRater):
    """Subclasses set ``self.client`` and implement ``_request`` (one prompt -> reply text) and ``classify``."""

    classify: Callable[[BaseException], Any]  # the backend's error classifier (pvllm.clients.*)

    def _init_remote(self, retry: dict[str, Any] | None, max_concurrency: int,
                     requests_per_minute: float | None) -> None:
        # the limiter inside also spaces retries, which CachedRater does not see
        self.calls = RemoteCalls(retry, max_concurrency, requests_per_minute, type(self).classify)
        # CachedRater (pvllm/raters/cache.py) runs requests with these two: bounded concurrency and rate limit.
        self.max_concurrency = self.calls.max_concurrency
        self.requests_per_second = requests_per_minute / 60.0 if requests_per_minute else None

    @abc.abstractmethod
    def _request(self, prompt: str) -> str:
        """One API call; raises the SDK's errors (classified for retry by ``classify``)."""

    def _one(self, item: tuple[int, str]) -> str | None:
        i, prompt = item
        try:
            return self.calls.call(lambda: self._request(prompt), what=f"{self.name} prompt {i}")
        except AuthError:
            raise
        except RemoteCallError as e:
            log.error("%s", e)
            return None

    def complete(self, prompts: list[str]) -> list[str | None]:
        return self.calls.map(self._one, list(enumerate(prompts)))

    def close(self) -> None:
        self.client.close()
