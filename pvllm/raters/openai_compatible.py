"""FICL-Score judge behind any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, ...)."""

from __future__ import annotations

from typing import Any

from pvllm.clients.openai_client import classify_openai_error, completion_text, make_openai_client
from pvllm.raters.base import RATERS
from pvllm.raters.remote import RemoteLLMRater


@RATERS.register("openai_compatible")
class OpenAICompatibleRater(RemoteLLMRater):
    """One user turn per FICL prompt, temperature 0."""

    def __init__(
        self,
        model: str,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        seed: int | None = None,
        timeout_s: float = 120.0,
        retry: dict[str, Any] | None = None,
        max_concurrency: int = 4,
        requests_per_minute: float | None = None,
        **endpoint: Any,
    ):
        """``endpoint``: ``base_url``, ``api_key_env`` (default ``OPENAI_API_KEY``; null for a server without
        authentication), as ``pvllm.clients.openai_client.make_openai_client`` takes them."""
        self.model = model
        self.temperature = float(temperature)
        self.max_tokens = max_tokens
        self.seed = seed
        self._init_remote(retry, max_concurrency, requests_per_minute)
        self.client = make_openai_client(
            timeout_s=timeout_s, purpose=f"the openai_compatible rater ({model})", **endpoint
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

    classify = staticmethod(classify_openai_error)

    def _server_url(self) -> str:
        return str(self.client.base_url)

    def _request(self, prompt: str) -> str:
        return completion_text(self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": prompt}], **self.params))
