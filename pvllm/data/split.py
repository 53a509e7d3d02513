"""User-level train/val/test split (paper: 60/15/25), seeded: no user appears in two splits; optional
video-disjoint and time-based protocols on top (``apply_split_protocol``)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from datetime import datetime, timezone

SPLIT_NAMES = ("train", "val", "test")


def split_sizes(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Largest-remainder rounding, so sizes sum to n and each is within 1 of ratio * n."""
    if abs(sum(ratios) - 1.0) > 1e-9 or any(r < 0 for r in ratios):
        raise ValueError(f"split ratios must be >= 0 and sum to 1, got {ratios}")
    exact = [r * n for r in ratios]
    sizes = [math.floor(x) for x in exact]
    order = sorted(range(3), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in order[: n - sum(sizes)]:
        sizes[i] += 1
    return sizes[0], sizes[1], sizes[2]


def split_users(
    user_ids: Iterable[str], ratios: tuple[float, float, float] = (0.6, 0.15, 0.25), seed: int = 0
) -> dict[str, str]:
    """Map each user id to train/val/test. Sorted before the seeded shuffle: input order does not matter."""
    users = sorted(set(user_ids))
    random.Random(seed).shuffle(users)
    n_train, n_val, _ = split_sizes(len(users), ratios)
    out = {}
    for i, u in enumerate(users):
        out[u] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return out


# Which comments each side keeps (LaMP/LongLaMP-style protocols); "user" is the paper's split.
SPLIT_PROTOCOLS = ("user", "video_disjoint", "time")


def _first_times(comments: Iterable[dict]) -> dict[str, datetime]:
    first: dict[str, datetime] = {}
    for c in comments:
        t = c.get("published_at")
        if not t:
            raise ValueError(f"split protocol 'time': comment {c.get('comment_id')} on video "
                             f"{c['video_id']} has no published_at")
        ts = datetime.fromisoformat(t.replace("Z", "+00:00"))
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        if c["video_id"] not in first or ts < first[c["video_id"]]:
            first[c["video_id"]] = ts
    return first


def split_videos(comments: list[dict], protocol: str, train_share: float, seed: int = 0) -> dict[str, str]:
    """video_id -> "train" | "eval": at random (``video_disjoint``) or the oldest videos (first comment
    time) for training and the newest for evaluation (``time``); ``train_share`` of the videos train."""
    if protocol not in ("video_disjoint", "time"):
        raise ValueError(f"split_videos: protocol must be video_disjoint or time, got {protocol!r}")
    if protocol == "time":
        first = _first_times(comments)
        videos = sorted(first, key=lambda v: (first[v], v))
    else:
        videos = sorted({c["video_id"] for c in comments})
        random.Random(f"videos:{seed}").shuffle(videos)
    n_train = round(train_share * len(videos))
    return {v: "train" if i < n_train else "eval" for i, v in enumerate(videos)}


def apply_split_protocol(comments: list[dict], user_split: dict[str, str], protocol: str = "user",
                         train_share: float = 0.6, seed: int = 0) -> tuple[list[dict], dict]:
    """Comments kept under ``protocol`` and a summary of what was dropped.

    ``user`` (paper): everything (users are disjoint, videos shared). ``video_disjoint``: videos are split
    too; training users keep only their comments on training videos and val/test users only theirs on
    evaluation videos, so no val/test video (target or history) is seen in training. ``time``: the same
    with the videos split by time (first comment), so every evaluation video is newer than every
    training video (train on the past, evaluate on the future).
    """
    if protocol not in SPLIT_PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}; valid: {', '.join(SPLIT_PROTOCOLS)}")
    if protocol == "user":
        return list(comments), {"protocol": "user", "dropped_comments": 0}
    side = split_videos(comments, protocol, train_share, seed)
    kept = [c for c in comments
            if (side[c["video_id"]] == "train") == (user_split[c["user_id"]] == "train")]
    return kept, {"protocol": protocol, "train_share_of_videos": train_share,
                  "videos": {s: sum(1 for v in side.values() if v == s) for s in ("train", "eval")},
                  "dropped_comments": len(comments) - len(kept)}
