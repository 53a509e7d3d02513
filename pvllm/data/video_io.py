"""Reading the frames a model sees: decord, uniform sampling, clear errors naming the file."""

from __future__ import annotations

import os
from typing import Any

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


def open_video(path: str | os.PathLike, check_file: bool = True) -> tuple[Any, int, float]:
    """(decord ``VideoReader``, frame count, native fps) of a file, or a VideoReadError naming it (missing,
    undecodable, zero frames)."""
    import decord  # lazy: importing decord costs ~0.3 s

    path = os.fspath(path)
    if check_file and not os.path.isfile(path):
        raise VideoReadError(f"video file not found: {path}")
    try:
        vr = decord.VideoReader(path, num_threads=1)
        n, native = len(vr), float(vr.get_avg_fps())
    except Exception as e:  # decord raises DECORDError/RuntimeError with C++ text
        raise VideoReadError(f"cannot decode video {path}: {str(e).splitlines()[0][:200]}") from e
    if n == 0:
        raise VideoReadError(f"video has zero frames: {path}")
    return vr, n, native


def read_frames(path: str | os.PathLike, num_frames: int = 8) -> np.ndarray:
    """Decode ``num_frames`` uniformly spaced RGB frames: uint8 array (T, H, W, 3).

    Deterministic (no random offsets): evaluation never augments.
    """
    vr, n, _ = open_video(path)
    idx = frame_indices(n, num_frames)
    try:
        frames = vr.get_batch(idx.tolist()).asnumpy()
    except Exception as e:
        raise VideoReadError(f"cannot decode frames {idx.tolist()} of {path}: {str(e).splitlines()[0][:200]}") from e
    if frames.ndim != 4 or frames.shape[0] != num_frames or frames.shape[-1] != 3:
        raise VideoReadError(f"unexpected frame array {frames.shape} from {path}")
    return frames


def fps_indices(num_total: int, native_fps: float, fps: float, max_frames: int) -> np.ndarray:
    """One frame every ``1/fps`` seconds from the start; more than ``max_frames`` is an error (the per-sample
    frame budget), never a silent cut."""
    if fps <= 0 or native_fps <= 0:
        raise ValueError(f"fps sampling needs positive rates (asked {fps}, video {native_fps})")
    idx = np.arange(0, num_total, native_fps / fps).round().astype(np.int64)
    idx = idx[idx < num_total]
    if len(idx) > max_frames:
        raise ValueError(f"fps sampling at {fps}/s gives {len(idx)} frames (> max_frames={max_frames}); "
                         "lower data.fps or raise data.max_frames")
    return idx


def read_clip(path: str | os.PathLike, num_frames: int = 8, fps: float | None = None,
              max_frames: int | None = None) -> tuple[np.ndarray, dict]:
    """Frames plus what a processor needs to timestamp them: (frames (T, H, W, 3) uint8, metadata dict with
    ``total_num_frames, fps, width, height, duration, frames_indices``).

    ``fps=None``: ``num_frames`` uniformly spaced frames (``read_frames``); ``fps`` set: one frame every
    ``1/fps`` s, at most ``max_frames`` (default ``num_frames``) or a VideoReadError naming the file.
    """
    vr, n, native = open_video(path)
    if fps is None:
        idx = frame_indices(n, num_frames)
    else:
        # over the frame budget: a ValueError (a config problem), not a bad video to skip
        idx = fps_indices(n, native, fps, max_frames or num_frames)
    try:
        frames = vr.get_batch(idx.tolist()).asnumpy()
    except Exception as e:
        raise VideoReadError(f"cannot decode frames {idx.tolist()} of {path}: {str(e).splitlines()[0][:200]}") from e
    h, w = frames.shape[1:3]
    meta = {"total_num_frames": n, "fps": native, "width": int(w), "height": int(h),
            "duration": n / native if native > 0 else None, "frames_indices": idx.tolist()}
    return frames, meta


def clip_metadata(path: str | os.PathLike, num_frames: int = 8) -> dict:
    """``read_clip``'s metadata for the ``num_frames`` uniformly spaced frames (frame count, rate, size; one
    frame decoded for the size): what a processor needs to timestamp frames served by the frame cache."""
    vr, n, native = open_video(path, check_file=False)
    try:
        h, w = vr[0].shape[:2]
    except Exception as e:
        raise VideoReadError(f"cannot decode video {os.fspath(path)}: {str(e).splitlines()[0][:200]}") from e
    return {"total_num_frames": n, "fps": native, "width": int(w), "height": int(h),
            "duration": n / native if native > 0 else None, "frames_indices": frame_indices(n, num_frames).tolist()}
