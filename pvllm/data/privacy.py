"""Keyed pseudonymization of user identifiers (HMAC-SHA256, key from the environment).

A plain hash of a channel id or a name can be reversed by guessing; a keyed hash cannot without the
key. The key never leaves the environment: it is not logged and not written to any output.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from pvllm.utils.secrets import register_secret

KEY_ENV = "PVLLM_PSEUDONYM_KEY"
PREFIX = "u_"
# Fields of YouTube API resources that identify a commenter (or a channel); rewritten before storage.
AUTHOR_FIELDS = ("authorChannelId", "authorDisplayName", "authorChannelUrl", "authorProfileImageUrl")


class MissingKeyError(RuntimeError):
    """The pseudonymization key is not set."""


def load_key(env_var: str = KEY_ENV) -> bytes:
    """Read the HMAC key from ``env_var``; a clear error names the variable when it is missing."""
    key = os.environ.get(env_var, "")
    if not key:
        raise MissingKeyError(
            f"environment variable {env_var} is not set: it holds the secret key that pseudonymizes "
            f"user ids (HMAC-SHA256). Set it to a long random string, e.g. "
            f"`export {env_var}=$(python -c 'import secrets; print(secrets.token_hex(32))')`, "
            f"and keep it private; the same key gives the same pseudonyms across runs."
        )
    register_secret(key)  # never in a log, stream or file
    return key.encode("utf-8")


class Pseudonymizer:
    """Maps a raw identifier to ``u_`` + 16 hex digits of HMAC-SHA256(key, raw)."""

    def __init__(self, key: bytes | None = None, env_var: str = KEY_ENV):
        self._key = key if key is not None else load_key(env_var)

    def __call__(self, raw: str) -> str:
        digest = hmac.new(self._key, raw.encode("utf-8"), hashlib.sha256).hexdigest()
        return PREFIX + digest[:16]

    def __repr__(self) -> str:  # never show the key
        return "Pseudonymizer(key=<hidden>)"

    def scrub(self, obj: Any) -> Any:
        """Return a copy of an API response with every author field replaced by its pseudonym.

        ``authorChannelId`` is ``{"value": id}`` in the API; it keeps that shape. The profile image and
        channel URL embed the raw id or the handle, so they are pseudonymized too.
        """
        if isinstance(obj, list):
            return [self.scrub(x) for x in obj]
        if not isinstance(obj, dict):
            return obj
        out = {}
        for k, v in obj.items():
            if k in AUTHOR_FIELDS:
                if isinstance(v, dict) and "value" in v:
                    out[k] = {**v, "value": self(str(v["value"]))}
                elif v is None:
                    out[k] = None
                else:
                    out[k] = self(str(v))
            else:
                out[k] = self.scrub(v)
        return out
