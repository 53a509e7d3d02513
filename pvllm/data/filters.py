"""The paper's §2.1 filters: frequent users, liked videos, personalized videos (ψ).

Our reading of the filter order (the paper lists the criteria, not an order):

1. Video likes: keep videos with ``likes > min_video_likes`` ("more than 400 likes"). Unknown likes
   (null) are never read as 0: ``unknown_likes`` says whether such videos are kept or dropped, and
   the count is reported.
2. Video ψ: keep videos with ``ψ > psi_threshold`` ("larger than 90%"; exactly 0.9 fails). ψ is a
   property of the video measured at collection time, so by default (``psi_scope="all"``) it is
   computed on all collected comments of the video, before any user is dropped. ψ undefined (no
   title, < 2 comments) is handled by ``undefined_psi`` and reported.
3. Users: keep users with comments on ``>= min_user_videos`` distinct videos *among the videos kept
   by 1-2* (the history must exist inside the dataset). Only their comments are kept.
4. Videos left without any comment from a kept user are dropped.

3 and 4 are repeated until nothing changes (a fixed point). With ``psi_scope="all"`` one round
suffices: step 4 only removes videos where no kept user commented, which cannot lower any kept user's
count. With ``psi_scope="kept"`` ψ is recomputed on the kept users' comments each round, videos can
fall below the threshold, users can then fall below 11 videos, and the loop matters.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PsiFn = Callable[[Mapping[str, tuple[str | None, Sequence[str]]]], dict[str, float | None]]


@dataclass
class FilterConfig:
    min_user_videos: int = 11  # a user needs comments on at least this many distinct videos (paper: 11)
    min_video_likes: int = 400  # a video needs strictly more likes than this (paper: > 400)
    unknown_likes: str = "drop"  # videos whose like count is unknown: "keep" or "drop"
    psi_threshold: float = 0.9  # a video needs ψ strictly above this (paper: 90%)
    undefined_psi: str = "drop"  # videos whose ψ is undefined (no title / < 2 comments): "keep" or "drop"
    psi_scope: str = "all"  # ψ on "all" collected comments of a video, or on the "kept" users' comments
    max_rounds: int = 100  # safety bound on the fixed-point loop

    def __post_init__(self) -> None:
        errors = []
        if self.unknown_likes not in ("keep", "drop"):
            errors.append(f"unknown_likes must be 'keep' or 'drop', got {self.unknown_likes!r}")
        if self.undefined_psi not in ("keep", "drop"):
            errors.append(f"undefined_psi must be 'keep' or 'drop', got {self.undefined_psi!r}")
        if self.psi_scope not in ("all", "kept"):
            errors.append(f"psi_scope must be 'all' or 'kept', got {self.psi_scope!r}")
        if self.min_user_videos < 1:
            errors.append(f"min_user_videos must be >= 1, got {self.min_user_videos}")
        if errors:
            raise ValueError("; ".join(errors))


@dataclass
class FilterResult:
    videos: list[str]  # kept video ids, sorted
    users: list[str]  # kept user ids, sorted
    comments: list[dict[str, Any]]  # kept comments, input order
    psi: dict[str, float | None]  # ψ of every video it was computed for (None = undefined)
    stages: list[dict[str, Any]] = field(default_factory=list)  # counts after each stage
    dropped: dict[str, int] = field(default_factory=dict)  # videos/users dropped, by reason
    rounds: int = 0
    config: dict[str, Any] = field(default_factory=dict)


def _counts(stage: str, comments: Sequence[dict], videos: set[str], note: str = "") -> dict[str, Any]:
    return {
        "stage": stage,
        "videos": len(videos),
        "users": len({c["user_id"] for c in comments}),
        "comments": len(comments),
        "note": note,
    }


def frequent_users(comments: Sequence[dict], min_videos: int) -> set[str]:
    """Users with comments on at least ``min_videos`` distinct videos."""
    per_user: dict[str, set[str]] = defaultdict(set)
    for c in comments:
        per_user[c["user_id"]].add(c["video_id"])
    return {u for u, vids in per_user.items() if len(vids) >= min_videos}


def apply_filters(
    videos: Mapping[str, dict[str, Any]],
    comments: Sequence[dict[str, Any]],
    psi_fn: PsiFn,
    cfg: FilterConfig,
) -> FilterResult:
    """Run the filters in the order stated in the module docstring; ``psi_fn`` maps videos to ψ."""
    dropped: Counter[str] = Counter()
    comments = [c for c in comments if c["video_id"] in videos]
    stages = [_counts("collected", comments, set(videos))]

    kept_v: set[str] = set()
    for vid, v in videos.items():
        likes = v.get("likes")
        if likes is None:
            if cfg.unknown_likes == "keep":
                kept_v.add(vid)
                dropped["videos_likes_unknown_kept"] += 1
            else:
                dropped["videos_likes_unknown_dropped"] += 1
        elif likes > cfg.min_video_likes:
            kept_v.add(vid)
        else:
            dropped[f"videos_likes_le_{cfg.min_video_likes}"] += 1
    comments = [c for c in comments if c["video_id"] in kept_v]
    stages.append(
        _counts(f"likes > {cfg.min_video_likes}", comments, kept_v, f"unknown likes: {cfg.unknown_likes}")
    )

    def texts_by_video(cs: Sequence[dict], vids: set[str]) -> dict[str, tuple[str | None, list[str]]]:
        texts: dict[str, list[str]] = {vid: [] for vid in vids}
        for c in cs:
            texts[c["video_id"]].append(c["text"])
        return {vid: (videos[vid].get("title"), texts[vid]) for vid in sorted(vids)}

    def psi_filter(cs: Sequence[dict], vids: set[str], count: bool) -> tuple[set[str], dict]:
        scores = psi_fn(texts_by_video(cs, vids))
        keep = set()
        for vid in vids:
            s = scores[vid]
            if s is None:
                if cfg.undefined_psi == "keep":
                    keep.add(vid)
                if count:
                    dropped[
                        "videos_psi_undefined_" + ("kept" if cfg.undefined_psi == "keep" else "dropped")
                    ] += 1
            elif s > cfg.psi_threshold:
                keep.add(vid)
            elif count:
                dropped[f"videos_psi_le_{cfg.psi_threshold}"] += 1
        return keep, scores

    kept_v, psi = psi_filter(comments, kept_v, count=True)
    psi = dict(psi)
    comments = [c for c in comments if c["video_id"] in kept_v]
    stages.append(
        _counts(f"psi > {cfg.psi_threshold}", comments, kept_v, f"undefined psi: {cfg.undefined_psi}")
    )

    users_before = {c["user_id"] for c in comments}
    rounds = 0
    while True:
        rounds += 1
        if rounds > cfg.max_rounds:
            raise RuntimeError(f"filters did not reach a fixed point in {cfg.max_rounds} rounds")
        users = frequent_users(comments, cfg.min_user_videos)
        new_comments = [c for c in comments if c["user_id"] in users]
        new_v = {c["video_id"] for c in new_comments}
        if cfg.psi_scope == "kept" and new_v:
            new_v, scores = psi_filter(new_comments, new_v, count=False)
            psi.update(scores)
            new_comments = [c for c in new_comments if c["video_id"] in new_v]
        stages.append(
            _counts(
                f"users >= {cfg.min_user_videos} videos (round {rounds})",
                new_comments,
                new_v,
                "and videos with a kept user's comment",
            )
        )
        changed = new_v != kept_v or len(new_comments) != len(comments)
        kept_v, comments = new_v, new_comments
        if not changed:
            break
    kept_users = {c["user_id"] for c in comments}
    dropped["users_below_min_videos"] = len(users_before - kept_users)
    return FilterResult(
        videos=sorted(kept_v),
        users=sorted(kept_users),
        comments=comments,
        psi=psi,
        stages=stages,
        dropped=dict(dropped),
        rounds=rounds,
        config=asdict(cfg),
    )
