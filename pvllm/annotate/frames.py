"""Frame thumbnails for the annotation page: 8 uniformly spaced frames as base64 JPEG data URLs."""

from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict
from pathlib import Path

from pvllm.utils.jsonl import load_jsonl


class FrameSource:
    """Reads a dataset directory's ``videos.jsonl`` and makes thumbnails on demand (small LRU cache).

    ``thumbnails(video_id)`` returns ``(data_urls, None)`` or ``([], reason)`` when the video is unknown
    or cannot be decoded; the page shows the reason instead of the frames.
    """

    def __init__(self, dataset_dir: str | Path, num_frames: int = 8, width: int = 160, cache_size: int = 16):
        self.root = Path(dataset_dir)
        vfile = self.root / "videos.jsonl"
        if not vfile.is_file():
            raise FileNotFoundError(f"{self.root}: no videos.jsonl (is --dataset a dataset directory?)")
        videos = load_jsonl(vfile)
        self.files = {str(v["video_id"]): str(v["file"]) for v in videos if v.get("file")}
        self.titles = {str(v["video_id"]): v["title"] for v in videos if v.get("title")}
        self.num_frames, self.width, self.cache_size = num_frames, width, cache_size
        self._cache: OrderedDict[str, tuple[list[str], str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def video_file(self, video_id: str | None) -> Path | None:
        """The video's file when ``videos.jsonl`` lists it and it exists (only listed files are served)."""
        rel = None if video_id is None else self.files.get(video_id)
        if rel is None:
            return None
        path = (self.root / rel).resolve()
        return path if path.is_file() and path.is_relative_to(self.root.resolve()) else None

    def title(self, video_id: str | None) -> str | None:
        return None if video_id is None else self.titles.get(video_id)

    def thumbnails(self, video_id: str | None) -> tuple[list[str], str | None]:
        if video_id is None:
            return [], "this sample has no video_id"
        with self._lock:
            if video_id in self._cache:
                self._cache.move_to_end(video_id)
                return self._cache[video_id]
        result = self._make(video_id)
        with self._lock:
            self._cache[video_id] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    def _make(self, video_id: str) -> tuple[list[str], str | None]:
        rel = self.files.get(video_id)
        if rel is None:
            return [], f"video {video_id} is not in {self.root / 'videos.jsonl'}"
        try:
            from PIL import Image

            from pvllm.data.video_io import read_frames

            frames = read_frames(self.root / rel, self.num_frames)
        except Exception as e:  # VideoReadError, missing decord, ...: a note on the page, never a crash
            return [], f"cannot read video {video_id}: {e}"
        urls = []
        for f in frames:
            img = Image.fromarray(f)
            h = max(1, round(img.height * self.width / max(1, img.width)))
            img = img.resize((self.width, h))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=75)
            urls.append("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
        return urls, None
