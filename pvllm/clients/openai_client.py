"""openai SDK client construction (OpenAI or any compatible server) and error classification for retries."""

from __future__ import annotations

from typing import Any

from pvllm.clients.credentials import require_env
from pvllm.clients.retry import EmptyReplyError, Failure, MalformedReplyError
from pvllm.utils.secrets import register_url_secrets

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
NO_KEY = "not-needed"  # sent when api_key_env is null: local servers (vLLM without --api-key) ignore it


def make_openai_client(
    *,
    api_key_env: str | None = "OPENAI_API_KEY",
    base_url: str | None = None,
    timeout_s: float = 120.0,
    purpose: str = "the OpenAI-compatible backend",
) -> Any:
    """An ``OpenAI`` client with ``max_retries=0`` (``call_with_retry`` owns retries).

    ``base_url`` None lets the SDK read ``OPENAI_BASE_URL`` (else api.openai.com). ``api_key_env`` null is for
    servers without authentication.
    """
    from openai import OpenAI

    key = require_env(api_key_env, purpose) if api_key_env else NO_KEY
    client = OpenAI(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=0)
    register_url_secrets(str(client.base_url))  # ?key= or user:KEY@ in base_url or $OPENAI_BASE_URL
    return client


def _retry_after(exc: Any) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return float(value) * scale
            except ValueError:
                return None
    return None


def classify_openai_error(exc: BaseException) -> Failure:
    """408/409/429/5xx, timeouts, connection errors and malformed bodies are retried; 401/403 stop everything."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        reason = f"HTTP {code} {str(exc.message).splitlines()[0][:200] if exc.message else ''}".strip()
        if code in (401, 403):
            return Failure(False, reason, fatal=True)
        return Failure(code in RETRY_STATUS or code >= 500, reason, retry_after_s=_retry_after(exc))
    if isinstance(exc, openai.APITimeoutError):
        return Failure(True, "timeout")
    if isinstance(exc, openai.APIConnectionError):
        return Failure(True, "connection error")
    if isinstance(exc, EmptyReplyError):
        return Failure(False, str(exc))
    if isinstance(exc, (MalformedReplyError, ValueError, openai.APIResponseValidationError)):
        return Failure(True, f"malformed reply ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    return Failure(False, f"{type(exc).__name__}: {str(exc)[:200]}")


def completion_text(response: Any) -> str:
    """The assistant text of a chat.completions reply, checked field by field (a bad body is malformed)."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list):
        raise MalformedReplyError(f"reply has no choices list (got {type(response).__name__})")
    if not choices:
        raise MalformedReplyError("reply has an empty choices list")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if content is None or not isinstance(content, str):
        refusal = getattr(message, "refusal", None)
        raise EmptyReplyError(
            f"reply without text (finish_reason={getattr(choices[0], 'finish_reason', None)}, refusal={refusal})"
        )
    if not content.strip():
        raise EmptyReplyError(f"empty text (finish_reason={getattr(choices[0], 'finish_reason', None)})")
    return content
