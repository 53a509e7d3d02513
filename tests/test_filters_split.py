"""Filters at their boundaries (10 vs 11 videos, 400 vs 401 likes, ψ exactly 0.9) and the user split."""

import numpy as np
import pytest

from pvllm.data.filters import FilterConfig, apply_filters, frequent_users
from pvllm.data.psi import psi_from_similarities
from pvllm.data.split import split_sizes, split_users


def fixed_psi(values):
    """A ψ function that returns preset values per video (texts ignored)."""
    return lambda videos: {vid: values[vid] for vid in videos}


def comment(cid, vid, uid, text="t"):
    return {"comment_id": cid, "video_id": vid, "user_id": uid, "text": text}


def test_user_threshold_10_vs_11_distinct_videos():
    videos = {f"v{i}": {"title": "T", "likes": 1000} for i in range(11)}
    cs = [comment(f"a{i}", f"v{i}", "u11") for i in range(11)]  # 11 distinct videos: kept
    cs += [comment(f"b{i}", f"v{i}", "u10") for i in range(10)]  # 10 distinct videos: dropped
    cs += [comment(f"c{i}", f"v{min(i, 9)}", "u11c10v") for i in range(11)]  # 11 comments, 10 videos: dropped
    res = apply_filters(videos, cs, fixed_psi({v: 1.0 for v in videos}), FilterConfig())
    assert res.users == ["u11"]
    assert len(res.comments) == 11 and {c["user_id"] for c in res.comments} == {"u11"}
    assert res.dropped["users_below_min_videos"] == 2
    assert frequent_users(cs, 10) == {"u11", "u10", "u11c10v"}


def test_likes_400_dropped_401_kept_and_unknown_policy():
    videos = {
        "v400": {"title": "T", "likes": 400},
        "v401": {"title": "T", "likes": 401},
        "vnull": {"title": "T"},
    }
    cs = [comment(v + "c", v, "u") for v in videos]
    psi = fixed_psi({v: 1.0 for v in videos})
    res = apply_filters(videos, cs, psi, FilterConfig(min_user_videos=1, unknown_likes="drop"))
    assert res.videos == ["v401"]
    assert res.dropped == {
        "videos_likes_le_400": 1,
        "videos_likes_unknown_dropped": 1,
        "users_below_min_videos": 0,
    }
    res = apply_filters(videos, cs, psi, FilterConfig(min_user_videos=1, unknown_likes="keep"))
    assert res.videos == ["v401", "vnull"]
    assert res.dropped["videos_likes_unknown_kept"] == 1


def test_likes_zero_is_a_count_not_unknown():
    videos = {"v0": {"title": "T", "likes": 0}}
    res = apply_filters(
        videos,
        [comment("c", "v0", "u")],
        fixed_psi({"v0": 1.0}),
        FilterConfig(min_user_videos=1, unknown_likes="keep"),
    )
    assert res.videos == [] and res.dropped["videos_likes_le_400"] == 1


def nine_of_ten_positive(videos):
    """ψ through eq. 1-3: 5 comments, 10 pairs, exactly one pair (0, 1) not below the title -> 0.9."""
    s_cc = np.full((5, 5), 0.1)
    np.fill_diagonal(s_cc, 1.0)
    s_cc[0, 1] = s_cc[1, 0] = 0.95
    return {vid: psi_from_similarities(s_cc, np.full(5, 0.5)) for vid in videos}


def test_psi_exactly_090_is_dropped():
    assert nine_of_ten_positive(["v"])["v"] == 0.9
    videos = {"v": {"title": "T", "likes": 1000}}
    res = apply_filters(
        videos, [comment("c", "v", "u")], nine_of_ten_positive, FilterConfig(min_user_videos=1)
    )
    assert res.videos == [] and res.dropped["videos_psi_le_0.9"] == 1
    assert res.psi == {"v": 0.9}


def test_psi_just_above_090_kept_and_undefined_policy():
    videos = {"hi": {"title": "T", "likes": 1000}, "undef": {"title": None, "likes": 1000}}
    cs = [comment("c1", "hi", "u"), comment("c2", "undef", "u")]
    psi = fixed_psi({"hi": 0.9000001, "undef": None})
    res = apply_filters(videos, cs, psi, FilterConfig(min_user_videos=1))
    assert res.videos == ["hi"] and res.dropped["videos_psi_undefined_dropped"] == 1
    res = apply_filters(videos, cs, psi, FilterConfig(min_user_videos=1, undefined_psi="keep"))
    assert res.videos == ["hi", "undef"] and res.dropped["videos_psi_undefined_kept"] == 1


def diverse_psi(videos):
    """ψ = None below 2 comments, 0 if all texts equal, else 1 (stands in for eq. 1-3 on a pool)."""
    return {
        vid: None if len(texts) < 2 else (0.0 if len(set(texts)) == 1 else 1.0)
        for vid, (_, texts) in videos.items()
    }


FIXPOINT_COMMENTS = [
    comment("1", "v1", "u1", "x"),
    comment("2", "v2", "u1", "x2"),
    comment("3", "v2", "u2", "y"),
    comment("4", "v3", "u2", "y3"),
    comment("5", "v1", "u3", "z"),  # u3, u4: one video each, dropped by the user filter
    comment("6", "v3", "u4", "w"),
]
FIXPOINT_VIDEOS = {v: {"title": "T", "likes": 1000} for v in ("v1", "v2", "v3")}


def test_psi_on_all_comments_reaches_fixed_point_in_two_rounds():
    res = apply_filters(FIXPOINT_VIDEOS, FIXPOINT_COMMENTS, diverse_psi, FilterConfig(min_user_videos=2))
    assert res.users == ["u1", "u2"] and res.videos == ["v1", "v2", "v3"]
    assert [c["comment_id"] for c in res.comments] == ["1", "2", "3", "4"]
    assert res.rounds == 2  # round 2 only confirms nothing changed


def test_psi_on_kept_comments_cascades_to_a_fixed_point():
    # Round 1: u3, u4 dropped -> v1, v3 keep one comment each -> ψ undefined -> dropped.
    # Round 2: u1, u2 now have 1 video each -> dropped. Round 3: nothing left, nothing changes.
    cfg = FilterConfig(min_user_videos=2, psi_scope="kept")
    res = apply_filters(FIXPOINT_VIDEOS, FIXPOINT_COMMENTS, diverse_psi, cfg)
    assert res.users == [] and res.videos == [] and res.comments == []
    assert res.rounds == 3
    assert [s["users"] for s in res.stages] == [4, 4, 4, 2, 0, 0]


def test_bad_config_lists_every_error():
    with pytest.raises(ValueError, match="unknown_likes.*psi_scope"):
        FilterConfig(unknown_likes="zero", psi_scope="some")


@pytest.mark.parametrize(
    "n,expected", [(100, (60, 15, 25)), (300, (180, 45, 75)), (7, (4, 1, 2)), (3, (2, 0, 1))]
)
def test_split_sizes(n, expected):
    assert split_sizes(n, (0.6, 0.15, 0.25)) == expected


def test_split_users_ratios_disjoint_seeded():
    users = [f"u_{i:04d}" for i in range(1000)]
    a = split_users(users, seed=3)
    assert set(a) == set(users)  # every user in exactly one split (a dict: disjoint by construction)
    counts = {s: sum(1 for v in a.values() if v == s) for s in ("train", "val", "test")}
    assert counts == {"train": 600, "val": 150, "test": 250}
    assert split_users(list(reversed(users)), seed=3) == a  # input order does not matter
    b = split_users(users, seed=4)
    assert b != a and sum(a[u] == b[u] for u in users) < 1000


def test_split_ratios_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        split_sizes(10, (0.6, 0.2, 0.25))
