"""Shared construction of remote-API clients (Gemini, OpenAI-compatible): keys from the environment only,
one retry policy (bounded exponential backoff with jitter), errors classified the same way everywhere."""

from pvllm.clients.credentials import MissingCredentialsError, require_env
from pvllm.clients.retry import (
    AuthError,
    EmptyReplyError,
    Failure,
    MalformedReplyError,
    RateLimiter,
    RemoteCallError,
    RetryPolicy,
    call_with_retry,
    map_concurrent,
    retry_policy_from,
)

__all__ = [
    "AuthError",
    "EmptyReplyError",
    "Failure",
    "MalformedReplyError",
    "MissingCredentialsError",
    "RateLimiter",
    "RemoteCallError",
    "RetryPolicy",
    "call_with_retry",
    "map_concurrent",
    "require_env",
    "retry_policy_from",
]
