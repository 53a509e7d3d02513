"""API keys come from the environment only; a missing one fails before any work, naming the variable."""

from __future__ import annotations

import os

from pvllm.utils.secrets import register_secret


class MissingCredentialsError(RuntimeError):
    """A required environment variable is unset or empty; the message names it (never a value)."""


def require_env(var: str, purpose: str, *, secret: bool = True) -> str:
    """The value of ``var``, or MissingCredentialsError naming ``var`` and what needs it. The value is
    registered as a secret (pvllm.utils.secrets) unless ``secret`` is False (a project id): cut out of every
    log, stream and file, whatever ``var``'s name."""
    value = os.environ.get(var, "").strip()
    if not value:
        raise MissingCredentialsError(f"environment variable {var} is not set: {purpose} needs it")
    if secret:
        register_secret(value)
    return value
