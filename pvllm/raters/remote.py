"""What every remote LLM judge shares: bounded retries with backoff, a rate limit, bounded concurrency,
and a failed request recorded as None (counted by FICL scoring), never as a score."""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import Any

from pvllm.clients.retry import AuthError, RemoteCallError, RemoteCalls
from pvllm.raters.base import LLMRater
from pvllm.utils.secrets import strip_credentials

log = logging.getLogger(__name__)


class RemoteLLMRater(LLMRater):
    """Subclasses set ``self.client`` and implement ``_request`` (one prompt -> reply text) and ``classify``."""

    classify: Callable[[BaseException], Any]  # the backend's error classifier (pvllm.clients.*)

    def _init_remote(self, retry: dict[str, Any] | None, max_concurrency: int,
                     requests_per_minute: float | None) -> None:
        # the one limiter of this backend: concurrency, rate (also spacing retries) and retries
        self.calls = RemoteCalls(retry, max_concurrency, requests_per_minute, type(self).classify)
        self.max_concurrency = self.calls.max_concurrency

    @property
    def server(self) -> str | None:
        return strip_credentials(self._server_url())

    @abc.abstractmethod
    def _server_url(self) -> str:
        """The base URL the client sends to (after the SDK's defaults and environment variables)."""

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

    def complete_each(self, prompts: list[str], on_reply: Callable[[int, str | None], None]) -> None:
        def one(item: tuple[int, str]) -> None:
            on_reply(item[0], self._one(item))

        self.calls.map(one, list(enumerate(prompts)))

    def close(self) -> None:
        self.client.close()
