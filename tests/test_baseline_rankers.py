"""Baseline rankers (issue 22 item 1), every-comment targets, LiveBot candidates and the history-overlap
count, on hand-made cases whose expected scores and ranks are computed by hand in the comments."""

import json
import math
import random

import pytest

from pvllm.data.dataset import load_pervidcom
from pvllm.data.histories import build_eval_histories
from pvllm.generators.baseline_rankers import BASELINE_RANKERS, make_ranker
from pvllm.metrics.ranking import (
    build_candidates,
    chance_levels,
    expected_metrics,
    history_overlap,
    truth_rank_stats,
)
from pvllm.utils.jsonl import load_jsonl
from tests.entrypoints import run_evaluate


def write_text_dataset(root, comments, splits, titles=None):
    """A comments-only dataset: comments = {user: [(video, text), ...]}, splits = {user: split}."""
    root.mkdir(parents=True, exist_ok=True)
    vids = sorted({v for cs in comments.values() for v, _ in cs})
    recs = {
        "videos": [{"video_id": v, "title": (titles or {}).get(v, f"episode {v}"), "likes": None, "psi": None,
                    "file": f"{v}.mp4"} for v in vids],
        "users": [{"user_id": u, "split": splits[u]} for u in comments],
        "comments": [{"comment_id": f"{u}-{i}", "video_id": v, "user_id": u, "text": t, "likes": None,
                      "published_at": f"2020-01-01T00:00:{i:02d}Z"}
                     for u, cs in comments.items() for i, (v, t) in enumerate(cs)],
    }
    for name, rows in recs.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return root


def test_registry_lists_the_five_rankers():
    assert BASELINE_RANKERS.names() == ["bm25", "length", "popularity", "random", "tfidf"]
    with pytest.raises(KeyError, match="Valid names: bm25, length"):
        make_ranker("tfidff")


def test_length_ranker_by_hand():
    # history lengths 3, 3 -> median 3; candidates 3, 3, 2, 6 characters -> scores 0, 0, -1, -3
    s = make_ranker("length").score("x", ["aaa", "aab"], ["aaa", "xyz", "ab", "zzzzzz"])
    assert s == [0, 0, -1, -3]
    # truth "xyz" (index 1): none better, one tie -> rank 1 or 2 -> MRR (1 + 1/2) / 2
    assert expected_metrics(*truth_rank_stats(s, 1))["MRR"] == 0.75
    assert make_ranker("length").score("x", [], ["a", "bb"]) == [0.0, 0.0]  # no history: chance


def test_tfidf_ranker_by_hand_and_against_sklearn():
    # a candidate identical to the (single) history comment has the same vector: cosine 1; no shared n-gram: 0
    s = make_ranker("tfidf").score("x", ["aab"], ["qqq", "aab", "zzz"])
    assert s[0] == 0.0 and s[2] == 0.0 and math.isclose(s[1], 1.0)
    assert expected_metrics(*truth_rank_stats(s, 1))["MRR"] == 1.0
    none = make_ranker("tfidf").score("x", [], ["qqq", "aab", "zzz"])  # no history: all 0, ranks 1..3 equally
    assert expected_metrics(*truth_rank_stats(none, 1))["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    # independent recomputation with scikit-learn: counts of each text's char 1-3-grams, smoothed idf over
    # candidates + history comments, the history's count vectors summed, cosine
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    hist = ["今日もかわいい", "かわいいww", "神回"]
    cands = ["かわいい", "888888", "神回だった", "これは草", "今日も"]
    cv = CountVectorizer(analyzer="char", ngram_range=(1, 3), lowercase=True)
    counts = cv.fit_transform(cands + hist).toarray().astype(float)
    idf = TfidfTransformer(smooth_idf=True).fit(counts).idf_
    q = counts[len(cands):].sum(0) * idf
    c = counts[: len(cands)] * idf
    want = (c @ q) / (np.linalg.norm(c, axis=1) * np.linalg.norm(q))
    got = make_ranker("tfidf").score("x", hist, cands)
    assert np.allclose(got, want)


def test_bm25_ranker_by_hand():
    # query "ab" -> grams a, b, ab; docs "ab" (a, b, ab; length 3) and "cd"; N = 2, avgdl = 3, df = 1 each:
    # idf = ln(1 + (2 - 1 + .5) / (1 + .5)) = ln 2; tf part 1 * 2.2 / (1 + 1.2 * 1) = 1 -> 3 ln 2
    s = make_ranker("bm25").score("x", ["ab"], ["ab", "cd"])
    assert s == pytest.approx([3 * math.log(2), 0.0])


def test_popularity_ranker_by_hand():
    # "www" occurs 3 times once normalized (fullwidth ＷＷＷ and upper case fold to www), 草 once, "new" never
    r = make_ranker("popularity", training_texts=["www", "WWW", "ＷＷＷ", "草"])
    assert r.score("x", ["anything"], ["www", "草", "new"]) == [3.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="needs the training comments"):
        make_ranker("popularity")


def test_random_ranker_is_seeded_and_at_chance():
    r = make_ranker("random", seed=3)
    assert r.score("s1", [], list("abc")) == make_ranker("random", seed=3).score("s1", ["h"], list("abc"))
    assert r.score("s1", [], list("abc")) != r.score("s2", [], list("abc"))
    rr = [expected_metrics(*truth_rank_stats(r.score(f"s{i}", [], ["x"] * 20), i % 20))["MRR"]
          for i in range(4000)]
    # chance MRR of 20 candidates is 18.0; the sd of one reciprocal rank is ~0.26, so of the mean ~0.004
    assert abs(100 * sum(rr) / len(rr) - chance_levels(20)["MRR"]) < 1.5


COMMENTS = {  # user -> (video, text); ua, ub: test users; t1, t2: training users
    "ua": [("v1", "aaa"), ("v2", "aab"), ("v3", "zz")],
    "ub": [("v1", "bbb"), ("v2", "www")],
    "t1": [("v1", "www"), ("v2", "www"), ("v3", "qqq")],
    "t2": [("v1", "www"), ("v3", "aab")],
}
SPLITS = {"ua": "test", "ub": "test", "t1": "train", "t2": "train"}


def test_samples_per_user_all_takes_every_comment(tmp_path):
    ds = load_pervidcom(write_text_dataset(tmp_path / "ds", COMMENTS, SPLITS), check_files=False)
    rows = build_eval_histories(ds, "test", k=5, samples_per_user="all")
    # every comment of ua (3) and ub (2); the history is all of the user's comments on other videos
    assert sorted((r.user_id, r.reference, sorted(h["text"] for h in r.history)) for r in rows) == [
        ("ua", "aaa", ["aab", "zz"]), ("ua", "aab", ["aaa", "zz"]), ("ua", "zz", ["aaa", "aab"]),
        ("ub", "bbb", ["www"]), ("ub", "www", ["bbb"])]
    assert len(build_eval_histories(ds, "test", k=5, samples_per_user=1)) == 2
    with pytest.raises(ValueError, match="'every'"):
        build_eval_histories(ds, "test", samples_per_user="every")


def test_history_overlap_is_counted(tmp_path):
    ds = load_pervidcom(write_text_dataset(tmp_path / "ds", COMMENTS, SPLITS), check_files=False)
    rows = [s.to_row() for s in build_eval_histories(ds, "test", k=5, samples_per_user="all")]
    cand = build_candidates(rows, ds, n=2, seed=0)
    # ub's target "bbb" on v1 has history ["www"]; other users' distinct texts on v1 are aaa and www, so its
    # distractor equals its history with probability 1/2; count by hand from the drawn file
    want_d = sum(1 for c, r in zip(cand, rows)
                 for i, x in enumerate(c["candidates"])
                 if i != c["truth_index"] and x["text"] in {h["text"] for h in r["history"]})
    got = history_overlap(cand, rows)
    assert got["n_distractors_equal_history"] == want_d
    # a hand-made row: distractor "www" equals a history comment; the truth "aab" does too
    row = {"sample_id": "s", "history": [{"text": "WWW"}, {"text": "aab"}]}
    c = {"sample_id": "s", "truth_index": 0, "candidates": [{"text": "aab"}, {"text": "www"}, {"text": "q"}]}
    assert history_overlap([c], [row]) == {"n_distractors_equal_history": 1,
                                          "n_samples_with_distractor_equal_history": 1,
                                          "n_truths_equal_history": 1}


def test_livebot_candidates_by_hand(tmp_path):
    comments = {
        "ua": [("v1", "my own line"), ("v2", "truth here")],
        "t1": [("v1", "www"), ("v2", "www"), ("v3", "kawaii")],
        "t2": [("v1", "www"), ("v2", "kawaii"), ("v3", "episode v2 finale"), ("v1", "my own line")],
        "t3": [("v1", "888"), ("v2", "zzz"), ("v3", "qqq"), ("v1", "rrr"), ("v2", "sss")],
    }
    splits = {"ua": "test", "t1": "train", "t2": "train", "t3": "train"}
    ds = load_pervidcom(write_text_dataset(tmp_path / "ds", comments, splits), check_files=False)
    rows = [r.to_row() for r in build_eval_histories(ds, "test", k=5, samples_per_user="all")]
    row = next(r for r in rows if r["reference"] == "truth here")  # target on v2, title "episode v2"
    (c,) = build_candidates([row], ds, n=6, seed=0, protocol="livebot", livebot={"popular": 2, "plausible": 1})
    by_src = {}
    for x in c["candidates"]:
        by_src.setdefault(x["source"], []).append(x["text"])
    # popular: www (3), kawaii (2); plausible to "episode v2": "episode v2 finale" (shares every n-gram of the
    # title); random: 2 of 888, qqq, rrr, sss, zzz; never "my own line" (the user's own comment)
    assert by_src["truth"] == ["truth here"]
    assert sorted(by_src["popular"]) == ["kawaii", "www"]  # (shuffled with the rest)
    assert by_src["plausible"] == ["episode v2 finale"]
    assert len(by_src["random"]) == 2 and set(by_src["random"]) <= {"888", "qqq", "rrr", "sss", "zzz"}
    assert c["protocol"] == "livebot" and len(c["candidates"]) == 6
    with pytest.raises(ValueError, match="popular 5 \\+ plausible 1 > n - 1 = 5"):
        build_candidates([row], ds, n=6, protocol="livebot", livebot={"popular": 5, "plausible": 1})


def test_baselines_rank_through_evaluate_every_history_mode(tmp_path):
    root = write_text_dataset(tmp_path / "ds", COMMENTS, SPLITS)
    common = [f"data.root={root}", "data.name=hand", "video.mode=none", "split=test", "samples_per_user=all",
              "stage=rank", "ranking.n_candidates=2", "generator=baseline_ranker", "~rater",
              f"ranking.candidates_file={tmp_path / 'cand.jsonl'}"]
    res = {}
    for ranker in ("tfidf", "popularity"):
        for mode in ("k", "none"):
            d = tmp_path / f"{ranker}_{mode}"
            res[ranker, mode] = run_evaluate(
                [*common, f"generator.ranker={ranker}", f"history.mode={mode}",
                 f"histories_file={tmp_path / f'h_{mode}.jsonl'}"], d)
            assert (d / "ranking.jsonl").is_file() and (d / "ranking_summary.json").is_file()
            ident = json.loads((d / "identity.json").read_text())
            assert ident["generation"]["generator"]["model"] == f"baseline:{ranker}"
    cand = {c["sample_id"]: c for c in load_jsonl(tmp_path / "cand.jsonl")}
    assert len(cand) == 5 and res["tfidf", "k"]["n"] == 5 and res["tfidf", "k"]["model"] == "baseline:tfidf"
    # no history: every tf-idf score is 0, so each sample scores chance with 2 candidates (MRR 75)
    assert res["tfidf", "none"]["MRR"] == pytest.approx(75.0)
    # popularity counts the training split: www 3, aab 1, qqq 1, anything else 0; recompute each sample
    pop = {"www": 3, "aab": 1, "qqq": 1}
    want = []
    for c in cand.values():
        s = [pop.get(x["text"], 0) for x in c["candidates"]]
        want.append(expected_metrics(*truth_rank_stats(s, c["truth_index"]))["MRR"])
    assert res["popularity", "k"]["MRR"] == pytest.approx(100 * sum(want) / len(want))
    assert res["popularity", "k"]["MRR"] == res["popularity", "none"]["MRR"]  # history-free
    # the ranking table of any model on these candidates lists the baselines beside it
    from pvllm.reports.ranking import baseline_rows, collect

    rows = baseline_rows(collect(tmp_path), res["tfidf", "k"]["candidates_sha256"])
    assert [name for name, _ in rows] == [
        "baseline:popularity (no training), history k (k=2)", "baseline:popularity (no training), no history",
        "baseline:tfidf (no training), history k (k=2)", "baseline:tfidf (no training), no history"]
    assert rows[3][1]["MRR"] == pytest.approx(75.0)


def test_seeded_draws_do_not_depend_on_this_module():
    random.seed(0)  # rankers never use the global random state
    a = make_ranker("random").score("s", [], list("abcd"))
    random.seed(1)
    assert make_ranker("random").score("s", [], list("abcd")) == a


def test_training_options_by_hand(tmp_path):
    from pvllm.data.histories import draw_training_samples

    # user u (train) comments at seconds 0..4 (write_text_dataset's published_at = index); titles by video
    comments = {"u": [("v1", "dragon fight"), ("v2", "cat nap"), ("v3", "dragon dragon"), ("v4", "x"),
                      ("v3", "late dragon")],
                "w": [("v1", "a"), ("v2", "b")]}
    titles = {"v1": "ep1", "v2": "ep2", "v3": "ep3", "v4": "dragon"}
    ds = load_pervidcom(write_text_dataset(tmp_path / "ds", comments, {"u": "train", "w": "train"}, titles),
                        check_files=False)
    # paper default: one sample per user and epoch
    assert len(draw_training_samples(ds, "train", 0, 0)) == 2
    # 3 per user: u has 4 videos -> 3 targets on distinct videos; w has 2 -> 1
    many = draw_training_samples(ds, "train", 0, 0, per_user=3)
    assert sorted(s.user_id for s in many) == ["u", "u", "u", "w"]
    assert len({s.video_id for s in many if s.user_id == "u"}) == 3
    # retrieved: target "x" on v4 (title "dragon", second 3): before it, on other videos, are "dragon fight"
    # (0), "cat nap" (1), "dragon dragon" (2); "late dragon" (4) is after the target. BM25 ranks the two
    # dragon lines above "cat nap" (no shared n-gram); "dragon dragon" has twice the matching n-grams
    from pvllm.data.histories import retrieve_bm25_before

    target = next(c for c in ds.comments.values() if c.text == "x")
    got = retrieve_bm25_before(ds.comments_of("u"), target, "dragon", 2)
    assert [c.text for c in got] == ["dragon dragon", "dragon fight"]
    assert [c.text for c in retrieve_bm25_before(ds.comments_of("u"), target, "dragon", 5)] == [
        "dragon dragon", "dragon fight", "cat nap"]
    # a target on v3 never gets v3's other comment, nor anything later
    t3 = next(c for c in ds.comments.values() if c.text == "dragon dragon")
    assert [c.text for c in retrieve_bm25_before(ds.comments_of("u"), t3, "dragon", 5)] == [
        "dragon fight", "cat nap"]
    rs = draw_training_samples(ds, "train", 0, 0, k_min=5, k_max=5, selection="retrieved_bm25")
    for s in rs:
        tgt = ds.comments[s.target_comment_id]
        assert all(ds.comments[h["comment_id"]].published_at < tgt.published_at and
                   h["video_id"] != s.video_id for h in s.history)
    with pytest.raises(ValueError, match="valid: random, retrieved_bm25"):
        draw_training_samples(ds, "train", 0, 0, selection="bm25")


def test_exact_paired_permutation_test_by_hand():
    from pvllm.metrics.bootstrap import paired_test

    # 3 users, B - A = +1, +2, +3: of the 8 sign patterns only +++ and --- reach |mean| >= 2: p = 2/8
    users = {"a": "u1", "b": "u2", "c": "u3"}
    r = paired_test({"a": 0.0, "b": 0.0, "c": 0.0}, {"a": 1.0, "b": 2.0, "c": 3.0}, users)
    assert r["p_permutation"] == 0.25 and r["p_method"] == "exact" and r["diff"] == 2.0
    # 20 users (> 16): Monte-Carlo; all +1: only the all-plus/all-minus patterns (2 of 2^20) reach it
    users = {f"s{i}": f"u{i}" for i in range(20)}
    r = paired_test({s: 0.0 for s in users}, {s: 1.0 for s in users}, users, resamples=999)
    assert r["p_method"] == "monte-carlo" and r["p_permutation"] == pytest.approx(1 / 1000, abs=2e-3)


def test_documented_options_compose(tmp_path):
    """The overrides docs/experiments.md prints for these options compose (keys exist, values land)."""
    from tests.entrypoints import compose_config

    cfg = compose_config("evaluate", ["generator=baseline_ranker", "generator.ranker=bm25", "stage=rank",
                                      "samples_per_user=all", "ranking.protocol=livebot", "ranking.n_candidates=100",
                                      "ranking.candidates_file=outputs/candidates/livebot.jsonl",
                                      "metrics.tokenize=cjk"], tmp_path / "e")
    assert cfg.generator.ranker == "bm25" and cfg.ranking.protocol == "livebot" and cfg.ranking.livebot.popular == 20
    assert cfg.metrics.tokenize == "cjk" and cfg.samples_per_user == "all"
    from pvllm.config import validate_eval_config

    validate_eval_config(cfg)  # samples_per_user=all is valid
    tcfg = compose_config("train", ["experiment=real_danmaku_text", "data.train_samples_per_user=4",
                                    "data.train_history_selection=retrieved_bm25"], tmp_path / "t")
    assert tcfg.data.train_samples_per_user == 4 and tcfg.data.train_history_selection == "retrieved_bm25"
