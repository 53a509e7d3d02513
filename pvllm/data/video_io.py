"""Reading the frames a model sees: decord, uniform sampling, clear errors naming the file."""

from __future__ import annotations

import os

import numpy as np


class VideoReadError(RuntimeError):
    """A video file cannot be decoded (missing, corrupt, zero frames); the message names the file."""


def frame_indices(num_total: int, num_frames: int = 8) -> np.ndarray:
    """Indices ``np.linspace(0, n-1, num_frames)`` rounded: the paper's sparse uniform sampling.

    A clip shorter than ``num_frames`` repeats frames (linspace over fewer distinct indices).
    """
    if num_total <= 0:
        raise ValueError("num_total must be positive")
    return np.linspace(0, num_total - 1, num_frames).round().astype(np.int64)


def read_frames(path: str | os.PathLike, num_frames: int = 8) -> np.ndarray:
    """Decode ``num_frames`` uniformly spaced RGB frames: uint8 array (T, H, W, 3).

    Deterministic (no random offsets): evaluation never augments.
    """
    import decord  # lazy: importing decord costs ~0.3 s

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoReadError(f"video file not found: {path}")
    try:
        vr = decord.VideoReader(path, num_threads=1)
        n = len(vr)
    except Exception as e:  # decord raises DECORDError/RuntimeError with C++ text
        raise VideoReadError(f"cannot decode video {path}: {str(e).splitlines()[0][:200]}") from e
    if n == 0:
        raise VideoReadError(f"video has zero frames: {path}")
    idx = frame_indices(n, num_frames)
    try:
        frames = vr.get_batch(idx.tolist()).asnumpy()
    except Exception as e:
        raise VideoReadError(f"cannot decode frames {idx.tolist()} of {path}: {str(e).splitlines()[0][:200]}") from e
    if frames.ndim != 4 or frames.shape[0] != num_frames or frames.shape[-1] != 3:
        raise VideoReadError(f"unexpected frame array {frames.shape} from {path}")
    return frames
