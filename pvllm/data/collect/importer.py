"""Import an existing comment dump (e.g. ``../shared/data/comments/*.jsonl``) as collector output.

The input has one comment per line with ``video_id``, ``comment_id``, ``author``, ``text`` and
optionally ``likes``, ``published_at`` and a title field; video metadata can come from a second file.
Authors are re-keyed with the HMAC pseudonymizer here, so nothing after ingestion depends on the
input's identifiers (even when they are already hashed: an unkeyed hash can be reversed by guessing).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pvllm.data.privacy import Pseudonymizer
from pvllm.utils.jsonl import read_jsonl, write_jsonl


def import_comments(
    comments_path: str | Path,
    out_dir: str | Path,
    videos_path: str | Path | None = None,
    title_field: str = "video_title",
    exclude: dict[str, str] | None = None,
    pseudonymize: Pseudonymizer | None = None,
) -> dict[str, Any]:
    """Write ``videos.jsonl`` and ``comments.jsonl`` in the collector's format; returns counts.

    ``exclude`` drops comments whose field equals a value (e.g. ``{"fork": "easy"}`` for niconico's
    one-tap preset comments). Video likes are unknown (null) unless the videos file has ``likes``.
    """
    pseudo = pseudonymize or Pseudonymizer()
    exclude = exclude or {}
    videos: dict[str, dict[str, Any]] = {}
    if videos_path:
        for _, rec in read_jsonl(videos_path):
            videos[rec["video_id"]] = {
                "video_id": rec["video_id"],
                "title": rec.get("title"),
                "likes": rec.get("likes"),
                "duration_s": rec.get("duration_s"),
            }
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    comments = []
    for lineno, rec in read_jsonl(comments_path):
        missing = [k for k in ("video_id", "comment_id", "author", "text") if rec.get(k) is None]
        if missing:
            raise ValueError(f"{comments_path}:{lineno}: missing field(s) {', '.join(missing)}")
        if any(str(rec.get(k)) == v for k, v in exclude.items()):
            counts["excluded"] += 1
            continue
        if rec["comment_id"] in seen:
            counts["duplicate_ids_dropped"] += 1
            continue
        seen.add(rec["comment_id"])
        vid = rec["video_id"]
        if vid not in videos:
            videos[vid] = {"video_id": vid, "title": rec.get(title_field), "likes": None, "duration_s": None}
        elif videos[vid]["title"] is None and rec.get(title_field):
            videos[vid]["title"] = rec[title_field]
        comments.append(
            {
                "comment_id": str(rec["comment_id"]),
                "video_id": vid,
                "user_id": pseudo(str(rec["author"])),
                "text": rec["text"],
                "likes": rec.get("likes"),
                "published_at": rec.get("published_at"),
            }
        )
    out = Path(out_dir)
    write_jsonl(out / "videos.jsonl", videos.values())
    write_jsonl(out / "comments.jsonl", comments)
    counts["comments"] = len(comments)
    counts["videos"] = len(videos)
    counts["videos_without_title"] = sum(1 for v in videos.values() if not v["title"])
    counts["videos_likes_unknown"] = sum(1 for v in videos.values() if v["likes"] is None)
    return dict(counts)
