"""Decode once: a frame cache (sampled, optionally resized uint8 frames per video, plus the clip metadata a
processor timestamps them with) and a ``FrameSource`` that training and evaluation read frames from.

The frames live in the content-addressed store shared with the feature cache (``pvllm.data.cache_store``:
key = sha256 of the video file + the sampling settings; one manifest, atomic writes, verified reads;
layout in docs/data_format.md), so several sampling configs live side by side under one root. A hit
opens no video: the entry holds the frames and the metadata (``clip_metadata``) taken when it was built.
A changed video (other bytes under the same id) is a miss ("stale"): decoded again, counted, warned.
Build it with::

    python -m pvllm.data.frame_cache build --root data/sample --cache outputs/frame_cache [--size 224]
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pvllm.data.cache_store import CacheEntryError, CacheStore
from pvllm.data.video_io import VideoReadError, read_clip

log = logging.getLogger(__name__)
KIND = "frames"


@dataclass(frozen=True)
class Sampling:
    """What a cached entry holds: ``num_frames`` indices ``np.linspace(0, n-1, T)`` rounded
    (``pvllm.data.video_io.frame_indices``), then, if ``size`` is set, each frame resized so its shorter
    edge is ``size`` px (PIL bicubic, aspect kept). ``size=None`` keeps the decoded frames bit for bit."""

    num_frames: int = 8
    size: int | None = None
    sampler: str = "linspace"

    def __post_init__(self) -> None:
        if self.sampler != "linspace":
            raise ValueError(f"unknown frame sampler {self.sampler!r} (known: linspace)")
        if self.num_frames < 1 or (self.size is not None and self.size < 1):
            raise ValueError(f"bad sampling {self}")

    @property
    def key(self) -> str:
        return f"{self.sampler}-t{self.num_frames}-" + (f"s{self.size}" if self.size else "orig")

    def settings(self) -> dict[str, Any]:
        """The store settings of this sampling (what the entries' key covers besides the video)."""
        return {"kind": KIND, **asdict(self)}


def resize_frames(frames: np.ndarray, size: int | None) -> np.ndarray:
    """Shorter edge -> ``size`` px (PIL bicubic, the resample of CLIP-style processors); None: unchanged."""
    if size is None:
        return frames
    from PIL import Image

    t, h, w, _ = frames.shape
    if min(h, w) == size:
        return frames
    scale = size / min(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL: (width, height)
    return np.stack([np.asarray(Image.fromarray(f).resize(new, Image.BICUBIC)) for f in frames])


def decode_clip(path: str | os.PathLike, sampling: Sampling) -> tuple[np.ndarray, dict]:
    """(frames, metadata) a cache entry holds, decoded now (raises VideoReadError naming the file). The
    metadata describes the file (frame count, rate, its own size), as ``clip_metadata`` does."""
    frames, meta = read_clip(path, sampling.num_frames)
    return resize_frames(frames, sampling.size), meta


def decode(path: str | os.PathLike, sampling: Sampling) -> np.ndarray:
    """The frames a cache entry holds, decoded now (raises VideoReadError naming the file)."""
    return decode_clip(path, sampling)[0]


class FrameCache:
    """One sampling config's frames in the store under ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, sampling: Sampling, create: bool = False):
        self.sampling = sampling
        self.store = CacheStore(root, sampling.settings(), create=create)
        self.dir = self.store.root
        self.exists = self.store.exists

    def clip(self, video_id: str, video_path: str | os.PathLike | None,
             require_file: bool = True) -> tuple[np.ndarray | None, dict | None, str]:
        """(frames, metadata, "hit") or (None, None, "missing" | "stale" | "corrupt"); opens no video. Without
        the file (``require_file=False``) the entry is found by ``video_id``."""
        if not self.exists:
            return None, None, "missing"
        rec = self.store.lookup(video_id, video_path, require_file)
        if rec is None:
            return None, None, "stale" if video_id in self.store.by_video else "missing"
        try:
            frames = self.store.read(rec)["frames"]
        except CacheEntryError as e:
            log.warning("%s", e)
            return None, None, "corrupt"
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != self.sampling.num_frames:
            return None, None, "corrupt"
        return frames, rec["meta"]["video_metadata"], "hit"

    def get(self, video_id: str, video_path: str | os.PathLike) -> tuple[np.ndarray | None, str]:
        """(frames, "hit") or (None, "missing" | "stale" | "corrupt")."""
        frames, _, status = self.clip(video_id, video_path)
        return frames, status

    def put(self, video_id: str, video_path: str | os.PathLike, frames: np.ndarray, metadata: dict) -> None:
        if frames.dtype != np.uint8 or frames.ndim != 4:
            raise ValueError(
                f"frames of {video_id}: expected uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}"
            )
        self.store.put(video_id, video_path, {"frames": frames},
                       {"num_frames": int(frames.shape[0]), "video_metadata": metadata})

    def build(self, videos: list[tuple[str, str]], progress: bool = True) -> Counter[str]:
        """Cache every (video_id, path) not cached yet (resumable); a video that fails to decode is
        named in a warning and counted, never replaced. The manifest is compacted once at the end."""
        from tqdm import tqdm

        counts: Counter[str] = Counter()
        self.store.refresh()
        for vid, path in tqdm(videos, desc=f"frame cache {self.sampling.key}", disable=not progress):
            if not os.path.isfile(path):
                log.warning("frame cache: video %s: file not found: %s", vid, path)
                counts["failed"] += 1
                continue
            if self.clip(vid, path)[2] == "hit":
                counts["already_cached"] += 1
                continue
            try:
                self.put(vid, path, *decode_clip(path, self.sampling))
                counts["cached"] += 1
            except VideoReadError as e:
                log.warning("frame cache: video %s: %s", vid, e)
                counts["failed"] += 1
        self.store.compact()  # a build that stops early leaves the appended lines: still a valid manifest
        return counts

    def verify(self) -> Counter[str]:
        """Re-hash every cached array against its entry (bit rot, a torn copy): counts ok / bad."""
        return self.store.verify()


class FrameSource:
    """Where training and evaluation get a video's frames: the frame cache when it holds them (no video
    opened), else a decode (counted; a warning once per video when a configured cache misses), and an
    in-memory LRU of the last ``memo`` videos, so a run that meets a video again (evaluation groups samples
    by video) decodes it once. ``counts`` says how each request was served. ``require_files=False``: the run
    goes without the video files (entries found by video id); a video the cache lacks is an error naming it."""

    def __init__(self, sampling: Sampling, cache_dir: str | os.PathLike | None = None, memo: int = 0,
                 require_files: bool = True):
        self.sampling = sampling
        self.cache = FrameCache(cache_dir, sampling) if cache_dir else None
        self.require_files = bool(require_files)
        if not self.require_files and self.cache is None:
            raise ValueError("data.require_video_files=false reads every video from the cache: set data.frame_cache "
                             "(or data.feature_cache)")
        if self.cache is not None and not self.cache.exists:
            log.warning(
                "frame cache %s has no manifest: every video is decoded (build it with "
                "python -m pvllm.data.frame_cache build ...)",
                self.cache.dir,
            )
        self.memo = int(memo)
        self._memo: OrderedDict[str, tuple[np.ndarray, dict]] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self._warned: set[str] = set()

    def clip(self, video_path: str | os.PathLike, video_id: str | None = None) -> tuple[np.ndarray, dict]:
        """(frames uint8 (T, H, W, 3), metadata); raises VideoReadError naming the file."""
        key = os.fspath(video_path)
        if key in self._memo:
            self._memo.move_to_end(key)
            self.counts["memo"] += 1
            return self._memo[key]
        got = None
        present = os.path.isfile(key)
        vid = video_id or Path(key).stem
        if self.cache is not None and (present or not self.require_files):
            frames, meta, status = self.cache.clip(vid, key, require_file=self.require_files)
            if frames is not None:
                self.counts["cache"] += 1
                got = (frames, meta)
            elif not present:
                raise CacheEntryError(f"video {vid}: {status} in the frame cache {self.cache.dir} "
                                      f"({self.sampling.key}) "
                                      f"and its file {key} is absent (data.require_video_files=false reads videos "
                                      "from the cache only): build the cache where the videos are")
            else:
                self.counts[f"decoded_cache_{status}"] += 1
                if vid not in self._warned:
                    self._warned.add(vid)
                    log.warning(
                        "frame cache %s: video %s is %s there: decoding it", self.cache.dir, vid, status
                    )
        if got is None:
            got = decode_clip(key, self.sampling)
            self.counts["decoded"] += 1
        if self.memo > 0:
            self._memo[key] = got
            while len(self._memo) > self.memo:
                self._memo.popitem(last=False)
        return got

    def get(self, video_path: str | os.PathLike, video_id: str | None = None) -> np.ndarray:
        """uint8 (T, H, W, 3); raises VideoReadError naming the file."""
        return self.clip(video_path, video_id)[0]

    def summary(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pvllm.data.frame_cache", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="cache the frames of every video of a PerVidCom directory (resumable)")
    b.add_argument("--root", required=True, help="dataset directory (videos.jsonl + videos/)")
    b.add_argument("--cache", required=True, help="cache store root (several sampling configs live side by side)")
    b.add_argument("--num-frames", type=int, default=8)
    b.add_argument("--size", type=int, default=None, help="shorter edge in px (default: decoded size)")
    v = sub.add_parser("verify", help="re-hash every cached array against its entry")
    v.add_argument("--cache", required=True)
    v.add_argument("--num-frames", type=int, default=8)
    v.add_argument("--size", type=int, default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    sampling = Sampling(a.num_frames, a.size)
    if a.cmd == "build":
        from pvllm.data.dataset import load_pervidcom

        ds = load_pervidcom(a.root)
        cache = FrameCache(a.cache, sampling, create=True)
        counts = cache.build([(vid, str(ds.video_path(vid))) for vid in sorted(ds.videos)])
        print(f"{cache.dir}: {dict(counts)}")
        if counts["failed"]:
            raise SystemExit(1)
    else:
        cache = FrameCache(a.cache, sampling)
        counts = cache.verify()
        print(f"{cache.dir}: {dict(counts)}")
        if counts["bad"]:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
