"""Personalization Score ψ (eq. 1-3): exact cases on injected similarities, and through the real MiniLM."""

import numpy as np
import pytest

from pvllm.data.psi import PsiScorer, psi_from_similarities

TITLE = "A golden retriever dog plays fetch with a red ball in the park"
DOG_BALL = "My dog would love that red ball"
GOLDEN = "Golden retrievers are the best dogs"
PARK = "The park looks beautiful in spring"
LOL = "lol this made my day"


def test_identical_comments_score_zero():
    # S_ij = 1 is never below a title similarity < 1, so every p_ij = 0.
    s_cc = np.ones((4, 4))
    assert psi_from_similarities(s_cc, np.array([0.5, 0.6, 0.2, 0.9])) == 0.0


def test_comments_unrelated_to_each_other_but_closer_to_title_score_one():
    s_cc = np.full((3, 3), 0.1)
    np.fill_diagonal(s_cc, 1.0)
    assert psi_from_similarities(s_cc, np.array([0.5, 0.6, 0.7])) == 1.0


def test_mixed_pairs_by_hand():
    # s_t = title similarities; p_ij = 1 iff S_ij < min(s_i, s_j) (eq. 1-2 rearranged), by hand:
    # (0,1) .45 vs .4 -> 0; (0,2) .2 vs .3 -> 1; (0,3) .19 vs .2 -> 1;
    # (1,2) .3 vs .3 -> d = 0, not < 0 -> 0; (1,3) .1 vs .2 -> 1; (2,3) 0 vs .2 -> 1  => 4/6
    s_t = np.array([0.5, 0.4, 0.3, 0.2])
    s_cc = np.eye(4)
    for (i, j), v in {(0, 1): 0.45, (0, 2): 0.2, (0, 3): 0.19, (1, 2): 0.3, (1, 3): 0.1, (2, 3): 0.0}.items():
        s_cc[i, j] = s_cc[j, i] = v
    assert psi_from_similarities(s_cc, s_t) == pytest.approx(4 / 6, abs=0)


def test_one_comment_is_undefined_not_zero():
    assert psi_from_similarities(np.ones((1, 1)), np.array([0.3])) is None


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="expected"):
        psi_from_similarities(np.ones((2, 3)), np.array([0.1, 0.2]))


@pytest.fixture(scope="module")
def scorer():
    return PsiScorer()


def test_real_model_similarities_pinned(scorer):
    # Independent of psi.py: encode with the model itself and check eq. 2 pair by pair.
    emb = scorer.model.encode([DOG_BALL, GOLDEN, PARK, LOL, TITLE], normalize_embeddings=True)
    sim = emb @ emb.T
    s_t = sim[:4, 4]
    np.testing.assert_allclose(s_t, [0.5391, 0.4566, 0.2539, 0.0698], atol=2e-3)
    np.testing.assert_allclose([sim[0, 1], sim[0, 2], sim[1, 2]], [0.3111, 0.1135, 0.1613], atol=2e-3)
    np.testing.assert_allclose([sim[0, 3], sim[1, 3]], [0.2223, 0.1168], atol=2e-3)


def test_real_model_psi_values(scorer):
    # From the pinned similarities: DOG_BALL, GOLDEN, PARK pairs are each below both title
    # similarities -> 3/3 positive. With LOL (title sim .07) only (DOG_BALL, GOLDEN) is positive -> 1/3.
    assert scorer.psi(TITLE, [DOG_BALL, GOLDEN, PARK]) == 1.0
    assert scorer.psi(TITLE, [DOG_BALL, GOLDEN, LOL]) == pytest.approx(1 / 3, abs=0)
    assert scorer.psi(TITLE, ["I love this", "I love this", "I love this"]) == 0.0


def test_no_title_is_undefined(scorer):
    assert scorer.psi(None, [DOG_BALL, GOLDEN]) is None
    assert scorer.psi("", [DOG_BALL, GOLDEN]) is None


def test_embeddings_cached_per_text(scorer, monkeypatch):
    scorer.embed([DOG_BALL, GOLDEN])
    calls = []
    real_encode = scorer.model.encode
    monkeypatch.setattr(
        scorer.model, "encode", lambda texts, **kw: calls.append(list(texts)) or real_encode(texts, **kw)
    )
    title = "a title no other test embeds"
    out = scorer.psi_many({"a": (title, [DOG_BALL, GOLDEN, "new text"]), "b": (None, ["x", "y"])})
    assert calls == [[title, "new text"]]  # only unseen texts; video b has no title so nothing embedded
    assert out["b"] is None and 0.0 <= out["a"] <= 1.0
