import json
import random
from collections import Counter

import pytest

from pvllm.data.dataset import load_pervidcom
from pvllm.data.histories import build_eval_histories, draw_training_samples
from tests.conftest import SHARED_DATA, requires_shared_data


def _check_samples(ds, samples, k_expected=None, k_range=None):
    for s in samples:
        target = ds.comments[s.target_comment_id]
        assert target.user_id == s.user_id and target.video_id == s.video_id and target.text == s.reference
        for h in s.history:
            c = ds.comments[h["comment_id"]]
            assert c.user_id == s.user_id  # same user ...
            assert c.video_id != s.video_id  # ... never the target video
            assert c.text == h["text"] and c.video_id == h["video_id"]
        assert len({h["comment_id"] for h in s.history}) == len(s.history)
        available = sum(1 for c in ds.comments_of(s.user_id) if c.video_id != s.video_id)
        if k_expected is not None:
            assert len(s.history) == min(k_expected, available)
        if k_range is not None:
            assert min(k_range[0], available) <= len(s.history) <= k_range[1]


def test_training_draws_follow_the_paper(sample_ds):
    e0 = draw_training_samples(sample_ds, "train", epoch=0, seed=0)
    e1 = draw_training_samples(sample_ds, "train", epoch=1, seed=0)
    assert len(e0) == len(e1) == 14  # one sample per training user per epoch
    assert sorted(s.user_id for s in e0) == sample_ds.users("train")
    _check_samples(sample_ds, e0, k_range=(5, 15))
    _check_samples(sample_ds, e1, k_range=(5, 15))
    # re-drawn every epoch, reproducible from (seed, epoch)
    assert [s.target_comment_id for s in e0] != [s.target_comment_id for s in e1]
    again = draw_training_samples(sample_ds, "train", epoch=1, seed=0)
    assert [s.to_row() for s in again] == [s.to_row() for s in e1]
    ks = Counter(s.k for e in range(20) for s in draw_training_samples(sample_ds, "train", e, 0))
    assert min(ks) == 5 and max(ks) == 15  # k ~ U[5, 15]


def test_eval_histories_pinned_and_k(sample_ds):
    rows = build_eval_histories(sample_ds, "val", k=5, seed=0)
    assert [r.sample_id for r in rows] == [
        "val:synthetic_grumpy_critic_3:c0119", "val:synthetic_hype_emoji_3:c0041",
        "val:synthetic_minimalist_2:c0306", "val:synthetic_pun_maker_3:c0200"]
    assert [h["comment_id"] for h in rows[0].history] == ["c0121", "c0120", "c0124", "c0115", "c0122"]
    _check_samples(sample_ds, rows, k_expected=5)
    for k in (0, 1, 3, 10, 15):
        rk = build_eval_histories(sample_ds, "val", k=k, seed=0)
        assert [r.target_comment_id for r in rk] == [r.target_comment_id for r in rows]  # targets fixed by seed
        _check_samples(sample_ds, rk, k_expected=k)
    other_seed = build_eval_histories(sample_ds, "val", k=5, seed=0, history_seed=1)
    assert [r.target_comment_id for r in other_seed] == [r.target_comment_id for r in rows]
    assert [r.history for r in other_seed] != [r.history for r in rows]


def test_none_sends_no_history_text(sample_ds):
    from pvllm.prompt import build_instruction

    rows = build_eval_histories(sample_ds, "val", k=5, mode="none", seed=0)
    assert all(r.history == [] and r.k == 0 for r in rows)
    prompt = build_instruction([])
    for c in sample_ds.comments.values():
        assert c.text not in prompt


def test_others_never_uses_the_target_user(sample_ds):
    for seed in range(5):
        own = build_eval_histories(sample_ds, "test", k=5, seed=seed)
        rows = build_eval_histories(sample_ds, "test", k=5, mode="others", seed=seed)
        assert [r.target_comment_id for r in rows] == [r.target_comment_id for r in own]
        for r, o in zip(rows, own):
            authors = {sample_ds.comments[h["comment_id"]].user_id for h in r.history}
            assert r.user_id not in authors and len(authors) == 1  # one different random user
            assert len(r.history) == len(o.history)  # the same number of comments
            assert all(h["video_id"] != r.video_id for h in r.history)


def test_invalid_mode_and_k(sample_ds):
    with pytest.raises(ValueError, match="valid: k, none, others"):
        build_eval_histories(sample_ds, "val", mode="mine")
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        build_eval_histories(sample_ds, "val", k=16)


def _as_dataset(tmp_path, comments_file, title_key=None):
    """Write a real comment dump in the dataset format (no video files: loaded with check_files=False)."""
    rows = [json.loads(line) for line in (SHARED_DATA / "comments" / comments_file).open(encoding="utf-8")]
    root = tmp_path / comments_file.split(".")[0]
    root.mkdir()
    videos = {r["video_id"]: r.get(title_key) if title_key else None for r in rows}
    users = sorted({r["author"] for r in rows})
    rng = random.Random(0)
    with (root / "videos.jsonl").open("w", encoding="utf-8") as f:
        for v, t in videos.items():
            f.write(json.dumps({"video_id": v, "title": t, "likes": None, "psi": None, "file": "missing.mp4"}) + "\n")
    with (root / "users.jsonl").open("w") as f:
        for u in users:
            f.write(json.dumps({"user_id": u, "split": rng.choice(["train", "val", "test"])}) + "\n")
    with (root / "comments.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"comment_id": str(r["comment_id"]), "video_id": r["video_id"], "user_id": r["author"],
                                "text": r["text"], "likes": r["likes"], "published_at": r["published_at"]},
                               ensure_ascii=False) + "\n")
    return load_pervidcom(root, check_files=False)


@requires_shared_data("comments", "youtube_biotech.jsonl")
def test_sampler_on_real_youtube_comments(tmp_path):
    ds = _as_dataset(tmp_path, "youtube_biotech.jsonl", "video_title")
    assert len(ds.comments) == 3408 and len(ds.user_split) == 5
    for split in ("train", "val", "test"):
        rows = build_eval_histories(ds, split, k=5, seed=0)
        _check_samples(ds, rows, k_expected=5)
        _check_samples(ds, draw_training_samples(ds, split, 0, 0), k_range=(5, 15))
        others = build_eval_histories(ds, split, k=5, mode="others", seed=0)
        for r in others:
            assert all(ds.comments[h["comment_id"]].user_id != r.user_id for h in r.history)


@requires_shared_data("comments", "danmaku_sample.jsonl")
def test_sampler_on_real_danmaku_comments(tmp_path):
    ds = _as_dataset(tmp_path, "danmaku_sample.jsonl")
    assert len(ds.comments) == 43193 and len(ds.user_split) == 300
    rows = build_eval_histories(ds, "test", k=5, seed=0, samples_per_user=2)
    assert len(rows) == 2 * len(ds.users("test"))
    _check_samples(ds, rows, k_expected=5)
    _check_samples(ds, draw_training_samples(ds, "train", 3, 0), k_range=(5, 15))


def test_sample_test_personas_are_unseen_in_training_and_val_personas_seen():
    """Issue 13 item 6: the bundled sample's test users read a NEW style from their history."""
    import json

    from tests.conftest import SAMPLE

    users = [json.loads(line) for line in (SAMPLE / "users.jsonl").read_text().splitlines()]
    personas = {s: {u["persona"] for u in users if u["split"] == s} for s in ("train", "val", "test")}
    assert personas["test"] == {"question_asker", "nostalgic"}
    assert not personas["test"] & personas["train"]
    assert personas["val"] <= personas["train"] and len(personas["val"]) == 4
    assert [sum(u["split"] == s for u in users) for s in ("train", "val", "test")] == [14, 4, 6]


def test_sample_comments_name_what_is_visible_in_their_clip():
    """Issue 12: the sample rewards looking at the video (data/sample/LICENSES.md)."""
    import importlib.util
    import json

    from tests.conftest import REPO, SAMPLE

    spec = importlib.util.spec_from_file_location("make_sample", REPO / "scripts" / "make_sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    visible = {c[0]: c[6] for c in mod.CLIPS}
    comments = [json.loads(line) for line in (SAMPLE / "comments.jsonl").read_text().splitlines()]
    names = [any(w.lower() in c["text"].lower() for w in visible[c["video_id"]]) for c in comments]
    assert 0.8 < sum(names) / len(names) < 1.0  # all but the minimalist's "nice."/"ok"-style comments
    other = {"bunny": {w for v, ws in visible.items() if v.startswith("bikes") for w in ws},
             "bikes": {w for v, ws in visible.items() if v.startswith("bunny") for w in ws}}
    for c in comments:  # never an object of the other footage
        topic = c["video_id"].split("_")[0]
        assert not any(f"the {w} " in c["text"].lower() for w in other[topic] - set(visible[c["video_id"]]))
