"""The one place pvllm hashes things: files, bytes, canonical JSON and tensors (sha256 everywhere).

Caches, manifests and identities all key on these, so two modules never disagree on what "the sha256 of
this file" is (block size, partial reads, JSON spelling).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

BLOCK = 1 << 22  # bytes read per step when hashing a whole file
EDGE = 1 << 16  # bytes hashed at each end of a large file by ``file_digest``


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's whole content, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def text_sha256(text: str) -> str:
    """sha256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(obj: Any) -> str:
    """``obj`` as JSON with sorted keys (what ``json_sha256`` hashes)."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)


def json_sha256(obj: Any, n: int | None = None) -> str:
    """sha256 of ``obj`` in canonical JSON (sorted keys); the first ``n`` hex digits when ``n`` is set."""
    return text_sha256(canonical_json(obj))[:n]


def file_digest(path: str | os.PathLike, whole: bool = False) -> str:
    """16 hex digits of sha256 over a file's size and content: all of it (``whole``, or small files), else its
    first and last 64 KiB (tells two videos or checkpoints apart without reading gigabytes)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        if whole or size <= 4 * EDGE:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(EDGE))
            f.seek(size - EDGE)
            h.update(f.read(EDGE))
    return h.hexdigest()[:16]


def state_dict_sha256(state: dict[str, Any]) -> str:
    """sha256 over a module's state dict: names, shapes, dtypes and bytes, in name order."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def array_sha256(array: Any) -> str:
    """sha256 of a numpy array's bytes (C order)."""
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
