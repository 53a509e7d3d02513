"""FICL-Score judge behind any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, ...)."""

from __future__ import annotations

import logging
import random
from typing import Any

from pvllm.clients.openai_client import classify_openai_error, completion_text, make_openai_client
from pvllm.clients.retry import (
    AuthError,
    RateLimiter,
    RemoteCallError,
    call_with_retry,
    map_concurrent,
    retry_policy_from,
)
from pvllm.raters.base import RATERS, LLMRater

log = logging.getLogger(__name__)


@RATERS.register("openai_compatible")
class OpenAICompatibleRater(LLMRater):
    """One user turn per FICL prompt, temperature 0."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        temperature: float = 0.0,
        max_tokens: int | None = None,
        seed: int | None = None,
        timeout_s: float = 120.0,
        retry: dict[str, Any] | None = None,
        max_concurrency: int = 4,
        requests_per_minute: float | None = None,
    ):
        self.model = model
        self.temperature = float(temperature)
        self.max_tokens = max_tokens
        self.seed = seed
        self.retry = retry_policy_from(retry)
        self.max_concurrency = int(max_concurrency)
        self.rate = RateLimiter(requests_per_minute)  # also spaces retries, which CachedRater does not see
        # CachedRater (pvllm/raters/cache.py) runs requests with these two: bounded concurrency and rate limit.
        self.requests_per_second = requests_per_minute / 60.0 if requests_per_minute else None
        self._rng = random.Random()
        self.client = make_openai_client(
            api_key_env=api_key_env,
            base_url=base_url,
            timeout_s=timeout_s,
            purpose=f"the openai_compatible rater ({model})",
        )

    @property
    def name(self) -> str:
        return f"openai_compatible:{self.model}"

    @property
    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"temperature": self.temperature}
        if self.max_tokens is not None:
            p["max_tokens"] = int(self.max_tokens)
        if self.seed is not None:
            p["seed"] = int(self.seed)
        return p

    def _one(self, item: tuple[int, str]) -> str | None:
        i, prompt = item

        def attempt() -> str:
            self.rate.acquire()
            return completion_text(
                self.client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": prompt}], **self.params
                )
            )

        try:
            return call_with_retry(
                attempt,
                policy=self.retry,
                classify=classify_openai_error,
                what=f"{self.name} prompt {i}",
                rng=self._rng,
            )
        except AuthError:
            raise
        except RemoteCallError as e:
            log.error("%s", e)
            return None

    def complete(self, prompts: list[str]) -> list[str | None]:
        return map_concurrent(self._one, list(enumerate(prompts)), self.max_concurrency)

    def close(self) -> None:
        self.client.close()
