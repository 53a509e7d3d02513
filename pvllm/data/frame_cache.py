"""Decode once: a frame cache on disk (sampled, optionally resized uint8 frames per video) and a
``FrameSource`` that training and evaluation read frames from.

Layout (one directory per sampling config, so several configs live side by side under one root)::

    <root>/<sampling key>/manifest.json     {"format", "sampling", "key"}  (the config, checked on open)
    <root>/<sampling key>/<video_id>.npy    uint8 (T, H, W, 3)
    <root>/<sampling key>/<video_id>.json   the entry: video file bytes/mtime/sha256, frames shape + sha256

An entry counts only once its ``.json`` exists (written after the ``.npy``, both atomically), so a killed
build resumes where it stopped. Reading checks the video is the one cached: same size and mtime, else its
sha256 is recomputed and compared (a changed video is a stale entry: decoded again, counted, warned).
Build it with::

    python -m pvllm.data.frame_cache build --root data/sample --cache outputs/frame_cache [--size 224]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pvllm.data.video_io import VideoReadError, read_frames
from pvllm.utils.atomic import write_bytes_atomic

log = logging.getLogger(__name__)
FORMAT = "pvllm-frame-cache/1"
_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,120}$")


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


def decode(path: str | os.PathLike, sampling: Sampling) -> np.ndarray:
    """The frames a cache entry holds, decoded now (raises VideoReadError naming the file)."""
    return resize_frames(read_frames(path, sampling.num_frames), sampling.size)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    write_bytes_atomic(path, data)  # a failed write (disk full) leaves no partial file and names the path


class FrameCache:
    """One sampling config's directory of cached frames (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike, sampling: Sampling, create: bool = False):
        self.sampling = sampling
        self.dir = Path(root).expanduser() / sampling.key
        manifest = {"format": FORMAT, "sampling": asdict(sampling), "key": sampling.key}
        mf = self.dir / "manifest.json"
        if mf.is_file():
            found = json.loads(mf.read_text())
            if found != manifest:
                raise ValueError(f"{mf} describes {found}, not {manifest}: another cache format or config")
        elif create:
            self.dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(mf, (json.dumps(manifest, indent=1) + "\n").encode())
        self.exists = mf.is_file()

    def _paths(self, video_id: str) -> tuple[Path, Path]:
        name = (
            video_id if _SAFE.match(video_id) else "h_" + hashlib.sha256(video_id.encode()).hexdigest()[:32]
        )
        return self.dir / f"{name}.npy", self.dir / f"{name}.json"

    def entry(self, video_id: str) -> dict[str, Any] | None:
        meta = self._paths(video_id)[1]
        return json.loads(meta.read_text()) if meta.is_file() else None

    def get(self, video_id: str, video_path: str | os.PathLike) -> tuple[np.ndarray | None, str]:
        """(frames, "hit") or (None, "missing" | "stale" | "corrupt")."""
        if not self.exists:
            return None, "missing"
        npy, meta_p = self._paths(video_id)
        try:
            meta = json.loads(meta_p.read_text())
        except FileNotFoundError:
            return None, "missing"
        st = os.stat(video_path)
        if (st.st_size, st.st_mtime_ns) != (meta["video_bytes"], meta["video_mtime_ns"]):
            if st.st_size != meta["video_bytes"] or file_sha256(video_path) != meta["video_sha256"]:
                return None, "stale"
        try:
            frames = np.load(npy, allow_pickle=False)
        except (OSError, ValueError):
            return None, "corrupt"
        if list(frames.shape) != meta["shape"] or frames.dtype != np.uint8:
            return None, "corrupt"
        return frames, "hit"

    def put(self, video_id: str, video_path: str | os.PathLike, frames: np.ndarray) -> None:
        import io

        if frames.dtype != np.uint8 or frames.ndim != 4:
            raise ValueError(
                f"frames of {video_id}: expected uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}"
            )
        npy, meta_p = self._paths(video_id)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(frames), allow_pickle=False)
        _atomic_write(npy, buf.getvalue())
        st = os.stat(video_path)
        meta = {
            "video_id": video_id,
            "video_bytes": st.st_size,
            "video_mtime_ns": st.st_mtime_ns,
            "video_sha256": file_sha256(video_path),
            "shape": list(frames.shape),
            "frames_sha256": hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest(),
        }
        _atomic_write(meta_p, (json.dumps(meta) + "\n").encode())

    def build(self, videos: list[tuple[str, str]], progress: bool = True) -> Counter[str]:
        """Cache every (video_id, path) not cached yet (resumable); a video that fails to decode is
        named in a warning and counted, never replaced."""
        from tqdm import tqdm

        counts: Counter[str] = Counter()
        for vid, path in tqdm(videos, desc=f"frame cache {self.sampling.key}", disable=not progress):
            if not os.path.isfile(path):
                log.warning("frame cache: video %s: file not found: %s", vid, path)
                counts["failed"] += 1
                continue
            if self.get(vid, path)[1] == "hit":
                counts["already_cached"] += 1
                continue
            try:
                self.put(vid, path, decode(path, self.sampling))
                counts["cached"] += 1
            except VideoReadError as e:
                log.warning("frame cache: video %s: %s", vid, e)
                counts["failed"] += 1
        return counts

    def verify(self) -> Counter[str]:
        """Re-hash every cached array against its entry (bit rot, a torn copy): counts ok / bad."""
        counts: Counter[str] = Counter()
        for meta_p in sorted(self.dir.glob("*.json")):
            if meta_p.name == "manifest.json":
                continue
            meta = json.loads(meta_p.read_text())
            try:
                frames = np.load(meta_p.with_suffix(".npy"), allow_pickle=False)
                ok = (
                    hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()
                    == meta["frames_sha256"]
                )
            except (OSError, ValueError):
                ok = False
            counts["ok" if ok else "bad"] += 1
            if not ok:
                log.warning("frame cache: %s does not match its entry", meta_p.with_suffix(".npy"))
        return counts


class FrameSource:
    """Where training and evaluation get a video's frames: the frame cache when it holds them, else a
    decode (counted; a warning once per video when a configured cache misses), and an in-memory LRU of
    the last ``memo`` videos, so a run that meets a video again (evaluation groups samples by video)
    decodes it once. ``counts`` says how each request was served."""

    def __init__(self, sampling: Sampling, cache_dir: str | os.PathLike | None = None, memo: int = 0):
        self.sampling = sampling
        self.cache = FrameCache(cache_dir, sampling) if cache_dir else None
        if self.cache is not None and not self.cache.exists:
            log.warning(
                "frame cache %s has no manifest: every video is decoded (build it with "
                "python -m pvllm.data.frame_cache build ...)",
                self.cache.dir,
            )
        self.memo = int(memo)
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self._warned: set[str] = set()

    def get(self, video_path: str | os.PathLike, video_id: str | None = None) -> np.ndarray:
        """uint8 (T, H, W, 3); raises VideoReadError naming the file."""
        key = os.fspath(video_path)
        if key in self._memo:
            self._memo.move_to_end(key)
            self.counts["memo"] += 1
            return self._memo[key]
        frames = None
        if self.cache is not None and os.path.isfile(key):
            vid = video_id or Path(key).stem
            frames, status = self.cache.get(vid, key)
            if frames is not None:
                self.counts["cache"] += 1
            else:
                self.counts[f"decoded_cache_{status}"] += 1
                if vid not in self._warned:
                    self._warned.add(vid)
                    log.warning(
                        "frame cache %s: video %s is %s there: decoding it", self.cache.dir, vid, status
                    )
        if frames is None:
            frames = decode(key, self.sampling)
            self.counts["decoded"] += 1
        if self.memo > 0:
            self._memo[key] = frames
            while len(self._memo) > self.memo:
                self._memo.popitem(last=False)
        return frames

    def summary(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pvllm.data.frame_cache", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="cache the frames of every video of a PerVidCom directory (resumable)")
    b.add_argument("--root", required=True, help="dataset directory (videos.jsonl + videos/)")
    b.add_argument("--cache", required=True, help="frame cache root (one subdirectory per sampling config)")
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
