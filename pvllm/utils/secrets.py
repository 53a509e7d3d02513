"""Keep API keys out of everything pvllm writes: logs, exception messages, configs, W&B.

Keys come from the environment only (``pvllm.clients.credentials``). What can still carry one:
a request URL (the YouTube Data API sends ``key=...`` in the query string), an ``Authorization`` /
``x-goog-api-key`` header echoed in a debug log, or a config value. ``redact_text`` removes all three
forms plus the literal value of every secret-named environment variable; ``install_log_redaction``
applies it to every log record (message and traceback) of the process; ``is_secret_name`` decides
which config keys are hidden (secrets, not hyperparameters such as ``max_new_tokens`` or ``tokenizer``).
"""

from __future__ import annotations

import logging
import os
import re
import traceback

REDACTED = "<redacted>"
# config keys / env var names that hold a secret: whole name parts, so `max_new_tokens`, `tokenizer`,
# `tokens_per_s` are not secrets while `api_key`, `hf_token`, `access_token`, `client_secret` are
_SECRET_PART = r"(?:api[_-]?key|apikey|key|token|secret|password|passwd|credentials?|bearer)"
_SECRET_NAME = re.compile(rf"(?:^|[_\-.]){_SECRET_PART}(?:$|[_\-.])", re.I)
_URL_KEY = re.compile(r"([?&;](?:key|api_key|apikey|access_token|token|sig)=)[^&\s'\"<>]+", re.I)
_HEADER = re.compile(r"((?:authorization|x-goog-api-key|api-key|x-api-key)['\"]?\s*[:=]\s*['\"]?)"
                     r"(?:bearer\s+)?[^\s'\",}]+", re.I)
_BEARER = re.compile(r"(\bbearer\s+)[A-Za-z0-9._\-~+/]{8,}=*", re.I)


def is_secret_name(name: str) -> bool:
    """True for a config key or variable name that holds a secret value.

    A name ending in ``_env`` holds the *name* of an environment variable (``api_key_env: GEMINI_API_KEY``),
    which is not secret; ``*_tokens``, ``tokenizer`` are hyperparameters.
    """
    n = str(name)
    if n.lower().endswith("_env"):
        return False
    return bool(_SECRET_NAME.search(n))


def secret_env_values() -> dict[str, str]:
    """Values of the environment variables whose name says they hold a secret (>= 8 characters)."""
    return {k: v for k, v in os.environ.items() if is_secret_name(k) and len(v.strip()) >= 8}


def redact_text(text: str) -> str:
    """``text`` with URL keys, auth headers, bearer tokens and secret env values replaced by <redacted>."""
    if not text:
        return text
    for value in sorted(secret_env_values().values(), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    text = _URL_KEY.sub(rf"\1{REDACTED}", text)
    text = _HEADER.sub(rf"\1{REDACTED}", text)
    return _BEARER.sub(rf"\1{REDACTED}", text)


def redact_url(url: str | None) -> str | None:
    return None if url is None else _URL_KEY.sub(rf"\1{REDACTED}", url)


_installed = False


def install_log_redaction() -> None:
    """Redact every log record of this process (message, arguments, traceback); idempotent."""
    global _installed
    if _installed:
        return
    make = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        rec = make(*args, **kwargs)
        try:
            msg = rec.getMessage()
        except Exception:  # a bad format string: leave it to logging's own error report
            return rec
        rec.msg, rec.args = redact_text(msg), None
        if rec.exc_info and rec.exc_info[0] is not None:
            rec.exc_text = redact_text("".join(traceback.format_exception(*rec.exc_info)).rstrip("\n"))
        return rec

    logging.setLogRecordFactory(factory)
    _installed = True
