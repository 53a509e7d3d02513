"""The PerVidCom dataset directory: loading with validation of every record.

Format (docs/data_format.md): ``videos.jsonl``, ``comments.jsonl``, ``users.jsonl`` and the video
files. A bad record fails with file, line and field.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvllm.utils.jsonl import read_jsonl

SPLITS = ("train", "val", "test")


class DatasetFormatError(ValueError):
    """A record in a dataset file is invalid; the message names file, line and field."""


@dataclass(frozen=True)
class Video:
    video_id: str
    title: str | None
    likes: int | None  # None = unknown (not 0)
    psi: float | None  # None = undefined (e.g. no title)
    file: str  # path relative to the dataset directory
    duration_s: float | None = None


@dataclass(frozen=True)
class Comment:
    comment_id: str
    video_id: str
    user_id: str
    text: str
    likes: int | None
    published_at: str | None


@dataclass
class PerVidCom:
    root: Path
    videos: dict[str, Video]
    comments: dict[str, Comment]
    user_split: dict[str, str]
    by_user: dict[str, list[Comment]] = field(default_factory=dict)

    def video_path(self, video_id: str) -> Path:
        return self.root / self.videos[video_id].file

    def users(self, split: str) -> list[str]:
        return sorted(u for u, s in self.user_split.items() if s == split)

    def comments_of(self, user_id: str) -> list[Comment]:
        return self.by_user.get(user_id, [])


# field -> (types accepted, required-non-null)
_VIDEO_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "video_id": ((str,), True),
    "title": ((str,), False),
    "likes": ((int,), False),
    "psi": ((int, float), False),
    "file": ((str,), True),
    "duration_s": ((int, float), False),
}
_COMMENT_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "comment_id": ((str,), True),
    "video_id": ((str,), True),
    "user_id": ((str,), True),
    "text": ((str,), True),
    "likes": ((int,), False),
    "published_at": ((str,), False),
}
_USER_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "user_id": ((str,), True),
    "split": ((str,), True),
}
_OPTIONAL_KEYS = {"duration_s"}


def _check(path: Path, lineno: int, rec: dict[str, Any], spec: dict) -> None:
    for name, (types, required) in spec.items():
        where = f"{path}:{lineno}: field {name!r}"
        if name not in rec:
            if name in _OPTIONAL_KEYS:
                continue
            raise DatasetFormatError(f"{where} is missing")
        value = rec[name]
        if value is None:
            if required:
                raise DatasetFormatError(f"{where} must not be null")
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types)
            raise DatasetFormatError(f"{where} must be {want}, got {type(value).__name__} {value!r}")
        if required and isinstance(value, str) and not value.strip() and name != "text":
            raise DatasetFormatError(f"{where} must not be empty")


def load_pervidcom(root: str | os.PathLike, check_files: bool = True) -> PerVidCom:
    """Load and validate a dataset directory; raises DatasetFormatError naming file, line and field."""
    root = Path(root)
    for name in ("videos.jsonl", "comments.jsonl", "users.jsonl"):
        if not (root / name).is_file():
            raise DatasetFormatError(f"{root}: missing {name} (see docs/data_format.md)")

    videos: dict[str, Video] = {}
    path = root / "videos.jsonl"
    for lineno, rec in read_jsonl(path):
        _check(path, lineno, rec, _VIDEO_FIELDS)
        if rec["video_id"] in videos:
            raise DatasetFormatError(f"{path}:{lineno}: field 'video_id' duplicate {rec['video_id']!r}")
        if rec.get("psi") is not None and not 0.0 <= rec["psi"] <= 1.0:
            raise DatasetFormatError(f"{path}:{lineno}: field 'psi' must be in [0, 1], got {rec['psi']}")
        if check_files and not (root / rec["file"]).is_file():
            raise DatasetFormatError(f"{path}:{lineno}: field 'file' {rec['file']!r}: no such file under {root}")
        videos[rec["video_id"]] = Video(**{k: rec.get(k) for k in _VIDEO_FIELDS})

    users: dict[str, str] = {}
    path = root / "users.jsonl"
    for lineno, rec in read_jsonl(path):
        _check(path, lineno, rec, _USER_FIELDS)
        if rec["split"] not in SPLITS:
            raise DatasetFormatError(f"{path}:{lineno}: field 'split' must be one of {SPLITS}, got {rec['split']!r}")
        if rec["user_id"] in users:
            raise DatasetFormatError(f"{path}:{lineno}: field 'user_id' duplicate {rec['user_id']!r}")
        users[rec["user_id"]] = rec["split"]

    comments: dict[str, Comment] = {}
    by_user: dict[str, list[Comment]] = defaultdict(list)
    path = root / "comments.jsonl"
    for lineno, rec in read_jsonl(path):
        _check(path, lineno, rec, _COMMENT_FIELDS)
        if rec["comment_id"] in comments:
            raise DatasetFormatError(f"{path}:{lineno}: field 'comment_id' duplicate {rec['comment_id']!r}")
        if rec["video_id"] not in videos:
            raise DatasetFormatError(f"{path}:{lineno}: field 'video_id' {rec['video_id']!r} not in videos.jsonl")
        if rec["user_id"] not in users:
            raise DatasetFormatError(f"{path}:{lineno}: field 'user_id' {rec['user_id']!r} not in users.jsonl")
        c = Comment(**{k: rec[k] for k in _COMMENT_FIELDS})
        comments[c.comment_id] = c
        by_user[c.user_id].append(c)
    return PerVidCom(root=root, videos=videos, comments=comments, user_split=users, by_user=dict(by_user))
