"""Frozen vision-tower outputs, computed once per video and sampling config, read by training and evaluation.

The entries live in the content-addressed store shared with the frame cache (``pvllm.data.cache_store``).
Their settings come from the model side: a *tower transform* built in ``pvllm/models/`` (for every family:
``pvllm.models.tower_cache.TowerFeatures``) and handed in by the entry point, so this module never imports a
model. The transform provides:

- ``settings()``: a JSON dict with ``kind="tower"``, ``num_frames`` and ``frame_size`` (the frame sampling),
  plus the family, the tower's weights sha256, the recorded layers and the preprocessing;
- ``compute(frames, metadata)``: the tower's outputs for one clip, a dict of float32 arrays.

An entry holds those arrays plus what the rest of the pipeline needs without opening the video: the shape of
the frames the tower saw (the processor expands the video placeholder from it) and the clip metadata
(timestamps). A placeholder entry (the outputs for black 32-px frames) serves skipped videos.

    python -m pvllm.cache_features --model DIR_OF_MODEL --data data/sample --out DIR [--num-frames 8]
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any, Protocol

import numpy as np
import torch

from pvllm.data.cache_store import CacheEntryError, CacheStore
from pvllm.data.frame_cache import FrameSource, Sampling
from pvllm.data.video_io import VideoReadError

log = logging.getLogger(__name__)
KIND = "tower"
PLACEHOLDER = "__placeholder__"  # the video id of the skipped-video entry (no file)
PLACEHOLDER_SIDE = 32  # frames of a skipped video's placeholder (the processor resizes them)
BUILD_HINT = "python -m pvllm.cache_features --model MODEL --data DATA --out {dir}"


class FeatureCacheError(RuntimeError):
    """A cache that does not fit the model/sampling (the differing settings named), or a missing cache."""


class FeatureEntryError(FeatureCacheError, CacheEntryError):
    """One video's entry is absent or does not match its manifest line: that video is bad, as an unreadable
    file is (``data.on_bad_video=skip`` skips and counts its sample; evaluation fails that sample, counted)."""


class TowerTransform(Protocol):
    """What the feature cache needs from the model side (``pvllm.models.tower_cache.TowerFeatures``)."""

    def settings(self) -> dict[str, Any]: ...

    def compute(self, frames: np.ndarray, metadata: dict) -> dict[str, np.ndarray]: ...


def placeholder_clip(num_frames: int) -> tuple[np.ndarray, dict]:
    """Black frames + one-frame-per-second metadata: what a skipped video's sample is shown."""
    n, s = int(num_frames), PLACEHOLDER_SIDE
    meta = {"total_num_frames": n, "fps": 1.0, "width": s, "height": s, "duration": float(n),
            "frames_indices": list(range(n))}
    return np.zeros((n, s, s, 3), np.uint8), meta


def _check_settings(settings: dict[str, Any]) -> None:
    missing = [k for k in ("kind", "num_frames", "frame_size") if k not in settings]
    if missing or settings["kind"] != KIND:
        raise ValueError(f"tower settings need kind={KIND!r}, num_frames and frame_size; got {settings}")


class FeatureCache:
    """Read side: ``get(video_id, path)`` -> {frames (black, of the shape the tower saw), video_metadata,
    tower_outputs {name: tensor}}. ``require_files=False``: entries found by video id, no file needed."""

    def __init__(self, directory: str | os.PathLike, settings: dict[str, Any], require_files: bool = True):
        _check_settings(settings)
        self.settings = settings
        self.require_files = bool(require_files)
        self.store = CacheStore(directory, settings)
        self.dir = self.store.root
        if not self.store.exists:
            raise FeatureCacheError(f"{self.dir}: no feature cache here (store.json missing); build it with "
                                    + BUILD_HINT.format(dir=self.dir))
        if not self.store.records:
            why = self.store.explain_other_settings()
            raise FeatureCacheError(
                f"{self.dir} holds no tower outputs for this model and frame sampling"
                + (f" (it was built for another encoder or frame sampling: {why})" if why else " (empty)")
                + "; build them with " + BUILD_HINT.format(dir=self.dir))

    @staticmethod
    def _entry(arrays: dict[str, np.ndarray], rec: dict) -> dict[str, Any]:
        meta = rec["meta"]
        return {"frames": np.zeros(meta["frame_shape"], np.uint8), "video_metadata": meta["video_metadata"],
                "tower_outputs": {k: torch.from_numpy(v) for k, v in arrays.items()}}

    def get(self, video_id: str, video_path: str | os.PathLike | None) -> dict[str, Any]:
        """The video's entry; raises FeatureEntryError (a bad video) naming it when absent or corrupt, and
        VideoReadError when its file is missing while files are required."""
        rec = self.store.lookup(video_id, video_path, self.require_files)
        if rec is None:
            absent = video_path is None or not os.path.isfile(video_path)
            raise FeatureEntryError(
                f"video {video_id} ({video_path}{', file absent' if absent else ''}): not in the feature cache "
                f"{self.dir}; rerun the cache build to add it ({BUILD_HINT.format(dir=self.dir)})")
        try:
            return self._entry(self.store.read(rec), rec)
        except CacheEntryError as e:
            raise FeatureEntryError(str(e)) from e

    def placeholder(self) -> dict[str, Any]:
        """The entry of a skipped video (black frames, ``placeholder_clip``)."""
        rec = self.store.records.get(PLACEHOLDER)
        if rec is None:
            raise FeatureCacheError(f"{self.dir}: no placeholder entry (built by an older pvllm?); rerun the build")
        return self._entry(self.store.read(rec), rec)


def _put(store: CacheStore, transform: TowerTransform, video_id: str, path: str | None, frames: np.ndarray,
         meta: dict, video_sha: str | None = None) -> None:
    arrays = transform.compute(frames, meta)
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
    store.put(video_id, path, arrays, {"num_frames": int(frames.shape[0]), "frame_shape": list(frames.shape),
                                       "video_metadata": meta}, video_sha=video_sha)


@torch.inference_mode()
def build_cache(directory: str | os.PathLike, transform: TowerTransform, videos: list[tuple[str, str]],
                frame_cache: str | os.PathLike | None = None, progress: bool = True) -> Counter[str]:
    """Compute the tower outputs of every (video_id, path) not cached yet (resumable); counts encoded /
    reused / failed. Frames come from ``frame_cache`` when it holds them, else are decoded. The manifest is
    appended to per video and compacted once at the end."""
    from tqdm import tqdm

    settings = transform.settings()
    _check_settings(settings)
    store = CacheStore(directory, settings, create=True)
    frames = FrameSource(Sampling(settings["num_frames"], settings["frame_size"]), frame_cache)
    counts: Counter[str] = Counter()
    if PLACEHOLDER not in store.records:
        _put(store, transform, PLACEHOLDER, None, *placeholder_clip(settings["num_frames"]), video_sha=PLACEHOLDER)
    for vid, path in tqdm(sorted(set(videos)), desc="tower cache", disable=not progress):
        try:
            rec = store.lookup(vid, path)
            if rec is not None:
                store.read(rec)  # verified: a corrupt entry is computed again
                counts["reused"] += 1
                continue
        except CacheEntryError as e:
            log.warning("feature cache: recomputing %s: %s", vid, e)
        except VideoReadError as e:  # the file is missing: counted and named
            log.warning("feature cache: skipping %s: %s", vid, e)
            counts["failed"] += 1
            continue
        try:
            clip, meta = frames.clip(path, vid)
        except VideoReadError as e:  # counted and named; never replaced by another video's outputs
            log.warning("feature cache: skipping %s: %s", vid, e)
            counts["failed"] += 1
            continue
        _put(store, transform, vid, path, clip, meta)
        counts["encoded"] += 1
    store.compact()  # once, at the end (a build that stops early leaves a valid append-only manifest)
    return counts


if __name__ == "__main__":  # the builder needs a model, so it is an entry point now
    import sys

    sys.exit("the feature cache is built with `python -m pvllm.cache_features --model MODEL --data DATA --out DIR` "
             "(the data layer imports no model)")
