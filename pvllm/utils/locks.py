"""One advisory file lock (``fcntl.flock``) for every place that serializes processes on a shared directory:
the SmolLM2 weight preparation, the cache store's manifest, the test session's shared builds."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, exclusive: bool = True) -> Iterator[None]:
    """Hold the lock on ``path`` (created with its directory if absent; its content is never read):
    exclusive, or shared with other shared holders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
