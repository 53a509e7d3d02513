"""NDCG alignment (Table 3) on hand-made cases with values computed by hand."""

from __future__ import annotations

import json
import math

import pytest

from pvllm.metrics.alignment import human_scores, ndcg_alignment, random_baseline

L2_3 = math.log2(3)


def _scores(rows):  # {sample: {gen: v}} -> {(sample, gen): v}
    return {(s, g): v for s, d in rows.items() for g, v in d.items()}


def test_perfect_and_reversed_rankings():
    human = _scores({"s1": {"a": 1.0, "b": 0.5, "c": 0.0}})
    same = ndcg_alignment(_scores({"s1": {"a": 9, "b": 5, "c": 1}}), human)
    assert same.mean == pytest.approx(1.0) and same.n_samples == 1
    # reversed: DCG = 0/1 + 0.5/log2(3) + 1/2, IDCG = 1 + 0.5/log2(3)
    rev = ndcg_alignment(_scores({"s1": {"a": 1, "b": 5, "c": 9}}), human)
    assert rev.mean == pytest.approx((0.5 / L2_3 + 0.5) / (1 + 0.5 / L2_3))
    assert rev.mean == pytest.approx(0.6199, abs=1e-4)


def test_average_over_samples_and_skips():
    human = _scores({"s1": {"a": 1.0, "b": 0.0}, "s2": {"a": 0.0, "b": 1.0}, "s3": {"a": 1.0}})
    metric = _scores({"s1": {"a": 2, "b": 1}, "s2": {"a": 2, "b": 1}, "s3": {"a": 1}})
    res = ndcg_alignment(metric, human)
    # s1 right (1.0); s2 wrong: the relevant model at rank 2 -> 1/log2(3); s3 has one model: skipped
    assert res.mean == pytest.approx((1.0 + 1 / L2_3) / 2)
    assert (res.n_samples, res.n_skipped) == (2, 1)


def test_all_zero_human_row_scores_zero_and_is_counted():
    human = _scores({"s1": {"a": 0.0, "b": 0.0, "c": 0.0}, "s2": {"a": 1.0, "b": 0.0, "c": 0.0}})
    metric = _scores({"s1": {"a": 3, "b": 2, "c": 1}, "s2": {"a": 3, "b": 2, "c": 1}})
    kept = ndcg_alignment(metric, human)
    assert kept.mean == pytest.approx(0.5) and kept.n_all_zero_human == 1  # (0 + 1) / 2
    dropped = ndcg_alignment(metric, human, skip_all_zero=True)
    assert dropped.mean == pytest.approx(1.0) and dropped.n_samples == 1


def test_ties_in_metric_average_the_gains():
    human = _scores({"s1": {"a": 1.0, "b": 0.5, "c": 0.0}})
    flat = ndcg_alignment(_scores({"s1": {"a": 7, "b": 7, "c": 7}}), human)
    # every position gets the mean gain 0.5: DCG = 0.5 * (1 + 1/log2(3) + 1/2)
    assert flat.mean == pytest.approx(0.5 * (1 + 1 / L2_3 + 0.5) / (1 + 0.5 / L2_3))
    # equal human scores: any order is ideal
    eq = ndcg_alignment(
        _scores({"s1": {"a": 1, "b": 2, "c": 3}}), _scores({"s1": {"a": 0.5, "b": 0.5, "c": 0.5}})
    )
    assert eq.mean == pytest.approx(1.0)


def test_failed_metric_values_are_left_out_not_zeroed():
    human = _scores({"s1": {"a": 1.0, "b": 0.5, "c": 0.0}})
    res = ndcg_alignment({("s1", "a"): 1.0, ("s1", "b"): None, ("s1", "c"): 0.0}, human)
    assert res.mean == pytest.approx(1.0) and res.n_samples == 1  # ranks a over c: ideal on those two


def test_random_baseline_exact_for_three_models():
    human = _scores({"s1": {"a": 1.0, "b": 0.5, "c": 0.0}})
    idcg = 1 + 0.5 / L2_3
    # six orders of (1, .5, 0) at discounts (1, 1/log2 3, 1/2)
    d = (1, 1 / L2_3, 0.5)
    dcgs = [sum(g * w for g, w in zip(order, d)) for order in
            [(1, .5, 0), (1, 0, .5), (.5, 1, 0), (.5, 0, 1), (0, 1, .5), (0, .5, 1)]]  # fmt: skip
    assert random_baseline(human) == pytest.approx(sum(dcgs) / 6 / idcg)
    assert random_baseline(human) == pytest.approx(0.80995, abs=1e-5)  # equals a metric that ties all models


def test_human_scores_average_annotators(tmp_path):
    rows = [
        {"sample_id": "s1", "generator": "a", "annotator": "x", "emotion": 1, "style": 0.5, "relevance": 0},
        {
            "sample_id": "s1",
            "generator": "a",
            "annotator": "y",
            "emotion": 0.5,
            "style": 0.5,
            "relevance": 0.25,
        },
        {"sample_id": "s1", "generator": "b", "annotator": "x", "emotion": 0, "style": 1, "relevance": 1},
    ]
    p = tmp_path / "annotations.jsonl"
    p.write_text(
        "".join(json.dumps({**r, "source": "human", "created_at": "2026-11-25"}) + "\n" for r in rows)
    )
    h = human_scores(str(p))
    assert h["emotion"] == {("s1", "a"): 0.75, ("s1", "b"): 0.0}
    assert h["relevance"][("s1", "a")] == 0.125
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**rows[0], "emotion": 0.3}) + "\n")
    with pytest.raises(ValueError, match="emotion=0.3 is not one of"):
        human_scores(str(bad))
