"""Gemini FICL-Score judges (paper: Gemini-1.5-Flash, K=5, temperature 0) through google-genai."""

from __future__ import annotations

from typing import Any

from pvllm.clients.gemini_client import classify_gemini_error, gemini_server, make_gemini_client, reply_text
from pvllm.raters.base import RATERS
from pvllm.raters.remote import RemoteLLMRater


class GeminiRater(RemoteLLMRater):
    """Answers FICL prompts with a Gemini model at temperature 0 (paper App.: lowers score RSD from 5% to <1%)."""

    default_model = "gemini-3.5-flash"

    def __init__(
        self,
        model: str | None = None,
        temperature: float = 0.0,
        max_output_tokens: int | None = None,
        vertexai: bool = False,
        timeout_s: float = 120.0,
        retry: dict[str, Any] | None = None,
        max_concurrency: int = 4,
        requests_per_minute: float | None = None,
        **endpoint: Any,
    ):
        """``endpoint``: ``api_key_env``, ``project``, ``location``, ``base_url``, ``api_version``, as
        ``pvllm.clients.gemini_client.make_gemini_client`` takes them."""
        self.model = model or self.default_model
        self.temperature = float(temperature)
        self.max_output_tokens = max_output_tokens
        self.vertexai = bool(vertexai)
        self._init_remote(retry, max_concurrency, requests_per_minute)
        self.client = make_gemini_client(
            vertexai=vertexai, timeout_s=timeout_s, purpose=f"the {self.registry_name} rater ({self.model})",
            **endpoint,
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

    classify = staticmethod(classify_gemini_error)

    def _server_url(self) -> str:
        return gemini_server(self.client)

    def _request(self, prompt: str) -> str:
        from google.genai import types

        config = types.GenerateContentConfig(**self.params)
        return reply_text(self.client.models.generate_content(model=self.model, contents=prompt, config=config))


@RATERS.register("gemini_flash")
class GeminiFlashRater(GeminiRater):
    default_model = "gemini-3.5-flash"


@RATERS.register("gemini_pro")
class GeminiProRater(GeminiRater):
    default_model = "gemini-2.5-pro"
