"""Gemini FICL-Score judges (paper: Gemini-1.5-Flash, K=5, temperature 0) through google-genai."""

from __future__ import annotations

import logging
import random
from typing import Any

from pvllm.clients.gemini_client import classify_gemini_error, make_gemini_client, reply_text
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


class GeminiRater(LLMRater):
    """Answers FICL prompts with a Gemini model at temperature 0 (paper App.: lowers score RSD from 5% to <1%)."""

    default_model = "gemini-3.5-flash"

    def __init__(
        self,
        model: str | None = None,
        temperature: float = 0.0,
        max_output_tokens: int | None = None,
        api_key_env: str = "GEMINI_API_KEY",
        vertexai: bool = False,
        project: str | None = None,
        location: str | None = None,
        base_url: str | None = None,
        api_version: str | None = None,
        timeout_s: float = 120.0,
        retry: dict[str, Any] | None = None,
        max_concurrency: int = 4,
        requests_per_minute: float | None = None,
    ):
        self.model = model or self.default_model
        self.temperature = float(temperature)
        self.max_output_tokens = max_output_tokens
        self.vertexai = bool(vertexai)
        self.retry = retry_policy_from(retry)
        self.max_concurrency = int(max_concurrency)
        self.rate = RateLimiter(requests_per_minute)  # also spaces retries, which CachedRater does not see
        # CachedRater (pvllm/raters/cache.py) runs requests with these two: bounded concurrency and rate limit.
        self.requests_per_second = requests_per_minute / 60.0 if requests_per_minute else None
        self._rng = random.Random()
        self.client = make_gemini_client(
            api_key_env=api_key_env,
            vertexai=vertexai,
            project=project,
            location=location,
            base_url=base_url,
            api_version=api_version,
            timeout_s=timeout_s,
            purpose=f"the {self.registry_name} rater ({self.model})",
        )

    @property
    def name(self) -> str:
        return f"gemini:{self.model}"

    @property
    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"temperature": self.temperature}
        if self.max_output_tokens is not None:
            p["max_output_tokens"] = int(self.max_output_tokens)
        return p

    def _one(self, item: tuple[int, str]) -> str | None:
        from google.genai import types

        i, prompt = item
        config = types.GenerateContentConfig(**self.params)

        def attempt() -> str:
            self.rate.acquire()
            return reply_text(
                self.client.models.generate_content(model=self.model, contents=prompt, config=config)
            )

        try:
            return call_with_retry(
                attempt,
                policy=self.retry,
                classify=classify_gemini_error,
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


@RATERS.register("gemini_flash")
class GeminiFlashRater(GeminiRater):
    default_model = "gemini-3.5-flash"


@RATERS.register("gemini_pro")
class GeminiProRater(GeminiRater):
    default_model = "gemini-2.5-pro"
