"""One content-addressed store for what pvllm computes once per video: sampled frames
(``pvllm.data.frame_cache``) and frozen vision-tower outputs (``pvllm.data.feature_cache``).

An entry is addressed by the sha256 of the video file's bytes and the settings that produced it (frame
sampling; tower identity and preprocessing), so a changed file is never served stale and two settings live
side by side under one root. Layout (docs/data_format.md)::

    ROOT/store.json                      {"format": "pvllm-cache-store/1"}
    ROOT/settings/<settings id>.json     the settings dict (id = first 16 hex of its canonical-JSON sha256)
    ROOT/objects/<kk>/<key>.npy|.npz     the entry's array(s): .npy for one (read in one go), .npz for several
                                         (key = sha256 of settings id + video sha256)
    ROOT/manifest.jsonl                  append-only: one line per entry written

Writes are atomic (``pvllm.utils.atomic``: temporary file + rename): the object first, then its manifest
line, so a killed build leaves at most an unindexed object that the rerun rewrites. The manifest is only
appended to while building (no rewrite per video) and compacted once at the end (the last line per key,
written atomically). A torn last line (a kill mid-append) is skipped, counted and warned. Reads are
verified against the manifest line: array names, shapes and dtypes, and the frame count of the settings;
``verify`` re-hashes every object's bytes.

The manifest also records which file each entry came from (video id, size, mtime), so a read finds its
entry without hashing the video again, and a run can go without the video files at all
(``require_file=False``: the entry is found by the video id).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pvllm.data.video_io import VideoReadError
from pvllm.utils.atomic import write_bytes_atomic
from pvllm.utils.hashing import array_sha256, file_sha256, json_sha256, text_sha256
from pvllm.utils.locks import file_lock

log = logging.getLogger(__name__)
FORMAT = "pvllm-cache-store/1"
MANIFEST = "manifest.jsonl"


class CacheEntryError(VideoReadError):
    """A video's entry is absent (its file too, when the run goes without videos) or does not match its
    manifest line: that video is bad, as an unreadable file is (``data.on_bad_video=skip`` counts it)."""


def settings_id(settings: dict[str, Any]) -> str:
    return json_sha256(settings, 16)


class CacheStore:
    """The entries of one ``settings`` (a dict; its ``kind`` and ``num_frames`` are read) under ``root``."""

    def __init__(self, root: str | os.PathLike, settings: dict[str, Any], create: bool = False):
        self.root = Path(root).expanduser()
        self.settings = settings
        self.sid = settings_id(settings)
        self.torn = 0  # manifest lines that could not be parsed (a kill mid-append), skipped
        marker = self.root / "store.json"
        if marker.is_file():
            found = json.loads(marker.read_text()).get("format")
            if found != FORMAT:
                raise ValueError(f"{self.root}: a cache of format {found!r}, not {FORMAT!r}: another cache format "
                                 "(rebuild it in a new directory)")
        elif create:
            (self.root / "settings").mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(marker, (json.dumps({"format": FORMAT}) + "\n").encode())
        if create:
            sf = self.root / "settings" / f"{self.sid}.json"
            if not sf.is_file():
                write_bytes_atomic(sf, (json.dumps(settings, indent=1, sort_keys=True) + "\n").encode())
        self.exists = marker.is_file()
        self._stamp: tuple[int, int] | None = None
        self._sha_memo: dict[tuple[str, int, int], str] = {}
        self._load()

    # --- the manifest ------------------------------------------------------------------------------
    def _load(self) -> None:
        """(Re)read the manifest's lines of these settings: the last line per video wins."""
        self.records: dict[str, dict] = {}  # video sha256 -> manifest line
        self.by_video: dict[str, str] = {}  # video id -> video sha256 (its latest entry)
        self.by_stat: dict[tuple[str, int, int], str] = {}  # (video id, bytes, mtime_ns) -> video sha256
        mf = self.root / MANIFEST
        if not mf.is_file():
            self._stamp = None
            return
        st = mf.stat()
        self._stamp = (st.st_size, st.st_mtime_ns)
        torn = 0
        for line in mf.read_text().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                torn += 1
                continue
            if rec.get("settings") != self.sid:
                continue
            self.records[rec["video_sha256"]] = rec
            self.by_video[rec["video_id"]] = rec["video_sha256"]
            src = rec.get("source") or {}
            self.by_stat[(rec["video_id"], src.get("bytes"), src.get("mtime_ns"))] = rec["video_sha256"]
        if torn and torn != self.torn:
            log.warning("cache %s: %d manifest line(s) could not be read (a build killed mid-write); their "
                        "entries are rebuilt by the next build", mf, torn)
        self.torn = torn

    def refresh(self) -> None:
        """Reread the manifest if it changed since it was read (another process built entries)."""
        mf = self.root / MANIFEST
        if mf.is_file():
            st = mf.stat()
            if (st.st_size, st.st_mtime_ns) != self._stamp:
                self._load()

    def object_path(self, video_sha: str, n_arrays: int = 2) -> Path:
        key = text_sha256(self.sid + video_sha)
        return self.root / "objects" / key[:2] / f"{key}.{'npy' if n_arrays == 1 else 'npz'}"

    # --- reading --------------------------------------------------------------------------------------
    def video_sha256(self, video_id: str, path: str | os.PathLike | None, require_file: bool = True) -> str | None:
        """The content hash of the video: from the manifest when the file's size and mtime are the recorded
        ones (no hashing), else by hashing it; without the file (``require_file=False``) the video id's
        entry's. None: not known (no file and no entry). A missing file with ``require_file`` raises."""
        p = os.fspath(path) if path is not None else None
        if p is not None and os.path.isfile(p):
            st = os.stat(p)
            stat_key = (video_id, st.st_size, st.st_mtime_ns)
            if stat_key in self.by_stat:
                return self.by_stat[stat_key]
            memo = (p, st.st_size, st.st_mtime_ns)
            if memo not in self._sha_memo:
                self._sha_memo[memo] = file_sha256(p)
            return self._sha_memo[memo]
        if require_file:
            raise VideoReadError(f"{p}: file not found (video {video_id})")
        return self.by_video.get(video_id)

    def lookup(self, video_id: str, path: str | os.PathLike | None, require_file: bool = True) -> dict | None:
        """The manifest line of the video's entry, or None."""
        sha = self.video_sha256(video_id, path, require_file)
        if sha is None or sha not in self.records:
            self.refresh()  # a build may have added it since the store was opened
            if sha is None:  # no file: the video id's entry
                sha = self.by_video.get(video_id)
        return self.records.get(sha) if sha else None

    def read(self, rec: dict) -> dict[str, np.ndarray]:
        """The entry's arrays, checked against its manifest line (names, shapes, dtypes, frame count);
        raises CacheEntryError naming the object."""
        obj = self.root / rec["object"]
        if not obj.is_file():
            raise CacheEntryError(f"{obj} (cached {self.settings.get('kind')} of video {rec['video_id']}): missing; "
                                  "rerun the cache build")
        try:
            if obj.suffix == ".npy":  # one array (frames): one read, no zip member copy
                arrays = {next(iter(rec["arrays"])): np.load(obj, allow_pickle=False)}
            else:
                with np.load(obj, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            raise CacheEntryError(f"{obj} (cached {self.settings.get('kind')} of video {rec['video_id']}): "
                                  f"unreadable ({type(e).__name__}: {e}); rerun the cache build") from e
        want = rec["arrays"]
        bad = [] if set(arrays) == set(want) else [f"arrays {sorted(arrays)} != {sorted(want)}"]
        for k in set(arrays) & set(want):
            a, w = arrays[k], want[k]
            if list(a.shape) != w["shape"] or str(a.dtype) != w["dtype"]:
                bad.append(f"{k}: {a.dtype}{list(a.shape)} != {w['dtype']}{w['shape']}")
        n = self.settings.get("num_frames")
        if n is not None and rec.get("meta", {}).get("num_frames") != n:
            bad.append(f"{rec.get('meta', {}).get('num_frames')} frames, the settings sample {n}")
        if bad:
            raise CacheEntryError(f"{obj} (cached {self.settings.get('kind')} of video {rec['video_id']}) does not "
                                  f"match its manifest line: {'; '.join(bad)}; delete it and rerun the cache build")
        return arrays

    # --- writing --------------------------------------------------------------------------------------
    def put(self, video_id: str, path: str | os.PathLike | None, arrays: dict[str, np.ndarray],
            meta: dict[str, Any], video_sha: str | None = None) -> dict:
        """Write one entry (object, then its manifest line); returns the line."""
        if not self.exists:
            raise RuntimeError(f"{self.root}: open the store with create=True to write it")
        p = os.fspath(path) if path is not None else None  # None: an entry of no file (a placeholder)
        if p is None and video_sha is None:
            raise ValueError(f"{video_id}: an entry without a file needs its video_sha")
        st = os.stat(p) if p is not None else None
        sha = video_sha or file_sha256(p)
        obj = self.object_path(sha, len(arrays))
        obj.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        buf = io.BytesIO()
        if len(arrays) == 1:
            np.save(buf, next(iter(arrays.values())), allow_pickle=False)
        else:
            np.savez(buf, **arrays)
        write_bytes_atomic(obj, buf.getvalue())  # disk full: no partial file, the path named
        rec = {"settings": self.sid, "video_sha256": sha, "video_id": video_id,
               "source": None if st is None else {"name": Path(p).name, "bytes": st.st_size,
                                                  "mtime_ns": st.st_mtime_ns},
               "object": obj.relative_to(self.root).as_posix(),
               "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype), "sha256": array_sha256(v)}
                          for k, v in arrays.items()},
               "meta": meta}
        self._append(rec)
        self.records[sha] = rec
        self.by_video[video_id] = sha
        if st is not None:
            self.by_stat[(video_id, st.st_size, st.st_mtime_ns)] = sha
        return rec

    @contextlib.contextmanager
    def _lock(self, exclusive: bool):
        """Builders append under a shared lock, compaction rewrites under an exclusive one, so a line appended
        by another build while this one compacts is never dropped."""
        with file_lock(self.root / ".manifest.lock", exclusive):
            yield

    def _append(self, rec: dict) -> None:
        line = (json.dumps(rec, sort_keys=True) + "\n").encode()
        mf = self.root / MANIFEST
        try:  # one write of one line in append mode: concurrent builders never interleave within a line
            with self._lock(exclusive=False):
                self._write_line(mf, line)
        except OSError as e:
            from pvllm.utils.atomic import write_failed

            raise write_failed(mf, e) from e

    @staticmethod
    def _write_line(mf: Path, line: bytes) -> None:
        fd = os.open(mf, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn last line: never glue onto it
                line = b"\n" + line
            os.write(fd, line)
        finally:
            os.close(fd)

    def compact(self) -> int:
        """Rewrite the manifest (all settings) with the last line per entry whose object exists, atomically
        and fsynced once; returns the lines dropped."""
        mf = self.root / MANIFEST
        if not mf.is_file():
            return 0
        with self._lock(exclusive=True):
            dropped = self._compact(mf)
        self._load()
        return dropped

    def _compact(self, mf: Path) -> int:
        last: dict[tuple[str, str], dict] = {}
        lines = mf.read_text().splitlines()
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (self.root / rec["object"]).is_file():
                last.pop((rec["settings"], rec["video_sha256"]), None)
                last[(rec["settings"], rec["video_sha256"])] = rec
        write_bytes_atomic(mf, "".join(json.dumps(r, sort_keys=True) + "\n" for r in last.values()).encode())
        return len([x for x in lines if x.strip()]) - len(last)

    def verify(self) -> Counter[str]:
        """Re-hash every array of these settings' entries against its manifest line: counts ok / bad."""
        counts: Counter[str] = Counter()
        for rec in self.records.values():
            try:
                arrays = self.read(rec)
                ok = all(array_sha256(arrays[k]) == w["sha256"] for k, w in rec["arrays"].items())
            except CacheEntryError as e:
                log.warning("%s", e)
                ok = False
            counts["ok" if ok else "bad"] += 1
            if not ok:
                log.warning("cache %s: %s does not match its entry", self.root, rec["object"])
        return counts

    def other_settings(self) -> list[dict[str, Any]]:
        """The settings of the same kind stored under this root besides these (to explain a miss)."""
        out = []
        for f in sorted((self.root / "settings").glob("*.json")):
            s = json.loads(f.read_text())
            if f.stem != self.sid and s.get("kind") == self.settings.get("kind"):
                out.append(s)
        return out

    def explain_other_settings(self) -> str:
        """'; '-joined fields in which the nearest stored settings of this kind differ from these."""
        best: list[str] | None = None
        for s in self.other_settings():
            diff = [f"{k}: cache has {s.get(k)!r}, this run needs {self.settings.get(k)!r}"
                    for k in sorted(set(s) | set(self.settings)) if s.get(k) != self.settings.get(k)]
            if best is None or len(diff) < len(best):
                best = diff
        return "; ".join(best or [])
