"""google-genai client construction (API key or Vertex AI) and error classification for retries."""

from __future__ import annotations

import json
import os
from typing import Any

from pvllm.clients.credentials import MissingCredentialsError, require_env
from pvllm.clients.retry import EmptyReplyError, Failure, MalformedReplyError
from pvllm.utils.secrets import register_url_secrets

RETRY_STATUS = {408, 429, 500, 502, 503, 504}


def make_gemini_client(
    *,
    api_key_env: str = "GEMINI_API_KEY",
    vertexai: bool = False,
    project: str | None = None,
    location: str | None = None,
    base_url: str | None = None,
    api_version: str | None = None,
    timeout_s: float | None = None,
    purpose: str = "the Gemini backend",
) -> Any:
    """A ``genai.Client`` without SDK retries (``call_with_retry`` owns them).

    Gemini Developer API: the key is read from ``api_key_env``. Vertex AI (the paper's route): project from
    ``project`` or ``GOOGLE_CLOUD_PROJECT``, location from ``location``/``GOOGLE_CLOUD_LOCATION``
    (default us-central1), credentials from Application Default Credentials.
    """
    from google import genai
    from google.genai import types

    register_url_secrets(base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL"))  # ?key= or user:KEY@ in it
    http = types.HttpOptions(
        base_url=base_url,
        api_version=api_version,
        timeout=int(timeout_s * 1000) if timeout_s else None,  # the SDK takes milliseconds
    )
    if vertexai:
        project = project or require_env("GOOGLE_CLOUD_PROJECT", f"{purpose} on Vertex AI", secret=False)
        location = location or os.environ.get("GOOGLE_CLOUD_LOCATION") or "us-central1"
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        except DefaultCredentialsError as e:
            raise MissingCredentialsError(
                f"no Google Application Default Credentials for {purpose} on Vertex AI: set "
                "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file or run "
                "`gcloud auth application-default login`"
            ) from e
        return genai.Client(
            vertexai=True, project=project, location=location, credentials=credentials, http_options=http
        )
    key = require_env(api_key_env, purpose)
    return genai.Client(api_key=key, http_options=http)


def gemini_server(client: Any) -> str:
    """The base URL a ``genai.Client`` sends to (its default, $GOOGLE_GEMINI_BASE_URL or ``base_url``), with
    the Vertex AI project when there is one."""
    api = client._api_client  # the SDK keeps the resolved endpoint only here
    url = str(api._http_options.base_url)
    return f"{url} (vertexai project {getattr(api, 'project', None)})" if getattr(api, "vertexai", False) else url


def _retry_after(exc: Any) -> float | None:
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None)
    if not headers:
        return None
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify_gemini_error(exc: BaseException) -> Failure:
    """408/429/5xx, timeouts, connection errors and malformed bodies are retried; 401/403 stop everything."""
    import httpx2
    import pydantic
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        code = exc.code or 0
        msg = (exc.message or exc.status or "").splitlines()[0][:200] if (exc.message or exc.status) else ""
        reason = f"HTTP {code} {msg}".strip()
        if code in (401, 403):
            return Failure(False, reason, fatal=True)
        return Failure(code in RETRY_STATUS or code >= 500, reason, retry_after_s=_retry_after(exc))
    if isinstance(exc, httpx2.TimeoutException):
        return Failure(True, f"timeout ({type(exc).__name__})")
    if isinstance(exc, httpx2.TransportError):
        return Failure(True, f"connection error ({type(exc).__name__})")
    if isinstance(exc, EmptyReplyError):
        return Failure(False, str(exc))
    if isinstance(exc, (MalformedReplyError, json.JSONDecodeError, pydantic.ValidationError)):
        return Failure(True, f"malformed reply ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    return Failure(False, f"{type(exc).__name__}: {str(exc)[:200]}")


def reply_text(response: Any) -> str:
    """The text of a generateContent reply; EmptyReplyError (with the finish/block reason) when there is none."""
    try:
        text = response.text
    except (AttributeError, ValueError, TypeError) as e:
        raise MalformedReplyError(f"cannot read text from reply: {e}") from e
    if text:
        return text
    cands = getattr(response, "candidates", None) or []
    finish = getattr(cands[0], "finish_reason", None) if cands else None
    feedback = getattr(response, "prompt_feedback", None)
    block = getattr(feedback, "block_reason", None) if feedback else None
    raise EmptyReplyError(
        f"empty reply (candidates={len(cands)}, finish_reason={finish}, block_reason={block})"
    )
