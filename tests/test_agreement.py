"""Krippendorff's alpha (interval) against hand-computed and published values."""

import math

import pytest

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


def test_table3_agreement_per_dimension_hand_computed():
    """Two annotators, (sample, model) units: style pooled 0,1,1,1 -> alpha 0 (as above); emotion
    equal -> 1."""
    from pvllm.metrics.correlation import annotator_agreement

    def a(gen, who, e, s, r):
        return {"sample_id": "s1", "generator": gen, "annotator": who, "emotion": e, "style": s,
                "relevance": r}

    ann = [
        a("g1", "a", 0.0, 0.0, 1.0),
        a("g1", "b", 0.0, 1.0, 1.0),
        a("g2", "a", 1.0, 1.0, 1.0),
        a("g2", "b", 1.0, 1.0, 1.0),
        # a resubmission replaces the earlier score of the same annotator (latest wins)
        a("g2", "b", 1.0, 1.0, 1.0),
    ]
    ag = annotator_agreement(ann)
    assert ag["emotion"]["alpha"] == 1.0 and ag["style"]["alpha"] == 0.0
    assert math.isnan(ag["relevance"]["alpha"])  # no variation at all: undefined, not 1
    assert ag["style"]["n_annotators"] == 2 and ag["style"]["n_units"] == 2
    one = annotator_agreement([{**a, "annotator": "a"} for a in ann[:1]])
    assert math.isnan(one["emotion"]["alpha"]) and one["emotion"]["n_annotators"] == 1


def test_rank_correlations_sample_and_system_level():
    from pvllm.metrics.correlation import rank_correlations

    human = {(s, g): v for s in ("s1", "s2") for g, v in (("g1", 0.0), ("g2", 0.5), ("g3", 1.0))}
    same = rank_correlations({k: 10 * v for k, v in human.items()}, human)
    assert same["tau_sample"] == 1.0 and same["rho_sample"] == 1.0 and same["tau_system"] == 1.0
    rev = rank_correlations({k: -v for k, v in human.items()}, human)
    assert rev["tau_sample"] == -1.0 and rev["rho_system"] == -1.0
    # s2: metric ties every model -> undefined there, left out and counted; s1 swaps g1/g2
    mixed = {("s1", "g1"): 0.5, ("s1", "g2"): 0.0, ("s1", "g3"): 1.0, ("s2", "g1"): 1, ("s2", "g2"): 1,
             ("s2", "g3"): 1}
    m = rank_correlations(mixed, human)
    assert m["n_samples_corr"] == 1 and m["n_samples_undefined"] == 1
    assert m["tau_sample"] == pytest.approx(1 / 3) and m["rho_sample"] == pytest.approx(0.5)
    # system means: g1 0.75, g2 0.5, g3 1.0 vs human 0, 0.5, 1
    assert m["tau_system"] == pytest.approx(1 / 3) and m["n_systems"] == 3
