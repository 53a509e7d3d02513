"""API keys come from the environment only; a missing one fails before any work, naming the variable."""

from __future__ import annotations

import os


class MissingCredentialsError(RuntimeError):
    """A required environment variable is unset or empty; the message names it (never a value)."""


def require_env(var: str, purpose: str) -> str:
    """The value of ``var``, or MissingCredentialsError naming ``var`` and what needs it."""
    value = os.environ.get(var, "").strip()
    if not value:
        raise MissingCredentialsError(f"environment variable {var} is not set: {purpose} needs it")
    return value
