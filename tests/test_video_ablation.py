"""The video test's statistics (pvllm.metrics.video_ablation, pvllm.video_test): values computed by hand."""

import json
from pathlib import Path

import pytest

from pvllm.metrics.video_ablation import content_fit, content_hits, paired_interval, video_retrieval
from pvllm.reports.video_ablation import format_video_test
from pvllm.video_test import plan_videos, statistics

ROOT = Path(__file__).resolve().parents[1]


def test_paired_interval_by_hand():
    # two samples 0 and 1: a resample is (0,0), (0,1)/(1,0) or (1,1) -> means 0, 0.5, 1 with p 1/4, 1/2, 1/4,
    # so the 2.5% and 97.5% quantiles are 0 and 1
    r = paired_interval({"a": 0.0, "b": 1.0}, {"a": "u1", "b": "u2"}, resamples=4000)
    assert (r["mean"], r["lo"], r["hi"], r["n"], r["n_users"]) == (0.5, 0.0, 1.0, 2, 2)
    assert r["excludes_zero"] is False
    r = paired_interval({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": "u", "b": "u", "c": "v"})
    assert r["mean"] == 2.0 and 1.0 <= r["lo"] < 2.0 < r["hi"] <= 3.0 and r["n_users"] == 2
    assert r["excludes_zero"] is True
    r = paired_interval({"a": -0.5, "b": -0.5}, {"a": "u", "b": "u"})  # a constant: no uncertainty
    assert (r["mean"], r["lo"], r["hi"], r["excludes_zero"]) == (-0.5, -0.5, -0.5, True)


def test_video_retrieval_by_hand():
    items = [{"sample_id": "s1", "scores": [-1.0, -2.0, -3.0, -4.0], "truth_index": 0},   # rank 1
             {"sample_id": "s2", "scores": [-1.0, -2.0, -3.0, -4.0], "truth_index": 3},   # rank 4
             {"sample_id": "s3", "scores": [0.0, 0.0, 0.0, 0.0], "truth_index": 2}]       # all tied: chance
    users = {"s1": "u", "s2": "u", "s3": "v"}
    r = video_retrieval(items, users)
    chance_mrr = 100 * (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4
    assert r["n_candidates"] == 4 and r["chance_R@1"] == 25.0
    assert r["chance_MRR"] == pytest.approx(chance_mrr)
    assert r["R@1"] == pytest.approx((100 + 0 + 25) / 3)
    assert r["MRR"] == pytest.approx((100 + 25 + chance_mrr) / 3)
    assert r["R@1_minus_chance"]["mean"] == pytest.approx((75 - 25 + 0) / 3)
    assert r["MRR_minus_chance"]["n_users"] == 2
    with pytest.raises(ValueError, match="same number"):
        video_retrieval([items[0], {"sample_id": "s4", "scores": [1.0, 2.0], "truth_index": 0}], users)


def test_content_fit_by_hand():
    bikes, bunny = ["taxi", "traffic jam", "bicycle"], ["rabbit", "burrow"]
    assert content_hits("OMG the TAXI is SO GOOD 🔥", bikes) == 1
    assert content_hits("two taxis in a traffic jam", bikes) == 2       # plural, phrase
    assert content_hits("taxicab", bikes) == 0                          # whole words only
    assert content_fit("OMG the taxi is SO GOOD", bikes, bunny) == 1
    assert content_fit("OMG the taxi is SO GOOD", bunny, bikes) == 0
    assert content_fit("a taxi and a rabbit", bikes, bunny) == 0        # a tie fits neither
    assert content_fit("nice.", bikes, bunny) == 0 and content_fit(None, bikes, bunny) == 0
    # words in both lists say nothing about which clip
    assert content_fit("the rabbit", ["rabbit", "burrow"], ["rabbit", "ears"]) == 0
    assert content_fit("the rabbit by its burrow", ["rabbit", "burrow"], ["rabbit", "ears"]) == 1


VIDEOS = {"b1": {"source": "bunny", "words": ["rabbit", "burrow"]},
          "b2": {"source": "bunny", "words": ["rabbit", "burrow", "grass"]},
          "b3": {"source": "bunny", "words": ["ears", "meadow"]},
          "k1": {"source": "bikes", "words": ["taxi"]},
          "k2": {"source": "bikes", "words": ["cyclist"]}}


def test_plan_videos():
    p = plan_videos("s1", "b1", VIDEOS, n=4, seed=0)
    assert VIDEOS[p["across"]]["source"] == "bikes"
    assert p["within"] == "b3"                          # the same-source clip sharing no word with b1
    assert len(p["candidates"]) == len(set(p["candidates"])) == 4
    assert p["candidates"][p["truth_index"]] == "b1" and {p["across"], p["within"]} <= set(p["candidates"])
    assert plan_videos("s1", "b1", VIDEOS, n=4, seed=0) == p   # drawn from the sample id and seed only
    with pytest.raises(ValueError, match="n-videos"):
        plan_videos("s1", "b1", VIDEOS, n=6, seed=0)
    with pytest.raises(ValueError, match="no entry"):
        plan_videos("s1", "zz", VIDEOS, n=4, seed=0)


def test_statistics_by_hand():
    items = [{"sample_id": "s1", "user_id": "u1", "video_id": "b1", "reference": "the rabbit burrow",
              "across": "k1", "within": "b3", "n_candidates": 3, "video_scores": [-1.0, -1.5, -2.0],
              "truth_index": 0, "logp_own": -1.0, "logp_across": -1.5, "logp_within": -2.0, "logp_none": None},
             {"sample_id": "s2", "user_id": "u2", "video_id": "k1", "reference": "nice.",
              "across": "b1", "within": "k2", "n_candidates": 3, "video_scores": [-1.0, -0.5, -3.0],
              "truth_index": 0, "logp_own": -1.0, "logp_across": -0.5, "logp_within": -3.0, "logp_none": None}]
    sources = {"bunny": ["rabbit", "meadow"], "bikes": ["taxi", "cyclist"]}
    texts = {"own": {"s1": "a rabbit", "s2": "a taxi"}, "across": {"s1": "a taxi", "s2": "a taxi"},
             "within": {"s1": "the burrow", "s2": "a cyclist"}}
    s = statistics(items, VIDEOS, sources, texts, resamples=500, seed=0)
    assert (s["n_samples"], s["n_users"], s["n_videos"]) == (2, 2, 3)
    assert s["logp_mean"] == {"own": -1.0, "across": -1.0, "within": -2.5}
    assert set(s["a"]) == {"across", "within"}                 # no video was not scored
    assert s["a"]["across"]["mean"] == pytest.approx(0.0)      # +0.5 and -0.5
    assert s["a"]["within"]["mean"] == pytest.approx(1.5) and s["a"]["within"]["excludes_zero"]
    assert s["b"]["R@1"] == pytest.approx(50.0)                # s1 rank 1, s2 rank 2
    across = s["c"]["across"]
    # own: s1 "a rabbit" fits bunny vs bikes (1), s2 "a taxi" fits bikes (1); mismatched: s1 "a taxi" (0),
    # s2 "a taxi" (1); shown: s1 fits bikes (1), s2 fits bunny (0); references: s1 1, s2 0
    assert (across["own_video"], across["mismatched_video"], across["mismatched_fits_shown"],
            across["reference"], across["identical_generations"]) == (100.0, 50.0, 50.0, 50.0, 1)
    assert across["difference"]["mean"] == pytest.approx(50.0)
    within = s["c"]["within"]
    # s1: b1 [rabbit, burrow] vs b3 [ears, meadow]: own "a rabbit" 1, mismatched "the burrow" 1;
    # s2: k1 [taxi] vs k2 [cyclist]: own "a taxi" 1, mismatched "a cyclist" 0
    assert (within["own_video"], within["mismatched_video"], within["mismatched_fits_shown"]) == (100.0, 50.0, 50.0)
    text = format_video_test(s, title="T")
    titles = [line for line in text.splitlines() if line.startswith("###")]
    assert len(titles) == len(set(titles)) == 3
    assert "| a video of the other source | -1.000 | -1.000 | +0.000" in text
    assert "| R@1 | 50.0 | 33.3 |" in text


def test_sample_content_words_cover_every_video():
    words = json.loads((ROOT / "data/sample/content_words.json").read_text())
    vids = {json.loads(line)["video_id"] for line in (ROOT / "data/sample/videos.jsonl").open()}
    assert set(words["videos"]) == vids
    assert {v["source"] for v in words["videos"].values()} == set(words["sources"]) == {"bunny", "bikes"}
    for v in words["videos"].values():  # each clip's words are content words of its source
        assert all(content_hits(w, words["sources"][v["source"]]) for w in v["words"] if " " not in w), v


def test_video_test_command_end_to_end(tiny_model_dir, sample_ds, tmp_path, capsys):
    """python -m pvllm.video_test on the tiny random model: per-sample records, generations, statistics,
    tables; a rerun resumes (nothing rescored)."""
    from pvllm.evaluation import load_or_build_histories
    from pvllm.utils.jsonl import load_jsonl
    from pvllm.video_test import main

    hist = tmp_path / "h.jsonl"
    load_or_build_histories(hist, sample_ds, "val", 5, "k", 0, None, 16, "random", None)
    args = ["--model", str(tiny_model_dir), "--data", str(ROOT / "data/sample"), "--histories", str(hist),
            "--out", str(tmp_path / "vt"), "--max-samples", "3", "--n-videos", "3", "--max-new-tokens", "4",
            "--with-none", "--resamples", "200"]
    assert main(args) == 0
    rows = load_jsonl(tmp_path / "vt" / "video_test.jsonl")
    assert len(rows) == 3 and all(len(r["video_scores"]) == 3 and r["logp_none"] is not None for r in rows)
    for r in rows:  # the scores of the own / mismatched videos are the candidates' scores
        assert r["logp_own"] == r["video_scores"][r["truth_index"]]
        assert r["logp_across"] == r["video_scores"][r["candidates"].index(r["across"])]
    stats = json.loads((tmp_path / "vt" / "video_test.json").read_text())
    assert stats["n_samples"] == 3 and set(stats["a"]) == {"across", "within", "none"} and set(stats["c"]) == {
        "across", "within"}
    diffs = [r["logp_own"] - r["logp_across"] for r in rows]
    assert stats["a"]["across"]["mean"] == pytest.approx(sum(diffs) / 3)
    for kind in ("own", "across", "within"):
        assert len(load_jsonl(tmp_path / "vt" / f"generations_{kind}.jsonl")) == 3
    out = capsys.readouterr().out
    assert "Video test (a)" in out and "Video test (c)" in out
    (tmp_path / "vt" / "video_test.json").unlink()
    assert main(args) == 0  # resumed: the same records, the same statistics
    assert load_jsonl(tmp_path / "vt" / "video_test.jsonl") == rows
    assert json.loads((tmp_path / "vt" / "video_test.json").read_text())["a"] == stats["a"]
