"""Krippendorff's alpha (interval) against hand-computed and published values."""

import math

from pvllm.metrics.agreement import krippendorff_alpha_interval


def test_alpha_hand_computed_zero_and_one():
    # pooled values 0,1,1,1: D_o = (2*1)/4 = 0.5, D_e = 6/12 = 0.5 -> alpha 0
    assert krippendorff_alpha_interval({"u1": {"a": 0, "b": 1}, "u2": {"a": 1, "b": 1}}) == 0.0
    assert krippendorff_alpha_interval({"u1": {"a": 0, "b": 0}, "u2": {"a": 1, "b": 1}}) == 1.0


def test_alpha_krippendorff_2011_reliability_data_interval():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", 4 coders x 12 units with
    # missing values; published alpha_interval = 0.849
    rows = {
        "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    }
    units = {u: {c: rows[c][u] for c in rows} for u in range(12)}
    assert round(krippendorff_alpha_interval(units), 3) == 0.849


def test_alpha_undefined_without_variation_or_pairs():
    assert math.isnan(krippendorff_alpha_interval({"u1": {"a": 0.5, "b": 0.5}}))
    assert math.isnan(krippendorff_alpha_interval({"u1": {"a": 0.5}, "u2": {"b": 1.0}}))
